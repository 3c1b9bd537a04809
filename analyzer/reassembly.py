"""xDLMS APDU reassembly and request context (pipeline stage "reassembly", order 50).

Per association (or, without association tracking, per transport flow) and per hop — never
one global table — this stage:

- reassembles block transfers: GET with datablocks (get-response-with-datablock + get-next),
  SET with datablocks, ACTION with pblocks (both directions), SN read/write data blocks, and
  general-block-transfer (windows, streaming).  Lost and duplicate blocks become expert
  items.  The reassembled bytes are dissected in a new data source "Reassembled xDLMS"
  (A-XDR Data for GET/SET/ACTION/SN blocks, a whole APDU for GBT) on the packet carrying the
  last block, with `dlms.fragment` (frame numbers of the parts), `dlms.fragment.count`,
  `dlms.reassembled_length`, and `dlms.reassembled_in` on every part;
- attaches the request's class, OBIS and attribute/method to the response (matched by
  invoke id; a get-response has no OBIS on the wire), so that
  `dlms.obis == 0.0.1.0.0.255 && dlms.apdu == "get-response"` works;
- maps SN short names to class/attribute once the association's SN object list
  (read of 0xFA08) has been seen.

Blocks come from `ctx["dlms.blocks"]`, which the xDLMS dissector fills for every APDU it
dissects — plain ones and the plaintext the decryption stage (order 40) dissected — so
decrypted block transfers are reassembled the same way.  What a packet needs for a later
full re-dissection is kept in `pkt.aux["reasm"]`.

"Per hop": one association may be seen on several hops at once -- the client's hop and the
repeater's hop of a 14908 repeater chain, the CN/IP backhaul and the power line behind a
router.  Each hop carries a complete copy of the block transfer, so each reassembles on its
own (keyed by the medium and the pair of LonTalk nodes of the hop).  A frame whose LonTalk
CRC fails is damaged and gives no block; a 14908 retransmission of a block already taken is
not a duplicate block.
"""
from __future__ import annotations

from typing import Any

from dissectors.core import FT_UINT, field
from dissectors import xdlms as _xdlms
from dissectors.axdr import dissect_data
from dissectors.cosem_names import SNMap, attribute_name, class_name, method_name, obis_name

from .associations import transport_of
from .lontrack import crc_bad
from .pipeline import Stage, register_stage

field("dlms.fragment", FT_UINT, "Frame carrying a part of this reassembled APDU/data")
field("dlms.fragment.count", FT_UINT, "Number of parts reassembled")
field("dlms.reassembled_in", FT_UINT, "This block is reassembled in frame")
field("dlms.reassembled_length", FT_UINT, "Length of the reassembled APDU/data")
field("dlms.request_in", FT_UINT, "Request (with class/OBIS/attribute) is in frame")

MAX_RUN_BYTES = 16 << 20    # give up a block run beyond this (memory bound per run)
MAX_RUNS = 4096             # open runs kept per stage (oldest dropped)
MAX_FLOWS = 1024            # pending requests / SN request queues kept (least recent dropped)
MAX_SN_MAPS = 256           # SN object lists kept (one per association and hop)
RUN_IDLE_NS = 600 * 10**9   # an open run without a block for this long is dropped
SWEEP_EVERY = 4096          # packets between sweeps of idle runs
MAX_DONE = 64               # completed runs remembered for a retransmitted last block...
MAX_DONE_BYTES = 64 << 10   # ... when their reassembled data is at most this long

_ATTACH = ("class_id", "obis", "attribute_id", "method_id")
_MISSING = object()


class _Run:
    __slots__ = ("blocks", "frames", "pkts", "first", "last_bn", "size", "service", "dir", "iid", "ns")

    def __init__(self, service, direction, iid):
        self.blocks: dict[int, bytes] = {}
        self.frames: list[int] = []
        self.pkts: list = []
        self.first: dict | None = None
        self.last_bn: int | None = None
        self.size = 0
        self.service = service
        self.dir = direction
        self.iid = iid
        self.ns = 0


