"""ISO/IEC 14908-4 CN/IP (EIA/CEA-852, "IP-852") on UDP 1628/1629.

Every packet type is named; data packets (type 0x01) hand their payload to
`table("cnip.protocol")` keyed by the protocol code (0 = ISO/IEC 14908-1 LonTalk frame,
CRC optional).  Several CN/IP packets in one datagram are walked by their size field.  With
the security flag, a 16-byte MD5 digest follows each packet: it is shown here and verified
by the `lontrack` stage when the key ring holds CN/IP secrets (a pure dissector holds no
keys); the stage finds the packets in `ctx["cnip.md5"]`.

The 20-byte header is declared once (`CNIP_HDR`, Construct); the fast reader's `struct`
format is derived from the same declaration.
"""
from __future__ import annotations

import hashlib
import struct

from construct import Bytes, Int8ub, Int16ub, Int32ub, Struct

from .lon import make_recorder
from .core import FT_BYTES, FT_NONE, FT_STR, FT_UINT, Truncated, call, field, fields, need, table

CNIP_HDR = Struct(
    "len" / Int16ub,        # whole packet incl. header, excluding the MD5 digest
    "ver" / Int8ub,         # bits 4..0 version; bit 7 vendor-private packet
    "type" / Int8ub,
    "exth" / Int8ub,        # extended header size in 4-byte words
    "pf" / Int8ub,          # bit 5 security (MD5 present); bits 4..0 protocol
    "vendorcode" / Int16ub,
    "sessid" / Int32ub,
    "seqno" / Int32ub,
    "tstamp" / Int32ub,
)
# Echelon's 3-word extended header
CNIP_EXT = Struct("local_ip" / Bytes(4), "nat_ip" / Bytes(4), "port" / Int16ub, "unused" / Int16ub)

_FMT = {1: "B", 2: "H", 4: "I"}
_HDR = struct.Struct(">" + "".join(_FMT[sc.sizeof()] for sc in CNIP_HDR.subcons))
HDR_LEN = CNIP_HDR.sizeof()
# field name, offset and size of each header value (same order as the unpacked tuple; the
# two bit fields of "pf" follow it)
_HDR_NAMES = ("cnip.len", "cnip.ver", "cnip.type", "cnip.exth", "cnip.pf", "cnip.sec",
              "cnip.protocol", "cnip.vendorcode", "cnip.sessid", "cnip.seqno", "cnip.tstamp")
_offs = []
_o = 0
for _sc in CNIP_HDR.subcons:
    _offs.append((_o, _sc.sizeof()))
    _o += _sc.sizeof()
_offs[5:5] = [_offs[4], _offs[4]]          # cnip.sec, cnip.protocol live in the pf byte
_HDR_OFFS = tuple(o for o, _ in _offs)
_HDR_SIZES = tuple(n for _, n in _offs)
_rec_hdr = make_recorder(_HDR_NAMES)
MD5_LEN = 16
SEC_FLAG = 0x20
PROTO_MASK = 0x1F

PACKET_TYPES = {
    0x01: "data", 0x03: "device registration", 0x63: "request device config",
    0x71: "device config", 0x04: "channel membership", 0x64: "request channel membership",
    0x06: "send list", 0x66: "request send list", 0x08: "channel routing",
    0x68: "request channel routing", 0x07: "acknowledge", 0x60: "statistics request",
    0x70: "statistics response", 0x7F: "segment",
}
PROTOCOLS = {0: "ISO/IEC 14908-1 LonTalk"}

field("cnip", FT_NONE, "ISO/IEC 14908-4 CN/IP")
fields("cnip.", FT_UINT, [
    ("len", "Packet length"),
    ("ver", "Version"),
    ("type", "Packet type", PACKET_TYPES, "hex"),
    ("exth", "Ext. Header Size"),
    ("pf", "Protocol Flags"),
    ("sec", "Security (MD5 digest present)"),
    ("protocol", "Protocol Code", PROTOCOLS),
    ("vendorcode", "Vendor Code"),
    ("sessid", "Session ID", None, "hex"),
    ("seqno", "Sequence Number"),
    ("tstamp", "Time Stamp"),
    ("vendor_private", "Vendor-private packet"),
    ("ext.port", "Extended header: port"),
])
fields("cnip.", FT_BYTES, [
    ("ext", "Extended header"),
    ("ext.local_ip", "Extended header: local IP address"),
    ("ext.nat_ip", "Extended header: NAT IP address"),
    ("md5", "MD5 digest"),
    ("payload", "Packet body"),
])
fields("cnip.", FT_STR, [
    ("type_name", "Packet type name"),
    ("md5.status", "MD5 digest status (unverified / good / bad)"),
])
field("cnip.type.unknown", FT_NONE, "Unknown packet type")


