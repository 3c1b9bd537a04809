"""IEC 62056-46 HDLC frames (DLMS over serial lines, and HDLC carried in TCP/UDP).

A frame is ``7E | format(2) | dst addr(1/2/4) | src addr(1/2/4) | control | [HCS(2) | info] | FCS(2) | 7E``.
The format field holds the frame type (0xA = type 3), the segmentation bit and an 11-bit
length that counts everything between the flags.  Addresses are extended-address bytes
(bit 0 = 1 marks the last byte, 7 bits of value each); a server address may be split into
an upper (logical device) and a lower (physical device) part.  HCS and FCS are
CRC-16/X.25 (reflected 0x1021, init and final XOR 0xFFFF), sent least significant byte
first.  A bad FCS is reported as an expert item and the frame is still decoded.

The information field of I and UI frames starts with the LLC header ``E6 E6 00``
(command) or ``E6 E7 00`` (response) on the first segment; the xDLMS APDU follows and is
handed to ``table("dlms")``.  Segmented I-frames (segmentation bit set) are reassembled by
the stateful stage ``analyzer.dlms_streams``; this dissector only records a descriptor of
each information field in ``d.ctx["hdlc.frames"]``.
"""
from __future__ import annotations

from .core import (FT_BOOL, FT_BYTES, FT_STR, FT_UINT, Dissection, Node, field, table)

FLAG = 0x7E

# --------------------------------------------------------------------------- CRC-16/X.25

def _make_table() -> list[int]:
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x8408 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC_TABLE = _make_table()


def crc16_x25(data, start: int = 0, end: int | None = None) -> int:
    """CRC-16/X.25 (check("123456789") == 0x906E) over data[start:end]."""
    if end is None:
        end = len(data)
    crc = 0xFFFF
    t = _CRC_TABLE
    for i in range(start, end):
        crc = (crc >> 8) ^ t[(crc ^ data[i]) & 0xFF]
    return crc ^ 0xFFFF


# --------------------------------------------------------------------------- fields

U_FRAMES = {0x83: "SNRM", 0x43: "DISC", 0x63: "UA", 0x0F: "DM", 0x87: "FRMR", 0x03: "UI"}
S_FRAMES = {0x01: "RR", 0x05: "RNR", 0x09: "REJ", 0x0D: "SREJ"}

PARAM_NAMES = {0x05: "max_info_tx", 0x06: "max_info_rx", 0x07: "window_tx", 0x08: "window_rx"}
PARAM_DESC = {0x05: "Maximum information field length, transmit",
              0x06: "Maximum information field length, receive",
              0x07: "Window size, transmit", 0x08: "Window size, receive"}

field("hdlc", FT_BOOL, "IEC 62056-46 HDLC frame")
field("hdlc.format", FT_UINT, "Frame format field", base="hex")
field("hdlc.format_type", FT_UINT, "Frame format type (3 = DLMS)")
field("hdlc.segmented", FT_BOOL, "Segmentation bit (more segments follow)")
field("hdlc.length", FT_UINT, "Frame length (between the flags)")
field("hdlc.dst", FT_UINT, "Destination address (raw extended-address value)", base="hex")
field("hdlc.src", FT_UINT, "Source address (raw extended-address value)", base="hex")
field("hdlc.dst.size", FT_UINT, "Destination address length in bytes")
field("hdlc.src.size", FT_UINT, "Source address length in bytes")
field("hdlc.server.upper", FT_UINT, "Server upper HDLC address (logical device)")
field("hdlc.server.lower", FT_UINT, "Server lower HDLC address (physical device)")
field("hdlc.client", FT_UINT, "Client address (SAP)")
field("hdlc.control", FT_UINT, "Control field", base="hex")
field("hdlc.frame_type", FT_STR, "Frame type (I, RR, RNR, SNRM, DISC, UA, DM, FRMR, UI)")
field("hdlc.ns", FT_UINT, "Send sequence number N(S)")
field("hdlc.nr", FT_UINT, "Receive sequence number N(R)")
field("hdlc.pf", FT_BOOL, "Poll/final bit")
field("hdlc.hcs", FT_UINT, "Header check sequence", base="hex")
field("hdlc.hcs.status", FT_STR, "HCS status (good/bad)")
field("hdlc.fcs", FT_UINT, "Frame check sequence", base="hex")
field("hdlc.fcs.status", FT_STR, "FCS status (good/bad)")
field("hdlc.info", FT_BYTES, "Information field")
field("hdlc.llc", FT_BYTES, "LLC header (E6E600 command, E6E700 response)")
field("hdlc.llc.dsap", FT_UINT, "LLC destination LSAP", base="hex")
field("hdlc.llc.ssap", FT_UINT, "LLC source LSAP (E6 command, E7 response)", base="hex")
field("hdlc.llc.quality", FT_UINT, "LLC quality")
field("hdlc.param.group", FT_UINT, "Parameter negotiation group id (0x81 = ISO/IEC 13239)", base="hex")
for _pid, _name in PARAM_NAMES.items():
    field("hdlc.param." + _name, FT_UINT, PARAM_DESC[_pid])
