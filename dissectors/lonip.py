"""LON/IP ("LS/UDP", IzoT) on UDP 2541: a compressed NPDU whose addresses come from the IP
header (`ctx["ip.src"]`, `ctx["ip.dst"]`).

Unicast IPv4 = 192.168.S.N (no domain), 10.D1.S.N (1-byte domain), D1.D2.S.N (3-byte domain
with a zero third byte); multicast 239.192.<0 broadcast | 1 group>.<subnet | group>.
The enclosed TPDU/SPDU/AuthPDU/APDU is decoded by the LonTalk dissector's layer tables.
The backlog-info size is not settled in public sources (1 byte here, as the reference code
reads it).
"""
from __future__ import annotations

from construct import Int8ub, Struct

from .core import FT_BOOL, FT_NONE, FT_UINT, Truncated, field, fields, need, table
from . import lon as _lon

LSUDP_HDR = Struct("b0" / Int8ub, "b1" / Int8ub)
ADDR_FORMATS = {0: "Neuron ID", 1: "subnet/node", 2: "domain broadcast", 3: "subnet broadcast",
                4: "group", 5: "group response", 6: "broadcast Neuron ID", 7: "explicit subnet/node"}

field("lonip", FT_NONE, "LON/IP (LS/UDP)")
fields("lonip.", FT_UINT, [
    ("udpver", "UDP version (0 legacy, 1 enhanced)"),
    ("flags", "Flags", None, "hex"),
    ("addrfmt", "LS/UDP address format", ADDR_FORMATS),
    ("mcr", "Multicast request (backlog byte follows)"),
    ("prio", "Priority"),
    ("pdufmt", "PDU format", _lon.PDU_NAMES),
    ("backlog", "Delta backlog"),
])
field("lonip.arb_src", FT_BOOL, "Arbitrary source address present")


def _ip_addr(s):
    """(domain bytes, subnet, node, mcast kind, mcast value) from a dotted IPv4 string."""
    try:
        p = [int(x) for x in s.split(".")]
    except (AttributeError, ValueError):
        return None
    if len(p) != 4:
        return None
    if p[0] == 239 and p[1] == 192:
        return (None, None, None, p[2], p[3])
    if p[0] == 192 and p[1] == 168:
        return (b"", p[2], p[3], None, None)
    if p[0] == 10:
        return (bytes([p[1]]), p[2], p[3], None, None)
    return (bytes([p[0], p[1], 0]), p[2], p[3], None, None)


