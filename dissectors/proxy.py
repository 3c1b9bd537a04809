"""Repeating ("proxy") frames: IEC 62056-8-8 Annex E, which follows the LonTalk Enhanced
Proxy (LTEP) mechanism.

Request (APDU code 0x4D)::

    0x4D | header | hop[count] | TxCtrl (count > 0) | SICB(2) | [alt key] | target address | target APDU

- header: bit 7 uniform_by_dest, bit 6 long_timer, bit 5 all_agents, bit 4 uniform_by_src,
  bits 3..0 count = repeater hops remaining after the node that receives this message.
- hop: ``subnet, path|node`` or, when a uniform bit is set, ``path|node`` only (the subnet is
  the receiving repeater's own subnet — uniform_by_dest — or that of the node it received the
  message from — uniform_by_src).
- TxCtrl: retry count (bits 7..4), retry-timer index (bits 3..0).
- SICB byte 0: address type (7..5), path (4), service (3..2: ACKD, UNACKD_RPT, UNACKD,
  REQUEST), mode (1..0: normal, zero-sync, alternate key, attenuate); byte 1: the TxCtrl the
  agent uses towards the target.
- alternate key (mode 2): key type byte (bits 1..0: 0 standard = 6 bytes, 1 OMA = 12 bytes),
  then key *deltas*.  They are key material: only their presence and length are shown.
- target address by SICB type (0 group+size, 1 subnet+node, 2 subnet+NID, 3 subnet+backlog,
  4 group, 5 node (source subnet), 6 NID, 7 node (destination subnet)).

The message is relayed source -> the LonTalk destination (first repeater) -> each hop ->
the last one (the agent) -> target.  The target APDU is dissected as if it had been sent to
the target directly.  Uplink: 0x4D with no data = proxy success, 0x4C + 1 byte = failure
(the hop count remaining where the chain broke); a response from the target itself is
relayed unchanged and is not a proxy frame.
"""
from __future__ import annotations

from .core import FT_BOOL, FT_BYTES, FT_STR, FT_UINT, Dissection, Node, Truncated, field, table

CODE_PROXY = 0x4D
CODE_FAILURE = 0x4C

ADDR_TYPES = {0: "group", 1: "subnet/node", 2: "Neuron ID", 3: "broadcast", 4: "group (compact)",
              5: "subnet/node (compact, source subnet)", 6: "Neuron ID (compact)",
              7: "subnet/node (compact, destination subnet)"}
SERVICES = {0: "ACKD", 1: "UNACKD_RPT", 2: "UNACKD", 3: "REQUEST"}
MODES = {0: "normal", 1: "zero-sync", 2: "alternate key", 3: "attenuate"}
KEY_TYPES = {0: "standard (6 bytes)", 1: "OMA (12 bytes)"}
_TARGET_LEN = {0: 2, 1: 2, 2: 7, 3: 2, 4: 1, 5: 1, 6: 6, 7: 1}

field("lonproxy", FT_BOOL, "LonTalk enhanced proxy (IEC 62056-8-8 Annex E repeating)")
field("lonproxy.kind", FT_STR, "Proxy message kind (request, success, failure)")
field("lonproxy.header", FT_UINT, "Proxy header", base="hex")
field("lonproxy.uniform_by_dest", FT_BOOL, "Hop subnets are the receiving repeater's subnet")
field("lonproxy.uniform_by_src", FT_BOOL, "Hop subnets are the sending node's subnet")
field("lonproxy.long_timer", FT_BOOL, "Long retry timer range")
field("lonproxy.all_agents", FT_BOOL, "Repeaters also act as agents (unacknowledged/broadcast)")
field("lonproxy.count", FT_UINT, "Repeater hops remaining")
field("lonproxy.hop", FT_STR, "Hop address (subnet/node)")
field("lonproxy.hop.path", FT_BOOL, "Hop uses the alternate path")
field("lonproxy.txctrl", FT_UINT, "Transaction control (retries, timer)", base="hex")
field("lonproxy.retry", FT_UINT, "Retry count")
field("lonproxy.timer", FT_UINT, "Retry timer index")
field("lonproxy.sicb.addr_type", FT_UINT, "SICB address type", labels=ADDR_TYPES)
field("lonproxy.sicb.path", FT_BOOL, "SICB alternate path")
field("lonproxy.sicb.service", FT_UINT, "SICB service towards the target", labels=SERVICES)
field("lonproxy.sicb.mode", FT_UINT, "SICB mode", labels=MODES)
field("lonproxy.sicb.txctrl", FT_UINT, "Agent transaction control towards the target", base="hex")
field("lonproxy.altkey.type", FT_UINT, "Alternate key type", labels=KEY_TYPES)
field("lonproxy.altkey.length", FT_UINT, "Alternate key delta length (bytes; value not shown)")
field("lonproxy.target", FT_STR, "Target address")
field("lonproxy.target.subnet", FT_UINT, "Target subnet")
field("lonproxy.target.node", FT_UINT, "Target node")
field("lonproxy.target.group", FT_UINT, "Target group")
field("lonproxy.target.group_size", FT_UINT, "Target group size")
field("lonproxy.target.nid", FT_BYTES, "Target Neuron ID")
field("lonproxy.target.backlog", FT_UINT, "Broadcast backlog")
field("lonproxy.path", FT_STR, "Relay path (source -> repeaters -> target)")
field("lonproxy.source", FT_STR, "Sender of this proxy message (first node of the path)")
field("lonproxy.target.data", FT_BYTES, "Target APDU (no dissector for its code)")
field("lonproxy.failure_count", FT_UINT, "Hop count remaining where the chain failed")


