"""Flow control (SPEC 12): per-key order and concurrency, rate limits.

`rules` is the pure part (what a function declares, the key of an event),
`declare` reads it from YAML, `lane` is the one door the dispatcher of a
function with rules goes through instead of the store's plain claim path.
The store parts live beside the adapters (`runtime/store/sqlite_flow.py`,
`runtime/store/redis_flow.py`).
"""