def _endpoints(d) -> tuple[str, str]:
    """Source/destination endpoint strings (the association stage's transport)."""
    t = d.ctx.get("dlms.transport")
    if t is not None:
        return str(t[1]), str(t[2])
    _key, a, b, _kind = transport_of(d)
    return a, b


def hop_of(d) -> tuple:
    """The hop a LonTalk frame travels on (medium and the two nodes, direction-neutral, from
    the transaction stage's key `ctx["lon.txn"]`); () for other transports, whose
    association key already is the hop."""
    k = d.ctx.get("lon.txn")
    if k is None:
        return ()
    a = k.src
    b = k.dst                         # (dst_type, subnet, node, group, nid)
    dt = b[0]
    if dt == "group":                 # a request to a group: the hop is sender <-> group
        b = ("grp", b[3])
    elif dt == "groupack":            # a member's answer: the same hop as the request
        a, b = (b[1], b[2]), ("grp", b[3])
    elif dt == "unicast":
        b = (b[1], b[2])
    return k.medium + ((a, b) if str(a) <= str(b) else (b, a))


def flow_key(d) -> tuple:
    """The association (when tracked) or the direction-neutral transport flow, and the hop."""
    aid = d.fields.get("dlms.assoc_id")
    if aid:
        return ("assoc", aid[-1]) + hop_of(d)
    t = d.ctx.get("dlms.transport")
    if t is not None:
        return ("transport", t[0]) + hop_of(d)
    return ("transport", transport_of(d)[0]) + hop_of(d)


