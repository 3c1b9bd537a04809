"""ISO/IEC 14908-1 (LonTalk): L2 header + CRC, NPDU (versions 0/1/2), address formats
0/1/2a/2b/3, domains 0/1/3/6 bytes, TPDU/SPDU/AuthPDU, APDU classes (NV, application,
foreign, network diagnostics, network management with arguments).

Field names and value conventions follow Wireshark's `lon.*` fields where Wireshark has the
field (masked values are shifted; `lon.code` is the code masked with 0x3F for application
and foreign frames and the whole byte for ND/NM, as Wireshark does); our own fields extend
the namespace (`lon.crc*`, `lon.tid12`, `lon.nv.value`, `lon.nm.*`, `lon.nd.*`...).

Layouts are declared once as byte-aligned Construct structs (`LAYOUTS`); the builders use
them, and the fast reader takes its field offsets from the same structs (`_off`).
Hand-offs go through tables: PDU format, address format, TPDU/SPDU type and APDU class are
all table look-ups; application and foreign APDUs go to `table("lon.apdu")` keyed by the
first APDU byte, with the dissector receiving the APDU *starting at the code byte*.
"""
from __future__ import annotations

from binascii import crc_hqx

from construct import Bytes, Int8ub, Int16ub, Struct

from .core import (FT_BOOL, FT_BYTES, FT_NONE, FT_STR, FT_UINT, Truncated, field, fields,
                   need, table)

# --------------------------------------------------------------------------- layouts
# One definition per fixed layout.  Bit fields inside a byte are given as (shift, mask).

L2HDR = Struct("ppdu" / Int8ub, "npdu" / Int8ub)
ADDR_LAYOUTS = {
    # key: address format code (2 splits into 2a / 2b on the selector bit of byte 1)
    "0": Struct("src_subnet" / Int8ub, "src_node" / Int8ub, "dst_subnet" / Int8ub),
    "1": Struct("src_subnet" / Int8ub, "src_node" / Int8ub, "group" / Int8ub),
    "2a": Struct("src_subnet" / Int8ub, "src_node" / Int8ub, "dst_subnet" / Int8ub,
                 "dst_node" / Int8ub),
    "2b": Struct("src_subnet" / Int8ub, "src_node" / Int8ub, "dst_subnet" / Int8ub,
                 "dst_node" / Int8ub, "group" / Int8ub, "member" / Int8ub),
    "3": Struct("src_subnet" / Int8ub, "src_node" / Int8ub, "dst_subnet" / Int8ub,
                "nid" / Bytes(6)),
}
NV_HDR = Struct("nv" / Int16ub)
SERVICE_PIN = Struct("nid" / Bytes(6), "program_id" / Bytes(8))
DOMAIN_ENTRY = Struct("domain_id" / Bytes(6), "subnet" / Int8ub, "node" / Int8ub,
                      "length" / Int8ub, "key" / Bytes(6))
ADDR_ENTRY = Struct("b0" / Int8ub, "b1" / Int8ub, "b2" / Int8ub, "b3" / Int8ub, "b4" / Int8ub)
NV_ENTRY = Struct("b0" / Int8ub, "b1" / Int8ub, "b2" / Int8ub)
MEM_REQ = Struct("mode" / Int8ub, "offset" / Int16ub, "count" / Int8ub)
ND_STATUS = Struct("xmit_errors" / Int16ub, "tx_timeouts" / Int16ub, "rcv_tx_full" / Int16ub,
                   "lost_msgs" / Int16ub, "missed_msgs" / Int16ub, "reset_cause" / Int8ub,
                   "node_state" / Int8ub, "version" / Int8ub, "error_log" / Int8ub,
                   "model" / Int8ub)


def _off(s: Struct) -> dict:
    """Field offsets of a fixed-size struct: {name: (offset, size)} (the fast reader's view
    of the same layout)."""
    out, o = {}, 0
    for sc in s.subcons:
        n = sc.sizeof()
        out[sc.name] = (o, n)
        o += n
    return out


ADDR_SIZE = {k: v.sizeof() for k, v in ADDR_LAYOUTS.items()}
_O = {k: {n: o for n, (o, _) in _off(v).items()} for k, v in ADDR_LAYOUTS.items()}

# bit fields: name -> (shift, mask)
PPDU_BITS = {"prio": (7, 1), "alt_path": (6, 1), "delta_bl": (0, 0x3F)}
NPDU_BITS = {"vers": (6, 3), "pdufmt": (4, 3), "addrfmt": (2, 3), "domainlen": (0, 3)}
XPDU_BITS = {"auth": (7, 1), "type": (4, 7), "tid": (0, 0xF)}          # TPDU / SPDU
AUTH_BITS = {"fmt": (6, 3), "type": (4, 3), "tid": (0, 0xF)}           # AuthPDU
NV_BITS = {"dir": (14, 1), "selector": (0, 0x3FFF)}
SRC_NODE_BITS = {"sel": (7, 1), "node": (0, 0x7F)}

DOMAIN_BYTES = (0, 1, 3, 6)
PDU_NAMES = {0: "TPDU", 1: "SPDU", 2: "AuthPDU", 3: "APDU"}
ADDR_NAMES = {0: "Subnet broadcast (0)", 1: "Multicast (1)", 2: "Unicast (2a) / multicast ack (2b)",
              3: "Neuron ID (3)"}
TPDU_TYPES = {0: "ACKD", 1: "UNACKD_RPT", 2: "ACK", 4: "REMINDER", 5: "REM/MSG"}
SPDU_TYPES = {0: "REQUEST", 2: "RESPONSE", 4: "REMINDER", 5: "REM/MSG"}
AUTH_TYPES = {0: "CHALLENGE", 1: "CHALLENGE_OMA", 2: "REPLY", 3: "REPLY_OMA"}
VERSIONS = {0: "legacy (4-bit TID)", 1: "encapsulated IP", 2: "enhanced (12-bit TID)"}

ND_CODES = {0x51: "query status", 0x52: "proxy", 0x53: "clear status", 0x54: "query transceiver status",
            0x55: "query EVN SDI", 0x56: "query status (flex domain)",
            0x57: "query transceiver status bidirectional", 0x58: "compute phase",
            0x59: "get full version"}
NM_CODES = {0x60: "expanded", 0x61: "query ID", 0x62: "respond to query", 0x63: "update domain",
            0x64: "leave domain", 0x65: "update key", 0x66: "update address",
            0x67: "query address", 0x68: "query NV config", 0x69: "update group address",
            0x6A: "query domain", 0x6B: "update NV config", 0x6C: "set node mode",
            0x6D: "read memory", 0x6E: "write memory", 0x6F: "checksum recalculate",
            0x70: "wink", 0x71: "memory refresh", 0x72: "query SNVT", 0x73: "NV fetch",
            0x7D: "device escape", 0x7E: "router escape", 0x7F: "service pin"}
FF_CODES = {0x4C: "proxy failure", 0x4D: "proxy", 0x4E: "AES-GCM wrapper", 0x4F: "foreign offline"}
CRC_STATUS = ("good", "bad", "absent")
ND_PROXY_CMDS = {0: "query unconfigured ID", 1: "query status", 2: "query transceiver status"}
NM_EXPANDED = {0x01: "query version", 0x02: "update NV by index", 0x07: "update domain (no key)",
               0x08: "report domain (no key)", 0x09: "report key", 0x0A: "update key",
               0x0F: "initialize configuration", 0x11: "update NV config", 0x12: "query NV config",
               0x13: "update NV alias config", 0x14: "query NV alias config",
               0x15: "address mapping announcement", 0x16: "address mapping announcement",
               0x17: "address mapping announcement",
               0x18: "query LS address mapping announcement", 0x19: "query IP address"}
MEM_FORMS = {0: "no action", 1: "recalculate both checksums", 4: "recalculate config checksum",
             8: "reset", 9: "recalculate both checksums and reset", 12: "recalculate config checksum and reset"}
ADDR_TYPES = {0: "unbound", 1: "subnet/node", 2: "turnaround", 3: "broadcast", 0x80: "group"}
NODE_MODES = {0: "application offline", 1: "application online", 2: "application reset",
              3: "change state", 4: "physical reset"}
NODE_STATES = {2: "unconfigured", 3: "applicationless", 4: "configured", 6: "hard offline",
               0xC: "configured, soft offline"}
