"""One captured frame and what the pipeline made of it."""
from __future__ import annotations

from typing import Any, NamedTuple

from dissectors.core import Dissection


class Record(NamedTuple):
    """A raw capture record as the readers yield it."""
    ts_ns: int            # capture time, nanoseconds since the epoch
    data: bytes           # captured bytes
    linktype: int         # pcap LINKTYPE_* of the interface
    orig_len: int         # length on the wire
    iface: int = 0        # interface index (pcapng)
    comments: tuple = ()  # pcapng opt_comment strings (e.g. phase/SSI for raw LonTalk)


class Packet:
    """A numbered frame plus its dissection.  `aux` keeps what the stateful stages
    learned on the first pass (decrypted plaintext, reassembled PDUs, association id...)
    so that a single packet can be re-dissected with a full tree later without replaying
    the capture."""
    __slots__ = ("number", "ts_ns", "data", "linktype", "orig_len", "iface", "comments",
                 "d", "aux", "file")

    def __init__(self, number: int, rec: Record, file: str = ""):
        self.number = number
        self.ts_ns = rec.ts_ns
        self.data = rec.data
        self.linktype = rec.linktype
        self.orig_len = rec.orig_len
        self.iface = rec.iface
        self.comments = rec.comments
        self.d: Dissection | None = None
        self.aux: dict[str, Any] = {}
        self.file = file

    @property
    def time(self) -> float:
        return self.ts_ns / 1e9

    @property
    def fields(self) -> dict[str, list]:
        return self.d.fields if self.d else {}

    @property
    def info(self) -> str:
        return self.d.info if self.d else ""

    @property
    def protocols(self) -> str:
        return ":".join(self.d.protocols) if self.d else ""

    @property
    def protocol(self) -> str:
        """The top-most protocol (Wireshark's Protocol column)."""
        return self.d.protocols[-1].upper() if self.d and self.d.protocols else ""

    @property
    def source(self) -> str:
        return self.d.src if self.d else ""

    @property
    def destination(self) -> str:
        return self.d.dst if self.d else ""

    def record(self) -> Record:
        return Record(self.ts_ns, self.data, self.linktype, self.orig_len, self.iface, self.comments)
