"""DLMS association tracking (pipeline stage, order 30).

An association lives on one transport: an IP flow (addresses, ports and wrapper wPorts), a
LonTalk pair (subnet/node or Neuron ID in one domain, the real target behind a repeater), or
an HDLC address pair.  Its lifecycle is AARQ -> AARE -> HLS pass 3/4 -> data -> RLRQ/RLRE
(or a new AARQ, a TCP reset, or a long silence).  It holds what the decryption stage needs:
system titles (from AARQ/AARE and from general-* APDUs), the dedicated key learned from a
decrypted InitiateRequest (only there, never in the key ring), the mechanism and challenges,
the security suite, conformance and PDU sizes; and what users want to see: request/response
matching by invoke id with response times, counts, HLS status.

Copies: the same APDU is often seen more than once -- a 14908 retransmission (lontrack's
`ctx["lon.retransmission"]`), the next hop of a repeater chain (Annex E proxy: client ->
repeater -> ... -> target and the relayed response back), or the copy of a frame routed
between CN/IP and the power line.  Every copy is attributed to the end-to-end association
(so that decryption finds its titles and dedicated key on every hop) and marked
`ctx["dlms.hop_copy"] = True`; a copy never opens an association, changes its state or
counts as a new request/response, and an HLS pass value seen again shows the status of the
first check.  Frames whose LonTalk CRC fails are damaged: they are not attributed.

Memory stays flat on long captures: pending requests are bounded per association and
dropped when it closes, response times are running aggregates, the hop/copy tables forget
entries after `HOP_WINDOW_NS`, and a closed association keeps only its summary.

APDU positions: every call of the `dlms` table's "apdu" dissector is recorded in
`ctx["dlms.apdus"]` (source, offset, end, and what it appended to `ctx["dlms.ops"]`,
`ctx["dlms.ciphered"]`, `ctx["dlms.acse"]`) so that each APDU of a packet (several wrapper
PDUs, decrypted plaintext) is seen once, in order.
"""
from __future__ import annotations

import collections
import os
import pickle
import tempfile
from array import array
from collections.abc import Iterator

from dissectors.core import FT_BYTES, FT_FLOAT, FT_STR, FT_UINT, field, table

from . import dlmscrypto as dc
from .lontrack import crc_bad
from .pipeline import Stage, register_stage

field("dlms.assoc_id", FT_UINT, "Association number (lonscope association tracking)")
field("dlms.assoc_state", FT_STR, "Association state after this packet")
field("dlms.response_in", FT_UINT, "The response to this request is in frame")
field("dlms.response_to", FT_UINT, "This is a response to the request in frame")
field("dlms.time", FT_FLOAT, "Time since the request (seconds)")
HLS_LABELS = {"verified": "verified", "failed": "FAILED", "no-key": "no key to verify"}
field("dlms.sec.hls_pass3", FT_STR, "HLS pass 3 check (client's f(StoC))")
field("dlms.sec.hls_pass4", FT_STR, "HLS pass 4 check (server's f(CtoS))")
field("dlms.sec.hls_value", FT_BYTES, "HLS pass 3/4 value (f(challenge))")

# APDU tags by direction (plain, glo, ded); the rest (general-*, 0x00) by endpoint.
CLIENT_TAGS = frozenset([0x60, 0x62, 0x01, 0x21, 0x41, 0x05, 0x25, 0x45, 0x06, 0x26, 0x46,
                         0x16, 0x36, 0x56, 0xC0, 0xC1, 0xC3, 0xC8, 0xC9, 0xCB, 0xD0, 0xD1, 0xD3, 0xD9, 0xE6])
SERVER_TAGS = frozenset([0x61, 0x63, 0x08, 0x28, 0x48, 0x0C, 0x2C, 0x4C, 0x0D, 0x2D, 0x4D,
                         0x0E, 0x2E, 0x4E, 0x0F, 0x18, 0x38, 0x58, 0xC2, 0xCA, 0xD2, 0xC4, 0xC5, 0xC7,
                         0xCC, 0xCD, 0xCF, 0xD4, 0xD5, 0xD7, 0xD8, 0xDA, 0xE7])
REQUEST_TAGS = frozenset([0xC0, 0xC1, 0xC3, 0xD9, 0x05, 0x06])
RESPONSE_TAGS = frozenset([0xC4, 0xC5, 0xC7, 0xDA, 0x0C, 0x0D])
ERROR_TAGS = frozenset([0xD8, 0x0E])
IDLE_TIMEOUT_NS = 3600 * 10**9
HLS_OBIS = "0.0.40.0.0.255"
CLOSED = ("released", "aborted", "rejected", "replaced", "timeout")
HOP_WINDOW_NS = 60 * 10**9        # repeater hops and relays of one transaction
COPY_WINDOW_NS = 2 * 10**9        # a frame routed onto another medium (CN/IP <-> power line)
MAX_PENDING = 16                  # unanswered requests kept per association (invoke ids are 4 bits)
MAX_EVENTS = 1024                 # latest lifecycle/HLS observations kept for inspection
SWEEP_EVERY = 4096
SPOOL_AT = 4096                   # closed associations kept in memory; older ones go to the spool


# --------------------------------------------------------------------------- APDU recorder