def _ip(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def dissect_cnip(buf, off, end, d, parent):
    """A UDP datagram on 1628/1629: one or more CN/IP packets."""
    count = 0
    while off < end:
        if count and end - off < HDR_LEN:
            d.malformed("cnip", off, f"{end - off} trailing bytes (less than a CN/IP header)", parent)
            return
        off = _one(buf, off, end, d, parent)
        count += 1
        if off is None:
            return


def _one(buf, off, end, d, parent):
    node = d.layer("cnip", "ISO/IEC 14908-4 CN/IP", off, end - off)
    try:
        if end - off < HDR_LEN:
            need(end, off, HDR_LEN, "CN/IP header")
        ln, ver, typ, exth, pf, vendor, sess, seq, ts = _HDR.unpack_from(buf, off)
        add = d.add
        if node is None:
            _rec_hdr(d.fields, ln, ver, typ, exth, pf, pf >> 5 & 1, pf & PROTO_MASK, vendor, sess, seq, ts)
        else:
            vals = (ln, ver, typ, exth, pf, pf >> 5 & 1, pf & PROTO_MASK, vendor, sess, seq, ts)
            for name, v, o, n in zip(_HDR_NAMES, vals, _HDR_OFFS, _HDR_SIZES):
                add(node, name, v, off + o, n)
        if ver & 0x80:
            add(node, "cnip.vendor_private", 1, off + 2, 1)
        if ln < HDR_LEN + 4 * exth:
            d.malformed("cnip", off, f"packet length {ln} shorter than its header", node)
            return None
        if end - off < ln:
            need(end, off, ln, "CN/IP packet")
        pend = off + ln
        if node is not None and (ver & 0x1F) != 1:
            d.note("warn", "protocol", "cnip", off + 2, f"Unexpected CN/IP version {ver & 0x1F}", node)
        o = off + HDR_LEN
        if exth:
            n = 4 * exth
            add(node, "cnip.ext", buf[o:o + n], o, n)
            if n >= 12:
                add(node, "cnip.ext.local_ip", buf[o:o + 4], o, 4,
                    None if node is None else f"Local IP: {_ip(buf[o:o + 4])}")
                add(node, "cnip.ext.nat_ip", buf[o + 4:o + 8], o + 4, 4,
                    None if node is None else f"NAT IP: {_ip(buf[o + 4:o + 8])}")
                add(node, "cnip.ext.port", buf[o + 8] << 8 | buf[o + 9], o + 8, 2)
            o += n
        nxt = pend
        if pf & SEC_FLAG:
            need(end, pend, MD5_LEN, "MD5 digest")
            add(node, "cnip.md5", buf[pend:pend + MD5_LEN], pend, MD5_LEN)
            add(node, "cnip.md5.status", "unverified", pend, MD5_LEN)
            d.ctx.setdefault("cnip.md5", []).append((d.source, off, ln, pend, node))
            nxt = pend + MD5_LEN
        name = PACKET_TYPES.get(typ)
        if name is None:
            add(node, "cnip.type.unknown", None, off + 3, 1)
            d.note("note", "protocol", "cnip", off + 3, f"Unknown CN/IP packet type 0x{typ:02x}", node)
            name = f"type 0x{typ:02x}"
        if node is not None:
            node.text = f"ISO/IEC 14908-4 CN/IP, {name}, session 0x{sess:08x}, seq {seq}" + \
                (", MD5" if pf & SEC_FLAG else "")
        CNIP_BODY.get(typ, _control_body)(buf, o, pend, d, node, pf, seq, name, off)
        return nxt
    except Truncated as e:
        d.malformed("cnip", e.offset, str(e), node)
        return None


def _data_body(buf, o, pend, d, node, pf, seq, name, off):
    """Data packet: the payload goes to table("cnip.protocol") by protocol code."""
    if not d.lean:
        d.info = f"CN/IP data seq {seq}"
    e = _PROTO_TABLE.entries.get(pf & PROTO_MASK)     # = dispatch without heuristics
    if e is not None:
        call(e[0], e[1], buf, o, pend, d, node)
    elif pend > o:
        d.add(node, "data.data", buf[o:pend], o, pend - o)


def _control_body(buf, o, pend, d, node, pf, seq, name, off):
    """Control packets (registration, configuration, membership, routing, statistics...):
    named, body shown as bytes."""
    d.add(node, "cnip.type_name", name, off + 3, 1)
    if pend > o:
        d.add(node, "cnip.payload", buf[o:pend], o, pend - o)
    d.info = f"CN/IP {name} seq {seq}"


# packet type -> body handler (anything else: a named control packet)
CNIP_BODY = {0x01: _data_body}
_PROTO_TABLE = table("cnip.protocol", "CN/IP protocol")


def md5_digest(packet: bytes, secret: bytes) -> bytes:
    """EIA-852 digest: MD5(packet ‖ 16 zero bytes ‖ shared secret)."""
    return hashlib.md5(bytes(packet) + b"\0" * MD5_LEN + bytes(secret)).digest()


def build_cnip(payload: bytes, pkt_type: int = 1, seqno: int = 0, session: int = 0,
               timestamp: int = 0, ext: bytes = b"", secret: bytes | None = None,
               vendor: int = 0, protocol: int = 0, version: int = 1, **aliases) -> bytes:
    """Build one CN/IP packet: 20-byte header + `ext` (padded to 4-byte words) + payload.
    With `secret`, sets the security flag and appends MD5(packet ‖ 16 zeros ‖ secret).
    Aliases accepted: type= for pkt_type, ts= for timestamp."""
    pkt_type = aliases.pop("type", pkt_type)
    timestamp = aliases.pop("ts", timestamp)
    if aliases:
        raise TypeError(f"unknown arguments: {', '.join(aliases)}")
    ext = bytes(ext)
    if len(ext) % 4:
        ext += b"\0" * (4 - len(ext) % 4)
    pf = (protocol & PROTO_MASK) | (SEC_FLAG if secret is not None else 0)
    ln = HDR_LEN + len(ext) + len(payload)
    hdr = CNIP_HDR.build({"len": ln, "ver": version, "type": pkt_type, "exth": len(ext) // 4,
                          "pf": pf, "vendorcode": vendor, "sessid": session, "seqno": seqno,
                          "tstamp": timestamp})
    pkt = hdr + ext + bytes(payload)
    if secret is not None:
        pkt += md5_digest(pkt, secret)
    return pkt


table("udp.port", "UDP port").register(1628, "cnip", dissect_cnip)
table("udp.port").register(1629, "cnip", dissect_cnip)

__all__ = ["dissect_cnip", "build_cnip", "md5_digest", "CNIP_HDR", "PACKET_TYPES"]
