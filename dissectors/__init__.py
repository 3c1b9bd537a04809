"""Pure dissectors: bytes in, a layered tree out (no I/O, no keys, no global state
beyond the registration tables filled at import time)."""
from __future__ import annotations

import importlib
import pkgutil

from .core import (REGISTRY, TABLES, Dissection, Node, Expert, Truncated, call, field,
                   table, need)

_loaded = False


def load_all() -> None:
    """Import every dissector module once so that each registers its fields and hand-offs."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if m.name.startswith("_") or m.name == "core" or m.ispkg:
            continue
        importlib.import_module(f"{__name__}.{m.name}")


def dissect_frame(data: bytes, linktype: int, want_tree: bool = False,
                  d: Dissection | None = None) -> Dissection:
    """Dissect one captured frame from its link layer up (stateless part only)."""
    load_all()
    if d is None:
        d = Dissection(data, want_tree)
    if not table("link").dispatch(linktype, data, 0, len(data), d, d.root, try_heuristics=False):
        d.note("warn", "protocol", "frame", 0, f"Unsupported link type {linktype}")
    return d


__all__ = ["REGISTRY", "TABLES", "Dissection", "Node", "Expert", "Truncated", "call", "field",
           "table", "need", "load_all", "dissect_frame"]