def _install_recorder() -> None:
    """Wrap the "dlms"/"apdu" dissector so every APDU's position is recorded per packet."""
    tbl = table("dlms")
    e = tbl.entries.get("apdu")
    if e is None or getattr(e[1], "_lonscope_recorder", False):
        return
    proto, fn = e

    def recorded(buf, off, end, d, parent, _fn=fn):
        ctx = d.ctx
        ops = ctx.setdefault("dlms.ops", [])
        cip = ctx.setdefault("dlms.ciphered", [])
        n_ops, n_cip = len(ops), len(cip)
        prev_acse = ctx.pop("dlms.acse", None)
        rec = {"source": d.source, "offset": off, "end": end,
               "tag": buf[off] if off < end else None}
        lst = ctx.setdefault("dlms.apdus", [])
        lst.append(rec)
        try:
            return _fn(buf, off, end, d, parent)
        finally:
            ops = ctx.get("dlms.ops", ops)
            cip = ctx.get("dlms.ciphered", cip)
            rec["ops"] = ops[n_ops:]
            rec["ciphered"] = cip[n_cip:]
            acse = ctx.get("dlms.acse")
            rec["acse"] = acse
            rec["info"] = ctx.get("dlms.info")
            key = ctx.pop("dlms.dedicated_key", None)
            if key:
                # the InitiateRequest's dedicated key (the dissector's ctx hand-off): kept
                # with this APDU's record as a Secret, never a field or text
                rec["dedicated_key"] = dc_secret(key)
            if acse is None and prev_acse is not None:
                ctx["dlms.acse"] = prev_acse
            try:
                rec["bytes"] = bytes(buf[off:end])
            except Exception:
                rec["bytes"] = b""

    recorded._lonscope_recorder = True
    tbl.entries["apdu"] = (proto, recorded)


# --------------------------------------------------------------------------- transport

def ip_flow(d) -> tuple[str, str, str] | None:
    """("TCP"|"UDP", "src:port", "dst:port") of the packet's IP transport (in the packet's
    direction), or None.  The one place that turns the IP/TCP/UDP hand-offs into a flow:
    association keys, HDLC reassembly per direction and the reassembly stage's fallback
    all use it."""
    ctx = d.ctx
    tcp = ctx.get("tcp")
    if tcp is not None:
        s, sp, t, tp = tcp["flow"]
        return "TCP", f"{s}:{sp}", f"{t}:{tp}"
    if "udp.srcport" in ctx:
        return "UDP", f"{ctx.get('ip.src', '')}:{ctx['udp.srcport']}", f"{ctx.get('ip.dst', '')}:{ctx['udp.dstport']}"
    return None


def transport_of(d) -> tuple[tuple, str, str, str]:
    """(association key, source endpoint, destination endpoint, description)."""
    ctx = d.ctx
    f = d.fields
    wsrc = f.get("wrapper.srcport")
    wdst = f.get("wrapper.dstport")
    ws = wsrc[0] if wsrc else None
    wd = wdst[0] if wdst else None
    lon = ctx.get("lon")
    hs, hd = f.get("hdlc.src"), f.get("hdlc.dst")
    # LonTalk addressing first: CN/IP or LON/IP copies of a LonTalk frame belong to the
    # association of the LonTalk nodes, not of the IP routers that carry them
    if lon is not None:
        dom = bytes(lon.get("domain") or b"").hex()
        a = f"{lon.get('src_subnet')}/{lon.get('src_node')}"
        tgt = f.get("lonproxy.target")
        if tgt:
            b = str(tgt[-1]) if not isinstance(tgt[-1], bytes) else tgt[-1].hex()
        elif lon.get("dst_type") == "nid" and lon.get("nid") is not None:
            nid = lon.get("nid")
            b = nid.hex() if isinstance(nid, (bytes, bytearray)) else str(nid)
        elif lon.get("dst_type") in ("group", "groupack") or lon.get("group") is not None and lon.get("dst_subnet") is None:
            b = f"grp {lon.get('group')}"
        else:
            b = f"{lon.get('dst_subnet')}/{lon.get('dst_node')}"
        # a response through a repeater comes back from the repeater: the real peer is in
        # the proxy's source field when present
        src_real = f.get("lonproxy.source")
        if src_real:
            a = str(src_real[-1]) if not isinstance(src_real[-1], bytes) else src_real[-1].hex()
        if b.startswith("grp"):
            return ("lon", dom, a, b), a, b, "LonTalk"
        return ("lon", dom) + tuple(sorted((a, b))), a, b, "LonTalk"
    flow = ip_flow(d)
    if flow is not None:
        proto, a, b = flow
        if ws is not None:
            a, b = f"{a}/w{ws}", f"{b}/w{wd}"
            return (proto.lower(),) + tuple(sorted((a, b))), a, b, proto
        if hs and hd:
            # HDLC over IP: the HDLC addresses say who talks to whom, whatever the IP
            # direction (some gateways send both directions with the same IP header), so
            # the key pairs the IP endpoints and the HDLC addresses independently
            key = (proto.lower(),) + tuple(sorted((a, b))) + tuple(sorted((f"h{hs[0]:#x}", f"h{hd[0]:#x}")))
            return key, f"{a}/h{hs[0]:#x}", f"{b}/h{hd[0]:#x}", proto
        return (proto.lower(),) + tuple(sorted((a, b))), a, b, proto
    if hs and hd:
        a, b = f"hdlc:{hs[0]:#x}", f"hdlc:{hd[0]:#x}"
        return ("hdlc",) + tuple(sorted((a, b))), a, b, "HDLC"
    a, b = d.src or "?", d.dst or "?"
    return ("unknown",) + tuple(sorted((a, b))), a, b, "unknown"


# --------------------------------------------------------------------------- copies

def is_copy(d) -> bool:
    """The packet carries an APDU already seen: a 14908 retransmission (lontrack's
    `ctx["lon.retransmission"]`) or a copy this stage marked `ctx["dlms.hop_copy"]` (the
    next hop of a repeater chain, a relayed response, a frame routed onto another medium).
    The one test the later stages use (decryption, audit): a copy is not a replay, a relay
    or key sharing.  Frames without a DLMS APDU are not marked here; their retransmission
    flag alone counts."""
    ctx = d.ctx
    return bool(ctx.get("dlms.hop_copy")) or ctx.get("lon.retransmission") is not None