def dissect_lonip(buf, off, end, d, parent):
    node = d.layer("lonip", "LON/IP (LS/UDP)", off, end - off)
    lnode = d.layer("lon", "ISO/IEC 14908-1 LonTalk (from LON/IP)", off, end - off)
    try:
        need(end, off, 2, "LS/UDP header")
        b0, b1 = buf[off], buf[off + 1]
        add = d.add
        uv = b0 >> 4
        af = b1 >> 4
        pf = b1 & 3
        add(node, "lonip.udpver", uv, off, 1)
        add(node, "lonip.flags", b0 >> 1 & 7, off, 1)
        add(node, "lonip.arb_src", bool(b0 & 1), off, 1)
        add(node, "lonip.addrfmt", af, off + 1, 1)
        add(node, "lonip.mcr", b1 >> 3 & 1, off + 1, 1)
        add(node, "lonip.prio", b1 >> 2 & 1, off + 1, 1)
        add(node, "lonip.pdufmt", pf, off + 1, 1)
        add(lnode, "lon.prio", b1 >> 2 & 1, off + 1, 1)
        add(lnode, "lon.pdufmt", pf, off + 1, 1)
        o = off + 2
        if b1 & 0x08:
            need(end, o, 1, "backlog")
            add(node, "lonip.backlog", buf[o] & 0x3F, o, 1,
                None if node is None else f"Delta backlog: {buf[o] & 0x3F} [inferred layout: "
                                          "1-byte backlog info; public sources disagree]")
            add(lnode, "lon.delta_bl", buf[o] & 0x3F, o, 1)
            o += 1
        src = _ip_addr(d.ctx.get("ip.src"))
        dst = _ip_addr(d.ctx.get("ip.dst"))
        lon = {"src_subnet": None, "src_node": None, "dst_type": None, "dst_subnet": None,
               "dst_node": None, "group": None, "member": None, "nid": None, "domain": b"",
               "pdu": None, "type": None, "tid": None, "auth": False, "version": 2 if uv else 0}
        d.ctx["lon"] = lon
        d.ctx["lon.apdu_code"] = None
        if src and src[1] is not None:
            lon["src_subnet"], lon["src_node"], lon["domain"] = src[1], src[2], src[0]
        if b0 & 1:   # arbitrary source address
            need(end, o, 2, "arbitrary source address")
            lon["src_subnet"] = buf[o]
            lon["src_node"] = buf[o + 1] & 0x7F
            has_dom = buf[o + 1] & 0x80
            o += 2
            if has_dom:
                need(end, o, 1, "source domain length")
                n = _lon.DOMAIN_BYTES[buf[o] & 3]
                o += 1
                need(end, o, n, "source domain")
                lon["domain"] = buf[o:o + n]
                o += n
        if lon["src_subnet"] is not None:
            add(lnode, "lon.srcnet", lon["src_subnet"], off, 0)
            add(lnode, "lon.srcnode", lon["src_node"], off, 0)
            d.src = f"{lon['src_subnet']}/{lon['src_node']}"
        add(lnode, "lon.domain", lon["domain"] or b"", off, 0)
        if dst:
            if dst[3] is not None:
                if dst[3] == 1:
                    lon["dst_type"], lon["group"] = "group", dst[4]
                    d.dst = f"grp {dst[4]}"
                else:
                    lon["dst_type"], lon["dst_subnet"] = "bcast", dst[4]
                    d.dst = f"bcast {dst[4]}" if dst[4] else "bcast"
            else:
                lon["dst_type"], lon["dst_subnet"], lon["dst_node"] = "unicast", dst[1], dst[2]
                d.dst = f"{dst[1]}/{dst[2]}"
        o = LSUDP_ADDR.get(af, _addr_none)(buf, o, end, d, lnode, lon)
        if lon["dst_subnet"] is not None:
            add(lnode, "lon.dstnet", lon["dst_subnet"], off, 0)
        if lon["dst_node"] is not None:
            add(lnode, "lon.dstnode", lon["dst_node"], off, 0)
        fr = _lon._Frame()
        fr.lon, fr.vers, fr.tid, fr.code, fr.tag = lon, 2 if uv else 0, None, None, ""
        try:
            _lon.PDU_BY_FMT[pf](buf, o, end, d, lnode, fr)
        finally:
            d.info = _lon._summary(fr).strip() or "LON/IP"
    except Truncated as e:
        d.malformed("lonip", e.offset, str(e), node)


def _addr_none(buf, o, end, d, node, lon):
    return o


def _addr_nid(buf, o, end, d, node, lon):
    need(end, o, 6, "Neuron ID")
    lon["dst_type"] = "nid"
    lon["nid"] = buf[o:o + 6]
    d.add(node, "lon.uid", lon["nid"], o, 6)
    d.dst = lon["nid"].hex()
    return o + 6


def _addr_group(buf, o, end, d, node, lon):
    need(end, o, 1, "group")
    lon["dst_type"] = "group"
    lon["group"] = buf[o]
    d.add(node, "lon.dstgrp", buf[o], o, 1)
    d.dst = f"grp {buf[o]}"
    return o + 1


def _addr_group_resp(buf, o, end, d, node, lon):
    need(end, o, 2, "group response")
    lon["dst_type"] = "groupack"
    lon["group"], lon["member"] = buf[o], buf[o + 1]
    d.add(node, "lon.grp", buf[o], o, 1)
    d.add(node, "lon.grpmem", buf[o + 1], o + 1, 1)
    return o + 2


def _addr_explicit(buf, o, end, d, node, lon):
    need(end, o, 2, "explicit subnet/node")
    lon["dst_type"] = "unicast"
    lon["dst_subnet"], lon["dst_node"] = buf[o], buf[o + 1] & 0x7F
    d.dst = f"{buf[o]}/{buf[o + 1] & 0x7F}"
    return o + 2


def _addr_bcast(kind):
    def fn(buf, o, end, d, node, lon):
        lon["dst_type"] = "bcast"
        if kind == "domain":
            lon["dst_subnet"] = 0
            d.dst = "bcast"
        return o
    return fn


LSUDP_ADDR = {0: _addr_nid, 1: _addr_none, 2: _addr_bcast("domain"), 3: _addr_bcast("subnet"),
              4: _addr_group, 5: _addr_group_resp, 6: _addr_nid, 7: _addr_explicit}

table("udp.port", "UDP port").register(2541, "lonip", dissect_lonip)

__all__ = ["dissect_lonip"]
