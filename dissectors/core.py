"""Core model shared by every dissector: field registry, tree nodes, expert items,
the per-packet `Dissection`, and dissector tables for hand-offs.

Dissectors are pure: bytes in, fields + (optionally) a tree out.  A dissector has the
signature::

    def dissect_x(buf, off, end, d: Dissection, parent: Node | None) -> None

`buf` is the whole current data source (bytes), `off`..`end` the slice that belongs to
this layer.  Byte ranges recorded in nodes are offsets into the current data source
(`d.source`), so the hex pane can highlight them.  When `d.want_tree` is false, `parent`
is None and `add()` only records flat field values (the fast pass).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

# --------------------------------------------------------------------------- fields

FT_UINT = "uint"
FT_INT = "int"
FT_BOOL = "bool"
FT_BYTES = "bytes"
FT_STR = "str"
FT_FLOAT = "float"
FT_NONE = "none"      # a label / subtree with no value (filter tests presence only)
FT_OBIS = "obis"      # a.b.c.d.e.f string
FT_TIME = "time"


@dataclass(slots=True)
class Field:
    name: str
    type: str
    desc: str
    labels: dict | None = None   # value -> display label
    base: str = "dec"            # "dec" or "hex": how integers are displayed in trees

    def label(self, value: Any) -> str | None:
        if self.labels is None:
            return None
        return self.labels.get(value)


REGISTRY: dict[str, Field] = {}


def field(name: str, type: str, desc: str, labels: dict | None = None, base: str = "dec") -> str:
    """Register a field and return its name.  Re-registering the same name with the same
    type is allowed (modules may be reloaded); a conflicting type is a programming error."""
    old = REGISTRY.get(name)
    if old is not None and old.type != type:
        raise ValueError(f"field {name} registered twice with types {old.type} and {type}")
    REGISTRY[name] = Field(name, type, desc, labels, base)
    return name


def fields(prefix: str, type: str, entries: Iterable[tuple]) -> None:
    """Register many fields of one layer: entries are (suffix, desc[, labels[, base]])."""
    for e in entries:
        suffix, desc = e[0], e[1]
        labels = e[2] if len(e) > 2 else None
        base = e[3] if len(e) > 3 else "dec"
        field(prefix + suffix, type, desc, labels, base)


def display_value(f: Field | None, value: Any) -> str:
    """Default display text for a value."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex(" ") if len(value) <= 64 else bytes(value[:64]).hex(" ") + " …"
    if isinstance(value, bool):
        return "True" if value else "False"
    if f is not None:
        lab = f.label(value)
        if isinstance(value, int) and f.base == "hex":
            v = f"0x{value:02x}"
        else:
            v = str(value)
        return f"{lab} ({v})" if lab is not None else v
    return str(value)


# --------------------------------------------------------------------------- tree

class Node:
    """One line of the details tree: a field (with value) or a label (field=None)."""
    __slots__ = ("field", "value", "text", "offset", "length", "source", "children", "expanded")

    def __init__(self, field: str | None, value: Any, text: str, offset: int, length: int,
                 source: int = 0):
        self.field = field
        self.value = value
        self.text = text
        self.offset = offset
        self.length = length
        self.source = source
        self.children: list[Node] = []
        self.expanded = True

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def find(self, field: str) -> "Node | None":
        for n in self.walk():
            if n.field == field:
                return n
        return None

    def to_dict(self) -> dict:
        d = {"field": self.field, "text": self.text, "offset": self.offset,
             "length": self.length, "source": self.source}
        if self.field is not None:
            d["value"] = json_value(self.value)
        if self.children:
            d["children"] = [c.to_dict() for c in self.children]
        return d

    def __repr__(self):
        return f"Node({self.field!r}, {self.value!r}, {self.offset}+{self.length})"


