"""A helper module the handlers share: append JSON lines under the sample's out/ folder.

Editing it while `fnrun dev` runs reloads every function of this folder.
"""

import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "out")


def append(name, record):
    """Append one JSON line to out/NAME.jsonl (one write, so lines never interleave)."""
    os.makedirs(OUT, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(os.path.join(OUT, f"{name}.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read(name):
    """Every record of out/NAME.jsonl, oldest first."""
    try:
        with open(os.path.join(OUT, f"{name}.jsonl"), encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        return []
