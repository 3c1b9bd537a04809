"""OSGP application messages (ANSI C12.18/C12.19-style table services) carried in
ISO/IEC 14908 APDUs.

Requests (the service code sits in the 14908 APDU code byte — inferred, see the profile):

=====  ==============  =========================================
code   service         fields after the code
=====  ==============  =========================================
0x30   full read       table(2)
0x3F   partial read    table(2) offset(3) count(2)
0x40   full write      table(2) count(2) data(count)
0x4F   partial write   table(2) offset(3) count(2) data(count)
=====  ==============  =========================================

followed by the legacy security trailer ``sequence(4) digest(8)``.  Responses (in an SPDU
RESPONSE) start with a status code: 0x00 ok (a read response carries ``count(2) data``),
errors 0x01..0x05, 0x0B authentication failure and 0x0C invalid sequence (followed by the
expected 4-byte sequence number); then the 8-byte digest.

Which APDU codes reach this module is decided by the adaptation profile
(``dissectors/profiles/iec62056-8-8.toml``, ``[codes]``), registered by
``dissectors.adaptation``.  The digest is shown, not verified (that needs the OMA key:
the decryption stage's business).
"""
from __future__ import annotations

from construct import Int16ub, Int24ub, Struct

from .core import FT_BOOL, FT_BYTES, FT_STR, FT_UINT, Dissection, Node, field

SERVICES = {0x30: "full-read", 0x3F: "partial-read", 0x40: "full-write", 0x4F: "partial-write"}
SERVICE_TEXT = {0x30: "Full read", 0x3F: "Partial read", 0x40: "Full write", 0x4F: "Partial write"}
RESPONSES = {
    0x00: "ok", 0x01: "error", 0x02: "service-not-supported", 0x03: "insufficient-security",
    0x04: "operation-not-possible", 0x05: "inappropriate-action-requested",
    0x06: "device-busy", 0x07: "data-not-ready", 0x08: "data-locked",
    0x09: "renegotiate-request", 0x0A: "invalid-service-sequence-state",
    0x0B: "authentication-failure", 0x0C: "invalid-sequence-number",
}
# MEP guide wording for the codes it names (0x01..0x05, 0x0B, 0x0C); 0x06..0x0A are the
# C12.18 names for the same code space.
RESPONSE_TEXT = {
    0x00: "OK", 0x01: "Unrecognised request", 0x02: "Service not supported",
    0x03: "No permission", 0x04: "Operation not possible", 0x05: "Table operation not possible",
    0x06: "Device busy", 0x07: "Data not ready", 0x08: "Data locked", 0x09: "Renegotiate request",
    0x0A: "Invalid service sequence state", 0x0B: "Authentication failure",
    0x0C: "Invalid sequence number",
}
RESPONSE_CODES = tuple(RESPONSES)

# The fixed part of each request after the code byte: one declaration used by the
# dissector (parse, field offsets) and the builder.  Written data (count bytes) follows
# the fixed part of the write services.
_INT = {2: Int16ub, 3: Int24ub}
REQUEST_FIELDS = {
    0x30: (("table", 2),),
    0x3F: (("table", 2), ("offset", 3), ("count", 2)),
    0x40: (("table", 2), ("count", 2)),
    0x4F: (("table", 2), ("offset", 3), ("count", 2)),
}
REQUEST_LAYOUTS = {code: Struct(*[name / _INT[size] for name, size in flds]).compile()
                   for code, flds in REQUEST_FIELDS.items()}
WRITES = (0x40, 0x4F)

