"""The worker child: the process that imports and runs a handler.

Everything here runs in the child (or the fork server's template it is
forked from) and imports only the standard library and the leaves
(`runtime.results`, `runtime.event_names`): starting a worker must never
load supervisor code (an import contract holds it). `child` is the
worker's main loop, `protocol` the frames it speaks with the supervisor,
`guard` the process that watches it, `confine` its self-sealing (Landlock),
`forkserver` the template workers are forked from.
"""