def json_value(v: Any) -> Any:
    """Numbers stay numbers, byte strings become lowercase hex (DESIGN: field names)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    return v


@dataclass(slots=True)
class Expert:
    severity: str      # "chat" | "note" | "warn" | "error"
    group: str         # "malformed" | "protocol" | "sequence" | "security" | "checksum" | "decryption"
    layer: str
    offset: int
    message: str

    def to_dict(self) -> dict:
        return {"severity": self.severity, "group": self.group, "layer": self.layer,
                "offset": self.offset, "message": self.message}


class Truncated(Exception):
    """Raised by dissectors when a length field points past the end of the data."""

    def __init__(self, offset: int, need: int, have: int, what: str = ""):
        super().__init__(f"{what + ': ' if what else ''}needs {need} bytes at offset {offset}, {have} left")
        self.offset = offset


def need(buf_end: int, off: int, n: int, what: str = "") -> None:
    """Check that n bytes remain at off before reading/allocating anything."""
    if n < 0 or off + n > buf_end:
        raise Truncated(off, n, max(0, buf_end - off), what)


# --------------------------------------------------------------------------- per packet

class Dissection:
    """Everything the dissectors produced for one packet.

    - `fields`: flat {field name: [values...]} (always filled; filters, -T fields, exports)
    - `root`: the details tree (only when want_tree)
    - `sources`: named byte buffers ("Frame", "Reassembled TCP", "Decrypted xDLMS"...)
    - `ctx`: scratch space for hand-offs within one packet (addresses, transaction info)
    """
    __slots__ = ("want_tree", "fields", "root", "protocols", "expert", "info", "src", "dst",
                 "sources", "source", "ctx", "status")
    # A class-level switch, not a slot: a subclass sets it to True when nothing will read
    # `info`/`src`/`dst` or the `ctx` hand-off entries of this packet (the `-T fields` fast
    # feed, analyzer/fastfields.py, when no layer above LonTalk is registered): dissectors
    # may then skip building them.  Field values are always recorded.
    lean = False

    def __init__(self, frame: bytes = b"", want_tree: bool = False):
        self.want_tree = want_tree
        self.fields: dict[str, list] = {}
        self.root: Node | None = Node(None, None, "", 0, len(frame)) if want_tree else None
        self.protocols: list[str] = []
        self.expert: list[Expert] = []
        self.info: str = ""
        self.src: str = ""
        self.dst: str = ""
        self.sources: list[tuple[str, bytes]] = [("Frame", frame)]
        self.source = 0
        self.ctx: dict[str, Any] = {}
        self.status: str = ""      # decryption status summary, e.g. "decrypted"

    # ---- building
    def layer(self, proto: str, title: str, off: int, length: int) -> Node | None:
        """Start a protocol layer: records it in `protocols` and returns its tree node."""
        self.protocols.append(proto)
        self.fields.setdefault(proto, []).append(True)
        if self.root is None:
            return None
        n = Node(proto, None, title, off, length, self.source)
        self.root.children.append(n)
        return n

    def add(self, parent: Node | None, name: str, value: Any, off: int, length: int,
            text: str | None = None) -> Node | None:
        """Record a field value; when building a tree, also add a node under parent."""
        lst = self.fields.get(name)
        if lst is None:
            self.fields[name] = [value]
        else:
            lst.append(value)
        if parent is None:
            return None
        f = REGISTRY.get(name)
        if text is None:
            text = f"{f.desc if f else name}: {display_value(f, value)}"
        n = Node(name, value, text, off, length, self.source)
        parent.children.append(n)
        return n

    def label(self, parent: Node | None, text: str, off: int, length: int) -> Node | None:
        """A text-only subtree node (no field value)."""
        if parent is None:
            return None
        n = Node(None, None, text, off, length, self.source)
        parent.children.append(n)
        return n

    def note(self, severity: str, group: str, layer: str, off: int, message: str,
             parent: Node | None = None) -> None:
        self.expert.append(Expert(severity, group, layer, off, message))
        self.fields.setdefault("_ws.expert", []).append(message)
        if severity in ("warn", "error") and group == "malformed":
            self.fields.setdefault("_ws.malformed", []).append(True)
        if parent is not None:
            parent.children.append(Node("_ws.expert", message, f"[Expert: {message}]", off, 0, self.source))

    def malformed(self, layer: str, off: int, message: str, parent: Node | None = None) -> None:
        self.note("error", "malformed", layer, off, f"Malformed {layer}: {message}", parent)

    def new_source(self, name: str, data: bytes) -> int:
        """Switch to a new data source (decrypted / reassembled bytes); returns its index.
        Restore the previous one with `d.source = old` when done."""
        self.sources.append((name, bytes(data)))
        self.source = len(self.sources) - 1
        return self.source

    def set_info(self, text: str) -> None:
        self.info = text

    def append_info(self, text: str) -> None:
        self.info = f"{self.info} {text}" if self.info else text

    def first(self, name: str, default: Any = None) -> Any:
        lst = self.fields.get(name)
        return lst[0] if lst else default

    def last(self, name: str, default: Any = None) -> Any:
        lst = self.fields.get(name)
        return lst[-1] if lst else default


# --------------------------------------------------------------------------- hand-offs

Dissector = Callable[[bytes, int, int, Dissection, "Node | None"], Any]
Heuristic = Callable[[bytes, int, int, Dissection, "Node | None"], bool]


class DissectorTable:
    """A named hand-off table (Wireshark's dissector tables): key -> dissector, plus an
    ordered list of heuristic dissectors tried when no key matches."""

    def __init__(self, name: str, desc: str = ""):
        self.name = name
        self.desc = desc
        self.entries: dict[Any, tuple[str, Dissector]] = {}
        self.heuristics: list[tuple[str, Heuristic]] = []

    def register(self, key: Any, proto: str, fn: Dissector) -> None:
        self.entries[key] = (proto, fn)

    def register_heuristic(self, proto: str, fn: Heuristic) -> None:
        self.heuristics.append((proto, fn))

    def get(self, key: Any) -> Dissector | None:
        e = self.entries.get(key)
        return e[1] if e else None

    def dispatch(self, key: Any, buf: bytes, off: int, end: int, d: Dissection,
                 parent: Node | None, try_heuristics: bool = True) -> bool:
        """Hand the bytes to the dissector for key (or the heuristics); any exception in
        the sub-dissector becomes a malformed expert item.  Returns True if handled."""
        e = self.entries.get(key)
        if e is not None:
            call(e[0], e[1], buf, off, end, d, parent)
            return True
        if try_heuristics:
            for proto, h in self.heuristics:
                try:
                    if h(buf, off, end, d, parent):
                        return True
                except Exception as exc:  # a heuristic must never break the packet
                    _exc_to_expert(proto, exc, off, d, parent)
                    return True
        return False


def _exc_to_expert(proto: str, exc: Exception, off: int, d: Dissection, parent) -> None:
    if isinstance(exc, Truncated):
        d.malformed(proto, exc.offset, str(exc), parent)
    else:
        d.malformed(proto, off, f"{type(exc).__name__}: {exc}", parent)


def call(proto: str, fn: Dissector, buf: bytes, off: int, end: int, d: Dissection,
         parent: Node | None) -> None:
    """Call a sub-dissector; malformed data becomes an expert item, never an exception."""
    try:
        fn(buf, off, end, d, parent)
    except Exception as exc:
        _exc_to_expert(proto, exc, off, d, parent)


TABLES: dict[str, DissectorTable] = {}


def table(name: str, desc: str = "") -> DissectorTable:
    t = TABLES.get(name)
    if t is None:
        t = TABLES[name] = DissectorTable(name, desc)
    elif desc and not t.desc:
        t.desc = desc
    return t


# Well-known tables (other modules register into these):
#   "link"          key: pcap LINKTYPE (int)             -> link-layer dissector
#   "ethertype"     key: ethertype (int)
#   "ip.proto"      key: IP protocol number (int)
#   "udp.port"      key: UDP port (int)                  (tried for both ports, lower first)
#   "tcp.port"      key: TCP port (int)                  (PDUs after stream reassembly)
#   "cnip.protocol" key: CN/IP protocol (int)            -> 0: LonTalk frame (no L2 CRC required)
#   "lon.frame"     keys: "l2-crc" raw LonTalk frame with CRC (NI uplinks, LINKTYPE_USER0),
#                   "l2-nocrc" without CRC (LINKTYPE_USER2), "l2" CRC optional
#   "lon.apdu"      key: APDU code/class (int 0x00..0x7F) -> application/foreign payload dissectors
#   "dlms"          key: "apdu" -> xDLMS APDU dissector
