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
- Flags 14908 retransmissions: `lon.retransmission` = the frame number of the first copy,
  an expert note, and `ctx["lon.retransmission"]` for the later stages (association
  tracking, decryption, reassembly and the audit treat the frame as a copy, not as a new
  message).  A retransmission is a frame of the same transaction on the same medium: a
  request with the source's last request's destination, TID and data (14908 sends a new
  transaction only when the previous one is done, so a repeat of the last one is a retry,
  a duplicate after a lost response/ACK, or a repeat of an unacknowledged-repeated
  message), or the same answer again to such a transaction.  A frame right after a frame
  with a bad CRC, of the same length, carrying the same CRC and differing in at most two
  bytes is the retry of that damaged frame.  The copy of a frame routed onto another
  medium (CN/IP <-> power line) is not a retransmission.  `ctx["lon.retransmission"]` is
  set only when the later stages have already seen the data intact: the retry of a
  damaged frame has the field (it names the damaged frame) but is the first good copy.

- Publishes the frame's 14908 transaction key, `ctx["lon.txn"]` (`TxnKey`: medium, domain,
  source, destination, TID and a digest of what a retransmission repeats), computed once per
  frame: the transaction table here, the association stage's routed-copy test and the
  reassembly stage's hop all read it.

What a packet needs to be rebuilt later is kept in `pkt.aux["lon"]` / `pkt.aux["cnip.md5"]`.
State is bounded: transactions older than `TXN_WINDOW_NS` are forgotten.
"""
from __future__ import annotations

from collections import deque
from typing import NamedTuple

from dissectors import lon as _lon
from dissectors.cnip import md5_digest
from dissectors.core import FT_BYTES, FT_FLOAT, FT_STR, FT_UINT, field, fields

from .pipeline import Stage, register_stage

# Fields produced only by this stage (transactions, responses decoded in context).
field("lon.response_in", FT_UINT, "Response in frame")
field("lon.response_to", FT_UINT, "Response to request in frame")
field("lon.response_time", FT_FLOAT, "Time since the request (s)")
field("lon.retransmission", FT_UINT, "14908 retransmission of the frame (same transaction: source, "
      "destination, TID and data)")
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

# How long a transaction is remembered: 14908 retry timers with the largest retry count
# stay well inside a minute; a new transaction from the same source uses a new TID.
TXN_WINDOW_NS = 60 * 10**9
DAMAGED_KEPT = 16            # recent raw frames kept per medium to match retries of damaged ones
SWEEP_EVERY = 4096           # packets between sweeps of expired transactions


def crc_bad(d) -> bool:
    """The LonTalk frame's CRC-16 does not verify (its bytes are damaged)."""
    st = d.fields.get("lon.crc.status")
    return bool(st) and "bad" in st


def medium_of(pkt, d) -> tuple:
    """Where a frame travels: the CN/IP (or LON/IP) channel between two IP hosts, or the
    capture interface of raw frames.  A routed copy on another medium is another frame."""
    ctx = d.ctx
    a, b = ctx.get("ip.src"), ctx.get("ip.dst")
    if a is not None:
        return ("ip",) + ((a, b) if str(a) <= str(b) else (b, a))
    return ("l2", pkt.iface, pkt.linktype)


class TxnKey(NamedTuple):
    """The 14908 transaction a frame belongs to, as this stage sees it (`ctx["lon.txn"]`).
    Two frames with equal (domain, src, dst, tid, digest) carry the same transaction; on
    the same medium a later one is a retransmission, on another medium a routed copy."""
    medium: tuple            # medium_of(): the CN/IP channel or the capture interface
    domain: bytes
    src: tuple               # (source subnet, source node)
    dst: tuple               # (dst_type, dst subnet, dst node, group, Neuron ID bytes)
    tid: int | None          # None: no transaction (no TPDU/SPDU)
    digest: int | None       # what a retransmission repeats (None without a TID)