# ANSI C12.19 standard (basic) table names, hand-authored from the standard's table list.
BT_NAMES = {
    0: "General Configuration", 1: "General Manufacturer Identification", 2: "Device Nameplate",
    3: "ED Mode Status", 4: "Pending Status", 5: "Device Identification",
    6: "Utility Information", 7: "Procedure Initiate", 8: "Procedure Response",
    10: "Dimension Sources Limiting", 11: "Actual Sources Limiting", 12: "Units of Measure Entry",
    13: "Demand Control", 14: "Data Control", 15: "Constants", 16: "Source Definition",
    20: "Dimension Register", 21: "Actual Register", 22: "Data Selection",
    23: "Current Register Data", 24: "Previous Season Data", 25: "Previous Demand Reset Data",
    26: "Self Read Data", 27: "Present Register Selection", 28: "Present Register Data",
    30: "Dimension Display", 31: "Actual Display", 32: "Display Source", 33: "Primary Display List",
    34: "Secondary Display List",
    40: "Dimension Security Limiting", 41: "Actual Security Limiting", 42: "Security",
    43: "Default Access Control", 44: "Access Control", 45: "Key",
    50: "Dimension Time and TOU", 51: "Actual Time and TOU", 52: "Clock", 53: "Time Offset",
    54: "Calendar", 55: "Clock State", 56: "Time Remaining",
    60: "Dimension Load Profile", 61: "Actual Load Profile", 62: "Load Profile Control",
    63: "Load Profile Status", 64: "Load Profile Data Set 1", 65: "Load Profile Data Set 2",
    66: "Load Profile Data Set 3", 67: "Load Profile Data Set 4",
    70: "Dimension Log", 71: "Actual Log", 72: "Events Identification",
    73: "History Log Control", 74: "History Log Data", 75: "Event Log Control",
    76: "Event Log Data",
}
ET_BASE = 2048

field("osgp", FT_BOOL, "OSGP application message")
field("osgp.code", FT_UINT, "OSGP request/response code", labels=SERVICE_TEXT, base="hex")
field("osgp.service", FT_STR, "OSGP table service (full-read, partial-read, full-write, partial-write)")
field("osgp.direction", FT_STR, "request or response")
field("osgp.table", FT_UINT, "Table number (BT 0..2047, ET = 2048 + n)")
field("osgp.table.name", FT_STR, "Table name (BTnn/ETnn and C12.19 name)")
field("osgp.offset", FT_UINT, "Table offset (partial access)")
field("osgp.count", FT_UINT, "Byte count")
field("osgp.data", FT_BYTES, "Table data")
field("osgp.seq", FT_UINT, "Sequence number (legacy security trailer)")
field("osgp.digest", FT_BYTES, "Digest (OMA MAC, 8 bytes)")
field("osgp.response", FT_STR, "Response status name", base="hex")
field("osgp.response.code", FT_UINT, "Response status code", labels=RESPONSE_TEXT, base="hex")
field("osgp.expected_seq", FT_UINT, "Sequence number expected by the device (invalid-sequence response)")
field("osgp.error", FT_BOOL, "The response reports an error")


def table_name(t: int) -> str:
    if t < ET_BASE:
        n = BT_NAMES.get(t)
        return f"BT{t:02d}" + (f" {n}" if n else "")
    return f"ET{t - ET_BASE:02d}"


def _trailer(buf, p: int, end: int, d: Dissection, node, request: bool) -> None:
    r = end - p
    if request and r in (4, 12):
        d.add(node, "osgp.seq", int.from_bytes(buf[p:p + 4], "big"), p, 4)
        p += 4
        r -= 4
    if r == 8:
        d.add(node, "osgp.digest", bytes(buf[p:p + 8]), p, 8)
    elif r:
        d.note("warn", "malformed", "osgp", p,
               f"{r} unexpected bytes after the message (a trailer is 12 bytes: sequence 4 + digest 8)", node)


