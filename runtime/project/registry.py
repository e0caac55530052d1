"""Registry diffs: (old fingerprints, new fingerprints) -> added, changed, removed.

Pure, so hot reload's decisions are tested from a table; the supervisor acts
on the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Diff:
    """What a reload changes, each as sorted function names."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def describe(self) -> str:
        """One line for the log, e.g. `changed charge-card; added send-mail`."""
        parts = [
            f"{verb} {', '.join(names)}"
            for verb, names in (
                ("added", self.added), ("changed", self.changed), ("removed", self.removed)
            )
            if names
        ]
        return "; ".join(parts) or "nothing changed"


def diff(old: Mapping[str, str], new: Mapping[str, str]) -> Diff:
    """Compare two {function name: fingerprint} maps."""
    return Diff(
        added=tuple(sorted(new.keys() - old.keys())),
        changed=tuple(sorted(n for n in old.keys() & new.keys() if old[n] != new[n])),
        removed=tuple(sorted(old.keys() - new.keys())),
    )
