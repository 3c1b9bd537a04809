"""Link and network layers: Ethernet (802.1Q/QinQ), null/loopback, raw IP, Linux cooked
(SLL, SLL2), IPv4, IPv6, UDP and TCP headers, plus the raw-LonTalk link type
(LINKTYPE_USER0 = 147: a frame as a layer-2 NI delivers it, CRC-16 always present;
LINKTYPE_USER2 = 149: a raw LonTalk frame without CRC) and the lon netdev (SICB messages).
`ip4_checksum(header)` is the one IPv4 header checksum of the project (decoders and builders).

Hand-offs: `link` -> `ethertype` -> `ip.proto` -> `udp.port` (lower port first).  TCP
payloads are left to the TCP stream stage (`analyzer.tcpstage`) through `ctx["tcp"]`;
IPv4 fragments stop here with `ctx["ipfrag"]` for the defragmentation stage.
"""
from __future__ import annotations

import socket
import struct

from .core import (FT_BOOL, FT_BYTES, FT_NONE, FT_STR, FT_UINT, Dissection, Node, field, fields,
                   need, table)

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_USER0 = 147             # raw LonTalk frame [LPDU hdr][NPDU][CRC-16] (CRC always present)
LINKTYPE_USER2 = 149             # raw LonTalk frame [LPDU hdr][NPDU] without CRC
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_LON_NETDEV = 0x950       # ARPHRD of the lon netdev: each packet is one SICB message
ETHERTYPE_SICB = 0x8950

ETHERTYPES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "802.1Q", 0x88A8: "802.1ad",
              0x9100: "QinQ", ETHERTYPE_SICB: "LonTalk NI (SICB)"}
IP_PROTOS = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 41: "IPv6", 47: "GRE", 50: "ESP", 51: "AH",
             58: "ICMPv6", 132: "SCTP"}
SLL_PKTTYPES = {0: "Unicast to us", 1: "Broadcast", 2: "Multicast", 3: "Unicast to another host",
                4: "Sent by us"}
NULL_FAMILIES = {2: "IP", 24: "IPv6 (NetBSD/OpenBSD)", 28: "IPv6 (FreeBSD)", 30: "IPv6 (Darwin)",
                 10: "IPv6 (Linux)"}
LINKTYPES = {0: "NULL", 1: "ETHERNET", 101: "RAW", 108: "LOOP", 113: "LINUX_SLL", 147: "USER0 (LonTalk)",
             149: "USER2 (LonTalk, no CRC)",
             228: "IPV4", 229: "IPV6", 276: "LINUX_SLL2", 0x950: "LON netdev (SICB)"}

field("frame.len", FT_UINT, "Frame length on the wire")
field("frame.cap_len", FT_UINT, "Frame length stored into the capture file")
field("frame.linktype", FT_UINT, "Link type", labels=LINKTYPES)
field("frame.comment", FT_STR, "Comment")
field("data", FT_NONE, "Data")
field("data.data", FT_BYTES, "Data")
field("data.len", FT_UINT, "Length")
field("eth", FT_NONE, "Ethernet")
fields("eth.", FT_STR, [("dst", "Destination"), ("src", "Source"), ("addr", "Address")])
field("eth.type", FT_UINT, "Type", labels=ETHERTYPES, base="hex")
field("eth.len", FT_UINT, "Length")
field("vlan", FT_NONE, "802.1Q Virtual LAN")
field("vlan.id", FT_UINT, "ID")
field("vlan.priority", FT_UINT, "Priority")
field("vlan.etype", FT_UINT, "Type", labels=ETHERTYPES, base="hex")
field("ieee8021ad", FT_NONE, "IEEE 802.1ad (provider bridge, S-tag)")
field("ieee8021ad.id", FT_UINT, "ID")
field("ieee8021ad.priority", FT_UINT, "Priority")
field("null", FT_NONE, "Null/Loopback")
field("null.family", FT_UINT, "Family", labels=NULL_FAMILIES)
field("sll", FT_NONE, "Linux cooked capture")
fields("sll.", FT_UINT, [("pkttype", "Packet type", SLL_PKTTYPES), ("hatype", "Link-layer address type"),
                         ("halen", "Link-layer address length"), ("etype", "Protocol", ETHERTYPES, "hex"),
                         ("ifindex", "Interface index")])
