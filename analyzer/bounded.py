"""Bounded containers for the stages' streaming state (decryption, audit).

A stage that compares values across packets or counts observations must not grow with the
capture (10M packets and more): `Window` remembers the recent entries of a map only, and
`Tally` groups evidence under at most `max_groups` keys with a count and the first
MAX_EVIDENCE frames of each group.

MAX_GROUPS and WINDOW are the default bounds; the classes read them when an instance is
made, and the audit reads MAX_GROUPS when it caps its own lists, so one change here (e.g. a
test shrinking the bounds) applies to every stage.
"""
from __future__ import annotations

MAX_EVIDENCE = 50         # evidence frames kept per group / finding
MAX_GROUPS = 256          # separate groups of one observation (findings of one rule); further ones are merged
WINDOW = 8192             # recent values compared across packets (per generation, see Window)
OVERFLOW = ("further",)   # the group shared by everything beyond MAX_GROUPS
_MISSING = object()


class Window:
    """A map that remembers recent entries only: two generations of at most `cap` keys; when
    the newer one is full it becomes the older one and the previous older one is dropped.
    O(1) per operation, at most 2*cap entries, and the last `cap` insertions always found."""
    __slots__ = ("cap", "new", "old")

    def __init__(self, cap: int | None = None):
        self.cap = WINDOW if cap is None else cap
        self.new: dict = {}
        self.old: dict = {}

    def get(self, key, default=None):
        v = self.new.get(key, _MISSING)
        if v is _MISSING:
            v = self.old.get(key, default)
        return v

    def __contains__(self, key) -> bool:
        return key in self.new or key in self.old

    def __setitem__(self, key, value) -> None:
        new = self.new
        if key not in new and len(new) >= self.cap:
            self.old = new
            self.new = new = {}
        new[key] = value

    def __len__(self) -> int:
        return len(self.new) + len(self.old)


class Tally:
    """Evidence of one observation grouped by a key (an association, a pair of nodes...):
    per group [count, first MAX_EVIDENCE frames, details of the first occurrence].  At most
    `max_groups` groups; later groups share the OVERFLOW group."""
    __slots__ = ("groups", "max_groups")

    def __init__(self, max_groups: int | None = None):
        self.groups: dict = {}
        self.max_groups = MAX_GROUPS if max_groups is None else max_groups

    def add(self, key, frames=(), info=None, n: int = 1) -> list:
        g = self.groups
        e = g.get(key)
        if e is None:
            if len(g) >= self.max_groups:
                key = OVERFLOW
                e = g.get(key)
            if e is None:
                e = g[key] = [0, [], info]
        e[0] += n
        fl = e[1]
        for x in frames:
            if x is not None and len(fl) < MAX_EVIDENCE and x not in fl:
                fl.append(x)
        return e

    def items(self):
        return self.groups.items()

    def __len__(self) -> int:
        return len(self.groups)


__all__ = ["MAX_EVIDENCE", "MAX_GROUPS", "OVERFLOW", "Tally", "WINDOW", "Window"]
