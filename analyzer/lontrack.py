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