# --------------------------------------------------------------------------- what the xDLMS dissector decoded

def hls_from_ops(ops) -> tuple[str, bytes] | None:
    """("pass3"|"pass4", value) when the decoded operations of one APDU carry an HLS pass
    value (an octet-string): LN ACTION 15/0.0.40.0.0.255/1 and a successful action-response;
    SN 0xFA58 via WriteRequest or parameterized ReadRequest."""
    for op in ops or ():
        svc, dr, v = op.get("service"), op.get("dir"), op.get("value")
        if svc == "action" and op.get("choice") == "normal" and isinstance(v, bytes):
            if dr == "request" and op.get("class_id") == 15 and op.get("obis") == HLS_OBIS \
                    and op.get("method_id") == 1:
                return "pass3", v
            if dr == "response" and op.get("result") == "success":
                return "pass4", v
        if dr == "request" and op.get("short_name") == 0xFA58:
            if svc == "write" and op.get("access") == "variable-name" and isinstance(v, bytes):
                return "pass3", v
            ap = op.get("access_parameters")
            if svc == "read" and op.get("access") == "parameterized-access" and isinstance(ap, bytes):
                return "pass3", ap
    return None


def sn_read_response_value(ops) -> bytes | None:
    """The octet-string of a successful ReadResponse (SN HLS pass 4)."""
    for op in ops or ():
        if op.get("service") == "read" and op.get("dir") == "response" and op.get("result") == "success" \
                and isinstance(op.get("value"), bytes):
            return op["value"]
    return None


def invoke_id(apdu: bytes) -> int | None:
    try:
        t = apdu[0]
        if 0xC0 <= t <= 0xC7:
            return apdu[2] & 0x0F
        if t in (0xD9, 0xDA):
            return int.from_bytes(apdu[1:5], "big") & 0xFFFFFF
    except IndexError:
        return None
    return None


def is_error_response(apdu: bytes) -> bool:
    try:
        t = apdu[0]
        if t in ERROR_TAGS:
            return True
        if t == 0xC4 and apdu[1] == 0x01:
            return apdu[3] == 0x01
        if t == 0xC5 and apdu[1] == 0x01:
            return apdu[3] != 0x00
        if t == 0xC7 and apdu[1] == 0x01:
            return apdu[3] != 0x00
    except IndexError:
        return False
    return False


# --------------------------------------------------------------------------- association

class Association:
    __slots__ = ("id", "key", "transport", "client", "server", "client_title", "server_title",
                 "mechanism", "context", "suite", "security", "policy_dedicated", "conformance",
                 "client_max_pdu", "server_max_pdu", "dedicated_key", "dedicated_key_frame",
                 "state", "result", "diagnostic",
                 "first_frame", "last_frame", "first_ns", "last_ns", "requests", "responses",
                 "errors", "ctos", "stoc", "f_stoc", "f_ctos", "hls_pass3", "hls_pass4",
                 "pass3_frame", "pass4_frame", "lls_password", "lls_frame", "aarq_frame", "aare_frame",
                 "pending", "pending_sn", "rt_count", "rt_sum", "rt_max", "keyset", "plain_after_assoc",
                 "ciphered_count", "plain_count", "release_frame")

    def __init__(self, aid: int, key: tuple, transport: str, client: str, server: str, frame: int, ns: int):
        self.id = aid
        self.key = key
        self.transport = transport
        self.client = client
        self.server = server
        self.client_title = None
        self.server_title = None
        self.mechanism = None
        self.context = None
        self.suite = None
        self.security = set()          # {"auth", "enc"} seen on protected APDUs
        self.policy_dedicated = False
        self.conformance = None
        self.client_max_pdu = None
        self.server_max_pdu = None
        self.dedicated_key = None
        self.dedicated_key_frame = None
        self.state = "open"
        self.result = None
        self.diagnostic = None
        self.first_frame = self.last_frame = frame
        self.first_ns = self.last_ns = ns
        self.requests = self.responses = self.errors = 0
        self.ctos = self.stoc = self.f_stoc = self.f_ctos = None
        self.hls_pass3 = self.hls_pass4 = None
        self.pass3_frame = self.pass4_frame = None
        self.lls_password = None
        self.lls_frame = None
        self.aarq_frame = self.aare_frame = None
        self.pending: dict[int, tuple] = {}
        self.pending_sn: list[tuple] = []
        self.rt_count = 0
        self.rt_sum = 0.0
        self.rt_max: float | None = None
        self.keyset = None
        self.plain_after_assoc = 0
        self.ciphered_count = 0
        self.plain_count = 0
        self.release_frame = None

    def __repr__(self) -> str:   # the dedicated key never appears
        return (f"Association(id={self.id}, {self.client} -> {self.server}, state={self.state}, "
                f"mechanism={self.mechanism})")

    def response_time(self, dt: float) -> None:
        self.rt_count += 1
        self.rt_sum += dt
        if self.rt_max is None or dt > self.rt_max:
            self.rt_max = dt

    def close(self, state: str | None = None) -> None:
        """The association is over: keep its summary, drop the per-packet state (pending
        requests hold their packets)."""
        if state is not None:
            self.state = state
        self.pending.clear()
        self.pending_sn.clear()

    def title_of(self, direction: str) -> bytes | None:
        return self.client_title if direction == "c2s" else self.server_title

    def peer_title_of(self, direction: str) -> bytes | None:
        return self.server_title if direction == "c2s" else self.client_title

    @property
    def mechanism_name(self) -> str | None:
        return None if self.mechanism is None else dc.MECHANISMS.get(self.mechanism, str(self.mechanism))

    @property
    def context_name(self) -> str | None:
        return {1: "LN", 2: "SN", 3: "LN-ciphered", 4: "SN-ciphered"}.get(self.context, self.context)

    def __getstate__(self):
        # what is spooled: every slot but the per-packet state (empty once closed), and the
        # dedicated key only as "there was one" -- key material is never written out
        return tuple(None if n in _NOT_SPOOLED else
                     (self.dedicated_key is not None) if n == "dedicated_key" else _plain(getattr(self, n))
                     for n in Association.__slots__)

    def __setstate__(self, state) -> None:
        for n, v in zip(Association.__slots__, state):
            setattr(self, n, v)
        self.pending = {}
        self.pending_sn = []
        self.dedicated_key = KEY_NOT_KEPT if self.dedicated_key else None

    def to_dict(self) -> dict:
        return {
            "assoc_id": self.id, "transport": self.transport, "client": self.client, "server": self.server,
            "client_title": self.client_title.hex() if self.client_title else None,
            "server_title": self.server_title.hex() if self.server_title else None,
            "mechanism": self.mechanism_name, "context": self.context_name,
            "security": "+".join(sorted(self.security)) or "none",
            "suite": self.suite, "dedicated_key": self.dedicated_key is not None,
            "state": self.state, "result": self.result,
            "first_frame": self.first_frame, "last_frame": self.last_frame,
            "first_time": self.first_ns / 1e9, "last_time": self.last_ns / 1e9,
            "requests": self.requests, "responses": self.responses, "errors": self.errors,
            "hls_pass3": self.hls_pass3, "hls_pass4": self.hls_pass4,
            "mean_response_time": (self.rt_sum / self.rt_count) if self.rt_count else None,
            "max_response_time": self.rt_max,
            "keyset": self.keyset, "conformance": self.conformance,
            "client_max_pdu": self.client_max_pdu, "server_max_pdu": self.server_max_pdu,
        }