def _sn(subnet, node) -> str:
    return f"{'?' if subnet is None else subnet}/{'?' if node is None else node}"


def dissect_proxy(buf, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """APDU code 0x4D (request or uplink success) or 0x4C (uplink failure); buf[off] is the code."""
    code = buf[off]
    lon = d.ctx.get("lon") or {}
    node = d.layer("lonproxy", "Enhanced proxy (repeating)", off, end - off)
    tree = node is not None
    p = off + 1
    if code == CODE_FAILURE:
        d.add(node, "lonproxy.kind", "failure", off, 1)
        if p < end:
            d.add(node, "lonproxy.failure_count", buf[p], p, 1)
            if tree:
                node.text = f"Enhanced proxy: failure, {buf[p]} hop(s) remaining"
            d.set_info(f"Proxy failure ({buf[p]} hops remaining)")
        else:
            d.malformed("lonproxy", p, "failure without hop count", node)
            d.set_info("Proxy failure")
        return
    if p >= end:
        d.add(node, "lonproxy.kind", "success", off, 1)
        if tree:
            node.text = "Enhanced proxy: success (uplink)"
        d.set_info("Proxy success")
        return
    d.add(node, "lonproxy.kind", "request", off, 1)
    hdr = buf[p]
    by_dest = bool(hdr & 0x80)
    by_src = bool(hdr & 0x10)
    uniform = by_dest or by_src
    count = hdr & 0x0F
    hnode = d.add(node, "lonproxy.header", hdr, p, 1)
    d.add(hnode, "lonproxy.uniform_by_dest", by_dest, p, 1)
    d.add(hnode, "lonproxy.long_timer", bool(hdr & 0x40), p, 1)
    d.add(hnode, "lonproxy.all_agents", bool(hdr & 0x20), p, 1)
    d.add(hnode, "lonproxy.uniform_by_src", by_src, p, 1)
    d.add(hnode, "lonproxy.count", count, p, 1)
    p += 1
    # ---- hops: collect raw entries first, resolve subnets afterwards
    src = (lon.get("src_subnet"), lon.get("src_node"))
    first = (lon.get("dst_subnet"), lon.get("dst_node")) if lon.get("dst_type") == "unicast" else None
    chain = [src] + ([first] if first else [(None, None)])
    hop_entries = []
    hop_size = 1 if uniform else 2
    if end - p < hop_size * count:
        d.malformed("lonproxy", p, f"{count} hops need {hop_size * count} bytes, {end - p} present", node)
        return
    for i in range(count):
        if uniform:
            b = buf[p]
            reader, prev = chain[-1], chain[-2]
            subnet = prev[0] if by_src else reader[0]
        else:
            subnet, b = buf[p], buf[p + 1]
        hop = (subnet, b & 0x7F)
        hop_entries.append((p, hop, bool(b & 0x80)))
        chain.append(hop)
        p += hop_size
    for hp, hop, alt in hop_entries:
        hn = d.add(node, "lonproxy.hop", _sn(*hop), hp, hop_size,
                   f"Hop: {_sn(*hop)}{' (alternate path)' if alt else ''}" if tree else None)
        d.add(hn, "lonproxy.hop.path", alt, hp + hop_size - 1, 1)
    if count:
        if p >= end:
            d.malformed("lonproxy", p, "TxCtrl missing", node)
            return
        tx = buf[p]
        tn = d.add(node, "lonproxy.txctrl", tx, p, 1)
        d.add(tn, "lonproxy.retry", tx >> 4, p, 1)
        d.add(tn, "lonproxy.timer", tx & 0x0F, p, 1)
        p += 1
    # ---- SICB
    if end - p < 2:
        d.malformed("lonproxy", p, "SICB missing", node)
        return
    s0, s1 = buf[p], buf[p + 1]
    atype, mode = s0 >> 5, s0 & 3
    service = (s0 >> 2) & 3
    sn = d.label(node, f"Proxy SICB: {ADDR_TYPES[atype]}, {SERVICES[service]}, {MODES[mode]}", p, 2)
    d.add(sn, "lonproxy.sicb.addr_type", atype, p, 1)
    d.add(sn, "lonproxy.sicb.path", bool(s0 & 0x10), p, 1)
    d.add(sn, "lonproxy.sicb.service", service, p, 1)
    d.add(sn, "lonproxy.sicb.mode", mode, p, 1)
    d.add(sn, "lonproxy.sicb.txctrl", s1, p + 1, 1)
    p += 2
    if mode == 2:
        if p >= end:
            d.malformed("lonproxy", p, "alternate key missing", node)
            return
        ktype = buf[p] & 3
        klen = 12 if ktype == 1 else 6
        if end - p - 1 < klen:
            d.malformed("lonproxy", p, f"alternate key needs {klen} bytes", node)
            return
        kn = d.label(node, f"Alternate key: {klen} delta bytes present (key material, not shown)", p, 1 + klen)
        d.add(kn, "lonproxy.altkey.type", ktype, p, 1)
        d.add(kn, "lonproxy.altkey.length", klen, p + 1, klen)
        p += 1 + klen
    # ---- target address
    tlen = _TARGET_LEN[atype]
    if end - p < tlen:
        d.malformed("lonproxy", p, f"target address needs {tlen} bytes", node)
        return
    agent = chain[-1]
    before_agent = chain[-2]
    tctx = {"dst_type": "unicast", "src_subnet": src[0], "src_node": src[1]}
    tn = d.label(node, "Target", p, tlen)
    if atype in (0, 4):
        grp = buf[p]
        target = f"grp {grp}"
        d.add(tn, "lonproxy.target.group", grp, p, 1)
        if atype == 0:
            d.add(tn, "lonproxy.target.group_size", buf[p + 1], p + 1, 1)
        tctx.update(dst_type="group", group=grp)
    elif atype in (2, 6):
        if atype == 2:
            d.add(tn, "lonproxy.target.subnet", buf[p], p, 1)
            nid = bytes(buf[p + 1:p + 7])
            d.add(tn, "lonproxy.target.nid", nid, p + 1, 6)
            tctx.update(dst_subnet=buf[p])
        else:
            nid = bytes(buf[p:p + 6])
            d.add(tn, "lonproxy.target.nid", nid, p, 6)
        target = nid.hex()
        tctx.update(dst_type="nid", nid=nid)
    elif atype == 3:
        subnet = buf[p]
        target = f"bcast {subnet}" if subnet else "bcast"
        d.add(tn, "lonproxy.target.subnet", subnet, p, 1)
        d.add(tn, "lonproxy.target.backlog", buf[p + 1], p + 1, 1)
        tctx.update(dst_type="bcast", dst_subnet=subnet)
    else:
        if atype == 1:
            subnet, b = buf[p], buf[p + 1]
            d.add(tn, "lonproxy.target.subnet", subnet, p, 1)
        else:
            b = buf[p]
            subnet = before_agent[0] if atype == 5 else agent[0]
        tnode = b & 0x7F
        d.add(tn, "lonproxy.target.node", tnode, p + tlen - 1, 1)
        target = _sn(subnet, tnode)
        tctx.update(dst_subnet=subnet, dst_node=tnode)
    d.add(tn, "lonproxy.target", target, p, tlen)
    if tn is not None:
        tn.text = f"Target: {target} ({ADDR_TYPES[atype]})"
    p += tlen
    path_nodes = [_sn(*x) for x in chain] + [target]
    path = " -> ".join(path_nodes)
    d.add(node, "lonproxy.source", path_nodes[0], off, 0)
    d.add(node, "lonproxy.path", path, off, end - off)
    if tree:
        node.text = f"Enhanced proxy: {path}"
    d.set_info(f"Proxy {path}")
    # ---- nested target PDU
    if p >= end:
        d.malformed("lonproxy", p, "no target APDU", node)
        return
    prefix = d.info
    tctx["pdu"] = "apdu"
    tctx["type"] = SERVICES[service]
    tctx["proxied"] = True
    tparent = d.label(node, f"Target APDU, as sent to {target} ({end - p} bytes)", p, end - p) \
        if node is not None else parent
    dissect_target_apdu(buf, p, end, d, tparent, tctx)
    if d.info and d.info != prefix:
        d.info = f"{prefix}: {d.info}"


def dissect_target_apdu(buf, off: int, end: int, d: Dissection, parent: Node | None,
                        target_ctx: dict) -> None:
    """Dissect the nested target APDU as if sent directly to the target: the LonTalk
    addressing context is swapped for the target's while it is decoded."""
    old = d.ctx.get("lon")
    merged = dict(old or {})
    merged.update(target_ctx)
    d.ctx["lon"] = merged
    try:
        fn = _lon_apdu_function()
        if fn is not None:
            d.info = ""
            try:
                fr = fn(buf, off, end, d, parent)
            except Truncated as e:                       # damaged target PDU: keep what decoded
                d.malformed("lon", e.offset, str(e), parent)
                fr = None
            except Exception as e:                       # noqa: BLE001 - never escape a dissector
                d.malformed("lon", off, f"{type(e).__name__}: {e}", parent)
                fr = None
            # the nested LonTalk APDU hand-off keeps its payload summary in fr.app
            d.info = (getattr(fr, "app", None) or getattr(fr, "what", None) or d.info or "") if fr else d.info
        elif not table("lon.apdu").dispatch(buf[off] if buf[off] < 0x80 else -1, buf, off, end, d, parent):
            d.add(parent, "lonproxy.target.data", bytes(buf[off:end]), off, end - off)
    finally:
        d.ctx["lon"] = old


def _lon_apdu_function():
    """The lon dissector's public 'dissect an APDU' function, if it exists."""
    try:
        from . import lon  # noqa: WPS433 (optional at import time: built by another module)
    except Exception:
        return None
    return getattr(lon, "dissect_apdu", None)


def build_proxy(hops, target, target_apdu: bytes, *, uniform: str | None = None,
                service: int | str = 0, mode: int = 0, path: bool = False, txctrl: int = 0x30,
                sicb_txctrl: int = 0x30, long_timer: bool = False, all_agents: bool = False,
                alt_key: bytes | None = None, alt_key_type: int = 0, addr_type: int | None = None) -> bytes:
    """Build a proxy request APDU (code 0x4D first).

    hops: the hop list after the first repeater, as (subnet, node) tuples (or "s/n" strings);
    with uniform="dest"/"src" only the node byte is written.  target: (subnet, node) for
    type 1, or with `addr_type` given: group int (0/4), Neuron ID bytes (2/6 with (subnet, nid)
    for 2), (subnet, backlog) for 3, node int for 5/7.  target_apdu: code + data."""
    hops = [_parse_sn(h) for h in hops]
    if isinstance(service, str):
        service = {v: k for k, v in SERVICES.items()}[service]
    hdr = len(hops) & 0x0F
    if uniform == "dest":
        hdr |= 0x80
    elif uniform == "src":
        hdr |= 0x10
    elif uniform is not None:
        raise ValueError("uniform must be None, 'dest' or 'src'")
    if long_timer:
        hdr |= 0x40
    if all_agents:
        hdr |= 0x20
    out = bytearray([CODE_PROXY, hdr])
    for s, n in hops:
        if uniform is None:
            out.append(s & 0xFF)
        out.append(n & 0x7F)
    if hops:
        out.append(txctrl & 0xFF)
    if alt_key is not None:
        mode = 2
    if addr_type is None:
        addr_type = 1
    out += bytes([(addr_type << 5) | (0x10 if path else 0) | ((service & 3) << 2) | (mode & 3),
                  sicb_txctrl & 0xFF])
    if mode == 2:
        key = alt_key or bytes(12 if alt_key_type == 1 else 6)
        if len(key) != (12 if alt_key_type == 1 else 6):
            raise ValueError("alternate key delta must be 6 (standard) or 12 (OMA) bytes")
        out.append(alt_key_type & 3)
        out += key
    if addr_type == 1:
        s, n = _parse_sn(target)
        out += bytes([s & 0xFF, n & 0x7F])
    elif addr_type == 0:
        g, size = target
        out += bytes([g & 0xFF, size & 0xFF])
    elif addr_type == 2:
        s, nid = target
        out += bytes([s & 0xFF]) + bytes(nid)[:6]
    elif addr_type == 3:
        s, backlog = target
        out += bytes([s & 0xFF, backlog & 0xFF])
    elif addr_type == 4:
        out.append(int(target) & 0xFF)
    elif addr_type == 6:
        out += bytes(target)[:6]
    else:
        node = _parse_sn(target)[1] if isinstance(target, (tuple, list, str)) else int(target)
        out.append(node & 0x7F)
    return bytes(out) + bytes(target_apdu)


def build_success() -> bytes:
    return bytes([CODE_PROXY])


def build_failure(remaining: int) -> bytes:
    return bytes([CODE_FAILURE, remaining & 0xFF])


def _parse_sn(x):
    if isinstance(x, str):
        s, n = x.split("/")
        return int(s), int(n)
    return int(x[0]), int(x[1])