class Reassembly(Stage):
    name = "reassembly"

    def __init__(self, pipeline):
        super().__init__(pipeline)
        self.pending: dict[tuple, dict] = {}          # (flow, service, invoke id) -> request info
        self.pending_sn: dict[tuple, list] = {}       # flow -> FIFO of SN read/write request op lists
        self.runs: dict[tuple, _Run] = {}
        self.done: dict[tuple, tuple] = {}            # run key -> (last block number, data, entry)
        self.sn_maps: dict[tuple, SNMap] = {}
        self.completed = 0
        self.count = 0

    # ------------------------------------------------------------------ helpers
    def _set(self, pkt, d, name: str, value: Any) -> None:
        d.add(None, name, value, 0, 0)
        pkt.aux.setdefault("reasm", {}).setdefault("fields", []).append((name, value))

    def _note(self, pkt, d, severity: str, group: str, msg: str) -> None:
        d.note(severity, group, "dlms", 0, msg, d.root)
        pkt.aux.setdefault("reasm", {}).setdefault("notes", []).append((severity, group, msg))

    def _attach(self, pkt, d, op: dict, info: dict) -> None:
        """Give a response op the request's class/OBIS/attribute (fields too)."""
        for k in _ATTACH:
            v = info.get(k)
            if v is not None and op.get(k) is None:
                op[k] = v
                self._set(pkt, d, f"dlms.{k}", v)
        cid, obis = info.get("class_id"), info.get("obis")
        if cid is not None:
            cn = class_name(cid)
            if cn:
                self._set(pkt, d, "dlms.class_name", cn)
            if info.get("attribute_id") is not None:
                an = attribute_name(cid, info["attribute_id"])
                if an:
                    self._set(pkt, d, "dlms.attribute_name", an)
            if info.get("method_id") is not None:
                mn = method_name(cid, info["method_id"])
                if mn:
                    self._set(pkt, d, "dlms.method_name", mn)
        if obis:
            on = obis_name(obis)
            if on:
                self._set(pkt, d, "dlms.obis_name", on)
        if info.get("frame") is not None and info["frame"] != pkt.number:
            self._set(pkt, d, "dlms.request_in", info["frame"])
        if op.get("dir") == "response" and obis and op.get("service") in ("get", "set", "action"):
            what = "method" if info.get("method_id") is not None else "attr"
            idx = info.get("method_id") if what == "method" else info.get("attribute_id")
            text = f"{obis} {obis_name(obis) or class_name(cid) or 'class ' + str(cid)} {what} {idx}:"
            ins = (f"{op['service']}-response", f"[invoke {op.get('invoke_id')}] ", text)
            if self._insert_info(d, ins):
                pkt.aux.setdefault("reasm", {})["info"] = ins

    @staticmethod
    def _insert_info(d, ins) -> bool:
        """Put the request's object into the response's Info: 'get-response normal
        [invoke 1] 0.0.1.0.0.255 Clock attr 2: <value>' (once per packet)."""
        anchor, marker, text = ins
        if d.ctx.get("reasm.info_done"):
            return False
        i = d.info.find(anchor)
        j = d.info.find(marker, i) if i >= 0 else -1
        if j < 0:
            return False
        k = j + len(marker)
        d.info = f"{d.info[:k]}{text} {d.info[k:]}"
        d.ctx["reasm.info_done"] = True
        return True

    # ------------------------------------------------------------------ stage
    def process(self, pkt, d, first_pass: bool) -> None:
        if not first_pass:
            self._replay(pkt, d)
            return
        ctx = d.ctx
        ops = ctx.get("dlms.ops")
        blocks = ctx.get("dlms.blocks")
        self.count += 1
        if not self.count % SWEEP_EVERY:
            for k in [k for k, r in self.runs.items() if pkt.ts_ns - r.ns > RUN_IDLE_NS]:
                del self.runs[k]       # abandoned: its packets are released
        if not ops and not blocks or crc_bad(d):
            return
        flow = flow_key(d)
        n_ops = len(ops) if ops else 0
        if ops:
            self._requests_and_responses(pkt, d, flow, ops[:n_ops])
        if blocks:
            i = 0
            while i < len(blocks):      # reassembled GBT APDUs may append more blocks
                self._block(pkt, d, flow, blocks[i])
                i += 1
        ops = ctx.get("dlms.ops") or []
        if len(ops) > n_ops:           # ops of reassembled data/APDUs
            self._requests_and_responses(pkt, d, flow, ops[n_ops:])
        if len(self.runs) > MAX_RUNS:
            for k in list(self.runs)[: len(self.runs) - MAX_RUNS]:
                del self.runs[k]

    # ---- request/response context
    def _requests_and_responses(self, pkt, d, flow, ops: list) -> None:
        resp_index: dict[tuple, int] = {}
        sn_req: list = []
        for op in ops:
            svc, direction, iid = op.get("service"), op.get("dir"), op.get("invoke_id")
            if svc in ("get", "set", "action"):
                key = (flow, svc, iid)
                if direction == "request":
                    if op.get("class_id") is not None:
                        info = {k: op.get(k) for k in _ATTACH}
                        info["frame"] = pkt.number
                        cur = self.pending.get(key)
                        if cur is not None and cur.get("frame") == pkt.number and "list" in cur:
                            cur["list"].append(info)
                        else:
                            # the newest at the end; the least recent request dropped beyond the bound
                            self.pending.pop(key, None)
                            if len(self.pending) >= MAX_FLOWS:
                                self.pending.pop(next(iter(self.pending)))
                            if op.get("choice", "").startswith("with-list"):
                                self.pending[key] = {"frame": pkt.number, "list": [info]}
                            else:
                                self.pending[key] = info
                    continue
                if direction == "response":
                    req = self.pending.get(key)
                    if req is None:
                        continue
                    if "list" in req:
                        i = resp_index.get(key, 0)
                        resp_index[key] = i + 1
                        if i < len(req["list"]):
                            self._attach(pkt, d, op, req["list"][i])
                        if i + 1 >= len(req["list"]) and not op.get("partial"):
                            self.pending.pop(key, None)
                    else:
                        self._attach(pkt, d, op, req)
                        if not op.get("partial") and op.get("choice") not in ("datablock",):
                            self.pending.pop(key, None)
            elif svc in ("read", "write") and direction == "request":
                sn_req.append(op)
                self._sn_lookup(pkt, d, flow, op)
            elif svc in ("read", "write") and direction == "response":
                fifo = self.pending_sn.get(flow)
                if fifo:
                    reqs = fifo[0]
                    idx = resp_index.get((flow, "sn"), 0)
                    resp_index[(flow, "sn")] = idx + 1
                    if idx < len(reqs):
                        rq = reqs[idx]
                        self._attach(pkt, d, op, rq)
                        if rq.get("short_name") == 0xFA08 and isinstance(op.get("value"), list):
                            m = self.sn_maps.get(flow)
                            if m is None:
                                if len(self.sn_maps) >= MAX_SN_MAPS:
                                    self.sn_maps.pop(next(iter(self.sn_maps)))
                                m = self.sn_maps[flow] = SNMap()
                            n = m.add_object_list(op["value"])
                            if n:
                                self._note(pkt, d, "chat", "protocol", f"SN object list: {n} objects learned")
                    if idx + 1 >= len(reqs):
                        fifo.pop(0)
        if sn_req:
            fifo = self.pending_sn.pop(flow, None)
            if fifo is None:
                fifo = []
                if len(self.pending_sn) >= MAX_FLOWS:
                    self.pending_sn.pop(next(iter(self.pending_sn)))
            self.pending_sn[flow] = fifo
            fifo.append(sn_req)
            if len(fifo) > 64:
                fifo.pop(0)

    def _sn_lookup(self, pkt, d, flow, op: dict) -> None:
        sn = op.get("short_name")
        m = self.sn_maps.get(flow)
        if sn is None or m is None:
            return
        r = m.lookup(sn)
        if r is not None:
            self._attach(pkt, d, op, r)

    # ---- blocks
    def _block(self, pkt, d, flow, b: dict) -> None:
        svc = b.get("service")
        if svc == "gbt":
            src, _dst = _endpoints(d)
            key = (flow, "gbt", src)
        elif svc in ("read", "write"):
            key = (flow, svc, b.get("dir"))
        else:
            key = (flow, svc, b.get("dir"), b.get("invoke_id"))
        if b.get("error"):
            run = self.runs.pop(key, None)
            self._note(pkt, d, "warn", "sequence",
                       f"{svc} block transfer aborted at block {b.get('block_number')}: {b['error']}")
            return
        bn = b.get("block_number")
        data = b.get("data") or b""
        run = self.runs.get(key)
        if run is None and d.ctx.get("lon.retransmission") is not None:
            # the 14908 transport repeated a block already taken: a repeat of the last one
            # shows the same reassembly again, anything else adds nothing
            done = self.done.get(key)
            if done is not None and done[0] == bn and done[1] == data:
                entry = {k: v for k, v in done[2].items() if k != "decrypt"}
                pkt.aux.setdefault("reasm", {}).setdefault("sources", []).append(entry)
                self._dissect_reassembled(pkt, d, entry, first_pass=True)
            return
        if run is None:
            if svc == "gbt" and not data and b.get("last") is False:
                return      # an empty GBT acknowledgement
            run = self.runs[key] = _Run(svc, b.get("dir"), b.get("invoke_id"))
        if svc == "gbt" and not data and not run.blocks:
            return
        if b.get("first") is not None:
            run.first = b["first"]
        if bn in run.blocks and d.ctx.get("lon.retransmission") is not None and run.blocks[bn] == data:
            return          # the 14908 transport repeated the frame: not a second block
        if bn in run.blocks:
            self._note(pkt, d, "warn", "sequence", f"Duplicate {svc} block {bn} (first in frame "
                       f"{run.frames[sorted(run.blocks).index(bn)] if len(run.frames) == len(run.blocks) else '?'})")
            if not b.get("last"):
                return
        elif run.last_bn is not None and bn != run.last_bn + 1:
            if bn > run.last_bn + 1:
                self._note(pkt, d, "warn", "sequence",
                           f"Lost {svc} block(s) {run.last_bn + 1}..{bn - 1} before block {bn}")
            else:
                self._note(pkt, d, "warn", "sequence", f"Out-of-order {svc} block {bn} after {run.last_bn}")
        run.blocks[bn] = data
        if pkt.number not in run.frames:
            run.frames.append(pkt.number)
            run.pkts.append(pkt)
        run.last_bn = bn if run.last_bn is None else max(run.last_bn, bn)
        run.size += len(data)
        run.ns = pkt.ts_ns
        if run.size > MAX_RUN_BYTES:
            self._note(pkt, d, "warn", "malformed", f"{svc} block transfer exceeds {MAX_RUN_BYTES} bytes; dropped")
            self.runs.pop(key, None)
            return
        if not b.get("last"):
            return
        self.runs.pop(key, None)
        order = sorted(run.blocks)
        missing = []
        if order:
            missing = [n for n in range(order[0], order[-1] + 1) if n not in run.blocks]
        if missing:
            self._note(pkt, d, "error", "sequence",
                       f"Reassembly of {svc} incomplete: block(s) {missing[:8]}{'…' if len(missing) > 8 else ''} missing")
        payload = b"".join(run.blocks[n] for n in order)
        kind = "apdu" if svc == "gbt" else "data"
        info = self._request_info(flow, run)
        entry = {"data": payload, "kind": kind, "service": svc, "dir": run.dir, "iid": run.iid,
                 "frames": list(run.frames), "info": info}
        pkt.aux.setdefault("reasm", {}).setdefault("sources", []).append(entry)
        self.completed += 1
        self.done.pop(key, None)
        if len(payload) <= MAX_DONE_BYTES:
            self.done[key] = (bn, data, entry)
            if len(self.done) > MAX_DONE:
                self.done.pop(next(iter(self.done)))
        self._dissect_reassembled(pkt, d, entry, first_pass=True)
        for rp in run.pkts:
            if rp is pkt:
                continue
            rp.aux.setdefault("reasm", {}).setdefault("fields", []).append(("dlms.reassembled_in", pkt.number))
            if rp.d is not None:
                rp.d.fields.setdefault("dlms.reassembled_in", []).append(pkt.number)

    def _request_info(self, flow, run: _Run) -> dict | None:
        if run.first is not None and "list" not in run.first:
            return dict(run.first)
        if run.service in ("get", "set", "action"):
            req = self.pending.get((flow, run.service, run.iid))
            if req is not None and "list" not in req:
                if run.dir == "response":
                    self.pending.pop((flow, run.service, run.iid), None)
                return dict(req)
        return None

    def _dissect_reassembled(self, pkt, d, entry: dict, first_pass: bool) -> None:
        data = entry["data"]
        old = d.source
        d.new_source("Reassembled xDLMS", data)
        try:
            frames = entry["frames"]
            node = None
            if entry["kind"] == "apdu":
                n_cip = len(d.ctx.get("dlms.ciphered") or ())
                _xdlms.dissect_apdu(data, 0, len(data), d, d.root)
                node = d.root.children[-1] if d.root is not None and d.root.children else None
                self._decrypt_reassembled(pkt, d, entry, n_cip, first_pass)
            else:
                node = d.layer("dlms", f"Reassembled xDLMS data ({len(data)} bytes, {len(frames)} parts)",
                               0, len(data))
                try:
                    _end, value = dissect_data(data, 0, len(data), d, node)
                    if _end < len(data):
                        d.note("warn", "malformed", "dlms", _end,
                               f"{len(data) - _end} trailing byte(s) after the reassembled data", node)
                    result = "success"
                except Exception as exc:   # damaged reassembly: keep what decoded
                    d.malformed("dlms", getattr(exc, "offset", 0), f"reassembled data: {exc}", node)
                    value, result = None, "malformed"
                op = {"service": entry["service"], "dir": entry["dir"], "invoke_id": entry["iid"],
                      "class_id": None, "obis": None, "attribute_id": None, "method_id": None,
                      "value": value, "result": result, "reassembled": True}
                info = entry.get("info") or {}
                for k in _ATTACH:
                    if info.get(k) is not None:
                        op[k] = info[k]
                if first_pass:
                    d.ctx.setdefault("dlms.ops", []).append(op)
                self._info_fields(d, info)
                d.info = (f"{d.info} [reassembled {len(data)} bytes from {len(frames)} blocks]"
                          if d.info else f"reassembled {entry['service']} data ({len(data)} bytes)")
            d.add(node, "dlms.reassembled_length", len(data), 0, len(data))
            d.add(node, "dlms.fragment.count", len(frames), 0, 0)
            for f in frames:
                d.add(node, "dlms.fragment", f, 0, 0, f"Frame {f}" if node is not None else None)
        finally:
            d.source = old

    def _decrypt_reassembled(self, pkt, d, entry: dict, n_cip: int, first_pass: bool) -> None:
        """A reassembled APDU that is itself protected (GBT around a ciphered APDU): the
        decryption stage (order 40) has already run, so it is asked again for the new
        descriptors only; its per-packet record is kept in this stage's aux so that both
        stages re-dissect the packet consistently."""
        cip = d.ctx.get("dlms.ciphered") or []
        if len(cip) <= n_cip or self.pipeline is None:
            return
        dec = self.pipeline.stage("decrypt")
        if dec is None:
            return
        saved_aux = pkt.aux.get("decrypt", _MISSING)
        saved_status = d.status
        d.ctx["dlms.ciphered"] = cip[n_cip:]
        try:
            if first_pass:
                pkt.aux.pop("decrypt", None)
                dec.process(pkt, d, True)
                entry["decrypt"] = pkt.aux.get("decrypt")
            elif entry.get("decrypt"):
                pkt.aux["decrypt"] = entry["decrypt"]
                dec.process(pkt, d, False)
        except Exception as exc:    # the other stage's failure stays a per-packet note
            d.note("warn", "decryption", "dlms", 0, f"reassembled APDU not decrypted: {type(exc).__name__}: {exc}")
        finally:
            d.ctx["dlms.ciphered"] = cip[:n_cip] + d.ctx["dlms.ciphered"]
            if saved_aux is _MISSING:
                pkt.aux.pop("decrypt", None)
            else:
                pkt.aux["decrypt"] = saved_aux
            if saved_status and not d.status:
                d.status = saved_status

    @staticmethod
    def _info_fields(d, info: dict) -> None:
        """Class/OBIS/attribute of the reassembled data (once per packet)."""
        for k in _ATTACH:
            v = info.get(k)
            if v is not None and v not in d.fields.get(f"dlms.{k}", ()):
                d.add(None, f"dlms.{k}", v, 0, 0)
        on = obis_name(info["obis"]) if info.get("obis") else None
        if on and on not in d.fields.get("dlms.obis_name", ()):
            d.add(None, "dlms.obis_name", on, 0, 0)

    # ---- second pass
    def _replay(self, pkt, d) -> None:
        r = pkt.aux.get("reasm")
        if not r:
            return
        for name, value in r.get("fields", ()):
            d.add(None, name, value, 0, 0)
        if r.get("info"):
            self._insert_info(d, r["info"])
        for severity, group, msg in r.get("notes", ()):
            d.note(severity, group, "dlms", 0, msg, d.root)
        for entry in r.get("sources", ()):
            self._dissect_reassembled(pkt, d, entry, first_pass=False)

    def incomplete(self) -> list[dict]:
        """Block transfers still open (no last block seen)."""
        return [{"service": run.service, "frames": list(run.frames), "blocks": sorted(run.blocks)}
                for run in self.runs.values()]


register_stage(50, "reassembly", Reassembly)
