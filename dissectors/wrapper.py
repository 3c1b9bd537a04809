"""IEC 62056-47 (DLMS/COSEM transport over TCP/UDP, "wrapper") and the hand-off of DLMS
traffic on the IP ports 4059 and 4060-4069.

Wrapper PDU: ``version(2) = 0x0001 | source wPort(2) | destination wPort(2) | length(2) | APDU``.
A datagram or stream chunk is taken as a wrapper PDU only if the version is 1 and the
length matches the bytes that follow (UDP) or is plausible (TCP, where one PDU may span
segments and one segment may hold several PDUs — the TCP stage reassembles them using
`pdu_len`).  Other traffic on these ports (DNS noise in public captures, HDLC frames) is
not misread: an HDLC frame (0x7E ...) goes to `dissectors.hdlc`, anything else is left
alone.
"""
from __future__ import annotations

import struct

from construct import Const, Int16ub, Struct

from .core import FT_BOOL, FT_BYTES, FT_UINT, Dissection, Node, field, table
from . import hdlc as _hdlc

DLMS_PORTS = (4059,) + tuple(range(4060, 4070))
HEADER = 8
MAX_PDU = 0xFFFF

field("wrapper", FT_BOOL, "IEC 62056-47 wrapper")
field("wrapper.version", FT_UINT, "Wrapper version (1)")
field("wrapper.srcport", FT_UINT, "Source wPort")
field("wrapper.dstport", FT_UINT, "Destination wPort")
field("wrapper.length", FT_UINT, "Length of the APDU")
field("wrapper.data", FT_BYTES, "APDU bytes (no xDLMS dissector available)")

WPORT_NAMES = {0x0001: "management logical device", 0x0010: "public client",
               0x0000: "no station"}

# The header, declared once: the builder uses the Construct; the hot parse path reads the
# same four big-endian words with struct (the layouts are checked against each other below).
HEADER_LAYOUT = Struct("version" / Const(1, Int16ub), "srcport" / Int16ub, "dstport" / Int16ub,
                       "length" / Int16ub)
_HDR = struct.Struct(">HHHH")
assert HEADER_LAYOUT.sizeof() == _HDR.size == HEADER


def build(src: int, dst: int, apdu: bytes) -> bytes:
    """One wrapper PDU (for tests and the simulator)."""
    if len(apdu) > MAX_PDU:
        raise ValueError("wrapper APDU longer than 65535 bytes")
    return HEADER_LAYOUT.build({"srcport": src & 0xFFFF, "dstport": dst & 0xFFFF,
                                "length": len(apdu)}) + bytes(apdu)


def pdu_len(buf, off: int, end: int | None = None) -> int | None:
    """Total length of the wrapper PDU starting at off (header + APDU), or None if the
    bytes there are not a wrapper header.  Needs only the 8 header bytes."""
    if end is None:
        end = len(buf)
    if end - off < HEADER:
        return None
    ver, _s, _d, length = _HDR.unpack_from(buf, off)
    if ver != 1 or length == 0:
        return None
    return HEADER + length


def detect(buf, off: int = 0, end: int | None = None) -> bool:
    """True if buf[off:] starts with a wrapper header (version 1, non-zero length)."""
    return pdu_len(buf, off, end) is not None


def dissect_wrapper(buf, off: int, end: int, d: Dissection, parent: Node | None) -> int:
    """One wrapper PDU at off; returns the offset after it."""
    n = pdu_len(buf, off, end)
    if n is None:
        d.malformed("wrapper", off, "not a wrapper header", parent)
        return end
    ver, src, dst, length = _HDR.unpack_from(buf, off)
    pend = off + n
    node = d.layer("wrapper", "IEC 62056-47 wrapper", off, min(pend, end) - off)
    if node is not None:
        node.text = f"IEC 62056-47 wrapper, wPort {src} -> {dst}, length {length}"
    d.add(node, "wrapper.version", ver, off, 2)
    d.add(node, "wrapper.srcport", src, off + 2, 2)
    d.add(node, "wrapper.dstport", dst, off + 4, 2)
    d.add(node, "wrapper.length", length, off + 6, 2)
    if pend > end:
        d.malformed("wrapper", off + 6, f"length {length} but only {end - off - HEADER} bytes follow", node)
        pend = end
    d.set_info(f"wPort {src} -> {dst}")
    if pend > off + HEADER:
        if not table("dlms").dispatch("apdu", buf, off + HEADER, pend, d, parent):
            d.add(node, "wrapper.data", bytes(buf[off + HEADER:pend]), off + HEADER, pend - off - HEADER)
    return pend


def dissect_pdus(buf, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """Several wrapper PDUs back to back (one TCP segment or UDP datagram)."""
    infos = []
    p = off
    while p < end:
        if pdu_len(buf, p, end) is None:
            d.malformed("wrapper", p, f"{end - p} trailing bytes are not a wrapper PDU", parent)
            break
        d.info = ""
        p = dissect_wrapper(buf, p, end, d, parent)
        if d.info:
            infos.append(d.info)
    if len(infos) > 1:
        d.info = f"[{len(infos)} wrapper PDUs] " + " | ".join(infos)


def detect_datagram(buf, off: int, end: int) -> bool:
    """A UDP datagram is wrapper traffic if its PDUs tile it exactly."""
    p = off
    count = 0
    while p < end:
        n = pdu_len(buf, p, end)
        if n is None or p + n > end:
            return False
        p += n
        count += 1
    return count > 0


def dissect_udp(buf, off: int, end: int, d: Dissection, parent: Node | None) -> bool:
    """UDP 4059/4060-4069: wrapper PDUs or HDLC frames; anything else is not claimed."""
    if detect_datagram(buf, off, end):
        dissect_pdus(buf, off, end, d, parent)
        return True
    if _hdlc.looks_like_hdlc(buf, off, end):
        _hdlc.dissect_frames(buf, off, end, d, parent)
        return True
    return False


def _udp_entry(buf, off, end, d, parent):
    if not dissect_udp(buf, off, end, d, parent):
        try:
            from .net import show_data
        except ImportError:  # pragma: no cover - net is part of the product
            return
        show_data(buf, off, end, d, parent)


# ---- TCP: PDU protocol for analyzer.tcpstage (registered by analyzer.dlms_streams)

def stream_detect(data) -> bool:
    """First bytes of a TCP direction: a wrapper header whose length fits what follows
    (a complete PDU, several back to back, or the start of a longer one)."""
    n = pdu_len(data, 0, len(data))
    if n is None or n > MAX_PDU + HEADER:
        return False
    if n == len(data) or n > len(data):
        return True
    return pdu_len(data, n, len(data)) is not None


def stream_pdu_len(view, off: int) -> int | None:
    """None: need more bytes; 0: not a wrapper header here (lost sync)."""
    if len(view) - off < HEADER:
        return None
    n = pdu_len(view, off, len(view))
    return n if n is not None else 0


def stream_dissect(buf, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """One wrapper PDU cut from a TCP stream; Info lists every PDU of the packet."""
    infos = d.ctx.setdefault("wrapper.infos", [])
    d.info = ""
    dissect_wrapper(buf, off, end, d, parent)
    infos.append(d.info)
    if len(infos) > 1:
        d.info = f"[{len(infos)} wrapper PDUs] " + " | ".join(infos)


for _port in DLMS_PORTS:
    table("udp.port").register(_port, "wrapper", _udp_entry)
