"""Worker pools: the supervisor's side of its workers.

`workerpool.WorkerPool` keeps a function's workers (start, reuse, recycle,
retire) and runs invocations in them; `process` and `channel` are one
worker's process and protocol socket, `launcher` spawns or forks it,
`sandbox` plans its confinement, `warmup` loads handlers before they
serve, `coalescer` carries concurrent single calls in shared batches, `roster`
holds a pool's workers (alive, idle, spare) and ends retired ones.
"""