def dissect_request(buf, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """An OSGP request; buf[off] is the service code."""
    code = buf[off]
    svc = SERVICES.get(code)
    node = d.layer("osgp", "OSGP table service", off, end - off)
    tree = node is not None
    if svc is None:
        d.malformed("osgp", off, f"unknown OSGP request code 0x{code:02x}", node)
        return
    d.add(node, "osgp.direction", "request", off, 1)
    d.add(node, "osgp.code", code, off, 1)
    d.add(node, "osgp.service", svc, off, 1)
    p = off + 1
    flds = REQUEST_FIELDS[code]
    fixed = sum(n for _, n in flds)
    if end - p < fixed:
        d.malformed("osgp", p, f"{SERVICE_TEXT[code]} needs {fixed} bytes, {end - p} present", node)
        return
    v = REQUEST_LAYOUTS[code].parse(bytes(buf[p:p + fixed]))
    tbl = v.table
    name = table_name(tbl)
    for fname, size in flds:
        if fname == "table":
            d.add(node, "osgp.table", tbl, p, 2, f"Table: {name} ({tbl}, 0x{tbl:04x})" if tree else None)
            d.add(node, "osgp.table.name", name, p, 2)
        else:
            d.add(node, "osgp." + fname, v[fname], p, size)
        p += size
    offset = v.get("offset")
    count = v.get("count")
    partial = offset is not None
    write = code in WRITES
    if write:
        if count > end - p:
            d.malformed("osgp", p, f"count {count} exceeds the {end - p} bytes present", node)
            count = end - p
        d.add(node, "osgp.data", bytes(buf[p:p + count]), p, count)
        p += count
    _trailer(buf, p, end, d, node, True)
    if tree:
        extra = f" offset {offset} count {count}" if partial else (f" count {count}" if write else "")
        node.text = f"OSGP {SERVICE_TEXT[code]} request, {name}{extra}"
    info = f"OSGP {svc} {name.split(' ')[0]}"
    if partial:
        info += f" off={offset} cnt={count}"
    d.set_info(info)


def dissect_response(buf, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """An OSGP response; buf[off] is the status code."""
    code = buf[off]
    node = d.layer("osgp", "OSGP table service response", off, end - off)
    tree = node is not None
    name = RESPONSES.get(code, f"0x{code:02x}")
    d.add(node, "osgp.direction", "response", off, 1)
    d.add(node, "osgp.response.code", code, off, 1)
    d.add(node, "osgp.response", name, off, 1)
    d.add(node, "osgp.error", code != 0, off, 1)
    p = off + 1
    r = end - p
    kind = ""
    if code == 0x00:
        if r >= 2:
            count = int.from_bytes(buf[p:p + 2], "big")
            if r - 2 - count in (0, 8):
                kind = "read"
                d.add(node, "osgp.count", count, p, 2)
                d.add(node, "osgp.data", bytes(buf[p + 2:p + 2 + count]), p + 2, count)
                p += 2 + count
        _trailer(buf, p, end, d, node, False)
    elif code == 0x0C:
        if r >= 4:
            d.add(node, "osgp.expected_seq", int.from_bytes(buf[p:p + 4], "big"), p, 4)
            p += 4
        else:
            d.malformed("osgp", p, "invalid-sequence response without the expected sequence number", node)
        _trailer(buf, p, end, d, node, False)
    else:
        _trailer(buf, p, end, d, node, False)
    if code == 0x0B:
        d.note("warn", "security", "osgp", off, "OSGP authentication failure", node)
    if tree:
        node.text = f"OSGP response: {RESPONSE_TEXT.get(code, name)}" + (f" ({kind} data)" if kind else "")
    d.set_info(f"OSGP response {name}" + (f" ({kind} data)" if kind else ""))


def build_request(service, table: int, offset: int | None = None, count: int | None = None,
                  data: bytes = b"", seq: int | None = None, digest: bytes | None = None) -> bytes:
    """Build an OSGP request APDU (code byte first).  `service` is a code (0x30, 0x3F, 0x40,
    0x4F) or a name ("full-read", "partial-read", "full-write", "partial-write")."""
    if isinstance(service, str):
        rev = {v: k for k, v in SERVICES.items()}
        if service not in rev:
            raise ValueError(f"unknown OSGP service {service!r}")
        code = rev[service]
    else:
        code = int(service)
        if code not in SERVICES:
            raise ValueError(f"unknown OSGP service code 0x{code:02x}")
    vals = {"table": table & 0xFFFF, "offset": (offset or 0) & 0xFFFFFF,
            "count": (len(data) if count is None and code in WRITES else (count or 0)) & 0xFFFF}
    out = bytearray([code]) + REQUEST_LAYOUTS[code].build(vals)
    if code in WRITES:
        out += bytes(data)
    if seq is not None:
        out += (seq & 0xFFFFFFFF).to_bytes(4, "big")
    if digest is not None:
        if len(digest) != 8:
            raise ValueError("OSGP digest is 8 bytes")
        out += digest
    return bytes(out)


def build_response(code: int = 0, data: bytes | None = None, expected_seq: int | None = None,
                   digest: bytes | None = None) -> bytes:
    """Build an OSGP response APDU: status code, [count + data], [expected seq], [digest]."""
    out = bytearray([code & 0xFF])
    if data is not None:
        out += len(data).to_bytes(2, "big") + bytes(data)
    if expected_seq is not None:
        out += (expected_seq & 0xFFFFFFFF).to_bytes(4, "big")
    if digest is not None:
        out += digest
    return bytes(out)
