"""Flow rules (SPEC 12): keys of events from tables, and the YAML that declares them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.flow.rules import DEFAULT_KEY, FlowRules, RateLimit, key_of, key_path_problem
from runtime.project.manifest import load_project, load_settings
from tests.runtime.test_manifest import one_error, project

pytestmark = pytest.mark.timeout(20)

ENVELOPE = {
    "id": "e1", "type": "order.created", "source": "s", "subject": "sub-1",
    "data": {"customer": {"id": 42, "tier": "gold"}, "items": ["a", "b"], "flag": True,
             "none": None, "price": 1.5},
    "extensions": {"partitionkey": "pk-7"},
}


@pytest.mark.parametrize(("path", "key"), [
    ("data.customer.id", "42"),
    ("data.customer.tier", "gold"),
    ("data.customer", '{"id":42,"tier":"gold"}'),
    ("data.items.1", "b"),
    ("data.flag", "true"),
    ("data.price", "1.5"),
    ("data.none", ""),
    ("data.missing.deeper", ""),
    ("data.items.9", ""),
    ("subject", "sub-1"),
    ("type", "order.created"),
    ("extensions.partitionkey", "pk-7"),
    ("extensions.other", ""),
])
def test_key_of_an_event(path: str, key: str) -> None:
    assert key_of(ENVELOPE, tuple(path.split("."))) == key


def test_default_key_is_the_partitionkey_and_missing_is_empty() -> None:
    assert key_of(ENVELOPE, DEFAULT_KEY) == "pk-7"
    assert key_of({"id": "x", "data": {}}, DEFAULT_KEY) == ""


@pytest.mark.parametrize(("path", "problem"), [
    ("data.customer_id", None),
    ("extensions.partitionkey", None),
    ("subject", None),
    ("body.x", "must start with one of"),
    ("data..x", "segment ''"),
    ("subject.x", "subject has no fields"),
    ("data.a b", "segment 'a b'"),
])
def test_key_paths(path: str, problem: str | None) -> None:
    found = key_path_problem(path)
    assert (found is None) if problem is None else (problem in (found or "")), found


def spec_of(tmp_path: Path, body: str) -> Any:
    root = project(tmp_path, {"f.yaml": "functions:\n  f:\n    handler: h.py:main\n" + body})
    return load_project(load_settings(root)).functions["f"]


def test_rules_load_from_yaml(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "    key: data.customer_id\n    order: key\n"
                   "    concurrency: {limit: 8}\n    rate_limit: {limit: 100, period: 1s}\n"
                   "    debounce: 5s\n")
    assert spec.concurrency == 8
    assert spec.flow == FlowRules(key=("data", "customer_id"), keyed=True, order=True,
                                  per_key=None, limit=8, rate=RateLimit(100, 1.0), debounce=5.0)
    assert spec.flow.key_limit == 1


def test_plain_function_has_no_rules_and_integer_concurrency_stays(tmp_path: Path) -> None:
    assert spec_of(tmp_path, "    concurrency: 3\n").flow is None
    spec = spec_of(tmp_path / "b", "    concurrency: 3\n    order: key\n")
    assert spec.concurrency == 3 and spec.flow.limit == 3 and spec.flow.key == DEFAULT_KEY


@pytest.mark.parametrize(("body", "line", "column", "message"), [
    ("    key: body.x\n", 4, 10, "must start with one of"),
    ("    key: [1]\n", 4, 10, "f.key must be a string"),
    ("    order: time\n", 4, 12, "f.order must be 'key'"),
    ("    concurrency: {limit: 2, per_key: 3}\n", 4, 38, "per_key must not exceed limit"),
    ("    concurrency: {per_key: 1}\n", 4, 18, "needs 'limit'"),
    ("    concurrency: {limit: 2, each: 1}\n", 4, 29, "unknown key 'each'"),
    ("    order: key\n    concurrency: {limit: 4, per_key: 2}\n", 5, 18, "per_key must be 1"),
    ("    rate_limit: {limit: 0, period: 1s}\n", 4, 25, "must be at least 1"),
    ("    rate_limit: {limit: 5}\n", 4, 17, "needs 'period'"),
    ("    rate_limit: {limit: 5, period: 0s}\n", 4, 36, "between 1ms and 7d"),
    ("    debounce: 0s\n", 4, 15, "f.debounce must be between 1ms and 7d"),
    ("    debounce: soon\n", 4, 15, "f.debounce"),
    ("    batch: {max_size: 0}\n", 4, 23, "f.batch.max_size must be at least 1"),
    ("    batch: {max_wait: 1s}\n", 4, 12, "needs 'max_size'"),
    ("    batch: {max_size: 5, max_wait: 2h}\n", 4, 36, "between 0s and 1h"),
])
def test_bad_rules_are_one_line_at_their_position(
    tmp_path: Path, body: str, line: int, column: int, message: str
) -> None:
    root = project(tmp_path, {"f.yaml": "functions:\n  f:\n    handler: h.py:main\n" + body})
    found = one_error(root)
    assert found[:3] == ("f.yaml", line, column) and message in found[3], found