field("hdlc.param.unknown", FT_BYTES, "Unknown negotiation parameter")
field("hdlc.segment", FT_BYTES, "Information field of a segmented frame (reassembled later)")


# --------------------------------------------------------------------------- helpers

def parse_address(buf, off: int, end: int):
    """Extended address: returns (raw value, size, upper, lower) or None if invalid.
    Sizes 1, 2 and 4 are valid."""
    for size in (1, 2, 4):
        if off + size > end:
            return None
        if buf[off + size - 1] & 1:
            # every earlier byte must have bit 0 clear
            for i in range(size - 1):
                if buf[off + i] & 1:
                    return None
            raw = int.from_bytes(buf[off:off + size], "big")
            if size == 1:
                return raw, 1, buf[off] >> 1, None
            if size == 2:
                return raw, 2, buf[off] >> 1, buf[off + 1] >> 1
            upper = ((buf[off] >> 1) << 7) | (buf[off + 1] >> 1)
            lower = ((buf[off + 2] >> 1) << 7) | (buf[off + 3] >> 1)
            return raw, 4, upper, lower
        if size == 2 and not (buf[off + 1] & 1):
            continue
    return None


def control_name(c: int) -> str:
    if not c & 1:
        return "I"
    if c & 3 == 1:
        return S_FRAMES.get(c & 0x0F, "S?")
    return U_FRAMES.get(c & 0xEF, "U?")


def encode_address(value: int, size: int = 1, lower: int | None = None) -> bytes:
    """Encode an extended HDLC address.  size 1: value (0..127); size 2: upper=value,
    lower=lower (0..127 each); size 4: upper=value, lower=lower (0..16383 each)."""
    if size == 1:
        return bytes([((value & 0x7F) << 1) | 1])
    lo = lower or 0
    if size == 2:
        return bytes([(value & 0x7F) << 1, ((lo & 0x7F) << 1) | 1])
    if size == 4:
        return bytes([((value >> 7) & 0x7F) << 1, (value & 0x7F) << 1,
                      ((lo >> 7) & 0x7F) << 1, ((lo & 0x7F) << 1) | 1])
    raise ValueError("HDLC address size must be 1, 2 or 4")


def build_frame(dst: int, src: int, control: int, info: bytes = b"", *, segmented: bool = False,
                dst_size: int = 1, dst_lower: int | None = None, src_size: int = 1,
                llc: bytes | None = None, bad_fcs: bool = False) -> bytes:
    """Build one complete HDLC frame with flags, HCS and FCS (for tests and the simulator).
    `llc` is prepended to `info` (e.g. b"\\xe6\\xe6\\x00" for a command)."""
    if llc:
        info = llc + info
    head_addr = encode_address(dst, dst_size, dst_lower) + encode_address(src, src_size)
    hdr_len = 2 + len(head_addr) + 1
    length = hdr_len + (2 + len(info) if info else 0) + 2
    if length > 0x7FF:
        raise ValueError("HDLC frame too long")
    fmt = 0xA000 | (0x0800 if segmented else 0) | length
    body = bytearray(fmt.to_bytes(2, "big") + head_addr + bytes([control & 0xFF]))
    if info:
        body += crc16_x25(body).to_bytes(2, "little")
        body += info
    fcs = crc16_x25(body)
    if bad_fcs:
        fcs ^= 0x5A5A
    body += fcs.to_bytes(2, "little")
    return bytes([FLAG]) + bytes(body) + bytes([FLAG])


