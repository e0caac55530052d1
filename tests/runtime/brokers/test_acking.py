"""AMQP `multiple` acks: only up to the delivery tags acknowledged with all before them."""

from __future__ import annotations

import pytest

from runtime.brokers.acking import DeliveryTags, Settlement


@pytest.mark.parametrize(
    ("handed", "batches", "settlements"),
    [
        # In order: one multiple ack per batch, at its last tag.
        ([1, 2, 3, 4, 5], [[1, 2, 3], [4, 5]], [(3, []), (5, [])]),
        # A later batch first: single acks (2 is still out), then one multiple ack at 2
        # settles 1 and 2 (3 and 4 were acknowledged singly already).
        ([1, 2, 3, 4], [[3, 4], [2, 1]], [(None, [3, 4]), (2, [])]),
        # Only the prefix below the first tag still out: 4 must go singly.
        ([1, 2, 3, 4], [[1, 2, 4]], [(2, [4])]),
        # Never past a tag handed out but not acknowledged, even one not in any batch.
        ([1, 2, 3], [[2, 3]], [(None, [2, 3])]),
    ],
)
def test_a_multiple_ack_goes_only_up_to_the_acknowledged_prefix(
    handed: list[int], batches: list[list[int]], settlements: list[tuple[int | None, list[int]]]
) -> None:
    tags = DeliveryTags()
    for tag in handed:
        tags.handed(tag)
    assert [tags.settle(batch) for batch in batches] == [
        Settlement(multiple, singles) for multiple, singles in settlements]