field("sll.src.eth", FT_STR, "Source")
field("sll.src.unknown", FT_BYTES, "Source")
field("ip", FT_NONE, "Internet Protocol Version 4")
fields("ip.", FT_UINT, [("version", "Version"), ("hdr_len", "Header Length"), ("dsfield", "Differentiated Services Field", None, "hex"),
                        ("len", "Total Length"), ("id", "Identification", None, "hex"),
                        ("flags", "Flags", None, "hex"), ("frag_offset", "Fragment Offset"),
                        ("ttl", "Time to Live"), ("proto", "Protocol", IP_PROTOS),
                        ("checksum", "Header Checksum", None, "hex"),
                        ("checksum.status", "Header checksum status", {0: "Bad", 1: "Good", 2: "Unverified"})])
fields("ip.flags.", FT_BOOL, [("df", "Don't fragment"), ("mf", "More fragments")])
fields("ip.", FT_STR, [("src", "Source Address"), ("dst", "Destination Address"), ("addr", "Source or Destination Address")])
field("ipv6", FT_NONE, "Internet Protocol Version 6")
fields("ipv6.", FT_UINT, [("plen", "Payload Length"), ("nxt", "Next Header", IP_PROTOS), ("hlim", "Hop Limit"),
                          ("flow", "Flow Label", None, "hex"), ("tclass", "Traffic Class", None, "hex")])
fields("ipv6.", FT_STR, [("src", "Source Address"), ("dst", "Destination Address"), ("addr", "Source or Destination Address")])
field("udp", FT_NONE, "User Datagram Protocol")
fields("udp.", FT_UINT, [("srcport", "Source Port"), ("dstport", "Destination Port"), ("port", "Source or Destination Port"),
                         ("length", "Length"), ("checksum", "Checksum", None, "hex")])
field("udp.payload", FT_BYTES, "Payload")
field("tcp", FT_NONE, "Transmission Control Protocol")
fields("tcp.", FT_UINT, [("srcport", "Source Port"), ("dstport", "Destination Port"), ("port", "Source or Destination Port"),
                         ("seq", "Sequence Number (raw)"), ("ack", "Acknowledgment Number (raw)"),
                         ("hdr_len", "Header Length"), ("flags", "Flags", None, "hex"),
                         ("window_size_value", "Window"), ("checksum", "Checksum", None, "hex"),
                         ("urgent_pointer", "Urgent Pointer"), ("len", "TCP Segment Len")])
fields("tcp.flags.", FT_BOOL, [("fin", "Fin"), ("syn", "Syn"), ("reset", "Reset"), ("push", "Push"),
                               ("ack", "Acknowledgment"), ("urg", "Urgent")])

_ETH = struct.Struct("!6s6sH")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIHHHH")
_SLL = struct.Struct("!HHH8sH")
_SLL2 = struct.Struct("!HHIHBB8s")
_u16 = struct.Struct("!H").unpack_from
_ntoa = socket.inet_ntoa


def _ntop6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, b)


def _mac(b: bytes) -> str:
    return b.hex(":")


def _bulk(d: Dissection, values: dict) -> bool:
    """Fast pass: record many first-occurrence fields at once (a C-level dict update).
    Returns False (nothing recorded) when one of them already has a value, e.g. the inner
    header of a tunnel; the caller then records them one by one."""
    fields = d.fields
    for k in values:
        if k in fields:
            return False
    fields.update(values)
    return True


