"""Random valid LonTalk frame generator for tests and benchmarks.

`gen_frame(rng)` picks every header field at random, builds the frame with
`dissectors.lon.build_frame`, and returns the ground truth computed here from the chosen
values (not by decoding the bytes): `{field name: value or [values]}` in the field
conventions of the `lon.*` registry.  `wrap_cnip_eth()` wraps a frame in
Ethernet/IPv4/UDP 1628/CN-IP data, `write_pcap()` writes a classic pcap.
"""
from __future__ import annotations

import random
import struct

from dissectors.cnip import build_cnip
from dissectors.lon import build_frame, build_nv, crc16

ADDRS = ("0", "1", "2a", "2b", "3")
DOMAINS = (0, 1, 3, 6)
KINDS = [("tpdu", t) for t in (0, 1, 2, 4, 5)] + [("spdu", t) for t in (0, 2, 4, 5)] + \
        [("auth", t) for t in (0, 1, 2, 3)] + [("apdu", None)]
# APDU kinds: nv, app, ff, nd, nm
APDU_KINDS = ("nv", "app", "ff", "nd", "nm")


def _apdu(rng: random.Random, kind: str):
    """(apdu bytes, truth fields) for one APDU."""
    t: dict = {}
    n = rng.randint(0, 6)
    tail = bytes(rng.getrandbits(8) for _ in range(n))
    if kind == "nv":
        sel = rng.randint(0, 0x3FFF)
        dr = rng.randint(0, 1)
        val = tail or bytes([rng.getrandbits(8)])
        t.update({"lon.nv": 0x8000 | dr << 14 | sel, "lon.nv.dir": dr, "lon.nv.selector": sel,
                  "_payload": val})
        return build_nv(sel, val, dr), t
    if kind == "app":
        code = rng.randint(0x00, 0x3F)
        t.update({"lon.application": code, "lon.code": code & 0x3F, "_payload": tail})
    elif kind == "ff":
        code = rng.randint(0x40, 0x4F)
        t.update({"lon.ff": code, "lon.code": code & 0x3F, "_payload": tail})
    elif kind == "nd":
        code = rng.randint(0x50, 0x5F)
        t.update({"lon.nd": code, "lon.code": code, "_payload": tail})
    else:
        code = rng.randint(0x60, 0x7F)
        t.update({"lon.nm": code, "lon.code": code, "_payload": tail})
    return bytes([code]) + tail, t


