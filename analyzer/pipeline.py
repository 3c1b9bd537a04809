"""The one-direction data flow: source -> frames -> dissect -> stateful stages -> consumer.

Stateful stages (TCP reassembly, LonTalk transaction tracking, association tracking,
decryption, APDU reassembly, audit) register themselves with `register_stage`.  Each stage
sees every packet in capture order on the first pass (`first_pass=True`) and may keep
state; whatever it needs to rebuild its part of a packet later goes into `pkt.aux`.  When a
single packet is re-dissected with a full tree (`Pipeline.redissect`), stages are called
with `first_pass=False` and must then use only `pkt.aux`, never their flow state.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable, Iterator

from dissectors import dissect_frame, load_all
from dissectors.core import Dissection

from .packet import Packet, Record


class Stage:
    name = "stage"

    def __init__(self, pipeline: "Pipeline"):
        self.pipeline = pipeline

    def process(self, pkt: Packet, d: Dissection, first_pass: bool) -> None:
        """Add to pkt's dissection `d` (layers, fields, expert items)."""

    def finish(self) -> Iterable[Any]:
        """Called once at end of capture (e.g. flush timeouts); may return nothing."""
        return ()


# order -> (name, factory).  Lower orders run first.
_STAGES: dict[str, tuple[int, Callable[["Pipeline"], Stage]]] = {}

# Modules that register stages when imported; missing modules are simply skipped so that
# the pipeline works while parts of the product are still being built.
STAGE_MODULES = [
    "analyzer.tcpstage",      # TCP stream reassembly -> tcp.port PDUs
    "analyzer.dlms_streams",  # wrapper/HDLC over TCP, HDLC + adaptation segment reassembly
    "analyzer.lontrack",      # LonTalk transactions, responses in context
    "analyzer.associations",  # DLMS association tracking
    "analyzer.decrypt",       # decryption stage
    "analyzer.reassembly",    # block transfer / GBT / segmentation
    "analyzer.audit",         # security findings
]


def register_stage(order: int, name: str, factory: Callable[["Pipeline"], Stage]) -> None:
    _STAGES[name] = (order, factory)


def _load_stage_modules() -> None:
    for mod in STAGE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


class Pipeline:
    """Runs records through dissection and the registered stages."""

    def __init__(self, keys: Any = None, profile: Any = None, want_tree: bool = False,
                 options: dict | None = None):
        load_all()
        _load_stage_modules()
        self.keys = keys
        self.profile = profile
        self.want_tree = want_tree
        self.options = options or {}
        self.stages: list[Stage] = [f(self) for _, f in sorted(_STAGES.values(), key=lambda x: x[0])]
        self.count = 0

    def stage(self, name: str) -> Stage | None:
        for s in self.stages:
            if s.name == name:
                return s
        return None

    def feed(self, rec: Record, file: str = "") -> Packet:
        self.count += 1
        pkt = Packet(self.count, rec, file)
        d = Dissection(rec.data, self.want_tree)
        d.ctx["packet"] = pkt
        d.ctx["pipeline"] = self
        dissect_frame(rec.data, rec.linktype, d=d)
        for s in self.stages:
            try:
                s.process(pkt, d, True)
            except Exception as exc:   # a stage bug must not stop the capture
                d.note("error", "malformed", s.name, 0, f"{s.name} stage failed: {type(exc).__name__}: {exc}")
        pkt.d = d
        return pkt

    def run(self, records: Iterable[Record], file: str = "") -> Iterator[Packet]:
        for rec in records:
            yield self.feed(rec, file)

    def finish(self) -> list:
        out = []
        for s in self.stages:
            out.extend(s.finish() or ())
        return out

    def redissect(self, pkt: Packet, want_tree: bool = True) -> Dissection:
        """One packet again, using what the first pass stored in pkt.aux: with the full
        tree by default, or flat fields only (want_tree=False)."""
        d = Dissection(pkt.data, want_tree)
        d.ctx["packet"] = pkt
        d.ctx["pipeline"] = self
        dissect_frame(pkt.data, pkt.linktype, d=d)
        for s in self.stages:
            try:
                s.process(pkt, d, False)
            except Exception as exc:
                d.note("error", "malformed", s.name, 0, f"{s.name} stage failed: {type(exc).__name__}: {exc}")
        return d
