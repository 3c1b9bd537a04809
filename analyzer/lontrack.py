"""LonTalk transaction tracking (stage order 20).

- Pairs acknowledgements and responses with their request by transaction: the request is
  keyed by (domain, source subnet/node, TID); an ACK/RESPONSE addressed back to that
  subnet/node with the same TID answers it (several responders to a multicast request all
  match).  Adds `lon.response_to` (request frame number) and `lon.response_time` (s) to the
  answer, and `lon.response_in` to the request when it is re-dissected.
- Decodes RESPONSE APDUs in context: when the matched request was a network-management or
  diagnostic command, the response code is read as success/failure of that command and the
  response data is decoded (`dissectors.lon.decode_response`).
- Verifies CN/IP MD5 digests with the key ring's `cnip_secrets` (when the key ring has any).

What a packet needs to be rebuilt later is kept in `pkt.aux["lon"]` / `pkt.aux["cnip.md5"]`.
"""
from __future__ import annotations

from dissectors import lon as _lon
from dissectors.cnip import md5_digest
from dissectors.core import FT_BYTES, FT_FLOAT, FT_STR, FT_UINT, field, fields

from .pipeline import Stage, register_stage

# Fields produced only by this stage (transactions, responses decoded in context).
field("lon.response_in", FT_UINT, "Response in frame")
field("lon.response_to", FT_UINT, "Response to request in frame")
field("lon.response_time", FT_FLOAT, "Time since the request (s)")
fields("lon.nm.", FT_UINT, [("response", "NM response code", None, "hex")])
fields("lon.nm.", FT_STR, [("status", "NM response status (success/failure)"),
                           ("request", "NM request this response answers")])
fields("lon.nd.", FT_UINT, [
    ("response", "ND response code", None, "hex"),
    ("xmit_errors", "Transmission errors"),
    ("tx_timeouts", "Transaction timeouts"),
    ("rcv_tx_full", "Receive transaction full"),
    ("lost_msgs", "Lost messages"),
    ("missed_msgs", "Missed messages"),
    ("reset_cause", "Reset cause", _lon.RESET_CAUSES, "hex"),
    ("node_state", "Node state", _lon.NODE_STATES, "hex"),
    ("version", "Firmware version"),
    ("error_log", "Error log", None, "hex"),
    ("model", "Model number", None, "hex"),
    ("fw_version", "Firmware version"), ("fw_variant", "Firmware variant"),
    ("rom_version", "ROM version"), ("minor_version", "Minor version"),
    ("build_number", "Build number"), ("fw_code", "Firmware code"),
])
fields("lon.nd.", FT_BYTES, [("xcvr_regs", "Transceiver status registers")])
fields("lon.nd.", FT_STR, [("status", "ND response status (success/failure)"),
                           ("request", "ND request this response answers")])

_REQ = {("tpdu", "ACKD"), ("tpdu", "UNACKD_RPT"), ("tpdu", "REM/MSG"), ("spdu", "REQUEST"),
        ("spdu", "REM/MSG")}
_RESP = {("tpdu", "ACK"), ("spdu", "RESPONSE")}


def _lon_node(d):
    if d.root is None:
        return None
    for n in reversed(d.root.children):
        if n.field == "lon":
            return n
    return None