MEM_MODES = {0: "absolute", 1: "read-only relative", 2: "config relative", 3: "statistics relative"}
QUERY_ID_SEL = {0: "unconfigured", 1: "selected", 2: "selected unconfigured"}
NV_SERVICES = {0: "ACKD", 1: "UNACKD_RPT", 2: "UNACKD", 3: "REQUEST"}
RESET_CAUSES = {0x00: "cleared", 0x01: "power-up", 0x02: "external", 0x0C: "watchdog",
                0x14: "software"}

# --------------------------------------------------------------------------- fields

field("lon", FT_NONE, "ISO/IEC 14908-1 LonTalk")
fields("lon.", FT_UINT, [
    ("ppdu", "PPDU", None, "hex"),
    ("prio", "Priority"),
    ("alt_path", "Alt path"),
    ("delta_bl", "Delta BL"),
    ("npdu", "NPDU"),
    ("vers", "Version", VERSIONS, "hex"),
    ("pdufmt", "PDU format", PDU_NAMES, "hex"),
    ("addrfmt", "Address format", ADDR_NAMES, "hex"),
    ("domainlen", "Domain length code (0/1/2/3 -> 0/1/3/6 bytes)", None, "hex"),
    ("srcnet", "Source subnet", None, "hex"),
    ("srcnode", "Source node", None, "hex"),
    ("dstnet", "Destination subnet", None, "hex"),
    ("dstgrp", "Destination group", None, "hex"),
    ("dstnode", "Destination node", None, "hex"),
    ("grp", "Group", None, "hex"),
    ("grpmem", "Group member", None, "hex"),
    ("tpdu", "TPDU", None, "hex"),
    ("auth", "Auth", None, "hex"),
    ("tpdu_type", "TPDU type", TPDU_TYPES, "hex"),
    ("trans_no", "Transaction number", None, "hex"),
    ("tid12", "Transaction number (12-bit, version 2)", None, "hex"),
    ("spdu", "SPDU", None, "hex"),
    ("spdu_type", "SPDU type", SPDU_TYPES, "hex"),
    ("spdu.mlen", "Length of M_List", None, "hex"),
    ("spdu.mlist", "M_List byte", None, "hex"),
    ("spdu.member", "Member that has acknowledged (from M_List)"),
    ("authpdu", "AuthPDU", None, "hex"),
    ("authpdu_addrfmt", "FMT (address format of the authenticated message)", None, "hex"),
    ("authpdu_type", "AuthPDU type", AUTH_TYPES, "hex"),
    ("authpdu_group", "AuthPDU multicast group", None, "hex"),
    ("nv", "Network Variable", None, "hex"),
    ("nv.dir", "NV direction (1 = output)", None, "hex"),
    ("nv.selector", "NV selector", None, "hex"),
    ("application", "Application", None, "hex"),
    ("code", "Code", None, "hex"),
    ("nm", "Network Management", NM_CODES, "hex"),
    ("nd", "Network Diagnostic", ND_CODES, "hex"),
    ("ff", "Foreign Frame", FF_CODES, "hex"),
    ("crc", "CRC-16", None, "hex"),
])
fields("lon.", FT_BYTES, [
    ("uid", "Unique node ID"),
    ("domain", "Domain"),
    ("authpdu_value", "AuthPDU challenge / reply value"),
    ("nv.value", "NV value"),
])
fields("lon.", FT_STR, [
    ("crc.status", "CRC status (good / bad / absent)"),
])
field("lon.nv.poll", FT_BOOL, "NV poll (request without data)")
field("lon.tpdu_type.unknown", FT_NONE, "Unexpected TPDU type")
field("lon.spdu_type.unknown", FT_NONE, "Unexpected SPDU type")
field("data.data", FT_BYTES, "Data")
# NM / ND arguments (our own)
fields("lon.nm.", FT_UINT, [
    ("selector", "Query ID selector", QUERY_ID_SEL),
    ("respond", "Respond to query (1 = on)"),
    ("domain_index", "Domain index"),
    ("subnet", "Subnet"),
    ("node", "Node"),
    ("domain_len", "Domain length"),
    ("addr_index", "Address table index"),
    ("addr_type", "Address entry type", ADDR_TYPES),
    ("group_size", "Group size"),
    ("member", "Group member"),
    ("group", "Group"),
    ("backlog", "Broadcast backlog"),
    ("rpt_timer", "Repeat timer"),
    ("retry", "Retry count"),
    ("rcv_timer", "Receive timer"),
    ("tx_timer", "Transmit timer"),
    ("nv_index", "NV index"),
    ("nv_priority", "NV priority"),
    ("nv_dir", "NV direction (1 = output)"),
    ("nv_selector", "NV selector", None, "hex"),
    ("nv_turnaround", "NV turnaround"),
    ("nv_service", "NV service", NV_SERVICES),
    ("nv_auth", "NV authenticated"),
    ("nv_addr_index", "NV address table index"),
    ("node_mode", "Node mode", NODE_MODES),
    ("node_state", "Node state", NODE_STATES, "hex"),
    ("mem_mode", "Memory addressing mode", MEM_MODES),
    ("mem_offset", "Memory offset", None, "hex"),
    ("mem_count", "Byte count"),
    ("mem_form", "Write form (post-write action)", MEM_FORMS, "hex"),
    ("cksum", "Checksum recalculation selector", MEM_FORMS, "hex"),
    ("sub", "Sub-command", None, "hex"),
])
fields("lon.nm.", FT_BYTES, [
    ("domain_id", "Domain ID"),
    ("key", "Authentication key bytes carried in the message"),
    ("nid", "Neuron ID"),
    ("program_id", "Program ID"),
    ("mem_data", "Memory data"),
    ("data", "NM data"),
])
fields("lon.nd.", FT_BYTES, [("data", "ND data")])
field("lon.nd.proxy_cmd", FT_UINT, "ND proxy sub-command", ND_PROXY_CMDS)
# Fields that only responses decoded in context carry (produced by the transaction
# tracker, analyzer/lontrack.py) are registered there, so that field-driven parallel
# decoding can tell stage fields from stateless ones.


# --------------------------------------------------------------------------- CRC

def _crc_table() -> list[int]:
    t = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) & 0xFFFF if c & 0x8000 else (c << 1) & 0xFFFF
        t.append(c)
    return t


