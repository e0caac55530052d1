import pytest

from runtime.project.registry import Diff, diff


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({}, {}, Diff()),
        ({}, {"a": "1"}, Diff(added=("a",))),
        ({"a": "1"}, {}, Diff(removed=("a",))),
        ({"a": "1"}, {"a": "1"}, Diff()),
        ({"a": "1"}, {"a": "2"}, Diff(changed=("a",))),
        (
            {"a": "1", "b": "1", "c": "1"},
            {"b": "2", "c": "1", "d": "1", "e": "1"},
            Diff(added=("d", "e"), changed=("b",), removed=("a",)),
        ),
    ],
)
def test_diff(old: dict[str, str], new: dict[str, str], expected: Diff) -> None:
    assert diff(old, new) == expected


def test_describe_and_truth() -> None:
    assert not Diff()
    assert Diff().describe() == "nothing changed"
    d = Diff(added=("send-mail",), changed=("charge-card",))
    assert d and d.describe() == "added send-mail; changed charge-card"
