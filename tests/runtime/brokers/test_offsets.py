"""Kafka commit points: only offsets acknowledged together with all before them, from tables."""

from __future__ import annotations

import pytest

from runtime.brokers.offsets import Offsets


@pytest.mark.parametrize(
    ("handed", "acked", "due"),
    [
        ([0, 1, 2], [0, 1, 2], {"p": 3}),
        ([0, 1, 2], [1, 2], {}),  # 0 still out: nothing may be committed
        ([0, 1, 2], [2, 0], {"p": 1}),  # 1 still out: only 0 is done
        ([5, 6, 9], [9, 6, 5], {"p": 10}),  # gaps in offsets (compacted topics) are fine
        ([0, 1], [1, 1, 7, -1], {}),  # repeated, unknown and stale acks change nothing
    ],
)
def test_the_commit_point_is_one_past_the_acknowledged_prefix(
    handed: list[int], acked: list[int], due: dict[str, int]
) -> None:
    offsets = Offsets()
    for offset in handed:
        offsets.handed("p", offset)
    for offset in acked:
        offsets.ack("p", offset)
    assert offsets.due() == due
    assert offsets.due() == {}  # taken once


def test_partitions_are_independent_and_revoked_ones_are_forgotten() -> None:
    offsets = Offsets()
    for partition in ("a", "b"):
        offsets.handed(partition, 0)
        offsets.handed(partition, 1)
    offsets.ack("a", 0)
    offsets.ack("b", 1)
    assert offsets.due() == {"a": 1}
    offsets.forget(["b"])
    offsets.ack("b", 0)  # arrives after the revocation: its new owner has it
    assert offsets.due() == {}
    assert offsets.unacked() == 1


def test_a_failed_commit_is_due_again_unless_a_later_point_is() -> None:
    offsets = Offsets()
    for offset in range(4):
        offsets.handed("p", offset)
    offsets.ack("p", 0)
    failed = offsets.due()
    offsets.redue(failed)
    assert offsets.due() == {"p": 1}
    offsets.ack("p", 1)
    later = offsets.due()
    offsets.ack("p", 2)
    offsets.redue(later)  # the commit of 2 failed, but 3 is due now
    assert offsets.due() == {"p": 3}
