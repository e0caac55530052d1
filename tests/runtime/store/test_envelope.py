"""StoredEvent: a claimed event stays its envelope until a field other than the id is read."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from runtime.events import Event, HttpInfo
from runtime.store.envelope import StoredEvent

pytestmark = pytest.mark.timeout(10)


def sample() -> Event:
    return Event(
        type="order.created", data={"n": [1, 2]}, source="shop", subject="o-7",
        time=datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC), extensions={"tenant": "t1"},
        http=HttpInfo("POST", "/hook", {"a": "1"}, {"x-h": "v"}),
    )  # fmt: skip


def stored(event: Event) -> Event:
    return StoredEvent.of(json.loads(json.dumps(event.to_dict())))


def test_only_the_id_is_read_until_another_field_is() -> None:
    original = sample()
    event = stored(original)
    assert (event.id, event.type) == (original.id, original.type)  # run records keep both
    assert "data" not in event.__dict__ and "source" not in event.__dict__
    assert event.data == {"n": [1, 2]}
    assert event.__dict__["source"] == "shop"  # parsed once, all fields at a time


def test_every_field_matches_the_original_and_they_compare_equal() -> None:
    original = sample()
    event = stored(original)
    for field in dataclasses.fields(Event):
        assert getattr(event, field.name) == getattr(original, field.name), field.name
    assert event == original and original == event
    assert event != dataclasses.replace(original, data=None)


def test_to_dict_is_the_stored_envelope_without_parsing() -> None:
    original = sample()
    event = stored(original)
    assert event.to_dict() == original.to_dict()
    assert "data" not in event.__dict__
    event.to_dict()["type"] = "changed"  # a copy: the envelope stays as stored
    assert event.type == "order.created"


def test_bytes_data_and_replace_give_plain_behaviour() -> None:
    original = Event(type="blob", data=b"\x00\xff")
    event = stored(original)
    assert event.data == b"\x00\xff"
    changed = dataclasses.replace(event, data=b"new")
    assert changed.data == b"new" and changed.to_dict()["data_base64"] == "bmV3"


def test_it_is_frozen_like_any_event() -> None:
    event = stored(sample())
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.type = "other"  # type: ignore[misc]
