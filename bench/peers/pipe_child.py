"""The cold-start baseline: a bare Python child answering over a pipe.

Source passed to `python -c`; `IMPORTS` adds what a realistic worker imports.
"""

BARE = "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.readline()"
WITH_IMPORTS = "import anyio, yaml; " + BARE
