"""Publish events with their deliveries through fnrun's store API, in a process of its own.

    python bench/preload.py STORE_URL TYPE TARGET[,TARGET...] COUNT [KEYS]

With KEYS, event i carries the partitionkey extension `k{i % KEYS}` (flow control).

Run as a script, with PYTHONPATH naming the fnrun checkout to use, so that an
A/B run fills each revision's store with that revision's own code. It imports
nothing of the benchmark. It prints `began <epoch s>` just before the first
publish (after its imports and the store's opening), so a scenario that times
ingress starts its clock at the first publish, not at this process's start.
"""

from __future__ import annotations

import sys
import time

import anyio

BATCH = 1000
"""Events per store publish call."""


async def publish(
    url: str, event_type: str, targets: list[str], count: int, keys: int = 0
) -> None:
    try:
        from runtime.events import Event
        from runtime.plugins import store_for
    except ImportError as exc:
        raise SystemExit(f"preload: this fnrun has no store API where expected: {exc}") from exc
    store = store_for(url)
    async with store:
        print(f"began {time.time()!r}", flush=True)
        for start in range(0, count, BATCH):
            batch = [(Event(type=event_type, source="bench",
                            extensions={"partitionkey": f"k{i % keys}"} if keys else {}),
                      list(targets))
                     for i in range(start, min(count, start + BATCH))]
            await store.publish(batch)


def main(argv: list[str]) -> None:
    if len(argv) not in (4, 5) or not all(a.isdigit() for a in argv[3:]):
        raise SystemExit(__doc__)
    url, event_type, targets, count = argv[:4]
    keys = int(argv[4]) if len(argv) == 5 else 0
    anyio.run(publish, url, event_type, targets.split(","), int(count), keys)


if __name__ == "__main__":
    main(sys.argv[1:])