_NOT_SPOOLED = frozenset(("pending", "pending_sn"))


def _plain(v):
    """A value as it is spooled (views into packet buffers become bytes)."""
    return bytes(v) if isinstance(v, (memoryview, bytearray)) else v


class _NotKept(bytes):
    """The dedicated key of an association read back from the spool: it had one, the key
    itself was not written to disk (empty, so that no cipher can be made from it)."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "<dedicated key not kept>"

    __str__ = __repr__


KEY_NOT_KEPT = _NotKept()


class _Spool:
    """Closed associations on disk: an unnamed temporary file (gone with the process) that
    holds each one's pickled summary, and its place by association number (12 bytes per
    association in memory; offset -1 while the association is in memory).  Positional
    reads and writes: the TUI's decoding thread spools while the UI thread reads back."""

    def __init__(self):
        self.f = None
        self.failed = False
        self.end = 0
        self.offsets = array("q")
        self.sizes = array("I")

    def number(self) -> None:
        self.sizes.append(0)
        self.offsets.append(-1)

    def put(self, a: Association) -> bool:
        """Write `a`; False (and no further attempts) when the temporary directory cannot
        take it: the associations then stay in memory."""
        if self.failed:
            return False
        blob = pickle.dumps(a, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            if self.f is None:
                self.f = tempfile.TemporaryFile(prefix="lonscope-assoc-")
            if os.pwrite(self.f.fileno(), blob, self.end) != len(blob):
                raise OSError("short write")
        except OSError:
            self.failed = True
            return False
        self.sizes[a.id - 1] = len(blob)
        self.offsets[a.id - 1] = self.end
        self.end += len(blob)
        return True

    def get(self, aid: int) -> Association | None:
        if not 0 < aid <= len(self.offsets) or self.offsets[aid - 1] < 0:
            return None
        return pickle.loads(os.pread(self.f.fileno(), self.sizes[aid - 1], self.offsets[aid - 1]))


def _ctx_name(context) -> int | None:
    if isinstance(context, int):
        return context
    return {"LN": 1, "SN": 2, "LN-ciphered": 3, "SN-ciphered": 4}.get(context)


class Associations(Stage):
    """Stage "associations".  `current` holds the association of each transport; one that
    leaves it (replaced by a new AARQ on its transport, or idle past the timeout) is closed.
    The latest SPOOL_AT closed ones stay in memory, older ones are written to a spool file,
    so that memory does not grow with the number of associations; `iter_records()`,
    `rows()`, `list()` and `get()` read them back."""
    name = "associations"

    def __init__(self, pipeline):
        super().__init__(pipeline)
        _install_recorder()
        self.current: dict[tuple, Association] = {}
        self.by_id: dict[int, Association] = {}    # the associations in memory
        self.closed: dict[int, None] = {}          # ids that left `current`, in that order
        self.spool = _Spool()
        self.numbered = 0
        # the latest observations (AARQ/AARE titles and challenges, HLS values) for inspection
        self.events: collections.deque = collections.deque(maxlen=MAX_EVENTS)
        self.alias: dict[tuple, tuple] = {}        # agent<->target key -> (association key, agent, target, ns)
        self.relay_alias: dict[tuple, tuple] = {}  # agent<->source key -> (association key, until, source)
        self.proxy_txn: dict[int, tuple] = {}      # proxy request frame -> (association key, client, target, ns)
        self.routed: dict[tuple, tuple] = {}       # 14908 transaction -> (frame, medium, ns)
        self.count = 0

    # ---- public API
    @property
    def next_id(self) -> int:
        """The number the next association will get (exports renumber across files with it)."""
        return self.numbered + 1

    def iter_records(self) -> Iterator[Association]:
        """Every association in number order (spooled ones read back, without their key)."""
        for aid in range(1, self.numbered + 1):
            a = self.get(aid)
            if a is not None:
                yield a

    @property
    def records(self) -> list[Association]:
        """All associations in a list (for small captures; `iter_records()` streams)."""
        return list(self.iter_records())

    def rows(self) -> Iterator[dict]:
        """The summary of each association, in number order."""
        for a in self.iter_records():
            yield a.to_dict()

    def list(self) -> list[dict]:
        return list(self.rows())

    def get(self, aid: int) -> Association | None:
        a = self.by_id.get(aid)
        return a if a is not None else self.spool.get(aid)

    def _left(self, a: Association) -> None:
        """`a` is no longer any transport's current association: it can only be read now."""
        self.closed[a.id] = None
        if len(self.closed) > SPOOL_AT:
            for _ in range(SPOOL_AT // 2):
                aid = next(iter(self.closed))
                del self.closed[aid]
                if self.spool.put(self.by_id[aid]):   # readable on disk before it leaves memory
                    del self.by_id[aid]

    # ---- per packet
    def process(self, pkt, d, first_pass: bool) -> None:
        if not first_pass:
            self._replay(pkt, d)
            return
        self.count += 1
        if not self.count % SWEEP_EVERY:
            self._sweep(pkt.ts_ns)
        apdus = d.ctx.get("dlms.apdus")
        if not apdus:
            # keep track of resets on a flow with an open association
            tcp = d.ctx.get("tcp")
            if tcp is not None and tcp.get("flags", 0) & 0x04:
                key, *_ = transport_of(d)
                a = self.current.get(key)
                if a is not None and a.state not in ("released", "aborted"):
                    a.close("aborted")
            return
        if crc_bad(d):
            return          # damaged bytes: neither attributed nor observed
        key, src, dst, kind = self.resolve(d, pkt, apdus)
        d.ctx["dlms.transport"] = (key, src, dst)
        if d.ctx.get("lon.retransmission") is not None or self._routed_copy(pkt, d):
            d.ctx["dlms.hop_copy"] = True
        for rec in list(apdus):
            if rec.get("source", 0) != 0 and rec.get("decrypted"):
                continue
            self.observe(pkt, d, rec, key, src, dst, kind)

    def _routed_copy(self, pkt, d) -> bool:
        """The same 14908 transaction (addresses, TID, APDU) seen shortly before on another
        medium: the copy a router forwarded between CN/IP and the power line.  The
        transaction and its medium are the transaction stage's key (`ctx["lon.txn"]`)."""
        k = d.ctx.get("lon.txn")
        if k is None or k.tid is None or d.ctx.get("lon.apdu") is None:
            return False
        txn = (k.domain, k.src, k.dst, k.tid, k.digest)
        medium = k.medium
        seen = self.routed.pop(txn, None)
        if seen is not None and seen[1] != medium and pkt.ts_ns - seen[2] <= COPY_WINDOW_NS:
            self.routed[txn] = seen
            return True
        self.routed[txn] = (pkt.number, medium, pkt.ts_ns)
        if len(self.routed) > 4096:
            self.routed.pop(next(iter(self.routed)))
        return False

    def _sweep(self, now: int) -> None:
        """Forget hop/copy bookkeeping that can no longer match, and associations idle for
        longer than the idle timeout (their summaries stay readable: `get`, `iter_records`)."""
        for k in [k for k, v in self.proxy_txn.items() if now - v[3] > HOP_WINDOW_NS]:
            del self.proxy_txn[k]
        for k in [k for k, v in self.routed.items() if now - v[2] > COPY_WINDOW_NS]:
            del self.routed[k]
        for k in [k for k, v in self.relay_alias.items() if now > v[1]]:
            del self.relay_alias[k]
        for k in [k for k, v in self.alias.items() if now - v[3] > IDLE_TIMEOUT_NS]:
            del self.alias[k]
        for k, a in list(self.current.items()):
            # an association stays current while it may still see copies of its last
            # APDUs (a closed one) or further data (an open one)
            if now - a.last_ns > (HOP_WINDOW_NS if a.state in CLOSED else IDLE_TIMEOUT_NS):
                if a.state not in CLOSED:
                    a.state = "timeout"
                a.close()
                del self.current[k]
                self._left(a)

    def resolve(self, d, pkt, apdus=()) -> tuple:
        """The association transport of a packet, following 14908 repeaters: a proxy request
        S -> agent A with target T makes the agent's own hop (A -> T, T -> A) and the relayed
        response (A -> S: the response to the proxy request) part of the S <-> T
        association.  Hops that carry a copy of an APDU seen on an earlier hop are marked
        `ctx["dlms.hop_copy"]`.  A damaged frame (bad CRC) is resolved without learning."""
        key, src, dst, kind = transport_of(d)
        if kind != "LonTalk":
            return key, src, dst, kind
        learn = not crc_bad(d)
        f = d.fields
        lon = d.ctx.get("lon") or {}
        dom = bytes(lon.get("domain") or b"").hex()
        hop_src = f"{lon.get('src_subnet')}/{lon.get('src_node')}"
        hop_dst = f"{lon.get('dst_subnet')}/{lon.get('dst_node')}"
        ns = pkt.ts_ns
        if f.get("lonproxy.target") and (f.get("lonproxy.kind") or ["request"])[0] == "request":
            tgt = dst
            agent = hop_dst
            client = src
            al = self.alias.get(key)
            if al is not None and hop_src == al[1]:
                # the next hop of a multi-repeater chain: a copy of the first hop's request
                d.ctx["dlms.hop_copy"] = True
                key = al[0]
                client = key[2] if key[3] == tgt else key[3]
            if learn:
                self.alias[("lon", dom) + tuple(sorted((agent, tgt)))] = (key, agent, tgt, ns)
                self.relay_alias[("lon", dom) + tuple(sorted((agent, hop_src)))] = (key, ns + HOP_WINDOW_NS, client)
                self.proxy_txn[pkt.number] = (key, client, tgt, ns)
            return key, client, tgt, kind
        # the response to a proxy request (paired by the 14908 transaction stage): the
        # repeater relays the target's response towards the client
        rt = (pkt.aux.get("lon") or {}).get("response_to")
        px = self.proxy_txn.get(rt) if rt is not None else None
        if px is not None and ns - px[3] <= HOP_WINDOW_NS:
            d.ctx["dlms.hop_copy"] = True
            real_key, client, tgt, _ = px
            return real_key, tgt, client, kind
        al = self.alias.get(key)
        if al is not None:
            real_key, agent, tgt = al[:3]
            s2 = real_key[2] if real_key[3] == tgt else real_key[3]
            # agent -> target carries a copy of the client's request; target -> agent the
            # (original) response, which the agent then relays
            if hop_src == agent:
                d.ctx["dlms.hop_copy"] = True
                return real_key, s2, tgt, kind
            return real_key, tgt, s2, kind
        ra = self.relay_alias.get(key) if rt is None and lon.get("type") == "RESPONSE" else None
        if ra is not None and ns <= ra[1]:
            # a relayed response whose request was not seen (no 14908 pairing): server APDUs
            # only.  A response paired with a request that was no proxy request is the
            # repeater's own answer (a repeater is often a meter polled directly as well).
            tags = [r.get("tag") for r in apdus]
            if tags and all(t in SERVER_TAGS or t in (0xDB, 0xDC, 0xDD, 0x00) for t in tags):
                d.ctx["dlms.hop_copy"] = True
                real_key, _, client = ra
                other = real_key[2] if real_key[3] == client else real_key[3]
                return real_key, other, client, kind
        return key, src, dst, kind

    def assoc_for(self, d) -> Association | None:
        t = d.ctx.get("dlms.transport")
        if t is None:
            return None
        return self.current.get(t[0])

    def direction(self, a: Association, tag: int | None, src: str) -> str:
        if tag in CLIENT_TAGS:
            return "c2s"
        if tag in SERVER_TAGS:
            return "s2c"
        if src == a.client:
            return "c2s"
        if src == a.server:
            return "s2c"
        return "c2s"

    def _new(self, key, src, dst, kind, pkt, client_is_src=True) -> Association:
        aid = self.numbered + 1
        a = Association(aid, key, kind, src if client_is_src else dst, dst if client_is_src else src,
                        pkt.number, pkt.ts_ns)
        self.by_id[aid] = a
        self.spool.number()
        self.numbered = aid          # last: a reader in another thread finds what is numbered
        old = self.current.get(key)
        self.current[key] = a
        if old is not None:
            old.close()
            self._left(old)
        return a

    def _set(self, pkt, d, name, value) -> None:
        parent = None
        if d.root is not None:
            parent = d.ctx.get("assoc.node")
            if parent is None:
                aid = value if name == "dlms.assoc_id" else None
                parent = d.label(d.root, f"[DLMS association {aid}]" if aid else "[DLMS association]", 0, 0)
                d.ctx["assoc.node"] = parent
        d.add(parent, name, value, 0, 0)
        pkt.aux.setdefault("assoc.fields", []).append((name, value))

    def observe(self, pkt, d, rec: dict, key, src, dst, kind, plaintext: bytes | None = None,
                decrypted: bool = False) -> Association | None:
        """One APDU (plain, or the plaintext of a decrypted one)."""
        if crc_bad(d):
            return None
        apdu = plaintext if plaintext is not None else rec.get("bytes") or b""
        tag = apdu[0] if apdu else rec.get("tag")
        a = self.current.get(key)
        ns = pkt.ts_ns
        if d.ctx.get("dlms.hop_copy") and a is not None and (
                d.ctx.get("lon.retransmission") is not None or not (tag == 0x60 and a.state in CLOSED)):
            # a copy (retransmission, repeater hop, routed medium) of an APDU already seen;
            # an AARQ seen on another hop after its association closed opens a new one
            self._copy(pkt, d, a, rec, apdu, tag, decrypted)
            return a
        if tag == 0x60 and not decrypted:
            if a is not None and a.state not in CLOSED:
                a.close("replaced")
            a = self._new(key, src, dst, kind, pkt, True)
            a.aarq_frame = pkt.number
        elif a is None or (ns - a.last_ns > IDLE_TIMEOUT_NS and tag not in (0x61, 0x63)) or \
                a.state in CLOSED and tag not in (0x61, 0x63):
            if a is not None and a.state not in CLOSED:
                a.close("timeout")
            # data without a visible AARQ (pre-established or capture started late)
            client_is_src = tag not in SERVER_TAGS
            a = self._new(key, src, dst, kind, pkt, client_is_src)
            a.state = "pre-established"
        direction = self.direction(a, tag, src)
        a.last_frame = pkt.number
        a.last_ns = ns
        if not decrypted:
            if "dlms.assoc_id" not in d.fields or a.id not in d.fields["dlms.assoc_id"]:
                self._set(pkt, d, "dlms.assoc_id", a.id)
        acse = rec.get("acse") if not decrypted else None
        if acse:
            self._acse(pkt, d, a, acse, tag)
        if tag in (0x60, 0x61, 0x62, 0x63):
            return a
        if not decrypted and rec.get("ciphered"):
            return a        # the decryption stage calls back with the plaintext
        if not decrypted and tag is not None:
            a.plain_count += 1
            if a.state in ("associated", "authenticated") and tag not in (0x01, 0x08, 0x0E) and \
                    (a.context in (3, 4) or a.security):
                a.plain_after_assoc += 1
        self._data(pkt, d, a, apdu, direction, rec)
        return a

    def _copy(self, pkt, d, a: Association, rec: dict, apdu: bytes, tag, decrypted: bool) -> None:
        """A copy of an APDU: the association's id and state, and the HLS status of a pass
        value (checked again only if the copy differs from what the association saw)."""
        a.last_frame = pkt.number
        a.last_ns = pkt.ts_ns
        if not decrypted:
            if "dlms.assoc_id" not in d.fields or a.id not in d.fields["dlms.assoc_id"]:
                self._set(pkt, d, "dlms.assoc_id", a.id)
            acse = rec.get("acse")
            if acse:
                k = acse.get("apdu")
                if (k == "aare" and a.aare_frame is None) or (k == "rlrq" and a.release_frame is None):
                    self._acse(pkt, d, a, acse, tag)     # the first intact copy (the original was damaged)
                else:
                    self._set(pkt, d, "dlms.assoc_state", a.state)
        if not apdu or tag in (0x60, 0x61, 0x62, 0x63) or (not decrypted and rec.get("ciphered")):
            return
        if tag in (0x01, 0x08):
            return
        ops = rec.get("ops")
        hv = hls_from_ops(ops)
        if hv is None and tag == 0x0C and a.f_stoc is not None:
            v = sn_read_response_value(ops)
            if v is not None and (a.f_ctos is None or bytes(v) == bytes(a.f_ctos)):
                hv = ("pass4", v)
        if hv is None or a.mechanism is None or a.mechanism < 2:
            return
        which, value = hv
        seen = a.f_stoc if which == "pass3" else a.f_ctos
        if seen is None:
            self._hls(pkt, d, a, which, value)          # the first intact copy
            return
        status = a.hls_pass3 if which == "pass3" else a.hls_pass4
        if bytes(seen) != bytes(value) or status is None:
            status, _ = verify_hls(a, which, value, getattr(self.pipeline, "keys", None))
            if status == "failed":
                d.note("warn", "security", "dlms", 0,
                       f"HLS {which.replace('pass', 'pass ')} value on this hop differs and does not verify")
        self._set(pkt, d, f"dlms.sec.hls_{which}", status)
        self._set(pkt, d, "dlms.sec.hls_value", value)

    def _acse(self, pkt, d, a: Association, acse: dict, tag) -> None:
        kind = acse.get("apdu")
        if kind == "aarq":
            a.client_title = acse.get("calling_ap_title") or a.client_title
            a.mechanism = acse.get("mechanism")
            a.context = _ctx_name(acse.get("context")) or a.context
            a.ctos = acse.get("ctos")
            if acse.get("mechanism") == 1 and "calling_authentication_value" in acse:
                a.lls_password = acse.get("calling_authentication_value")
                a.lls_frame = pkt.number
            a.state = "requested"
            self.events.append({"kind": "aarq", "assoc": a.id, "frame": pkt.number, "ns": pkt.ts_ns,
                                "title": a.client_title, "ctos": a.ctos})
        elif kind == "aare":
            a.server_title = acse.get("responding_ap_title") or a.server_title
            a.stoc = acse.get("stoc")
            a.aare_frame = pkt.number
            if acse.get("mechanism") is not None and a.mechanism is None:
                a.mechanism = acse.get("mechanism")
            a.result = acse.get("result")
            a.diagnostic = acse.get("diagnostic")
            if a.result not in (None, 0):
                a.close("rejected")
            elif a.mechanism is not None and a.mechanism >= 2:
                a.state = "hls-pending"
            else:
                a.state = "associated"
            self.events.append({"kind": "aare", "assoc": a.id, "frame": pkt.number, "ns": pkt.ts_ns,
                                "title": a.server_title, "stoc": a.stoc})
        elif kind == "rlrq":
            a.state = "releasing"
            a.release_frame = pkt.number
        elif kind == "rlre":
            a.close("released")
        a.last_frame = pkt.number
        self._set(pkt, d, "dlms.assoc_state", a.state)

    def initiate(self, pkt, a: Association, recs) -> None:
        """InitiateRequest/-Response as the xDLMS dissector decoded them (records of the
        decrypted glo-/ded-initiate, or a plain one): the dedicated key stays in this
        association."""
        for rec in recs:
            key = rec.get("dedicated_key")
            if key:
                a.dedicated_key = key
                a.dedicated_key_frame = pkt.number
                a.policy_dedicated = True
            for op in rec.get("ops") or ():
                if op.get("service") != "initiate":
                    continue
                v = op.get("value") or {}
                if op.get("dir") == "request":
                    if v.get("conformance") is not None:
                        a.conformance = v["conformance"]
                    a.client_max_pdu = v.get("max_pdu_size")
                else:
                    a.server_max_pdu = v.get("max_pdu_size")
                    if v.get("conformance") is not None:
                        a.conformance = v["conformance"]

    def _data(self, pkt, d, a: Association, apdu: bytes, direction: str, rec: dict) -> None:
        if not apdu:
            return
        tag = apdu[0]
        if tag in (0x01, 0x08):
            self.initiate(pkt, a, [rec])
            return
        ops = rec.get("ops")
        hv = hls_from_ops(ops)
        if hv is None and tag == 0x0C and a.state == "hls-pending" and a.f_stoc is not None:
            v = sn_read_response_value(ops)
            if v is not None:
                hv = ("pass4", v)
        if hv is not None and a.mechanism is not None and a.mechanism >= 2:
            self._hls(pkt, d, a, hv[0], hv[1])
        # request / response matching (a repeater's copy of an APDU is not counted again)
        if d.ctx.get("dlms.hop_copy"):
            return
        if tag in REQUEST_TAGS:
            a.requests += 1
            iid = invoke_id(apdu)
            # bounded: invoke ids are 4 bits; SN requests without an answer are dropped oldest first
            if iid is not None:
                a.pending.pop(iid, None)
                if len(a.pending) >= MAX_PENDING:
                    a.pending.pop(next(iter(a.pending)))
                a.pending[iid] = (pkt.number, pkt.ts_ns, pkt)
            else:
                if len(a.pending_sn) >= MAX_PENDING:
                    a.pending_sn.pop(0)
                a.pending_sn.append((pkt.number, pkt.ts_ns, pkt))
        elif tag in RESPONSE_TAGS or tag in ERROR_TAGS:
            a.responses += 1
            if is_error_response(apdu):
                a.errors += 1
            iid = invoke_id(apdu)
            req = None
            if iid is not None and iid in a.pending:
                req = a.pending.pop(iid)
            elif iid is None and a.pending_sn:
                req = a.pending_sn.pop(0)
            elif tag in ERROR_TAGS and a.pending:
                req = a.pending.pop(next(iter(a.pending)))
            if req is not None:
                dt = (pkt.ts_ns - req[1]) / 1e9
                a.response_time(dt)
                self._set(pkt, d, "dlms.response_to", req[0])
                self._set(pkt, d, "dlms.time", dt)
                # the request's packet learns its response frame (fields and redissection)
                rp = req[2]
                rp.aux.setdefault("assoc.fields", []).append(("dlms.response_in", pkt.number))
                if rp.d is not None and rp is not pkt:
                    rp.d.fields.setdefault("dlms.response_in", []).append(pkt.number)

    def _hls(self, pkt, d, a: Association, which: str, value: bytes) -> None:
        keys = getattr(self.pipeline, "keys", None)
        status, setname = verify_hls(a, which, value, keys)
        if which == "pass3":
            a.f_stoc = value
            a.hls_pass3 = status
            a.pass3_frame = pkt.number
            self._set(pkt, d, "dlms.sec.hls_pass3", status)
        else:
            a.f_ctos = value
            a.hls_pass4 = status
            a.pass4_frame = pkt.number
            self._set(pkt, d, "dlms.sec.hls_pass4", status)
            if a.state == "hls-pending":
                a.state = "authenticated" if status != "failed" else "hls-failed"
        self._set(pkt, d, "dlms.sec.hls_value", value)
        if status == "failed":
            d.note("warn", "security", "dlms", 0, f"HLS {which.replace('pass', 'pass ')} verification failed")
        self.events.append({"kind": which, "assoc": a.id, "frame": pkt.number, "ns": pkt.ts_ns,
                            "value": value, "status": status, "keyset": setname})

    def _replay(self, pkt, d) -> None:
        items = pkt.aux.get("assoc.fields", ())
        parent = None
        if d.root is not None and items:
            aid = dict(items).get("dlms.assoc_id")
            parent = d.label(d.root, f"[DLMS association {aid}]" if aid else "[DLMS association]", 0, 0)
        for name, value in items:
            d.add(parent, name, value, 0, 0)

    def finish(self):
        return ()


def dc_secret(b: bytes):
    from .keyring import Secret
    return Secret(bytes(b))


def verify_hls(a: Association, which: str, value: bytes, keys) -> tuple[str, str | None]:
    """verified / failed / no-key for pass 3 (client's f(StoC)) or pass 4 (server's f(CtoS))."""
    mech = a.mechanism
    if which == "pass3":
        challenge, other, own, peer = a.stoc, a.ctos, a.client_title, a.server_title
    else:
        challenge, other, own, peer = a.ctos, a.stoc, a.server_title, a.client_title
    if challenge is None or keys is None:
        return "no-key", None
    had_material = False
    sets = keys.candidates(a.server_title, a.client_title)
    if a.keyset is not None:
        # the set that decrypted this association's traffic is the one that holds its secret
        sets = [s for s in sets if s.name == a.keyset] or sets
    for ks in sets:
        try:
            if mech == 5:
                if not ks.ek or own is None:
                    continue
                had_material = True
                if dc.hls_verify(5, value, challenge, ek=ks.ek, ak=ks.ak, own_title=own):
                    return "verified", ks.name
            elif mech == 7:
                pubs = ks.public_keys()
                if not pubs:
                    continue
                had_material = True
                for pk in pubs:
                    if dc.hls_verify(7, value, challenge, own_title=own or b"", peer_title=peer or b"",
                                     other_challenge=other or b"", public_key=pk):
                        return "verified", ks.name
            elif mech in (2, 3, 4, 6):
                if not ks.hls_secret:
                    continue
                had_material = True
                if dc.hls_verify(mech, value, challenge, secret=ks.hls_secret, own_title=own or b"",
                                 peer_title=peer or b"", other_challenge=other or b""):
                    return "verified", ks.name
        except dc.CryptoError:
            continue
    return ("failed" if had_material else "no-key"), None


register_stage(30, "associations", Associations)

__all__ = ["Association", "Associations", "transport_of", "ip_flow", "hls_from_ops", "verify_hls",
           "invoke_id"]
