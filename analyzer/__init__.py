"""Stateful and I/O parts of lonscope: capture readers, pipeline, keys, decryption,
associations, audit, filters, exports, CLI and TUI."""
from __future__ import annotations

from typing import Any, Iterator

from .packet import Packet, Record
from .pipeline import Pipeline


class Capture:
    """One or more capture files opened through the pipeline.

    Iterating yields decoded `Packet`s in capture order.  Export helpers (DataFrames) are
    provided by `analyzer.export`."""

    def __init__(self, paths, keys: Any = None, profile: Any = None, display_filter: str | None = None,
                 want_tree: bool = False):
        self.paths = [paths] if isinstance(paths, (str, bytes)) or hasattr(paths, "__fspath__") else list(paths)
        self.keys = keys
        self.profile = profile
        self.display_filter = display_filter
        self.want_tree = want_tree
        self.pipeline: Pipeline | None = None

    def records(self) -> Iterator[tuple[str, Record]]:
        from .capture import read_capture
        for p in self.paths:
            for rec in read_capture(p):
                yield str(p), rec

    def __iter__(self) -> Iterator[Packet]:
        self.pipeline = Pipeline(keys=self.keys, profile=self.profile, want_tree=self.want_tree)
        match = None
        if self.display_filter:
            from .filters import compile_filter
            match = compile_filter(self.display_filter)
        for path, rec in self.records():
            pkt = self.pipeline.feed(rec, path)
            if match is None or match(pkt.fields):
                yield pkt
        self.pipeline.finish()

    # DataFrame views are attached by analyzer.export (issue: exports)
    def to_dataframe(self):
        from .export import packets_dataframe
        return packets_dataframe(self)

    def sessions(self):
        from .export import sessions_dataframe
        return sessions_dataframe(self)

    def objects(self):
        from .export import objects_dataframe
        return objects_dataframe(self)

    def findings(self):
        from .export import findings_dataframe
        return findings_dataframe(self)


def open_capture(paths, keys: Any = None, profile: Any = None, display_filter: str | None = None,
                 want_tree: bool = False) -> Capture:
    """Open capture file(s).  `keys` may be a KeyRing, a path to a TOML key ring, or None."""
    if keys is not None and not hasattr(keys, "dlms_sets"):
        from .keyring import load_keys
        keys = load_keys(keys)
    return Capture(paths, keys=keys, profile=profile, display_filter=display_filter, want_tree=want_tree)


__all__ = ["Capture", "Packet", "Pipeline", "Record", "open_capture"]