class LonTrack(Stage):
    name = "lontrack"

    def __init__(self, pipeline):
        super().__init__(pipeline)
        self.pending: dict = {}

    def _secrets(self):
        # read at use time: the key ring may be edited while a capture is open
        keys = getattr(self.pipeline, "keys", None)
        return [bytes(s) for s in (getattr(keys, "cnip_secrets", None) or ())]

    def process(self, pkt, d, first_pass):
        ctx = d.ctx
        if "cnip.md5" in ctx:
            self._md5(pkt, d, first_pass)
        lon = ctx.get("lon")
        if lon is None:
            return
        if first_pass:
            self._track(pkt, d, lon)
        a = pkt.aux.get("lon")
        if not a:
            return
        lnode = node = _lon_node(d)
        if "response_to" in a:
            if node is not None:
                node = d.label(node, f"Response to the request in frame {a['response_to']}", 0, 0)
            d.add(node, "lon.response_to", a["response_to"], 0, 0)
            d.add(node, "lon.response_time", a["response_time"], 0, 0)
            rc = a.get("request_code")
            ap = ctx.get("lon.apdu")
            if rc is not None and 0x50 <= rc <= 0x7F and lon.get("type") == "RESPONSE" and ap:
                src, off, end = ap
                buf = d.sources[src][1]
                old = d.source
                d.source = src
                try:
                    what = _lon.decode_response(buf, off, end, d, node, rc, a.get("request_sub"))
                except Exception as exc:  # bad response data: an expert item, not a crash
                    d.malformed("lon", off, f"response: {exc}", node)
                    what = None
                finally:
                    d.source = old
                if what:
                    tid = lon.get("tid")
                    d.info = f"RESPONSE {what}" + (f" [tid {tid}]" if tid is not None else "")
                    if node is not None:
                        node.text = f"Response to the request in frame {a['response_to']}: {what}"
                        lnode.text = f"ISO/IEC 14908-1 LonTalk, {d.src} -> {d.dst}: {d.info}"
        if "response_in" in a:
            d.add(lnode, "lon.response_in", a["response_in"], 0, 0)

    def _track(self, pkt, d, lon):
        kind = (lon.get("pdu"), lon.get("type"))
        tid = lon.get("tid")
        if tid is None:
            return
        dom = bytes(lon.get("domain") or b"")
        if kind in _REQ:
            key = (dom, lon.get("src_subnet"), lon.get("src_node"), tid)
            code = d.ctx.get("lon.apdu_code")     # APDU code of this frame (None for NV)
            sub = None
            ap = d.ctx.get("lon.apdu")
            if code is not None and ap is not None and ap[2] - ap[1] > 1:
                sub = d.sources[ap[0]][1][ap[1] + 1]    # first request data byte (sub-command)
            # keep only what the answer needs (not the packet and its dissection)
            self.pending[key] = (pkt.number, pkt.ts_ns, pkt.aux, code, sub)
        elif kind in _RESP and lon.get("dst_type") in ("unicast", "groupack"):
            key = (dom, lon.get("dst_subnet"), lon.get("dst_node"), tid)
            hit = self.pending.get(key)
            if hit is None:
                return
            number, ts_ns, req_aux, code, sub = hit
            pkt.aux["lon"] = {"response_to": number,
                              "response_time": round((pkt.ts_ns - ts_ns) / 1e9, 9),
                              "request_code": code, "request_sub": sub}
            req_aux.setdefault("lon", {}).setdefault("response_in", pkt.number)

    def _md5(self, pkt, d, first_pass):
        entries = d.ctx["cnip.md5"]
        if first_pass:
            secrets = self._secrets()
            if not secrets:
                return
            res = []
            for src, off, ln, dig, _node in entries:
                buf = d.sources[src][1]
                packet = buf[off:off + ln]
                digest = buf[dig:dig + 16]
                res.append("good" if any(md5_digest(packet, s) == digest for s in secrets) else "bad")
            pkt.aux["cnip.md5"] = res
        res = pkt.aux.get("cnip.md5")
        if not res:
            return
        vals = d.fields.get("cnip.md5.status")
        for i, ((src, off, ln, dig, node), st) in enumerate(zip(entries, res)):
            if vals is not None and i < len(vals):
                vals[i] = st
            if node is not None:
                for c in node.children:
                    if c.field == "cnip.md5.status":
                        c.value = st
                        c.text = f"MD5 digest status: {st}"
            if st == "bad":
                d.note("warn", "security", "cnip", dig, "CN/IP MD5 digest does not verify with any key-ring secret", node)


register_stage(20, "lontrack", LonTrack)


# --------------------------------------------------------------------------- -T fields fast feed
#
# `lonscope decode -T fields -e lon.* / cnip.*` needs neither the lower layers' fields nor
# any stage: when every requested field is a per-frame field of the CN/IP or LonTalk
# dissectors (the stages add only `lon.response_*`, `lon.nm.*`/`lon.nd.*` response fields
# and, with key-ring secrets, `cnip.md5.status`), a plain Ethernet/IPv4/UDP datagram whose
# UDP port belongs to CN/IP is handed to the CN/IP dissector directly, with the same byte
# range the Ethernet/IPv4/UDP dissectors would give it.  Anything else (VLAN tags, IPv6,
# fragments, TCP, IP options beyond the captured bytes, damaged headers, other ports) goes
# through the full pipeline, so stage state (IP defragmentation, TCP) sees every packet it
# would act on.  tests/test_fastpath.py checks that the output is identical.