_CRC_T = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/GENIBUS of `data` (poly 0x1021, init 0xFFFF, not reflected, xorout 0xFFFF):
    the LonTalk frame CRC over the LPDU header through the end of the NPDU.
    `crc16(b"123456789") == 0xD64E`."""
    return crc_hqx(bytes(data), 0xFFFF) ^ 0xFFFF   # CRC-CCITT core in C; GENIBUS = init/xorout 0xFFFF


def crc16_slow(data: bytes) -> int:
    """Table-driven reference implementation of `crc16` (used by the tests)."""
    c = 0xFFFF
    t = _CRC_T
    for b in data:
        c = ((c << 8) & 0xFF00) ^ t[(c >> 8) ^ b]
    return c ^ 0xFFFF


# --------------------------------------------------------------------------- helpers

def _fast(fl, names, vals):
    """Fast-pass field recording (no tree): many values in one call."""
    for n, v in zip(names, vals):
        lst = fl.get(n)
        if lst is None:
            fl[n] = [v]
        else:
            lst.append(v)


_RECORDERS: list[tuple] = []        # the field names of each recorder, by recorder id


def _recorder_source(names: tuple, sel: list[int], head: str = "") -> str:
    args = ", ".join(f"v{i}" for i in range(len(names)))
    if not sel:
        return f"def rec(fl, {args}):\n    return None\n"
    items = ", ".join(f"{names[i]!r}: [v{i}]" for i in sel)
    vals = ", ".join(f"v{i}" for i in sel)
    # a frozenset lets isdisjoint walk the smaller side (few fields recorded yet, or few names)
    return (f"def rec(fl, {args}):\n{head}"
            f"    if fl.keys().isdisjoint(NAMESET):\n"
            f"        fl.update({{{items}}})\n"
            f"    else:\n"
            f"        _fast(fl, NAMES, ({vals},))\n")


def make_recorder(names: tuple):
    """A fast-pass recorder for a fixed list of field names: `rec(fields, v1, v2, ...)`.
    Generated once per layout (like Construct's compiler): when none of the fields is
    present yet (the usual case) all values go in with one dict update, otherwise they are
    appended one by one.  A `fields` dict made by `keep_fields` records only the names it
    keeps (a recorder generated for that subset)."""
    names = tuple(names)
    rid = len(_RECORDERS)
    _RECORDERS.append(names)
    args = ", ".join(f"v{i}" for i in range(len(names)))
    head = (f"    if fl.__class__ is not dict:\n"
            f"        try:\n"
            f"            r = fl.RECORDERS[{rid}]\n"
            f"        except AttributeError:\n"
            f"            r = _fast\n"
            f"        if r is not _fast:\n"
            f"            if r is not None:\n"
            f"                r(fl, {args})\n"
            f"            return\n")
    src = _recorder_source(names, list(range(len(names))), head)
    ns = {"_fast": _fast, "NAMES": names, "NAMESET": frozenset(names)}
    exec(compile(src, f"<recorder {names[0]}>", "exec"), ns)
    return ns["rec"]


class _KeptRecorders(dict):
    """Recorder id -> the recorder of the kept names only (generated on first use), None
    when it keeps none."""

    def __init__(self, keep: frozenset):
        super().__init__()
        self.keep = keep

    def __missing__(self, rid: int):
        names = _RECORDERS[rid]
        sel = [i for i, n in enumerate(names) if n in self.keep]
        if not sel:
            self[rid] = None
            return None
        kept = tuple(names[i] for i in sel)
        ns = {"_fast": _fast, "NAMES": kept, "NAMESET": frozenset(kept)}
        exec(compile(_recorder_source(names, sel), f"<recorder {names[0]} kept>", "exec"), ns)
        self[rid] = ns["rec"]
        return ns["rec"]


def keep_fields(keep) -> type:
    """A dict class for `Dissection.fields` whose recorders (`make_recorder`) record only
    the field names in `keep`: for consumers that read nothing else (`-T fields` with a
    fixed list of fields).  Fields added with `d.add`/`d.layer` are recorded as always."""
    kept = frozenset(keep)

    class KeptFields(dict):
        __slots__ = ()
        KEEP = kept
        RECORDERS = _KeptRecorders(kept)
    for rid in range(len(_RECORDERS)):      # generated now (before worker processes fork)
        KeptFields.RECORDERS[rid]
    return KeptFields


def _wants(fl, name: str) -> bool:
    """Whether a fields dict records `name` (see `keep_fields`)."""
    if fl.__class__ is dict:
        return True
    keep = getattr(fl.__class__, "KEEP", None)
    return keep is None or name in keep


_rec_nv = make_recorder(("lon.nv", "lon.nv.dir", "lon.nv.selector"))
_rec_nv_value = make_recorder(("lon.nv.value",))
_rec_app = make_recorder(("lon.application", "lon.code"))
_rec_ff = make_recorder(("lon.ff", "lon.code"))
_rec_nd = make_recorder(("lon.nd", "lon.code"))
_rec_nm = make_recorder(("lon.nm", "lon.code"))
_rec_2a = make_recorder(("lon.dstnet", "lon.dstnode"))
_rec_2b = make_recorder(("lon.grp", "lon.grpmem"))


class _Frame:
    """Per-frame scratch passed between the layer functions."""
    __slots__ = ("lon", "vers", "tid", "tag", "what", "parent", "resp", "code", "app")

    def __init__(self, lon=None, vers=0, parent=None):
        self.lon = lon
        self.vers = vers
        self.parent = parent
        self.app = None
        self.resp = False
        self.what = ""
        self.tid = None
        self.code = None
        self.tag = ""


# A lean dissection (Dissection.lean) sets only lon (None), vers and resp of its _Frame:
# the layer functions read the others (tag, tid, what, app, code, parent) only to build
# the Info text and ctx["lon"], which a lean dissection skips.
_new_frame = _Frame.__new__


def _mlist_members(ml: bytes) -> list[int]:
    out = []
    for i, b in enumerate(ml):
        if b:
            out.extend(_BIT_MEMBERS[b] if i == 0 else [i * 8 + m for m in _BIT_MEMBERS[b]])
    return out


_BIT_MEMBERS = [[bit for bit in range(8) if b >> bit & 1] for b in range(256)]


# --------------------------------------------------------------------------- NM / ND args
# Each decoder: fn(buf, off, end, d, node) -> short info suffix ("" when nothing).

def _u(d, node, name, v, off, n, text=None):
    d.add(node, name, v, off, n, text)


def _nm_query_id(buf, off, end, d, node):
    if off >= end:
        return ""
    sel = buf[off]
    _u(d, node, "lon.nm.selector", sel, off, 1)
    if end - off >= 5:  # conditional form: mode, offset(2), count, data
        _mem_req(buf, off + 1, end, d, node, with_form=False, data=True)
    return QUERY_ID_SEL.get(sel, "")


def _nm_respond(buf, off, end, d, node):
    need(end, off, 1, "respond to query")
    _u(d, node, "lon.nm.respond", buf[off], off, 1)
    return "on" if buf[off] else "off"


def _domain_entry(buf, off, end, d, node, with_index=True):
    if with_index:
        need(end, off, 1, "domain index")
        _u(d, node, "lon.nm.domain_index", buf[off], off, 1)
        off += 1
    need(end, off, 9, "domain entry")
    dlen = buf[off + 8]
    dom = buf[off: off + 6]
    _u(d, node, "lon.nm.domain_id", dom, off, 6)
    _u(d, node, "lon.nm.subnet", buf[off + 6], off + 6, 1)
    _u(d, node, "lon.nm.node", buf[off + 7] & 0x7F, off + 7, 1)
    _u(d, node, "lon.nm.domain_len", dlen, off + 8, 1)
    if end - off >= 15:
        _u(d, node, "lon.nm.key", buf[off + 9: off + 15], off + 9, 6)
    shown = dom[:dlen] if dlen in DOMAIN_BYTES else dom
    return f"domain {shown.hex() or '(none)'} {buf[off + 6]}/{buf[off + 7] & 0x7F}"


def _nm_update_domain(buf, off, end, d, node):
    return _domain_entry(buf, off, end, d, node, True)


def _nm_domain_index(buf, off, end, d, node):
    need(end, off, 1, "domain index")
    _u(d, node, "lon.nm.domain_index", buf[off], off, 1)
    return f"index {buf[off]}"


def _nm_update_key(buf, off, end, d, node):
    need(end, off, 1, "domain index")
    _u(d, node, "lon.nm.domain_index", buf[off], off, 1)
    if end - off > 1:
        _u(d, node, "lon.nm.key", buf[off + 1: min(end, off + 7)], off + 1, min(end, off + 7) - off - 1)
    return f"index {buf[off]}"


def _addr_entry(buf, off, end, d, node):
    need(end, off, 5, "address table entry")
    b0, b1, b2, b3, b4 = buf[off: off + 5]
    if b0 & 0x80:
        _u(d, node, "lon.nm.addr_type", 0x80, off, 1)
        _u(d, node, "lon.nm.group_size", b0 & 0x7F, off, 1)
        _u(d, node, "lon.nm.domain_index", b1 >> 7, off + 1, 1)
        _u(d, node, "lon.nm.member", b1 & 0x7F, off + 1, 1)
        _u(d, node, "lon.nm.rpt_timer", b2 >> 4, off + 2, 1)
        _u(d, node, "lon.nm.retry", b2 & 0xF, off + 2, 1)
        _u(d, node, "lon.nm.rcv_timer", b3 >> 4, off + 3, 1)
        _u(d, node, "lon.nm.tx_timer", b3 & 0xF, off + 3, 1)
        _u(d, node, "lon.nm.group", b4, off + 4, 1)
        return f"group {b4} member {b1 & 0x7F}"
    _u(d, node, "lon.nm.addr_type", b0, off, 1)
    if b0 in (0, 2):
        return ADDR_TYPES.get(b0, "")
    _u(d, node, "lon.nm.domain_index", b1 >> 7, off + 1, 1)
    if b0 == 3:
        _u(d, node, "lon.nm.backlog", b1 & 0x3F, off + 1, 1)
    else:
        _u(d, node, "lon.nm.node", b1 & 0x7F, off + 1, 1)
    _u(d, node, "lon.nm.rpt_timer", b2 >> 4, off + 2, 1)
    _u(d, node, "lon.nm.retry", b2 & 0xF, off + 2, 1)
    _u(d, node, "lon.nm.tx_timer", b3 & 0xF, off + 3, 1)
    _u(d, node, "lon.nm.subnet", b4, off + 4, 1)
    if b0 == 3:
        return f"broadcast subnet {b4}"
    if b0 == 1:
        return f"{b4}/{b1 & 0x7F}"
    return f"type {b0}"


def _nm_update_address(buf, off, end, d, node):
    need(end, off, 1, "address index")
    _u(d, node, "lon.nm.addr_index", buf[off], off, 1)
    return f"index {buf[off]} " + _addr_entry(buf, off + 1, end, d, node)


def _nm_query_address(buf, off, end, d, node):
    need(end, off, 1, "address index")
    _u(d, node, "lon.nm.addr_index", buf[off], off, 1)
    return f"index {buf[off]}"


def _nv_index(buf, off, end, d, node):
    need(end, off, 1, "NV index")
    if buf[off] == 0xFF:  # escaped 16-bit index
        need(end, off + 1, 2, "NV index (escaped)")
        idx = buf[off + 1] << 8 | buf[off + 2]
        _u(d, node, "lon.nm.nv_index", idx, off, 3)
        return idx, off + 3
    _u(d, node, "lon.nm.nv_index", buf[off], off, 1)
    return buf[off], off + 1


def _nv_entry(buf, off, end, d, node):
    need(end, off, 3, "NV config entry")
    b0, b1, b2 = buf[off: off + 3]
    sel = (b0 & 0x3F) << 8 | b1
    _u(d, node, "lon.nm.nv_priority", b0 >> 7, off, 1)
    _u(d, node, "lon.nm.nv_dir", b0 >> 6 & 1, off, 1)
    _u(d, node, "lon.nm.nv_selector", sel, off, 2)
    _u(d, node, "lon.nm.nv_turnaround", b2 >> 7, off + 2, 1)
    _u(d, node, "lon.nm.nv_service", b2 >> 5 & 3, off + 2, 1)
    _u(d, node, "lon.nm.nv_auth", b2 >> 4 & 1, off + 2, 1)
    _u(d, node, "lon.nm.nv_addr_index", b2 & 0xF, off + 2, 1)
    return f"sel 0x{sel:x} addr {b2 & 0xF}"


def _nm_query_nv(buf, off, end, d, node):
    idx, _ = _nv_index(buf, off, end, d, node)
    return f"index {idx}"


def _nm_update_nv(buf, off, end, d, node):
    idx, o = _nv_index(buf, off, end, d, node)
    return f"index {idx} " + _nv_entry(buf, o, end, d, node)


def _nm_set_mode(buf, off, end, d, node):
    need(end, off, 1, "node mode")
    m = buf[off]
    _u(d, node, "lon.nm.node_mode", m, off, 1)
    if m == 3 and end - off >= 2:
        _u(d, node, "lon.nm.node_state", buf[off + 1], off + 1, 1)
        return f"{NODE_MODES[3]} {NODE_STATES.get(buf[off + 1], hex(buf[off + 1]))}"
    return NODE_MODES.get(m, f"mode {m}")


def _mem_req(buf, off, end, d, node, with_form=False, data=False):
    need(end, off, 4, "memory request")
    mode, o1, o2, cnt = buf[off: off + 4]
    ofs = o1 << 8 | o2
    _u(d, node, "lon.nm.mem_mode", mode, off, 1)
    _u(d, node, "lon.nm.mem_offset", ofs, off + 1, 2)
    _u(d, node, "lon.nm.mem_count", cnt, off + 3, 1)
    o = off + 4
    if with_form:
        need(end, o, 1, "write form")
        _u(d, node, "lon.nm.mem_form", buf[o], o, 1)
        o += 1
    if data:
        n = min(cnt, end - o)
        _u(d, node, "lon.nm.mem_data", buf[o: o + n], o, n)
        if n < cnt:
            d.note("warn", "malformed", "lon", o, f"Memory data shorter than count ({n} < {cnt})", node)
    return f"{MEM_MODES.get(mode, mode)} 0x{ofs:04x} count {cnt}"


def _nm_read_mem(buf, off, end, d, node):
    return _mem_req(buf, off, end, d, node)


def _nm_write_mem(buf, off, end, d, node):
    return _mem_req(buf, off, end, d, node, with_form=True, data=True)


def _nm_cksum(buf, off, end, d, node):
    need(end, off, 1, "checksum selector")
    _u(d, node, "lon.nm.cksum", buf[off], off, 1)
    return MEM_FORMS.get(buf[off]) or f"0x{buf[off]:02x}"


def _nm_sub(buf, off, end, d, node):
    """Expanded NM (0x60): a sub-command byte, then its data (shown as bytes)."""
    if off < end:
        _u(d, node, "lon.nm.sub", buf[off], off, 1)
        if end - off > 1:
            _u(d, node, "lon.nm.data", buf[off + 1: end], off + 1, end - off - 1)
        return NM_EXPANDED.get(buf[off]) or f"sub 0x{buf[off]:02x}"
    return ""


def _nm_wink(buf, off, end, d, node):
    """Wink / install (0x70): optional sub-command byte (0 = wink)."""
    if off < end:
        _u(d, node, "lon.nm.sub", buf[off], off, 1)
        if end - off > 1:
            _u(d, node, "lon.nm.data", buf[off + 1: end], off + 1, end - off - 1)
        return f"sub 0x{buf[off]:02x}" if buf[off] else ""
    return ""


_FULL_VERSION = Struct("fw_version" / Int8ub, "fw_variant" / Int8ub, "rom_version" / Int8ub,
                       "minor_version" / Int8ub, "build_number" / Int8ub, "fw_code" / Int8ub)
_FULL_VERSION_OFF = _off(_FULL_VERSION)


def _nd_full_version(buf, off, end, d, node):
    need(end, off, _FULL_VERSION.sizeof(), "full version")
    for name, (o, _) in _FULL_VERSION_OFF.items():
        _u(d, node, "lon.nd." + name, buf[off + o], off + o, 1)
    return f"{buf[off]}.{buf[off + 3]}.{buf[off + 4]}"


_PIN_OFF = _off(SERVICE_PIN)


def _service_pin(buf, off, end, d, node):
    need(end, off, SERVICE_PIN.sizeof(), "service pin")
    (no, nn), (po, pn) = _PIN_OFF["nid"], _PIN_OFF["program_id"]
    _u(d, node, "lon.nm.nid", buf[off + no: off + no + nn], off + no, nn)
    _u(d, node, "lon.nm.program_id", buf[off + po: off + po + pn], off + po, pn)
    return f"nid {buf[off + no: off + no + nn].hex()}"


def _mem_data(buf, off, end, d, node):
    _u(d, node, "lon.nm.mem_data", buf[off:end], off, end - off)
    return f"{end - off} bytes"


_ND_STATUS_OFF = _off(ND_STATUS)


def _nd_status(buf, off, end, d, node):
    need(end, off, ND_STATUS.sizeof(), "status")
    for name, (o, n) in _ND_STATUS_OFF.items():
        v = int.from_bytes(buf[off + o: off + o + n], "big")
        _u(d, node, "lon.nd." + name, v, off + o, n)
    st = buf[off + _ND_STATUS_OFF["node_state"][0]]
    return f"state {NODE_STATES.get(st, hex(st))}"


def _nd_proxy(buf, off, end, d, node):
    """ND proxy command (0x52): a sub-command byte naming the diagnostic the target runs."""
    need(end, off, 1, "proxy sub-command")
    _u(d, node, "lon.nd.proxy_cmd", buf[off], off, 1)
    if end - off > 1:
        _u(d, node, "lon.nd.data", buf[off + 1:end], off + 1, end - off - 1)
    return ND_PROXY_CMDS.get(buf[off]) or f"sub-command {buf[off]}"


def _nd_unconfig_id(buf, off, end, d, node):
    return _service_pin(buf, off, end, d, node)


def _nd_xcvr(buf, off, end, d, node):
    n = min(7, end - off)
    _u(d, node, "lon.nd.xcvr_regs", buf[off: off + n], off, n)
    return ""


def _nd_data(buf, off, end, d, node):
    if end > off:
        _u(d, node, "lon.nd.data", buf[off:end], off, end - off)
    return ""


def _nm_data(buf, off, end, d, node):
    if end > off:
        _u(d, node, "lon.nm.data", buf[off:end], off, end - off)
    return ""


def _none(buf, off, end, d, node):
    if end > off:
        d.note("note", "protocol", "lon", off, f"{end - off} unexpected trailing bytes", node)
    return ""


# code -> (request argument decoder, success-response data decoder)
NM_ARGS = {
    0x60: (_nm_sub, _nm_data),
    0x61: (_nm_query_id, _service_pin),
    0x62: (_nm_respond, _none),
    0x63: (_nm_update_domain, _none),
    0x64: (_nm_domain_index, _none),
    0x65: (_nm_update_key, _none),
    0x66: (_nm_update_address, _none),
    0x67: (_nm_query_address, _addr_entry),
    0x68: (_nm_query_nv, _nv_entry),
    0x69: (_nm_data, _none),
    0x6A: (_nm_domain_index, lambda b, o, e, d, n: _domain_entry(b, o, e, d, n, False)),
    0x6B: (_nm_update_nv, _none),
    0x6C: (_nm_set_mode, _none),
    0x6D: (_nm_read_mem, _mem_data),
    0x6E: (_nm_write_mem, _none),
    0x6F: (_nm_cksum, _none),
    0x70: (_nm_wink, _nm_data),
    0x7F: (_service_pin, _nm_data),
}
ND_ARGS = {
    0x51: (_none, _nd_status),
    0x52: (_nd_proxy, _nd_data),
    0x53: (_none, _none),
    0x54: (_none, _nd_xcvr),
    0x56: (_none, _nd_status),
    0x59: (_none, _nd_full_version),
}


# --------------------------------------------------------------------------- APDU

def _apdu_nv(buf, off, end, d, parent, fr):
    if end - off < 2:
        need(end, off, 2, "NV header")
    v = buf[off] << 8 | buf[off + 1]
    sel = v & 0x3FFF
    dr = v >> 14 & 1
    add = d.add
    if parent is None:
        _rec_nv(d.fields, v, dr, sel)
    else:
        add(parent, "lon.nv", v, off, 2)
        add(parent, "lon.nv.dir", dr, off, 2)
        add(parent, "lon.nv.selector", sel, off, 2)
    n = end - off - 2
    if n > 0 and parent is None:
        _rec_nv_value(d.fields, buf[off + 2:end])
        if d.lean:
            return
        what = "NV update" if fr.resp is False else "NV response"
    elif n > 0:
        add(parent, "lon.nv.value", buf[off + 2:end], off + 2, n)
        what = "NV update" if fr.resp is False else "NV response"
    elif fr.resp:
        what = "NV response"
    else:
        add(parent, "lon.nv.poll", True, off, 2)
        what = "NV poll"
    fr.what = f"{what} sel 0x{sel:x}"


_APDU_TABLE = table("lon.apdu", "LonTalk application/foreign APDUs")


def _handoff(code, buf, off, end, d, parent, fr):
    """Application / foreign APDU -> table("lon.apdu") (the dissector gets the APDU from
    the code byte on).  A summary the payload layer writes becomes the Info text after the
    LonTalk prefix ("ACKD [tid 3] <payload summary>")."""
    if d.lean:          # no summary is read: the hand-off alone
        t = _APDU_TABLE
        if (t.entries or t.heuristics) and t.dispatch(code, buf, off, end, d, parent, try_heuristics=True):
            return
        if end > off + 1 and (parent is not None or _wants(d.fields, "data.data")):
            d.add(parent, "data.data", buf[off + 1:end], off + 1, end - off - 1)
        return
    before = d.info
    d.info = ""
    d.ctx.pop("lon.app_info", None)
    if _APDU_TABLE.dispatch(code, buf, off, end, d, parent, try_heuristics=True):
        app = d.ctx.get("lon.app_info") or d.info
        if app:
            fr.app = app
    elif end > off + 1:
        d.add(parent, "data.data", buf[off + 1:end], off + 1, end - off - 1)
    d.info = before


def _apdu_app(buf, off, end, d, parent, fr):
    code = buf[off]
    if parent is None:
        _rec_app(d.fields, code, code & 0x3F)
    else:
        d.add(parent, "lon.application", code, off, 1)
        d.add(parent, "lon.code", code & 0x3F, off, 1)
    fr.code = code
    if not d.lean:
        if fr.resp:
            fr.what = f"code 0x{code:02x}"
        else:
            fr.what = "application offline" if code == 0x3F else f"application code 0x{code:02x}"
        d.ctx["lon.apdu_code"] = code
    _handoff(code, buf, off, end, d, parent, fr)


def _apdu_ff(buf, off, end, d, parent, fr):
    code = buf[off]
    if parent is None:
        _rec_ff(d.fields, code, code & 0x3F)
    else:
        d.add(parent, "lon.ff", code, off, 1)
        d.add(parent, "lon.code", code & 0x3F, off, 1)
    fr.code = code
    if not d.lean:
        fr.what = FF_CODES.get(code) or f"foreign frame 0x{code:02x}"
        d.ctx["lon.apdu_code"] = code
    _handoff(code, buf, off, end, d, parent, fr)


def _apdu_mgmt(buf, off, end, d, parent, fr, kind, name_field, record, names, args):
    """Network diagnostics / network management request: code, arguments, Info."""
    code = buf[off]
    if parent is None:
        record(d.fields, code, code)
    else:
        d.add(parent, name_field, code, off, 1)
        d.add(parent, "lon.code", code, off, 1)
    fr.code = code
    dec = args.get(code)
    extra = ""
    if dec is not None:
        extra = dec[0](buf, off + 1, end, d, parent)
    elif end > off + 1:
        d.add(parent, "data.data", buf[off + 1:end], off + 1, end - off - 1)
    if not d.lean:
        d.ctx["lon.apdu_code"] = code
        name = names.get(code, f"0x{code:02x}")
        fr.what = f"{kind} {name}" + (f" {extra}" if extra else "")


def _apdu_nd(buf, off, end, d, parent, fr):
    _apdu_mgmt(buf, off, end, d, parent, fr, "ND", "lon.nd", _rec_nd, ND_CODES, ND_ARGS)


def _apdu_nm(buf, off, end, d, parent, fr):
    _apdu_mgmt(buf, off, end, d, parent, fr, "NM", "lon.nm", _rec_nm, NM_CODES, NM_ARGS)


# APDU class by first byte: a 256-entry hand-off table
APDU_CLASS = ([_apdu_app] * 0x40 + [_apdu_ff] * 0x10 + [_apdu_nd] * 0x10 + [_apdu_nm] * 0x20
              + [_apdu_nv] * 0x80)


def dissect_apdu(buf, off, end, d, parent, fr=None):
    """Decode an APDU (first byte = destination-and-type) into `lon.*` fields."""
    if fr is None:
        fr = _Frame()
        fr.resp = False
        fr.what = ""
    need(end, off, 1, "APDU")
    APDU_CLASS[buf[off]](buf, off, end, d, parent, fr)
    return fr


# request code -> {first request data byte: response-data decoder}: responses whose
# layout depends on a sub-command of the request
_RESP_BY_SUB = {0x52: {0: _nd_unconfig_id, 1: _nd_status, 2: _nd_xcvr}}


def decode_response(buf, off, end, d, parent, request_code: int, request_sub: int | None = None) -> str:
    """Decode a RESPONSE APDU in context: `request_code` is the NM/ND code of the matched
    request (from the transaction tracker), `request_sub` its first data byte (ND proxy
    sub-command, expanded NM sub-command).  Adds `lon.nm.*`/`lon.nd.*` fields and returns
    the summary (e.g. "NM update address success")."""
    need(end, off, 1, "response code")
    rc = buf[off]
    if 0x60 <= request_code <= 0x7F:
        ok = rc == (0x20 | (request_code & 0x1F))
        fail = rc == (request_code & 0x1F)
        name = NM_CODES.get(request_code, f"0x{request_code:02x}")
        d.add(parent, "lon.nm.response", rc, off, 1)
        d.add(parent, "lon.nm.request", name, off, 1)
        status = "success" if ok else "failure" if fail else "unexpected"
        d.add(parent, "lon.nm.status", status, off, 1)
        extra = ""
        if ok:
            dec = NM_ARGS.get(request_code)
            extra = (dec[1] if dec else _nm_data)(buf, off + 1, end, d, parent)
        elif end > off + 1:
            _nm_data(buf, off + 1, end, d, parent)
        return f"NM {name} {status}" + (f" {extra}" if extra else "")
    if 0x50 <= request_code <= 0x5F:
        ok = rc == (0x30 | (request_code & 0x0F))
        fail = rc == (0x10 | (request_code & 0x0F))
        name = ND_CODES.get(request_code, f"0x{request_code:02x}")
        d.add(parent, "lon.nd.response", rc, off, 1)
        d.add(parent, "lon.nd.request", name, off, 1)
        status = "success" if ok else "failure" if fail else "unexpected"
        d.add(parent, "lon.nd.status", status, off, 1)
        extra = ""
        if ok:
            dec = _RESP_BY_SUB.get(request_code, {}).get(request_sub)
            if dec is None:
                dec = ND_ARGS[request_code][1] if request_code in ND_ARGS else _nd_data
            extra = dec(buf, off + 1, end, d, parent)
        elif end > off + 1:
            _nd_data(buf, off + 1, end, d, parent)
        return f"ND {name} {status}" + (f" {extra}" if extra else "")
    return f"response code 0x{rc:02x}"


# --------------------------------------------------------------------------- L4/L5

def _tid(buf, off, end, d, parent, fr, b0):
    """12-bit TID in version 2: one extra byte with the low 8 bits follows."""
    tid = b0 & 0xF
    if fr.vers == 2:
        if end - off < 2:
            need(end, off + 1, 1, "12-bit TID low byte")
        tid = tid << 8 | buf[off + 1]
        d.add(parent, "lon.tid12", tid, off, 2)
        fr.tid = tid
        return off + 2
    fr.tid = tid
    return off + 1


def _extend(fl, name, vals):
    lst = fl.get(name)
    if lst is None:
        fl[name] = vals
    else:
        lst.extend(vals)


def _mlist(buf, off, end, d, parent):
    need(end, off, 1, "M_List length")
    n = buf[off]
    d.add(parent, "lon.spdu.mlen", n, off, 1)
    need(end, off + 1, n, "M_List")
    ml = buf[off + 1: off + 1 + n]
    if parent is None:
        fl = d.fields
        if n:
            if _wants(fl, "lon.spdu.mlist"):
                _extend(fl, "lon.spdu.mlist", list(ml))
            if _wants(fl, "lon.spdu.member"):
                members = _mlist_members(ml)
                if members:
                    _extend(fl, "lon.spdu.member", members)
        return off + 1 + n
    for i, b in enumerate(ml):
        d.add(parent, "lon.spdu.mlist", b, off + 1 + i, 1)
    for m in _mlist_members(ml):
        d.add(parent, "lon.spdu.member", m, off + 1, n)
    return off + 1 + n


def _body_apdu(buf, off, end, d, parent, fr):
    if off >= end:
        d.malformed("lon", off, "missing APDU", parent)
        return
    if parent is not None:
        d.ctx["lon.apdu"] = (d.source, off, end)
        parent = d.label(parent, "APDU", off, end - off)
        APDU_CLASS[buf[off]](buf, off, end, d, parent, fr)
        parent.text = f"APDU: {fr.what}"
        return
    if not d.lean:
        d.ctx["lon.apdu"] = (d.source, off, end)
    APDU_CLASS[buf[off]](buf, off, end, d, parent, fr)


def _body_none(buf, off, end, d, parent, fr):
    if end > off:
        d.note("warn", "protocol", "lon", off, f"{end - off} bytes after an ACK", parent)
        d.add(parent, "data.data", buf[off:end], off, end - off)


def _body_reminder(buf, off, end, d, parent, fr):
    o = _mlist(buf, off, end, d, parent)
    if end > o:
        d.add(parent, "data.data", buf[o:end], o, end - o)


def _body_remmsg(buf, off, end, d, parent, fr):
    o = _mlist(buf, off, end, d, parent)
    _body_apdu(buf, o, end, d, parent, fr)


TPDU_BODY = {0: _body_apdu, 1: _body_apdu, 2: _body_none, 4: _body_reminder, 5: _body_remmsg}
SPDU_BODY = {0: _body_apdu, 2: _body_apdu, 4: _body_reminder, 5: _body_remmsg}


_XPDU = {
    # kind: (field names, type names, body table, pdu)
    "tpdu": (("lon.tpdu", "lon.auth", "lon.tpdu_type", "lon.trans_no"), TPDU_TYPES, TPDU_BODY, "TPDU"),
    "spdu": (("lon.spdu", "lon.auth", "lon.spdu_type", "lon.trans_no"), SPDU_TYPES, SPDU_BODY, "SPDU"),
}
_XREC = {k: make_recorder(v[0]) for k, v in _XPDU.items()}


def _make_xpdu(kind):
    """The TPDU or SPDU dissector (same layout: auth bit, type, transaction number)."""
    names, tnames, bodies, title = _XPDU[kind]
    record = _XREC[kind]
    unknown = f"lon.{kind}_type.unknown"

    def xpdu(buf, off, end, d, parent, fr):
        if end <= off:
            need(end, off, 1, title)
        b0 = buf[off]
        typ = b0 >> 4 & 7
        if parent is None:
            record(d.fields, b0, b0 >> 7, typ, b0 & 0xF)
            node = None
        else:
            vals = (b0, b0 >> 7, typ, b0 & 0xF)
            node = d.label(parent, f"{title}: {tnames.get(typ) or f'{title} type {typ}'}"
                                   f"{' (authenticated)' if b0 & 0x80 else ''}, "
                                   f"transaction {b0 & 0xF}", off, end - off)
            for n, v in zip(names, vals):
                d.add(node, n, v, off, 1)
        o = _tid(buf, off, end, d, node, fr, b0)
        lon = fr.lon
        if lon is not None:         # None: lean dissection, no Info / ctx["lon"] to build
            tag = tnames.get(typ) or f"{title} type {typ}"
            fr.tag = tag
            lon["pdu"] = kind
            lon["type"] = tag
            lon["tid"] = fr.tid
            lon["auth"] = bool(b0 & 0x80)
        fr.resp = typ == 2
        body = bodies.get(typ)
        if body is None:
            d.add(node, unknown, None, off, 1)
            d.note("warn", "protocol", "lon", off, f"Unexpected {title} type {typ}", node)
            if end > o:
                d.add(node, "data.data", buf[o:end], o, end - o)
            return
        body(buf, o, end, d, node, fr)
    return xpdu


_pdu_tpdu = _make_xpdu("tpdu")
_pdu_spdu = _make_xpdu("spdu")


_rec_auth = make_recorder(("lon.authpdu", "lon.authpdu_addrfmt", "lon.authpdu_type", "lon.trans_no"))


def _pdu_auth(buf, off, end, d, parent, fr):
    need(end, off, 1, "AuthPDU")
    b0 = buf[off]
    fmt = b0 >> 6
    typ = b0 >> 4 & 3
    add = d.add
    if parent is not None:
        parent = d.label(parent, f"AuthPDU: {AUTH_TYPES[typ]}, format {fmt}, transaction {b0 & 0xF}",
                         off, end - off)
        add(parent, "lon.authpdu", b0, off, 1)
        add(parent, "lon.authpdu_addrfmt", fmt, off, 1)
        add(parent, "lon.authpdu_type", typ, off, 1)
        add(parent, "lon.trans_no", b0 & 0xF, off, 1)
    else:
        _rec_auth(d.fields, b0, fmt, typ, b0 & 0xF)
    o = _tid(buf, off, end, d, parent, fr, b0)
    lon = fr.lon
    if lon is not None:
        fr.tag = AUTH_TYPES[typ]
        lon["pdu"] = "auth"
        lon["type"] = fr.tag
        lon["tid"] = fr.tid
        lon["auth"] = True
    fr.resp = typ >= 2
    need(end, o, 8, "AuthPDU value")
    add(parent, "lon.authpdu_value", buf[o: o + 8], o, 8)
    o += 8
    if fmt == 1:
        need(end, o, 1, "AuthPDU group")
        add(parent, "lon.authpdu_group", buf[o], o, 1)
        o += 1
    if end > o:
        d.note("warn", "protocol", "lon", o, f"{end - o} bytes after the AuthPDU", parent)
        add(parent, "data.data", buf[o:end], o, end - o)


def _pdu_apdu(buf, off, end, d, parent, fr):
    lon = fr.lon
    if lon is not None:
        fr.tag = "APDU"
        lon["pdu"] = "apdu"
        lon["type"] = "UNACKD"
        lon["tid"] = None
        lon["auth"] = False
    fr.resp = False
    _body_apdu(buf, off, end, d, parent, fr)


PDU_BY_FMT = (_pdu_tpdu, _pdu_spdu, _pdu_auth, _pdu_apdu)

# --------------------------------------------------------------------------- L3 addresses
# each: fn(buf, off, end, d, parent, lon) -> offset after the address field


_ADDR_WHAT = {"2a": "address (2a)", "2b": "address (2b)"}


_A0_N, _A0_DN = ADDR_SIZE["0"], _O["0"]["dst_subnet"]
_A1_N, _A1_G = ADDR_SIZE["1"], _O["1"]["group"]
_A2 = {k: (ADDR_SIZE[k], _O[k]["dst_subnet"], _O[k]["dst_node"], _ADDR_WHAT[k]) for k in ("2a", "2b")}
_A2B_G, _A2B_M = _O["2b"]["group"], _O["2b"]["member"]
_A3_N, _A3_NID = ADDR_SIZE["3"], _O["3"]["nid"]
_rec_dstnet = make_recorder(("lon.dstnet",))
_rec_dstgrp = make_recorder(("lon.dstgrp",))
_rec_3 = make_recorder(("lon.dstnet", "lon.uid"))


def _addr0(buf, off, end, d, parent, lon):
    if end - off < _A0_N:
        need(end, off, _A0_N, "address (broadcast)")
    dn = buf[off + _A0_DN]
    if parent is None:
        _rec_dstnet(d.fields, dn)
    else:
        d.add(parent, "lon.dstnet", dn, off + 2, 1)
    if lon is not None:
        lon["dst_type"] = "bcast"
        lon["dst_subnet"] = dn
        d.dst = f"bcast {dn}" if dn else "bcast"
    return off + _A0_N


def _addr1(buf, off, end, d, parent, lon):
    if end - off < _A1_N:
        need(end, off, _A1_N, "address (multicast)")
    g = buf[off + _A1_G]
    if parent is None:
        _rec_dstgrp(d.fields, g)
    else:
        d.add(parent, "lon.dstgrp", g, off + 2, 1)
    if lon is not None:
        lon["dst_type"] = "group"
        lon["group"] = g
        d.dst = f"grp {g}"
    return off + _A1_N


def _addr2(buf, off, end, d, parent, lon):
    kind = "2a" if buf[off + 1] & 0x80 else "2b"      # selector bit of the source node byte
    n, o_dn, o_nd, what = _A2[kind]
    if end - off < n:
        need(end, off, n, what)
    dn = buf[off + o_dn]
    nd = buf[off + o_nd] & 0x7F
    add = d.add
    if parent is None:
        _rec_2a(d.fields, dn, nd)
    else:
        add(parent, "lon.dstnet", dn, off + o_dn, 1)
        add(parent, "lon.dstnode", nd, off + o_nd, 1)
    if kind == "2a":
        if lon is not None:
            lon["dst_subnet"] = dn
            lon["dst_node"] = nd
            lon["dst_type"] = "unicast"
            d.dst = f"{dn}/{nd}"
        return off + n
    g = buf[off + _A2B_G]
    m = buf[off + _A2B_M]
    if parent is None:
        _rec_2b(d.fields, g, m)
    else:
        add(parent, "lon.grp", g, off + _A2B_G, 1)
        add(parent, "lon.grpmem", m, off + _A2B_M, 1)
    if lon is None:
        return off + n
    lon["dst_subnet"] = dn
    lon["dst_node"] = nd
    d.dst = f"{dn}/{nd}"
    lon["dst_type"] = "groupack"
    lon["group"] = g
    lon["member"] = m
    return off + n


def _addr3(buf, off, end, d, parent, lon):
    if end - off < _A3_N:
        need(end, off, _A3_N, "address (Neuron ID)")
    dn = buf[off + 2]
    o = off + _A3_NID
    nid = buf[o: o + 6]
    if parent is None:
        _rec_3(d.fields, dn, nid)
    else:
        d.add(parent, "lon.dstnet", dn, off + 2, 1)
        d.add(parent, "lon.uid", nid, o, 6)
    if lon is not None:
        lon["dst_type"] = "nid"
        lon["dst_subnet"] = dn
        lon["nid"] = nid
        d.dst = nid.hex()
    return off + _A3_N


ADDR_BY_FMT = (_addr0, _addr1, _addr2, _addr3)


# --------------------------------------------------------------------------- frame

def _summary(fr) -> str:
    """Info text: "ACKD NV update sel 0x123 [tid 3]", "REQUEST NM query ID [tid 5]", or with
    a payload layer's summary "ACKD [tid 3] get-request ..."."""
    tag = fr.tag
    tid = f" [tid {fr.tid}]" if fr.tid is not None else ""
    if fr.app:
        return f"{tag}{tid} {fr.app}" if tag != "APDU" else fr.app
    what = fr.what
    if tag == "APDU":
        return what or "APDU"
    return f"{tag} {what}{tid}" if what else f"{tag}{tid}"


_NPDU_NAMES = ("lon.npdu", "lon.vers", "lon.pdufmt", "lon.addrfmt", "lon.domainlen",
               "lon.srcnet", "lon.srcnode")
_PPDU_NAMES = ("lon.ppdu", "lon.prio", "lon.alt_path", "lon.delta_bl", "lon.crc.status")
_rec_npdu = make_recorder(_NPDU_NAMES)
_rec_ppdu = make_recorder(_PPDU_NAMES)
_rec_ppdu_crc = make_recorder(_PPDU_NAMES + ("lon.crc",))


def dissect_npdu(buf, off, end, d, parent):
    """NPDU (network header byte onwards) up to `end` (CRC excluded)."""
    if end - off < 3:
        need(end, off, 3, "NPDU header and source address")
    b = buf[off]
    vers = b >> 6
    pf = b >> 4 & 3
    af = b >> 2 & 3
    dl = b & 3
    sn = buf[off + 1]
    snode = buf[off + 2] & 0x7F
    if parent is None:
        _rec_npdu(d.fields, b, vers, pf, af, dl, sn, snode)
        anode = None
    else:
        add = d.add
        nn = d.label(parent, f"NPDU: version {vers}, {PDU_NAMES[pf]}, address format "
                             f"{af}, domain {DOMAIN_BYTES[dl]} bytes", off, 1)
        add(nn, "lon.npdu", b, off, 1)
        add(nn, "lon.vers", vers, off, 1)
        add(nn, "lon.pdufmt", pf, off, 1)
        add(nn, "lon.addrfmt", af, off, 1)
        add(nn, "lon.domainlen", dl, off, 1, f"Domain length: {DOMAIN_BYTES[dl]} bytes (code {dl})")
        anode = d.label(parent, "Address", off + 1, 2)
        add(anode, "lon.srcnet", sn, off + 1, 1)
        add(anode, "lon.srcnode", snode, off + 2, 1)
    o = off + 1
    if d.lean:          # nothing reads ctx["lon"], the addresses or the Info text
        lon = None
    else:
        lon = {"src_subnet": sn, "src_node": snode, "dst_type": None, "dst_subnet": None,
               "dst_node": None, "group": None, "member": None, "nid": None, "domain": b"",
               "pdu": None, "type": None, "tid": None, "auth": False, "version": vers}
        d.ctx["lon"] = lon
        d.ctx["lon.apdu_code"] = None
        d.src = f"{sn}/{snode}"
    o = ADDR_BY_FMT[af](buf, o, end, d, anode, lon)
    if anode is not None:
        anode.length = o - off - 1
        anode.text = f"Address: {d.src} -> {d.dst} ({lon['dst_type']})"
    n = DOMAIN_BYTES[dl]
    if end - o < n:
        need(end, o, n, "domain")
    dom = buf[o: o + n]
    if parent is None:
        lst = d.fields.get("lon.domain")
        if lst is None:
            d.fields["lon.domain"] = [dom]
        else:
            lst.append(dom)
    else:
        d.add(parent, "lon.domain", dom, o, n)
    o += n
    if lon is None:         # lean: only what the field recording reads (see _new_frame)
        fr = _new_frame(_Frame)
        fr.lon = None
        fr.vers = vers
        fr.resp = False
    else:
        fr = _Frame(lon, vers, parent)
    if vers == 1:
        d.note("note", "protocol", "lon", off, "Protocol version 1 (encapsulated IP)", parent)
    elif vers == 3:
        d.note("warn", "protocol", "lon", off, "Unknown protocol version 3", parent)
    if lon is None:
        PDU_BY_FMT[pf](buf, o, end, d, parent, fr)
        return fr
    lon["domain"] = dom
    try:
        PDU_BY_FMT[pf](buf, o, end, d, parent, fr)
    finally:
        d.info = _summary(fr)
    return fr


def dissect_frame(buf, off, end, d, parent, crc: bool | None = None):
    """A LonTalk frame `[LPDU hdr][NPDU][CRC-16]`.

    crc=None: the CRC is optional (CN/IP data, sniffer logs of unknown kind): status "good"
    when the last two bytes verify, else "absent".  crc=True: the CRC is always there (NI
    uplink, LINKTYPE_USER0): "good"/"bad" (a bad CRC is an expert item; the frame is still
    decoded).  crc=False: no CRC (LINKTYPE_USER2)."""
    node = d.layer("lon", "ISO/IEC 14908-1 LonTalk", off, end - off)
    try:
        if end <= off:
            need(end, off, 1, "LPDU header")
        fend = end
        status = "absent"
        got = None
        if crc is not False and end - off >= 4:
            got = buf[end - 2] << 8 | buf[end - 1]
            if crc_hqx(buf[off:end - 2], 0xFFFF) ^ 0xFFFF == got:
                status = "good"
                fend = end - 2
            elif crc:
                status = "bad"
                fend = end - 2
        elif crc:
            status = "bad"
        p = buf[off]
        if node is None:
            if status == "absent":
                _rec_ppdu(d.fields, p, p >> 7, p >> 6 & 1, p & 0x3F, status)
            else:
                _rec_ppdu_crc(d.fields, p, p >> 7, p >> 6 & 1, p & 0x3F, status, got)
        else:
            add = d.add
            pn = d.label(node, f"PPDU: 0x{p:02x} (priority {p >> 7}, alt path {p >> 6 & 1}, "
                               f"delta backlog {p & 0x3F})", off, 1)
            add(pn, "lon.ppdu", p, off, 1)
            add(pn, "lon.prio", p >> 7, off, 1)
            add(pn, "lon.alt_path", p >> 6 & 1, off, 1)
            add(pn, "lon.delta_bl", p & 0x3F, off, 1)
            coff = max(off, end - 2)        # a frame shorter than a CRC: its last bytes
            if status != "absent":
                add(node, "lon.crc", got, coff, end - coff)
            add(node, "lon.crc.status", status, coff if status != "absent" else end,
                0 if status == "absent" else end - coff, f"CRC status: {status}")
        if status == "bad":
            coff = max(off, end - 2)
            d.note("warn", "checksum", "lon", coff,
                   f"Bad CRC-16 (expected 0x{crc16(buf[off:coff]):04x})", node)
        dissect_npdu(buf, off + 1, fend, d, node)
        if node is not None and d.info:
            node.text = f"ISO/IEC 14908-1 LonTalk, {d.src} -> {d.dst}: {d.info}"
    except Truncated as e:
        d.malformed("lon", e.offset, str(e), node)
    return node


def dissect_l2_auto(buf, off, end, d, parent):
    """lon.frame "l2": raw frame, CRC optional."""
    dissect_frame(buf, off, end, d, parent, None)


def dissect_l2_crc(buf, off, end, d, parent):
    """Raw frame with CRC (NI uplink)."""
    dissect_frame(buf, off, end, d, parent, True)


def dissect_l2_nocrc(buf, off, end, d, parent):
    dissect_frame(buf, off, end, d, parent, False)


table("lon.frame", "raw LonTalk frames").register("l2", "lon", dissect_l2_auto)
table("lon.frame").register("l2-crc", "lon", dissect_l2_crc)
table("lon.frame").register("l2-nocrc", "lon", dissect_l2_nocrc)
table("cnip.protocol", "CN/IP protocol").register(0, "lon", dissect_frame)   # crc=None: optional


# --------------------------------------------------------------------------- builders

def build_frame(*, prio=0, alt_path=0, delta_bl=0, vers=0, pdu="apdu", addr="2a",
                src_subnet=1, src_node=1, dst_subnet=0, dst_node=0, group=0, member=0,
                nid=b"\0" * 6, domain=b"", tpdu_type=0, spdu_type=0, auth=False, tid=0,
                mlist=b"", auth_type=0, auth_fmt=None, auth_value=b"\0" * 8, auth_group=None,
                apdu=b"", crc=True) -> bytes:
    """Build a LonTalk frame `[LPDU hdr][NPDU][CRC]`.

    addr: "0" broadcast (dst_subnet), "1" multicast (group), "2a" unicast
    (dst_subnet/dst_node), "2b" group ack (dst_subnet/dst_node/group/member), "3" Neuron ID
    (dst_subnet, nid).  domain: 0/1/3/6 bytes.  vers 2 adds the low TID byte (tid is then
    12-bit).  pdu: "tpdu" (tpdu_type 0 ACKD, 1 UNACKD_RPT, 2 ACK, 4 REMINDER, 5 REM/MSG),
    "spdu" (spdu_type 0 REQUEST, 2 RESPONSE, 4 REMINDER, 5 REM/MSG), "auth" (auth_type 0-3,
    auth_fmt defaults to the address format, auth_value 8 bytes, auth_group for fmt 1),
    "apdu" (unacknowledged).  mlist: M_List bytes for REMINDER / REM/MSG.  apdu: the APDU
    bytes (code first).  crc: append the CRC-16/GENIBUS."""
    afmt = {"0": 0, "1": 1, "2a": 2, "2b": 2, "3": 3}[str(addr)]
    pf = {"tpdu": 0, "spdu": 1, "auth": 2, "apdu": 3}[pdu]
    dl = DOMAIN_BYTES.index(len(domain))
    out = bytearray(L2HDR.build({"ppdu": (prio & 1) << 7 | (alt_path & 1) << 6 | delta_bl & 0x3F,
                                 "npdu": (vers & 3) << 6 | pf << 4 | afmt << 2 | dl}))
    a = str(addr)
    sel = 0 if a == "2b" else 0x80
    vals = {"src_subnet": src_subnet, "src_node": sel | (src_node & 0x7F), "dst_subnet": dst_subnet,
            "dst_node": 0x80 | (dst_node & 0x7F), "group": group, "member": member, "nid": bytes(nid)}
    out += ADDR_LAYOUTS[a].build(vals)
    out += bytes(domain)

    def tidb(hi_byte):
        if vers == 2:
            return bytes([hi_byte | (tid >> 8 & 0xF), tid & 0xFF])
        return bytes([hi_byte | (tid & 0xF)])

    if pdu in ("tpdu", "spdu"):
        typ = tpdu_type if pdu == "tpdu" else spdu_type
        out += tidb((0x80 if auth else 0) | (typ & 7) << 4)
        if typ in (4, 5):
            out += bytes([len(mlist)]) + bytes(mlist)
        if typ in (0, 1, 5) or (pdu == "spdu" and typ == 2):
            out += bytes(apdu)
    elif pdu == "auth":
        f = afmt if auth_fmt is None else auth_fmt
        out += tidb((f & 3) << 6 | (auth_type & 3) << 4)
        out += bytes(auth_value)
        if f == 1:
            out.append((group if auth_group is None else auth_group) & 0xFF)
    else:
        out += bytes(apdu)
    if crc:
        c = crc16(out)
        out += bytes([c >> 8, c & 0xFF])
    return bytes(out)


def build_nv(selector: int, value: bytes = b"", direction: int = 0) -> bytes:
    """NV APDU: 2-byte header (bit 15 set, bit 14 direction, 14-bit selector) + value."""
    return NV_HDR.build({"nv": 0x8000 | (direction & 1) << 14 | selector & 0x3FFF}) + bytes(value)


__all__ = ["crc16", "build_frame", "build_nv", "dissect_frame", "dissect_npdu", "dissect_apdu",
           "decode_response", "NM_CODES", "ND_CODES"]
