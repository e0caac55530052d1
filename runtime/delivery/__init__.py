"""The delivery core: stored deliveries to handler invocations and back.

`dispatcher.Dispatcher` claims a function's deliveries from the store,
runs them in its pool and settles each outcome (ack, retry by `retry`'s
maths, or dead letter); `calls` keeps the history of sync webhook calls.
"""