def gen_frame(rng: random.Random, *, addr=None, dom=None, kind=None, vers=None, apdu_kind=None,
              crc=None):
    """One random valid frame: returns (frame bytes, truth dict)."""
    addr = addr or rng.choice(ADDRS)
    dlen = DOMAINS[rng.randrange(4)] if dom is None else dom
    pdu, typ = kind or rng.choice(KINDS)
    vers = rng.choice((0, 0, 0, 2)) if vers is None else vers
    crc = rng.random() < 0.5 if crc is None else crc
    prio, alt, bl = rng.randint(0, 1), rng.randint(0, 1), rng.randint(0, 63)
    sn, snode = rng.randint(0, 255), rng.randint(0, 127)
    dn, dnode = rng.randint(0, 255), rng.randint(0, 127)
    grp, mem = rng.randint(0, 255), rng.randint(0, 63)
    nid = bytes(rng.getrandbits(8) for _ in range(6))
    domain = bytes(rng.getrandbits(8) for _ in range(dlen))
    tid = rng.randint(0, 0xFFF) if vers == 2 else rng.randint(0, 15)
    auth = rng.randint(0, 1)
    afmt = {"0": 0, "1": 1, "2a": 2, "2b": 2, "3": 3}[addr]
    pf = {"tpdu": 0, "spdu": 1, "auth": 2, "apdu": 3}[pdu]
    t: dict = {
        "lon.ppdu": prio << 7 | alt << 6 | bl, "lon.prio": prio, "lon.alt_path": alt,
        "lon.delta_bl": bl, "lon.npdu": vers << 6 | pf << 4 | afmt << 2 | DOMAINS.index(dlen),
        "lon.vers": vers, "lon.pdufmt": pf, "lon.addrfmt": afmt,
        "lon.domainlen": DOMAINS.index(dlen), "lon.srcnet": sn, "lon.srcnode": snode,
        "lon.domain": domain,
    }
    t["_addr"] = addr
    if addr == "0":
        t["lon.dstnet"] = dn
    elif addr == "1":
        t["lon.dstgrp"] = grp
    elif addr == "2a":
        t.update({"lon.dstnet": dn, "lon.dstnode": dnode})
    elif addr == "2b":
        t.update({"lon.dstnet": dn, "lon.dstnode": dnode, "lon.grp": grp, "lon.grpmem": mem})
    else:
        t.update({"lon.dstnet": dn, "lon.uid": nid})
    kw = dict(prio=prio, alt_path=alt, delta_bl=bl, vers=vers, pdu=pdu, addr=addr,
              src_subnet=sn, src_node=snode, dst_subnet=dn, dst_node=dnode, group=grp,
              member=mem, nid=nid, domain=domain, tid=tid, auth=bool(auth), crc=crc)
    needs_apdu = (pdu == "apdu" or (pdu == "tpdu" and typ in (0, 1, 5))
                  or (pdu == "spdu" and typ in (0, 2, 5)))
    if pdu in ("tpdu", "spdu"):
        b0 = auth << 7 | typ << 4 | (tid >> 8 if vers == 2 else tid)
        t["lon." + pdu] = b0
        t["lon.auth"] = auth
        t[f"lon.{pdu}_type"] = typ
        t["lon.trans_no"] = b0 & 0xF
        kw[f"{pdu}_type"] = typ
        if typ in (4, 5):
            ml = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3)))
            kw["mlist"] = ml
            t["lon.spdu.mlen"] = len(ml)
            t["lon.spdu.mlist"] = list(ml)
    elif pdu == "auth":
        b0 = afmt << 6 | typ << 4 | (tid >> 8 if vers == 2 else tid)
        val = bytes(rng.getrandbits(8) for _ in range(8))
        kw.update(auth_type=typ, auth_value=val)
        t.update({"lon.authpdu": b0, "lon.authpdu_addrfmt": afmt, "lon.authpdu_type": typ,
                  "lon.trans_no": b0 & 0xF, "lon.authpdu_value": val})
        if afmt == 1:
            t["lon.authpdu_group"] = grp
    if vers == 2 and pdu != "apdu":
        t["lon.tid12"] = tid
    if needs_apdu:
        ak = apdu_kind or rng.choice(APDU_KINDS)
        apdu, at = _apdu(rng, ak)
        kw["apdu"] = apdu
        t.update(at)
        t["_apdu_kind"] = ak
    frame = build_frame(**kw)
    body = frame[:-2] if crc else frame
    if crc:
        t["lon.crc"] = crc16(body)
    t["lon.crc.status"] = "good" if crc else "absent"
    t["_crc_bytes"] = frame[len(body):]
    return frame, t


def coverage_corpus(rng: random.Random, n: int):
    """n frames; the first ones walk every (address format, PDU kind, domain length,
    version) combination so that each is covered at least once."""
    out = []
    combos = [(a, k, dl, v) for a in ADDRS for k in KINDS for dl in DOMAINS for v in (0, 2)]
    for a, k, dl, v in combos:
        out.append(gen_frame(rng, addr=a, kind=k, dom=dl, vers=v))
    while len(out) < n:
        out.append(gen_frame(rng))
    return out[:max(n, len(combos))]


# --------------------------------------------------------------------------- wrapping

def _ipcsum(h: bytes) -> int:
    s = sum(struct.unpack("!10H", h))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def wrap_udp_eth(payload: bytes, sport=1628, dport=1628, src=(10, 0, 0, 1), dst=(10, 0, 0, 2)) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                               bytes(src), bytes(dst)))
    ip[10:12] = struct.pack("!H", _ipcsum(bytes(ip)))
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + bytes(ip) + udp


def wrap_cnip_eth(frame: bytes, seqno: int = 0, **kw) -> bytes:
    return wrap_udp_eth(build_cnip(frame, seqno=seqno, session=0x1234, **kw))


def write_pcap(path, frames, linktype: int = 1, ts0: int = 1_700_000_000) -> None:
    """Classic pcap (microseconds); frames: bytes, or (ts_ns, bytes)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for i, fr in enumerate(frames):
            if isinstance(fr, tuple):
                ts, fr = fr
                sec, us = divmod(ts // 1000, 1_000_000)
            else:
                sec, us = ts0 + i // 1000, (i % 1000) * 1000
            f.write(struct.pack("<IIII", sec, us, len(fr), len(fr)) + fr)