def frame_len(buf, off: int, end: int) -> int | None:
    """Length of the HDLC frame at off including both flags, or None if the bytes at off
    do not start a frame.  May exceed end-off (frame not complete yet)."""
    if end - off < 3 or buf[off] != FLAG:
        return None
    fmt = (buf[off + 1] << 8) | buf[off + 2]
    if fmt >> 12 != 0xA:
        return None
    length = fmt & 0x7FF
    if length < 7:
        return None
    return length + 2


# --------------------------------------------------------------------------- dissection

def dissect_frame(buf, off: int, end: int, d: Dissection, parent: Node | None) -> int:
    """Dissect one frame starting at its opening flag.  Returns the offset after the
    frame (after the closing flag if present)."""
    tree = parent is not None
    n = frame_len(buf, off, end)
    if n is None:
        d.malformed("hdlc", off, "not an HDLC type-3 frame", parent)
        return end
    total_end = off + n
    truncated = total_end > end
    fend = min(total_end, end)
    node = d.layer("hdlc", "HDLC frame (IEC 62056-46)", off, fend - off)
    if node is None and tree:
        node = parent
    p = off + 1
    fmt = (buf[p] << 8) | buf[p + 1]
    length = fmt & 0x7FF
    seg = bool(fmt & 0x0800)
    d.add(node, "hdlc.format", fmt, p, 2)
    d.add(node, "hdlc.format_type", 3, p, 1)
    d.add(node, "hdlc.segmented", seg, p, 1)
    d.add(node, "hdlc.length", length, p, 2)
    p += 2
    if truncated:
        d.malformed("hdlc", off, f"frame length {length} exceeds the {end - off - 2} bytes available", node)
    # body_end: end of the data covered by the FCS (exclusive)
    body_end = off + 1 + length - 2
    if body_end > end:
        body_end = end
    dst = parse_address(buf, p, body_end)
    if dst is None:
        d.malformed("hdlc", p, "invalid destination address", node)
        return fend
    d.add(node, "hdlc.dst", dst[0], p, dst[1])
    d.add(node, "hdlc.dst.size", dst[1], p, dst[1])
    dst_off = p
    p += dst[1]
    src = parse_address(buf, p, body_end)
    if src is None:
        d.malformed("hdlc", p, "invalid source address", node)
        return fend
    d.add(node, "hdlc.src", src[0], p, src[1])
    d.add(node, "hdlc.src.size", src[1], p, src[1])
    src_off = p
    p += src[1]
    if p >= body_end:
        d.malformed("hdlc", p, "no control field", node)
        return fend
    ctrl = buf[p]
    ftype = control_name(ctrl)
    # Direction: a client address is one byte, a server address 1, 2 or 4 bytes.  With
    # 1-byte addresses on both sides the LLC header (below) or the frame type decides;
    # otherwise the frame is taken as sent by the client.
    if src[1] > 1:
        from_server = True
    elif dst[1] > 1:
        from_server = False
    else:
        from_server = control_name(buf[p]) in ("UA", "DM", "FRMR")
    d.ctx.setdefault("hdlc.addresses", []).append((dst[0], src[0]))
    ctrl_off = p
    p += 1
    hdr_end = p
    info_off = info_end = None
    if body_end - hdr_end > 0:
        # HCS + information field
        if body_end - hdr_end < 2:
            d.malformed("hdlc", hdr_end, "information field without HCS", node)
            return fend
        hcs = buf[hdr_end] | (buf[hdr_end + 1] << 8)
        hcs_ok = crc16_x25(buf, off + 1, hdr_end) == hcs
        info_off = hdr_end + 2
        info_end = body_end
        p = info_off
    else:
        hcs = None
        hcs_ok = True
    # FCS
    fcs = None
    fcs_ok = None
    if not truncated:
        fpos = off + 1 + length - 2
        fcs = buf[fpos] | (buf[fpos + 1] << 8)
        fcs_ok = crc16_x25(buf, off + 1, fpos) == fcs
    # LLC (first segment of I/UI frames only; a continuation segment has none)
    llc = None
    if info_off is not None and info_end - info_off >= 3 and buf[info_off] == 0xE6 \
            and buf[info_off + 1] in (0xE6, 0xE7) and buf[info_off + 2] == 0x00:
        llc = bytes(buf[info_off:info_off + 3])
        from_server = buf[info_off + 1] == 0xE7
    if from_server:
        server, client, s_off, c_off = src, dst, src_off, dst_off
    else:
        server, client, s_off, c_off = dst, src, dst_off, src_off
    d.add(node, "hdlc.server.upper", server[2], s_off, server[1])
    if server[3] is not None:
        d.add(node, "hdlc.server.lower", server[3], s_off, server[1])
    d.add(node, "hdlc.client", client[2], c_off, client[1])

    if "ip.src" not in d.ctx:       # serial line: the HDLC addresses are the best we have
        cs, ss = f"client {client[2]}", f"server {server[2]}" + (f"/{server[3]}" if server[3] is not None else "")
        d.src, d.dst = (ss, cs) if from_server else (cs, ss)
    d.add(node, "hdlc.control", ctrl, ctrl_off, 1)
    d.add(node, "hdlc.frame_type", ftype, ctrl_off, 1)
    pf = bool(ctrl & 0x10)
    d.add(node, "hdlc.pf", pf, ctrl_off, 1)
    ns = nr = None
    if ftype == "I":
        ns = (ctrl >> 1) & 7
        d.add(node, "hdlc.ns", ns, ctrl_off, 1)
    if ftype == "I" or ctrl & 3 == 1:
        nr = (ctrl >> 5) & 7
        d.add(node, "hdlc.nr", nr, ctrl_off, 1)
    if hcs is not None:
        d.add(node, "hdlc.hcs", hcs, hdr_end, 2)
        d.add(node, "hdlc.hcs.status", "good" if hcs_ok else "bad", hdr_end, 2)
        if not hcs_ok:
            d.note("warn", "checksum", "hdlc", hdr_end, "Bad HDLC HCS", node)
    if fcs is not None:
        fpos = off + 1 + length - 2
        d.add(node, "hdlc.fcs", fcs, fpos, 2)
        d.add(node, "hdlc.fcs.status", "good" if fcs_ok else "bad", fpos, 2)
        if not fcs_ok:
            d.note("warn", "checksum", "hdlc", fpos,
                   f"Bad HDLC FCS 0x{fcs:04x} (expected 0x{crc16_x25(buf, off + 1, fpos):04x})", node)
        if total_end - 1 < end and buf[total_end - 1] != FLAG:
            d.note("warn", "malformed", "hdlc", total_end - 1, "closing flag 0x7E missing", node)

    info_txt = ""
    if tree:
        if ftype == "I":
            info_txt = f"I S{ns} R{nr}" + (" P/F" if pf else "")
        elif nr is not None:
            info_txt = f"{ftype} R{nr}" + (" P/F" if pf else "")
        else:
            info_txt = ftype + (" P/F" if pf else "")
        if seg:
            info_txt += " [segment]"
        node.text = (f"HDLC {info_txt}, {'server' if from_server else 'client'} "
                     f"{client[2] if not from_server else server[2]}"
                     f" -> {server[2] if not from_server else client[2]}, length {length}")
    else:
        info_txt = ftype
    d.set_info(f"HDLC {info_txt}")

    if info_off is None or info_end <= info_off:
        return fend
    info_len = info_end - info_off
    if ftype in ("SNRM", "UA"):
        _dissect_params(buf, info_off, info_end, d, node)
        return fend
    if ftype in ("FRMR", "DM", "DISC", "RR", "RNR"):
        # FRMR: the rejected frame's control field and the reason bits (ISO/IEC 13239)
        d.add(node, "hdlc.info", bytes(buf[info_off:info_end]), info_off, info_len)
        return fend
    # descriptor for the reassembly stage
    frames = d.ctx.setdefault("hdlc.frames", [])
    desc = {"dst": dst[0], "src": src[0], "segmented": seg, "control": ctrl, "type": ftype,
            "source": d.source, "offset": info_off, "length": info_len, "llc": llc is not None,
            "from_server": from_server, "fcs_ok": fcs_ok, "index": len(frames)}
    frames.append(desc)
    p = info_off
    if llc is not None:
        lnode = d.label(node, f"LLC: {llc.hex(' ')} ({'response' if llc[1] == 0xE7 else 'command'})", p, 3)
        d.add(lnode, "hdlc.llc", llc, p, 3)
        d.add(lnode, "hdlc.llc.dsap", llc[0], p, 1)
        d.add(lnode, "hdlc.llc.ssap", llc[1], p + 1, 1)
        d.add(lnode, "hdlc.llc.quality", llc[2], p + 2, 1)
        p += 3
    if seg or (llc is None and ftype == "I" and _continuation_hint(d, desc)):
        d.add(node, "hdlc.segment", bytes(buf[p:info_end]), p, info_end - p,
              f"Segment data ({info_end - p} bytes, reassembled when the last segment arrives)"
              if tree else None)
        desc["pending"] = True
        return fend
    if p < info_end:
        if not table("dlms").dispatch("apdu", buf, p, info_end, d, parent):
            d.add(node, "hdlc.info", bytes(buf[p:info_end]), p, info_end - p)
    return fend