def show_data(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """Undissected bytes (Wireshark's "data" protocol)."""
    if end <= off:
        return
    node = d.layer("data", f"Data ({end - off} bytes)", off, end - off)
    d.add(node, "data.data", bytes(buf[off:end]), off, end - off)
    d.add(node, "data.len", end - off, off, end - off)


def _frame(buf: bytes, end: int, d: Dissection, parent: Node | None, linktype: int) -> None:
    pkt = d.ctx.get("packet")
    orig = getattr(pkt, "orig_len", end) if pkt is not None else end
    if d.source == 0:
        d.add(None, "frame.len", orig, 0, 0)
        d.add(None, "frame.cap_len", end, 0, 0)
        d.add(None, "frame.linktype", linktype, 0, 0)
        if pkt is not None and pkt.comments:
            for c in pkt.comments:
                d.add(None, "frame.comment", c, 0, 0)
    if parent is not None:
        node = d.label(parent, f"Frame: {orig} bytes on wire, {end} bytes captured, link type "
                               f"{LINKTYPES.get(linktype, linktype)}", 0, end)
        if pkt is not None:
            for c in pkt.comments or ():
                d.label(node, f"Comment: {c}", 0, 0)


def _ethertype(etype: int, buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    if not table("ethertype").dispatch(etype, buf, off, end, d, parent, try_heuristics=False):
        show_data(buf, off, end, d, parent)


# --------------------------------------------------------------------------- link layers

def dissect_eth(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    if end - off < 14:
        d.layer("eth", "Ethernet II", off, end - off)
        d.malformed("eth", off, f"needs 14 bytes, {end - off} left", parent)
        return
    dst, src, etype = _ETH.unpack_from(buf, off)
    node = d.layer("eth", "Ethernet II", off, 14)
    smac, dmac = _mac(src), _mac(dst)
    if node is not None:
        node.text = f"Ethernet II, Src: {smac}, Dst: {dmac}"
    if node is not None or not _bulk(d, {"eth.dst": [dmac], "eth.src": [smac], "eth.addr": [dmac, smac]}):
        d.add(node, "eth.dst", dmac, off, 6)
        d.add(node, "eth.src", smac, off + 6, 6)
        d.add(node, "eth.addr", dmac, off, 6)
        d.add(node, "eth.addr", smac, off + 6, 6)
    d.src, d.dst = smac, dmac
    off += 12
    if etype <= 1500:           # 802.3 length field: no ethertype to hand off
        d.add(node, "eth.len", etype, off, 2)
        show_data(buf, off + 2, min(end, off + 2 + etype), d, parent)
        return
    d.add(node, "eth.type", etype, off, 2)
    off += 2
    while etype in (0x8100, 0x88A8, 0x9100):
        if end - off < 4:
            d.malformed("vlan", off, f"802.1Q tag needs 4 bytes, {end - off} left", parent)
            return
        tag = etype
        tci, etype = struct.unpack_from("!HH", buf, off)
        if tag == 0x88A8:           # provider S-tag: Wireshark's ieee8021ad fields
            vnode = d.layer("ieee8021ad", f"IEEE 802.1ad, ID: {tci & 0xFFF}", off, 4)
            d.add(vnode, "ieee8021ad.priority", tci >> 13, off, 2)
            d.add(vnode, "ieee8021ad.id", tci & 0xFFF, off, 2)
        else:
            vnode = d.layer("vlan", f"802.1Q Virtual LAN, PRI: {tci >> 13}, ID: {tci & 0xFFF}", off, 4)
            d.add(vnode, "vlan.priority", tci >> 13, off, 2)
            d.add(vnode, "vlan.id", tci & 0xFFF, off, 2)
        d.add(vnode, "vlan.etype", etype, off + 2, 2)
        off += 4
    _ethertype(etype, buf, off, end, d, parent)


def dissect_null(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None,
                 network_order: bool = False) -> None:
    if end - off < 4:
        d.layer("null", "Null/Loopback", off, end - off)
        d.malformed("null", off, f"needs 4 bytes, {end - off} left", parent)
        return
    if network_order:
        fam = struct.unpack_from("!I", buf, off)[0]
    else:
        # host byte order of the capturing machine: a small value in either order
        fam = struct.unpack_from("<I", buf, off)[0]
        if fam > 0xFFFF:
            fam = struct.unpack_from(">I", buf, off)[0]
    node = d.layer("null", "Null/Loopback", off, 4)
    d.add(node, "null.family", fam, off, 4)
    off += 4
    if fam == 2:
        dissect_ipv4(buf, off, end, d, parent)
    elif fam in (10, 24, 28, 30):
        dissect_ipv6(buf, off, end, d, parent)
    else:
        show_data(buf, off, end, d, parent)


def dissect_raw_ip(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    if end <= off:
        d.malformed("ip", off, "empty raw IP packet", parent)
        return
    v = buf[off] >> 4
    if v == 4:
        dissect_ipv4(buf, off, end, d, parent)
    elif v == 6:
        dissect_ipv6(buf, off, end, d, parent)
    else:
        d.malformed("ip", off, f"raw IP packet with version {v}", parent)
        show_data(buf, off, end, d, parent)


def dissect_sll(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    if end - off < 16:
        d.layer("sll", "Linux cooked capture v1", off, end - off)
        d.malformed("sll", off, f"needs 16 bytes, {end - off} left", parent)
        return
    ptype, hatype, halen, addr, proto = _SLL.unpack_from(buf, off)
    node = d.layer("sll", "Linux cooked capture v1", off, 16)
    d.add(node, "sll.pkttype", ptype, off, 2)
    d.add(node, "sll.hatype", hatype, off + 2, 2)
    d.add(node, "sll.halen", halen, off + 4, 2)
    _sll_addr(node, d, hatype, halen, addr, off + 6)
    d.add(node, "sll.etype", proto, off + 14, 2)
    _sll_payload(hatype, proto, buf, off + 16, end, d, parent)


def dissect_sll2(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    if end - off < 20:
        d.layer("sll", "Linux cooked capture v2", off, end - off)
        d.malformed("sll", off, f"needs 20 bytes, {end - off} left", parent)
        return
    proto, _res, ifindex, hatype, ptype, halen, addr = _SLL2.unpack_from(buf, off)
    node = d.layer("sll", "Linux cooked capture v2", off, 20)
    d.add(node, "sll.etype", proto, off, 2)
    d.add(node, "sll.ifindex", ifindex, off + 4, 4)
    d.add(node, "sll.hatype", hatype, off + 8, 2)
    d.add(node, "sll.pkttype", ptype, off + 10, 1)
    d.add(node, "sll.halen", halen, off + 11, 1)
    _sll_addr(node, d, hatype, halen, addr, off + 12)
    _sll_payload(hatype, proto, buf, off + 20, end, d, parent)


def _sll_addr(node, d: Dissection, hatype: int, halen: int, addr: bytes, off: int) -> None:
    n = min(halen, 8)
    if hatype in (1, 772) and n == 6:
        mac = _mac(addr[:6])
        d.add(node, "sll.src.eth", mac, off, 6)
        d.src = mac
    elif n:
        d.add(node, "sll.src.unknown", addr[:n], off, n)


def _sll_payload(hatype: int, proto: int, buf: bytes, off: int, end: int, d: Dissection, parent) -> None:
    if hatype == LINKTYPE_LON_NETDEV and proto != ETHERTYPE_SICB and proto < 0x600:
        proto = ETHERTYPE_SICB          # the lon netdev's own frames are SICB messages
    _ethertype(proto, buf, off, end, d, parent)


def dissect_user0(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """LINKTYPE_USER0 = raw LonTalk frame as a layer-2 NI delivers it (0x1A/0x1B/0x1C):
    [LPDU hdr][NPDU][CRC-16], the CRC always present (a wrong one shows as "bad")."""
    if not table("lon.frame").dispatch("l2-crc", buf, off, end, d, parent, try_heuristics=False):
        show_data(buf, off, end, d, parent)


def dissect_user2(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """LINKTYPE_USER2 = raw LonTalk frame without CRC: [LPDU hdr][NPDU]."""
    if not table("lon.frame").dispatch("l2-nocrc", buf, off, end, d, parent, try_heuristics=False):
        show_data(buf, off, end, d, parent)


def dissect_lon_netdev(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    _ethertype(ETHERTYPE_SICB, buf, off, end, d, parent)


# --------------------------------------------------------------------------- IP

def _ip4_checksum(buf: bytes, off: int, hlen: int) -> int:
    """One's-complement sum of the header words (0xFFFF when the checksum verifies)."""
    s = sum(struct.unpack_from(f"!{hlen // 2}H", buf, off))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ip4_checksum(header: bytes) -> int:
    """The IPv4 header checksum (RFC 791) to store in bytes 10..11 of `header` (whose
    checksum field is zero): the project's one implementation, for builders too."""
    return ~_ip4_checksum(header, 0, len(header) & ~1) & 0xFFFF


def dissect_ipv4(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    if end - off < 20:
        d.layer("ip", "Internet Protocol Version 4", off, end - off)
        d.malformed("ip", off, f"header needs 20 bytes, {end - off} left", parent)
        return
    vihl, tos, tlen, ident, frag, ttl, proto, csum, s, t = _IP4.unpack_from(buf, off)
    hlen = (vihl & 15) * 4
    src, dst = _ntoa(s), _ntoa(t)
    node = d.layer("ip", "Internet Protocol Version 4", off, hlen)
    if node is not None:
        node.text = f"Internet Protocol Version 4, Src: {src}, Dst: {dst}"
    mf = bool(frag & 0x2000)
    foff = (frag & 0x1FFF) * 8
    if node is not None or not _bulk(d, {
            "ip.version": [vihl >> 4], "ip.hdr_len": [hlen], "ip.len": [tlen], "ip.id": [ident],
            "ip.flags": [frag >> 13], "ip.frag_offset": [foff], "ip.ttl": [ttl], "ip.proto": [proto],
            "ip.checksum": [csum], "ip.src": [src], "ip.dst": [dst], "ip.addr": [src, dst]}):
        d.add(node, "ip.version", vihl >> 4, off, 1)
        d.add(node, "ip.hdr_len", hlen, off, 1)
        if parent is not None:
            d.add(node, "ip.dsfield", tos, off + 1, 1)
        d.add(node, "ip.len", tlen, off + 2, 2)
        d.add(node, "ip.id", ident, off + 4, 2)
        d.add(node, "ip.flags", frag >> 13, off + 6, 1)
        if parent is not None:
            d.add(node, "ip.flags.df", bool(frag & 0x4000), off + 6, 1)
            d.add(node, "ip.flags.mf", mf, off + 6, 1)
        d.add(node, "ip.frag_offset", foff, off + 6, 2)
        d.add(node, "ip.ttl", ttl, off + 8, 1)
        d.add(node, "ip.proto", proto, off + 9, 1)
        d.add(node, "ip.checksum", csum, off + 10, 2)
        d.add(node, "ip.src", src, off + 12, 4)
        d.add(node, "ip.dst", dst, off + 16, 4)
        d.add(node, "ip.addr", src, off + 12, 4)      # filters match "ip.addr == x" on the fast pass
        d.add(node, "ip.addr", dst, off + 16, 4)
    d.src, d.dst = src, dst
    d.ctx["ip.src"], d.ctx["ip.dst"] = src, dst
    d.ctx["ip.version"] = 4
    d.info = f"{src} → {dst} {IP_PROTOS.get(proto, proto)}"
    if vihl >> 4 != 4 or hlen < 20:
        d.malformed("ip", off, f"bad version/header length (version {vihl >> 4}, header {hlen} bytes)", node)
        return
    if hlen > end - off:
        d.malformed("ip", off, f"header length {hlen} exceeds the {end - off} captured bytes", node)
        return
    ok = _ip4_checksum(buf, off, hlen) == 0xFFFF
    if parent is not None:
        d.add(node, "ip.checksum.status", 1 if ok else 0, off + 10, 2)
    if not ok:
        d.note("note", "checksum", "ip", off + 10, "Bad IPv4 header checksum", node)
    if tlen < hlen:
        d.malformed("ip", off + 2, f"total length {tlen} is less than the header length {hlen}", node)
        return
    pend = off + tlen
    if pend > end:
        d.note("warn", "malformed", "ip", off + 2,
               f"IPv4 total length {tlen} exceeds the {end - off} captured bytes", node)
        pend = end
    poff = off + hlen
    if mf or foff:
        d.ctx["ipfrag"] = {"src": src, "dst": dst, "id": ident, "proto": proto, "offset": foff,
                           "more": mf, "payload_off": poff, "payload_len": pend - poff,
                           "source": d.source, "complete": off + tlen <= end}
        d.info = (f"Fragmented IP protocol (proto={IP_PROTOS.get(proto, proto)} {proto}, "
                  f"off={foff}, ID={ident:04x})")
        return
    if not table("ip.proto").dispatch(proto, buf, poff, pend, d, parent, try_heuristics=False):
        show_data(buf, poff, pend, d, parent)


_IPV6_EXT = {0, 43, 60, 51, 44, 135, 139, 140}


def dissect_ipv6(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    if end - off < 40:
        d.layer("ipv6", "Internet Protocol Version 6", off, end - off)
        d.malformed("ipv6", off, f"header needs 40 bytes, {end - off} left", parent)
        return
    vtf, plen, nxt, hlim, s, t = _IP6.unpack_from(buf, off)
    src, dst = _ntop6(s), _ntop6(t)
    node = d.layer("ipv6", "Internet Protocol Version 6", off, 40)
    if node is not None:
        node.text = f"Internet Protocol Version 6, Src: {src}, Dst: {dst}"
        d.add(node, "ipv6.tclass", (vtf >> 20) & 0xFF, off, 2)
        d.add(node, "ipv6.flow", vtf & 0xFFFFF, off + 1, 3)
    d.add(node, "ipv6.plen", plen, off + 4, 2)
    d.add(node, "ipv6.nxt", nxt, off + 6, 1)
    d.add(node, "ipv6.hlim", hlim, off + 7, 1)
    d.add(node, "ipv6.src", src, off + 8, 16)
    d.add(node, "ipv6.dst", dst, off + 24, 16)
    d.add(node, "ipv6.addr", src, off + 8, 16)
    d.add(node, "ipv6.addr", dst, off + 24, 16)
    d.src, d.dst = src, dst
    d.ctx["ip.src"], d.ctx["ip.dst"] = src, dst
    d.ctx["ip.version"] = 6
    d.info = f"{src} → {dst} {IP_PROTOS.get(nxt, nxt)}"
    if vtf >> 28 != 6:
        d.malformed("ipv6", off, f"version {vtf >> 28}", node)
        return
    pend = off + 40 + plen
    if pend > end:
        if plen:
            d.note("warn", "malformed", "ipv6", off + 4,
                   f"IPv6 payload length {plen} exceeds the {end - off - 40} captured bytes", node)
        pend = end
    p = off + 40
    while nxt in _IPV6_EXT:
        if pend - p < 8:
            d.malformed("ipv6", p, "truncated extension header", node)
            return
        h_nxt, h_len = buf[p], buf[p + 1]
        if nxt == 44:
            fo = _u16(buf, p + 2)[0]
            if fo & 0xFFF9:      # offset != 0 or M set: a real fragment -> defragmentation stage
                ident = struct.unpack_from("!I", buf, p + 4)[0]
                d.ctx["ipfrag"] = {"src": src, "dst": dst, "id": ident, "proto": h_nxt, "offset": (fo >> 3) * 8,
                                   "more": bool(fo & 1), "payload_off": p + 8, "payload_len": pend - p - 8,
                                   "source": d.source, "version": 6}
                d.info = f"IPv6 fragment (nxt={IP_PROTOS.get(h_nxt, h_nxt)} {h_nxt}, off={(fo >> 3) * 8}, ident=0x{ident:08x})"
                d.label(node, "IPv6 fragment header", p, 8)
                return
            size = 8
        elif nxt == 51:
            size = (h_len + 2) * 4
        else:
            size = (h_len + 1) * 8
        if p + size > pend:
            d.malformed("ipv6", p, f"extension header of {size} bytes exceeds the payload", node)
            return
        d.label(node, f"Extension header {nxt} ({size} bytes)", p, size)
        nxt = h_nxt
        p += size
    if nxt == 59:
        return
    if not table("ip.proto").dispatch(nxt, buf, p, pend, d, parent, try_heuristics=False):
        show_data(buf, p, pend, d, parent)


# --------------------------------------------------------------------------- UDP / TCP

def dissect_udp(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    if end - off < 8:
        d.layer("udp", "User Datagram Protocol", off, end - off)
        d.malformed("udp", off, f"header needs 8 bytes, {end - off} left", parent)
        return
    sport, dport, ulen, csum = _UDP.unpack_from(buf, off)
    node = d.layer("udp", "User Datagram Protocol", off, 8)
    if node is not None:
        node.text = f"User Datagram Protocol, Src Port: {sport}, Dst Port: {dport}"
    if node is not None or not _bulk(d, {"udp.srcport": [sport], "udp.dstport": [dport], "udp.port": [sport, dport],
                                         "udp.length": [ulen], "udp.checksum": [csum]}):
        d.add(node, "udp.srcport", sport, off, 2)
        d.add(node, "udp.dstport", dport, off + 2, 2)
        d.add(node, "udp.port", sport, off, 2)
        d.add(node, "udp.port", dport, off + 2, 2)
        d.add(node, "udp.length", ulen, off + 4, 2)
        d.add(node, "udp.checksum", csum, off + 6, 2)
    d.ctx["udp.srcport"], d.ctx["udp.dstport"] = sport, dport
    pend = end
    if ulen < 8:
        d.malformed("udp", off + 4, f"length {ulen} is less than the 8-byte header", node)
    elif off + ulen > end:
        d.note("warn", "malformed", "udp", off + 4,
               f"UDP length {ulen} exceeds the {end - off} bytes available", node)
    else:
        pend = off + ulen
    poff = off + 8
    d.info = f"{sport} → {dport} Len={pend - poff}"
    if pend <= poff:
        return
    t = table("udp.port")
    lo, hi = (sport, dport) if sport <= dport else (dport, sport)
    if t.dispatch(lo, buf, poff, pend, d, parent, try_heuristics=False):
        return
    if hi != lo and t.dispatch(hi, buf, poff, pend, d, parent, try_heuristics=False):
        return
    if t.heuristics and t.dispatch(None, buf, poff, pend, d, parent):
        return
    show_data(buf, poff, pend, d, parent)


_TCP_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"),
                   (0x20, "URG"), (0x40, "ECE"), (0x80, "CWR"), (0x100, "NS"))


def tcp_flag_text(flags: int) -> str:
    return ", ".join(n for b, n in _TCP_FLAG_NAMES if flags & b)


def dissect_tcp(buf: bytes, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    if end - off < 20:
        d.layer("tcp", "Transmission Control Protocol", off, end - off)
        d.malformed("tcp", off, f"header needs 20 bytes, {end - off} left", parent)
        return
    sport, dport, seq, ack, offflags, win, csum, urg = _TCP.unpack_from(buf, off)
    hlen = (offflags >> 12) * 4
    flags = offflags & 0x1FF
    node = d.layer("tcp", "Transmission Control Protocol", off, max(20, min(hlen, end - off)))
    if node is not None or not _bulk(d, {
            "tcp.srcport": [sport], "tcp.dstport": [dport], "tcp.port": [sport, dport], "tcp.seq": [seq],
            "tcp.ack": [ack], "tcp.hdr_len": [hlen], "tcp.flags": [flags],
            "tcp.flags.fin": [bool(flags & 1)], "tcp.flags.syn": [bool(flags & 2)],
            "tcp.flags.reset": [bool(flags & 4)], "tcp.flags.push": [bool(flags & 8)],
            "tcp.flags.ack": [bool(flags & 16)], "tcp.window_size_value": [win], "tcp.checksum": [csum]}):
        d.add(node, "tcp.srcport", sport, off, 2)
        d.add(node, "tcp.dstport", dport, off + 2, 2)
        d.add(node, "tcp.port", sport, off, 2)
        d.add(node, "tcp.port", dport, off + 2, 2)
        d.add(node, "tcp.seq", seq, off + 4, 4)
        d.add(node, "tcp.ack", ack, off + 8, 4)
        d.add(node, "tcp.hdr_len", hlen, off + 12, 1)
        d.add(node, "tcp.flags", flags, off + 12, 2)
        d.add(node, "tcp.flags.fin", bool(flags & 1), off + 13, 1)
        d.add(node, "tcp.flags.syn", bool(flags & 2), off + 13, 1)
        d.add(node, "tcp.flags.reset", bool(flags & 4), off + 13, 1)
        d.add(node, "tcp.flags.push", bool(flags & 8), off + 13, 1)
        d.add(node, "tcp.flags.ack", bool(flags & 16), off + 13, 1)
        if parent is not None:
            d.add(node, "tcp.flags.urg", bool(flags & 32), off + 13, 1)
            d.add(node, "tcp.urgent_pointer", urg, off + 18, 2)
        d.add(node, "tcp.window_size_value", win, off + 14, 2)
        d.add(node, "tcp.checksum", csum, off + 16, 2)
    if hlen < 20 or hlen > end - off:
        d.malformed("tcp", off + 12, f"bad header length {hlen} ({end - off} bytes available)", node)
        return
    poff = off + hlen
    plen = end - poff
    d.add(node, "tcp.len", plen, off, 0)
    if node is not None:
        node.text = (f"Transmission Control Protocol, Src Port: {sport}, Dst Port: {dport}, "
                     f"Seq: {seq}, Ack: {ack}, Len: {plen}")
    d.info = f"{sport} → {dport} [{tcp_flag_text(flags)}] Seq={seq} Ack={ack} Win={win} Len={plen}"
    d.ctx["tcp"] = {"flow": (d.ctx.get("ip.src", ""), sport, d.ctx.get("ip.dst", ""), dport),
                    "seq": seq, "ack": ack, "flags": flags, "payload_off": poff, "payload_len": plen,
                    "source": d.source, "node": node}


# --------------------------------------------------------------------------- registration

_link = table("link", "pcap LINKTYPE")
_link.register(LINKTYPE_ETHERNET, "eth", lambda b, o, e, d, p: (_frame(b, e, d, p, 1), dissect_eth(b, o, e, d, p)))
_link.register(LINKTYPE_NULL, "null", lambda b, o, e, d, p: (_frame(b, e, d, p, 0), dissect_null(b, o, e, d, p)))
_link.register(LINKTYPE_LOOP, "null", lambda b, o, e, d, p: (_frame(b, e, d, p, 108), dissect_null(b, o, e, d, p, True)))
for _lt in (LINKTYPE_RAW, 12, 14):      # 12/14: DLT_RAW as written by some BSDs
    _link.register(_lt, "raw", lambda b, o, e, d, p, _lt=_lt: (_frame(b, e, d, p, _lt), dissect_raw_ip(b, o, e, d, p)))
_link.register(LINKTYPE_IPV4, "ip", lambda b, o, e, d, p: (_frame(b, e, d, p, 228), dissect_ipv4(b, o, e, d, p)))
_link.register(LINKTYPE_IPV6, "ipv6", lambda b, o, e, d, p: (_frame(b, e, d, p, 229), dissect_ipv6(b, o, e, d, p)))
_link.register(LINKTYPE_LINUX_SLL, "sll", lambda b, o, e, d, p: (_frame(b, e, d, p, 113), dissect_sll(b, o, e, d, p)))
_link.register(LINKTYPE_LINUX_SLL2, "sll", lambda b, o, e, d, p: (_frame(b, e, d, p, 276), dissect_sll2(b, o, e, d, p)))
_link.register(LINKTYPE_USER0, "lon", lambda b, o, e, d, p: (_frame(b, e, d, p, 147), dissect_user0(b, o, e, d, p)))
_link.register(LINKTYPE_USER2, "lon", lambda b, o, e, d, p: (_frame(b, e, d, p, 149), dissect_user2(b, o, e, d, p)))
_link.register(LINKTYPE_LON_NETDEV, "ni", lambda b, o, e, d, p: (_frame(b, e, d, p, 0x950), dissect_lon_netdev(b, o, e, d, p)))

table("ethertype", "Ethernet type").register(0x0800, "ip", dissect_ipv4)
table("ethertype").register(0x86DD, "ipv6", dissect_ipv6)
table("ip.proto", "IP protocol").register(17, "udp", dissect_udp)
table("ip.proto").register(6, "tcp", dissect_tcp)
table("ip.proto").register(4, "ip", dissect_ipv4)       # IP in IP
table("ip.proto").register(41, "ipv6", dissect_ipv6)
table("udp.port", "UDP port")
table("tcp.port", "TCP port")
