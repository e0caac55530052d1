"""Scenario 8: the Redis cases again on a Redis that keeps its data (an append-only file).

The Redis figures of `drain` and `redis_scale` come from a server that keeps
nothing, which no one would run a durable queue on. Here the same cases, fnrun
on 1, 2 and 3 nodes, Celery and Dramatiq, run on a private redis-server with
an append-only file fsynced once a second (`everysec`, Redis's recommended
setting, which can lose the last second) and before every reply (`always`,
the durability of fnrun's SQLite store, which answers after the fsync).
"""

from __future__ import annotations

from bench import queues
from bench.harness import Case, Scenario
from bench.redisdb import ALWAYS, EVERYSEC, LABELS
from bench.scenarios.drain import total
from bench.scenarios.redis_scale import celery, fnrun_nodes


def dramatiq(mode: str, threads: int) -> Case:
    return Case(f"dramatiq 2x{threads} ({LABELS[mode]})",
                lambda ctx: queues.dramatiq_drain(ctx, total(ctx), mode, threads), group=mode)


SCENARIO = Scenario(
    name="redis_durable",
    title="The Redis cases on an append-only file: fsync everysec and always",
    cases=[
        case
        for mode in (EVERYSEC, ALWAYS)
        for case in (fnrun_nodes(1, mode), fnrun_nodes(2, mode), fnrun_nodes(3, mode),
                     celery(mode), dramatiq(mode, 1), dramatiq(mode, 8))
    ],
    notes=(
        "Two redis-servers private to the run, `--save \"\" --appendonly yes` with "
        "`--appendfsync everysec` and `--appendfsync always`, their files under the run's "
        "temporary folder (the filesystem of fnrun's SQLite stores). fnrun's nodes are "
        "timed as in redis_scale (first publish -> last handler end, ingress included), "
        "Celery and Dramatiq as in drain (queue loaded first; first handler start -> last "
        "handler end). fnrun's ratios compare it with the peers on the same server only."
    ),
)