STAGE_LON_PREFIXES = ("lon.nm.", "lon.nd.", "lon.response_")
STAGE_LON_FIELDS = frozenset(["lon.auth_check", "cnip.md5.status"])    # decrypt, lontrack
FAST_VIRTUAL = frozenset(["frame.number", "frame.time_epoch", "frame.time_relative",
                          "frame.time_delta", "frame.len", "frame.cap_len"])


def frame_only_field(name: str) -> bool:
    """True for CN/IP and LonTalk fields that only the stateless dissectors produce."""
    from dissectors.core import REGISTRY

    from . import filters
    if name in ("lon", "cnip"):
        return True
    if name in STAGE_LON_FIELDS or not name.startswith(("lon.", "cnip.")) \
            or name.startswith(STAGE_LON_PREFIXES) or name not in REGISTRY:
        return False
    filters._load_fields()
    dissector_fields = filters.DISSECTOR_FIELDS      # registered by dissectors, not stages
    return dissector_fields is None or name in dissector_fields


def fast_feed(pipe, names, filter_fields=()):
    """A `feed(rec, file) -> Packet` for `-T fields` that skips the lower layers and the
    stages for plain CN/IP datagrams, or None when the requested fields (`names`, plus the
    display filter's `filter_fields`) need more than the CN/IP/LonTalk dissectors give."""
    import os
    import socket
    import struct

    from dissectors.core import Dissection, call, table

    from .packet import Packet

    if os.environ.get("LONSCOPE_FULL_DECODE") or pipe.want_tree:
        return None
    keys = getattr(pipe, "keys", None)
    if keys is not None and getattr(keys, "cnip_secrets", None):
        return None
    names = list(names)
    if not names or not any(frame_only_field(n) for n in names):
        return None
    if not all(frame_only_field(n) or n in FAST_VIRTUAL for n in names):
        return None
    if not all(frame_only_field(n) for n in filter_fields):
        return None
    udp = table("udp.port").entries
    feed_full = pipe.feed
    ip_udp = struct.Struct("!BxHxxHxBxx4s4sHHH").unpack_from
    ntoa = socket.inet_ntoa

    def feed(rec, file=""):
        data = rec.data
        end = len(data)
        # Ethernet II, IPv4 (no fragment), UDP: the exact checks and byte range of the
        # full dissectors; anything unusual takes the full path
        if rec.linktype != 1 or end < 42 or data[12] != 8 or data[13] != 0:
            return feed_full(rec, file)
        vihl, tlen, frag, proto, s, t, sport, dport, ulen = ip_udp(data, 14)
        hlen = (vihl & 15) * 4
        if vihl >> 4 != 4 or hlen != 20 or proto != 17 or frag & 0x3FFF or tlen < hlen:
            return feed_full(rec, file)
        pend = 14 + tlen
        if pend > end:
            pend = end
        if pend - 34 < 8:
            return feed_full(rec, file)
        uend = pend
        if ulen >= 8 and 34 + ulen <= pend:
            uend = 34 + ulen
        if uend <= 42:
            return feed_full(rec, file)
        lo, hi = (sport, dport) if sport <= dport else (dport, sport)
        e = udp.get(lo)
        if e is None:
            e = udp.get(hi)
        if e is None or e[0] != "cnip":
            return feed_full(rec, file)
        pipe.count += 1
        pkt = Packet(pipe.count, rec, file)
        d = Dissection(data)
        d.ctx = {"packet": pkt, "pipeline": pipe, "ip.src": ntoa(s), "ip.dst": ntoa(t), "ip.version": 4,
                 "udp.srcport": sport, "udp.dstport": dport}
        call("cnip", e[1], data, 42, uend, d, None)
        pkt.d = d
        return pkt

    return feed