def _continuation_hint(d: Dissection, desc: dict) -> bool:
    """An I-frame without LLC header may be the last segment of a segmented message; the
    reassembly stage decides.  Stateless view: it is a continuation if the previous frame
    of this packet in the same direction was segmented."""
    frames = d.ctx.get("hdlc.frames", [])
    for f in reversed(frames[:-1]):
        if f["dst"] == desc["dst"] and f["src"] == desc["src"]:
            return bool(f["segmented"])
    return True  # no LLC and not first: most likely the end of an earlier segment


def _dissect_params(buf, off: int, end: int, d: Dissection, node: Node | None) -> None:
    """SNRM/UA parameter negotiation: 81 80 len { id len value }."""
    if end - off < 3:
        d.malformed("hdlc", off, "short parameter field", node)
        return
    group = buf[off]
    d.add(node, "hdlc.param.group", group, off, 1)
    glen = buf[off + 2]
    p = off + 3
    gend = min(end, p + glen)
    if p + glen > end:
        d.malformed("hdlc", off + 2, f"parameter group length {glen} exceeds frame", node)
    pnode = d.label(node, f"Parameter negotiation (group 0x{group:02x}, {glen} bytes)", off, gend - off)
    while p + 2 <= gend:
        pid, plen = buf[p], buf[p + 1]
        if p + 2 + plen > gend:
            d.malformed("hdlc", p, f"parameter 0x{pid:02x} length {plen} exceeds group", pnode)
            return
        val = int.from_bytes(buf[p + 2:p + 2 + plen], "big") if plen <= 8 else None
        name = PARAM_NAMES.get(pid)
        if name is not None and val is not None:
            d.add(pnode, "hdlc.param." + name, val, p, 2 + plen)
        else:
            d.add(pnode, "hdlc.param.unknown", bytes(buf[p:p + 2 + plen]), p, 2 + plen)
        p += 2 + plen


