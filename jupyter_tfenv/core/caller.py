"""Who asks: the user a kernel runs for, as every backend sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Caller:
    """A hub user with a Unix account: what every container of theirs runs as."""

    name: str
    uid: int
    gid: int
    home: str
    groups: frozenset[str] = field(default_factory=frozenset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.name,
            "uid": self.uid,
            "gid": self.gid,
            "groups": sorted(self.groups),
        }
