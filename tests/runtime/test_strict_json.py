"""strict_json: RFC 8259 JSON only, refused with a one-line ValueError, on both entry points."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import strict_json

REFUSED = {
    "NaN": ('{"x": NaN}', "NaN is not a JSON value"),
    "Infinity": ("[-Infinity]", "-Infinity is not a JSON value"),
    # Each reads as a float that overflows to inf in Python.
    "1e999": ('{"x": 1e999}', "1e999 is out of range"),
    "-1e400": ("[-1e400]", "-1e400 is out of range"),
    "1E+309": ("1E+309", "1E+309 is out of range"),
    "long literal": ("1" + "0" * 400 + ".0", "1" + "0" * 36 + "... is out of range"),
}
TAKEN: dict[str, tuple[str, Any]] = {
    "ordinary": ('{"a": 1.5, "b": -0.25, "n": 3}', {"a": 1.5, "b": -0.25, "n": 3}),
    "largest double": ("[1.7976931348623157e308, -1e308]", [1.7976931348623157e308, -1e308]),
    "underflow is zero, not an error": ("[1e-999, -1e-400]", [0.0, -0.0]),
    "a big integer stays exact": ("1" + "0" * 400, 10**400),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_loads_and_scan_once_refuse_what_no_json_number_holds(case: str) -> None:
    text, message = REFUSED[case]
    with pytest.raises(ValueError) as loaded:
        strict_json.loads(text)
    with pytest.raises(ValueError) as scanned:
        strict_json.scan_once(text, 0)
    for error in (loaded, scanned):
        assert str(error.value).startswith(message)
        assert "\n" not in str(error.value) and len(str(error.value)) < 120


@pytest.mark.parametrize("case", sorted(TAKEN))
def test_finite_numbers_are_taken_as_python_reads_them(case: str) -> None:
    text, value = TAKEN[case]
    assert strict_json.loads(text) == value
    assert strict_json.loads(text.encode("utf-16")) == value
    assert strict_json.scan_once(text, 0) == (value, len(text))


DEPTHS = {
    "64 arrays": ("[" * 64 + "]" * 64, True),
    "65 arrays": ("[" * 65 + "]" * 65, False),
    "65 objects": ('{"a":' * 65 + "1" + "}" * 65, False),
    "64 mixed": ('[{"a":' * 32 + "null" + "}]" * 32, True),
    "brackets in a string do not count": ('["' + "[{" * 100 + '"]', True),
    "nor after an escaped quote": ('["\\"' + "[" * 100 + '"]', True),
    "many shallow arrays": ("[" + ",".join(["[[1]]"] * 500) + "]", True),
}


@pytest.mark.parametrize("case", sorted(DEPTHS))
def test_loads_refuses_more_than_64_levels(case: str) -> None:
    text, taken = DEPTHS[case]
    for given in (text, text.encode(), text.encode("utf-16")):
        if taken:
            assert strict_json.loads(given) == strict_json.DECODER.decode(text)
        else:
            with pytest.raises(ValueError, match=r"^nested too deeply \(more than 64 levels\)$"):
                strict_json.loads(given)
