"""fnrun runtime: supervisor, workers, delivery and stores.

Kept tiny on purpose: the worker child imports `runtime.worker.child`, and nothing
here may pull supervisor code into it.
"""

__version__ = "0.1.0"
