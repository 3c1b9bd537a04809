"""Byte encodings used by the simulator.

One build path per layer: every layer is built by the builder its dissector module exports
(the "build direction" of the layer): `dissectors.lon.build_frame`/`crc16`,
`dissectors.cnip.build_cnip`, `dissectors.proxy.build_proxy`,
`dissectors.adaptation.build_pdu`, `dissectors.osgp.build_request`/`build_response`.  The
functions below only translate the simulator's model into those builders' arguments.  The
one encoder of its own is the Ethernet II / IPv4 / UDP framing of the CN/IP backhaul, for
which no module has a builder.  `SOURCES` records which builder each layer used (written to
the truth file).
"""
from __future__ import annotations

import struct
from typing import Any

from dissectors import adaptation as _adp, cnip as _cnip, lon as _lon, net as _net, osgp as _osgp, proxy as _proxy

SOURCES: dict[str, str] = {}


# --------------------------------------------------------------------------- LonTalk frame

crc16 = _lon.crc16
PDUFMT = {"tpdu": 0, "spdu": 1, "auth": 2, "apdu": 3}
ADDRFMT = {"bcast": 0, "group": 1, "unicast": 2, "groupack": 2, "nid": 3}
_ADDR = {"bcast": "0", "group": "1", "unicast": "2a", "groupack": "2b", "nid": "3"}
TPDU_TYPES = {"ACKD": 0, "UNACKD_RPT": 1, "ACK": 2, "REMINDER": 4, "REM/MSG": 5}
SPDU_TYPES = {"REQUEST": 0, "RESPONSE": 2, "REMINDER": 4, "REM/MSG": 5}
AUTH_TYPES = {"CHALLENGE": 0, "CHALLENGE_OMA": 1, "REPLY": 2, "REPLY_OMA": 3}


def lon_frame(f: dict, crc: bool = True) -> bytes:
    """One raw LonTalk frame `[LPDU hdr][NPDU][CRC]` from the simulator's frame model
    (keys as in ctx["lon"]: src_subnet, src_node, dst_type, dst_subnet, dst_node, group,
    member, nid, domain, pdu, type, tid, auth; plus priority, backlog, apdu), built by
    `dissectors.lon.build_frame`."""
    SOURCES["lon"] = "dissectors.lon.build_frame"
    pdu = f["pdu"]
    kw = dict(prio=f.get("priority", 0), delta_bl=f.get("backlog", 0), pdu=pdu, addr=_ADDR[f["dst_type"]],
              src_subnet=f["src_subnet"], src_node=f["src_node"], dst_subnet=f.get("dst_subnet", 0),
              dst_node=f.get("dst_node", 0), group=f.get("group", 0), member=f.get("member", 0),
              domain=f.get("domain", b""), auth=bool(f.get("auth")), tid=f.get("tid", 0),
              apdu=f.get("apdu", b""), mlist=f.get("mlist", b""), crc=crc)
    if f.get("nid") is not None:
        kw["nid"] = f["nid"]
    if pdu == "tpdu":
        kw["tpdu_type"] = TPDU_TYPES[f["type"]]
    elif pdu == "spdu":
        kw["spdu_type"] = SPDU_TYPES[f["type"]]
    elif pdu == "auth":
        kw["auth_type"] = AUTH_TYPES[f["type"]]
        kw["auth_value"] = f.get("auth_value", bytes(8))
        if f.get("auth_fmt") is not None:
            kw["auth_fmt"] = f["auth_fmt"]
    return _lon.build_frame(**kw)


# --------------------------------------------------------------------------- CN/IP + UDP

def cnip(payload: bytes, seqno: int, session: int, ts_ms: int) -> bytes:
    SOURCES["cnip"] = "dissectors.cnip.build_cnip"
    return _cnip.build_cnip(payload, type=1, seqno=seqno, session=session, ts=ts_ms & 0xFFFFFFFF)


def _csum(data: bytes) -> int:
    """Internet checksum (IPv4 header, UDP with its pseudo-header): the one in dissectors.net."""
    return _net.ip4_checksum(data + b"\x00" * (len(data) % 2))


def ether_udp(src_mac: bytes, dst_mac: bytes, src_ip: bytes, dst_ip: bytes, sport: int, dport: int,
              payload: bytes, ip_id: int) -> bytes:
    """Ethernet II / IPv4 / UDP framing for the CN/IP backhaul (no owner builder exists for
    these link layers; checksums are filled in so that any reader accepts them)."""
    udp_len = 8 + len(payload)
    ip_hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ip_id & 0xFFFF, 0x4000, 64, 17, 0,
                         src_ip, dst_ip)
    ip_hdr = ip_hdr[:10] + struct.pack(">H", _csum(ip_hdr)) + ip_hdr[12:]
    pseudo = src_ip + dst_ip + struct.pack(">BBH", 0, 17, udp_len)
    udp = struct.pack(">HHHH", sport, dport, udp_len, 0) + payload
    c = _csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack(">H", c) + udp[8:]
    return dst_mac + src_mac + b"\x08\x00" + ip_hdr + udp


# --------------------------------------------------------------------------- repeating

def proxy(hops: list[tuple[int, int]], target: tuple[int, int], target_apdu: bytes,
          service: int = 3) -> bytes:
    """A LonTalk proxy (Annex E) request (code 0x4D) via `dissectors.proxy.build_proxy`:
    `hops` are the repeaters after the one this frame is addressed to."""
    SOURCES["proxy"] = "dissectors.proxy.build_proxy"
    return _proxy.build_proxy(hops, target, target_apdu, service=service, txctrl=0x34, sicb_txctrl=0x34)


# --------------------------------------------------------------------------- adaptation

def adaptation(apdu: bytes, **fields: Any) -> bytes:
    """The 62056-8-8 adaptation-layer PDU around an xDLMS/ACSE APDU, starting with the
    14908 APDU code byte, in the layout of the active adaptation profile."""
    SOURCES["adaptation"] = "dissectors.adaptation.build_pdu"
    return _adp.build_pdu(apdu, **fields)


# --------------------------------------------------------------------------- OSGP

def osgp_request(service: str, table: int, offset: int | None = None, count: int | None = None,
                 data: bytes = b"", seq: int | None = None, digest: bytes | None = None) -> bytes:
    SOURCES["osgp"] = "dissectors.osgp.build_request"
    return _osgp.build_request(service, table, offset, count, data, seq, digest)


def osgp_response(code: int = 0, data: bytes | None = None, expected_seq: int | None = None,
                  digest: bytes | None = None) -> bytes:
    return _osgp.build_response(code, data, expected_seq, digest)