def _digest(d, lon) -> int:
    """What a retransmission repeats: the PDU type, the authentication bit and the APDU."""
    ap = d.ctx.get("lon.apdu")
    body = b""
    if ap is not None:
        try:
            body = bytes(d.sources[ap[0]][1][ap[1]:ap[2]])
        except (IndexError, TypeError):
            body = b""
    return hash((lon.get("pdu"), lon.get("type"), bool(lon.get("auth")), body))


def txn_key(pkt, d, lon) -> TxnKey:
    """The transaction key of a LonTalk frame (`lon` = `ctx["lon"]`)."""
    tid = lon.get("tid")
    return TxnKey(medium_of(pkt, d), bytes(lon.get("domain") or b""),
                  (lon.get("src_subnet"), lon.get("src_node")),
                  (lon.get("dst_type"), lon.get("dst_subnet"), lon.get("dst_node"), lon.get("group"),
                   bytes(lon.get("nid") or b"")),
                  tid, None if tid is None else _digest(d, lon))


class _Txn:
    """The last request of one source on one medium and the answers seen to it."""
    __slots__ = ("frame", "ns", "dst", "tid", "digest", "answers")

    def __init__(self, frame, ns, dst, tid, digest):
        self.frame = frame
        self.ns = ns
        self.dst = dst
        self.tid = tid
        self.digest = digest
        self.answers: dict = {}          # responder -> (frame, digest)


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
        self.txns: dict[tuple, _Txn] = {}          # (medium, domain, source) -> last request
        self.recent: dict[tuple, deque] = {}       # raw medium -> recent (frame, ns, bytes, damaged, chain)
        self.recent_bad: dict[tuple, int] = {}     # raw medium -> damaged frames in `recent`
        self.count = 0

    def _secrets(self):
        # read at use time: the key ring may be edited while a capture is open
        keys = getattr(self.pipeline, "keys", None)
        return [bytes(s) for s in (getattr(keys, "cnip_secrets", None) or ())]

    def process(self, pkt, d, first_pass):
        ctx = d.ctx
        lon = ctx.get("lon")
        if lon is not None:
            k = ctx["lon.txn"] = txn_key(pkt, d, lon)      # before anything else can fail
        if "cnip.md5" in ctx:
            self._md5(pkt, d, first_pass)
        if lon is None:
            return
        if first_pass:
            self._retransmission(pkt, d, lon, k)
            self._track(pkt, d, lon, k)
        a = pkt.aux.get("lon")
        if not a:
            return
        lnode = node = _lon_node(d)
        if "retransmission" in a:
            orig = a["retransmission"]
            d.add(lnode, "lon.retransmission", orig, 0, 0,
                  f"[Retransmission of frame {orig}]" if lnode is not None else None)
            if a.get("retransmission_damaged"):
                d.note("note", "sequence", "lon", 0,
                       f"14908 retransmission of frame {orig}, whose CRC failed (first intact copy)", lnode)
            else:
                ctx["lon.retransmission"] = orig
                d.note("note", "sequence", "lon", 0,
                       f"14908 retransmission of frame {orig} (same transaction)", lnode)
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

    # ---- retransmissions
    def _retransmission(self, pkt, d, lon, k: TxnKey) -> None:
        self.count += 1
        if not self.count % SWEEP_EVERY:
            self._sweep(pkt.ts_ns)
        medium = k.medium
        damaged = crc_bad(d)
        match = None
        if medium[0] == "l2":
            match = self._damaged_match(pkt, medium, damaged)
        if not damaged:
            # a good frame always enters the transaction table (a later duplicate of a
            # retry names the transaction's first frame)
            orig = self._same_transaction(pkt, lon, k, match[0] if match else None)
            if match is None and orig is not None:
                match = (orig, False)
        if match is not None:
            a = pkt.aux.setdefault("lon", {})
            a["retransmission"] = match[0]
            if match[1] and not damaged:
                a["retransmission_damaged"] = True

    def _damaged_match(self, pkt, medium, damaged: bool) -> tuple[int, bool] | None:
        """A retry of a frame whose CRC failed (or a damaged copy of a recent frame): same
        length, same CRC bytes, at most two other bytes different.  Returns (first frame,
        whether no intact copy was seen before)."""
        data = pkt.data
        q = self.recent.get(medium)
        if q is None:
            q = self.recent[medium] = deque(maxlen=DAMAGED_KEPT)
            self.recent_bad[medium] = 0
        nbad = self.recent_bad[medium]
        found = None
        chain = (pkt.number, not damaged)          # (first frame, an intact copy seen)
        if (damaged or nbad) and len(data) >= 4:
            for _frame, ns, raw, was_bad, prev in reversed(q):
                if pkt.ts_ns - ns > TXN_WINDOW_NS:
                    break
                if not (damaged or was_bad) or len(raw) != len(data) or raw[-2:] != data[-2:]:
                    continue
                if sum(x != y for x, y in zip(raw, data)) <= 2:
                    first = prev[0]
                    intact = any(c[0] == first and c[1] for *_, c in q)
                    found = (first, not intact)
                    chain = (first, intact or not damaged)
                    break
        if len(q) == DAMAGED_KEPT and q[0][3]:
            nbad -= 1                               # a damaged frame leaves the window
        q.append((pkt.number, pkt.ts_ns, data, damaged, chain))
        self.recent_bad[medium] = nbad + damaged
        return found

    def _same_transaction(self, pkt, lon, k: TxnKey, first: int | None = None) -> int | None:
        """A repeat of the source's last transaction, or of an answer to it; records the
        frame otherwise (under `first` when it is the retry of a damaged frame)."""
        kind = (lon.get("pdu"), lon.get("type"))
        tid = k.tid
        if tid is None:
            return None
        digest = k.digest
        ns = pkt.ts_ns
        if kind in _REQ:
            src = (k.medium, k.domain) + k.src
            t = self.txns.get(src)
            if t is not None and t.dst == k.dst and t.tid == tid and t.digest == digest \
                    and ns - t.ns <= TXN_WINDOW_NS:     # counted from the first frame: a
                return t.frame                        # replay repeated forever is no retry
            self.txns[src] = _Txn(first or pkt.number, ns, k.dst, tid, digest)
            return None
        if kind in _RESP:
            t = self.txns.get((k.medium, k.domain) + k.dst[1:3])
            if t is None or t.tid != tid or ns - t.ns > TXN_WINDOW_NS:
                return None
            responder = k.src
            seen = t.answers.get(responder)
            if seen is not None and seen[1] == digest:
                return seen[0]
            t.answers[responder] = (first or pkt.number, digest)
        return None

    def _sweep(self, now: int) -> None:
        for k in [k for k, t in self.txns.items() if now - t.ns > TXN_WINDOW_NS]:
            del self.txns[k]
        for k in [k for k, v in self.pending.items() if now - v[1] > TXN_WINDOW_NS]:
            del self.pending[k]

    def _track(self, pkt, d, lon, k: TxnKey):
        kind = (lon.get("pdu"), lon.get("type"))
        tid = k.tid
        if tid is None:
            return
        if kind in _REQ:
            key = (k.domain, k.src, tid)
            code = d.ctx.get("lon.apdu_code")     # APDU code of this frame (None for NV)
            sub = None
            ap = d.ctx.get("lon.apdu")
            if code is not None and ap is not None and ap[2] - ap[1] > 1:
                sub = d.sources[ap[0]][1][ap[1] + 1]    # first request data byte (sub-command)
            # keep only what the answer needs (not the packet and its dissection)
            self.pending[key] = (pkt.number, pkt.ts_ns, pkt.aux, code, sub)
        elif kind in _RESP and lon.get("dst_type") in ("unicast", "groupack"):
            key = (k.domain, k.dst[1:3], tid)
            hit = self.pending.get(key)
            if hit is None:
                return
            number, ts_ns, req_aux, code, sub = hit
            pkt.aux.setdefault("lon", {}).update(response_to=number,
                                                 response_time=round((pkt.ts_ns - ts_ns) / 1e9, 9),
                                                 request_code=code, request_sub=sub)
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
