"""Network-interface (NI) host messages ("SICB"/LDV): `[NI command][length][payload]`,
length 0xFF = a 2-byte big-endian extended length follows.

Layer-2 mode uplinks carry the received LonTalk frame with its CRC:
0x1A plain, 0x1B phase byte first, 0x1C phase byte first and 2 signal-strength bytes last;
0x30..0x35 are receive errors.  Registered for ethertype 0x8950 (the Linux `lonN` netdev,
one SICB per packet); `dissect_sicb` is public for the live-capture path.
"""
from __future__ import annotations

from construct import Int8ub, Int16ub, Struct

from .core import FT_NONE, FT_STR, FT_UINT, FT_BYTES, Truncated, field, fields, need, table
from .lon import dissect_frame

SICB_HDR = Struct("cmd" / Int8ub, "len" / Int8ub)
SICB_EXT_LEN = Struct("xlen" / Int16ub)
EXTENDED = 0xFF

NI_COMMANDS = {
    0x12: "L2 frame (downlink, no CRC)", 0x1A: "L2 frame received", 0x1B: "L2 frame received (mode 1, phase)",
    0x1C: "L2 frame received (mode 2, phase + SSI)", 0x16: "local NM response", 0x22: "local NM command",
    0x30: "receive error: timeout", 0x31: "receive error: CRC", 0x32: "receive error: too long",
    0x33: "receive error: preamble too long", 0x34: "receive error: preamble too short",
    0x35: "receive error: too short", 0x50: "reset", 0xD0: "set layer-5 mode",
    0xD1: "set layer-2 mode", 0xE0: "MIP status",
}

field("ni", FT_NONE, "LON network interface message (SICB)")
fields("ni.", FT_UINT, [
    ("cmd", "NI command", NI_COMMANDS, "hex"),
    ("len", "Length"),
    ("phase", "Phase / zero-crossing (value + 1)"),
    ("ssi", "Signal strength registers (2 bytes, big-endian)", None, "hex"),
    ("rx_error", "Receive error code (0 timeout, 1 CRC, 2 too long, 3/4 preamble, 5 too short)"),
])
fields("ni.", FT_BYTES, [("data", "NI payload")])
field("ni.cmd_name", FT_STR, "NI command name")


def _frame(buf, off, end, d, node, crc):
    dissect_frame(buf, off, end, d, node, crc)


def _l2(buf, off, end, d, node):
    _frame(buf, off, end, d, node, True)


def _l2_down(buf, off, end, d, node):
    _frame(buf, off, end, d, node, False)


def _l2_phase(buf, off, end, d, node):
    need(end, off, 1, "phase byte")
    d.add(node, "ni.phase", buf[off], off, 1)
    _frame(buf, off + 1, end, d, node, True)


def _l2_phase_ssi(buf, off, end, d, node):
    need(end, off, 3, "phase + SSI")
    d.add(node, "ni.phase", buf[off], off, 1)
    d.add(node, "ni.ssi", buf[end - 2] << 8 | buf[end - 1], end - 2, 2)
    _frame(buf, off + 1, end - 2, d, node, True)


def _rx_error(cmd):
    def fn(buf, off, end, d, node):
        d.add(node, "ni.rx_error", cmd & 0x0F, off - 2, 1)
        d.note("warn", "protocol", "ni", off - 2, NI_COMMANDS[cmd], node)
        if end > off:
            d.add(node, "ni.data", buf[off:end], off, end - off)
    return fn


def _data(buf, off, end, d, node):
    if end > off:
        d.add(node, "ni.data", buf[off:end], off, end - off)


NI_PAYLOAD = {0x1A: _l2, 0x1B: _l2_phase, 0x1C: _l2_phase_ssi, 0x12: _l2_down}
NI_PAYLOAD.update({c: _rx_error(c) for c in range(0x30, 0x36)})


def dissect_sicb(buf, off, end, d, parent):
    """One SICB message; the LonTalk frame inside layer-2 uplinks is decoded with its CRC."""
    node = d.layer("ni", "LON NI message", off, end - off)
    try:
        need(end, off, 2, "SICB header")
        cmd = buf[off]
        ln = buf[off + 1]
        d.add(node, "ni.cmd", cmd, off, 1)
        o = off + 2
        if ln == EXTENDED:
            need(end, o, 2, "extended length")
            ln = buf[o] << 8 | buf[o + 1]
            o += 2
        d.add(node, "ni.len", ln, off + 1, o - off - 1)
        name = NI_COMMANDS.get(cmd, f"0x{cmd:02x}")
        if node is not None:
            d.add(node, "ni.cmd_name", name, off, 1)
        d.info = f"NI {name}"
        need(end, o, ln, "SICB payload")
        if o + ln < end:
            d.note("note", "protocol", "ni", o + ln, f"{end - o - ln} bytes after the SICB message", node)
        NI_PAYLOAD.get(cmd, _data)(buf, o, o + ln, d, node)
    except Truncated as e:
        d.malformed("ni", e.offset, str(e), node)


def build_sicb(cmd: int, payload: bytes) -> bytes:
    """Build a SICB message (extended length when the payload is >= 255 bytes)."""
    if len(payload) >= EXTENDED:
        return SICB_HDR.build({"cmd": cmd, "len": EXTENDED}) + SICB_EXT_LEN.build({"xlen": len(payload)}) + payload
    return SICB_HDR.build({"cmd": cmd, "len": len(payload)}) + bytes(payload)


table("ethertype", "Ethertype").register(0x8950, "ni", dissect_sicb)

__all__ = ["dissect_sicb", "build_sicb", "NI_COMMANDS"]