def dissect_frames(buf, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """A sequence of HDLC frames (a TCP segment, a UDP datagram or a serial log chunk).
    Frames may have their own flags or share one; garbage between frames is reported."""
    infos = []
    p = off
    while p < end:
        if buf[p] == FLAG and p + 1 < end and buf[p + 1] == FLAG:
            p += 1          # shared/idle flags
            continue
        n = frame_len(buf, p, end)
        if n is None:
            if buf[p] == FLAG and end - p == 1:
                break       # trailing flag
            # shared flag: the previous frame's closing flag opens this one
            if p > off and buf[p - 1] == FLAG:
                n = frame_len(buf, p - 1, end)
                if n is not None:
                    p -= 1
            if n is None:
                d.malformed("hdlc", p, f"{end - p} bytes of non-HDLC data", parent)
                break
        d.info = ""
        q = dissect_frame(buf, p, end, d, parent)
        if d.info:
            infos.append(d.info)
        if q <= p:
            break
        p = q
    if len(infos) == 1:
        d.info = infos[0]
    elif infos:
        _join_infos(d, infos)


def looks_like_hdlc(buf, off: int, end: int) -> bool:
    n = frame_len(buf, off, end)
    if n is None:
        return False
    if off + n <= end:
        return buf[off + n - 1] == FLAG
    return True


# --------------------------------------------------------------------------- TCP streams

def stream_detect(data) -> bool:
    """First bytes of a TCP direction: an HDLC type-3 frame (closing flag checked when the
    whole frame is there)."""
    return len(data) >= 9 and looks_like_hdlc(data, 0, len(data))


def stream_pdu_len(view, off: int) -> int | None:
    """Length of the next frame (both flags included; a frame sharing its opening flag
    with the previous frame's closing flag starts at its format byte).  None: need more
    bytes; 0: lost sync."""
    n = len(view) - off
    if n < 3:
        return None
    b = view[off]
    if b == FLAG:
        if view[off + 1] == FLAG:
            return 1                      # idle/duplicate flag
        fl = frame_len(view, off, len(view))
        return fl if fl is not None else 0
    if b >> 4 == 0xA:                     # shared flag: format byte first
        length = ((b << 8) | view[off + 1]) & 0x7FF
        return length + 1 if length >= 7 else 0
    return 0


def stream_dissect(buf, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """One frame cut from a TCP stream; Info lists every frame of the packet."""
    if end - off <= 1:
        return                            # a lone flag
    infos = d.ctx.setdefault("hdlc.infos", [])
    d.info = ""
    if buf[off] != FLAG:
        if off > 0 and buf[off - 1] == FLAG:
            off -= 1
        else:
            old = d.source
            data = bytes([FLAG]) + bytes(buf[off:end])
            d.new_source("HDLC frame", data)
            try:
                dissect_frame(data, 0, len(data), d, parent)
            finally:
                d.source = old
            infos.append(d.info)
            _join_infos(d, infos)
            return
    dissect_frame(buf, off, end, d, parent)
    infos.append(d.info)
    _join_infos(d, infos)


def _join_infos(d: Dissection, infos: list) -> None:
    """Several frames in one packet: their count, then the summaries that say most
    (frames carrying an APDU before bare supervisory frames), at most eight."""
    if len(infos) > 1:
        rich = [i for i in infos if not i.startswith("HDLC ")]
        shown = (rich or infos)[:8]
        more = len(rich or infos) > 8
        d.info = f"[{len(infos)} HDLC frames] " + " | ".join(shown) + (" | ..." if more else "")


# --------------------------------------------------------------------------- serial captures

LINKTYPE_DLMS_HDLC = 148     # LINKTYPE_USER1: raw HDLC bytes from a serial line (our convention)


def dissect_serial(buf, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """Link-layer entry for LINKTYPE_USER1 records: one or more HDLC frames as read from
    an optical/RS-485 port.  Segmented I-frames are reassembled by analyzer.dlms_streams."""
    try:
        from .net import _frame as frame_layer      # the frame.* fields every link type gets
    except ImportError:                              # pragma: no cover
        frame_layer = None
    if frame_layer is not None:
        frame_layer(buf, end, d, parent, LINKTYPE_DLMS_HDLC)
    dissect_frames(buf, off, end, d, parent)


if table("link").get(LINKTYPE_DLMS_HDLC) is None:
    table("link").register(LINKTYPE_DLMS_HDLC, "hdlc", dissect_serial)
