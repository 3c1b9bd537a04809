"""TCP stream stage (pipeline order 10): reassembles each TCP direction and cuts it into
PDUs of the protocols registered with `register_stream_protocol`.

For each flow direction, once `detect(first bytes)` is True the stream is cut into PDUs
with `pdu_len(buf, off) -> int | None` (None: need more bytes; 0 or negative: lost sync)
and each complete PDU is dissected with `dissect(buf, off, end, d, parent)`:
- in the frame itself when the PDU lies wholly inside this segment,
- otherwise in a new data source "Reassembled TCP" attached to the packet that
  completes it.
Several PDUs per segment and one PDU over several segments both work.  What a packet
needs for a later full re-dissection is kept in `pkt.aux["tcp.pdus"]`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dissectors.core import FT_BOOL, FT_BYTES, FT_UINT, Dissection, call, field, table

from . import ipfrag  # noqa: F401  (registers the IPv4 defragmentation stage, order 5)
from .pipeline import Stage, register_stage
from .tcp import TcpStream

field("tcp.stream", FT_UINT, "Stream index")
field("tcp.payload", FT_BYTES, "TCP payload")
field("tcp.segment_data", FT_BYTES, "TCP segment data")
field("tcp.reassembled_in", FT_UINT, "Reassembled PDU in frame")
field("tcp.reassembled.length", FT_UINT, "Reassembled TCP length")
field("tcp.pdu.size", FT_UINT, "PDU size")
field("tcp.analysis.retransmission", FT_BOOL, "This frame is a (suspected) retransmission")
field("tcp.analysis.out_of_order", FT_BOOL, "This frame is a (suspected) out-of-order segment")
field("tcp.analysis.lost_segment", FT_BOOL, "A segment before this frame wasn't captured")

MAX_PDU = 1 << 20          # a PDU larger than this is treated as lost sync
DETECT_TRIES = 64          # segments tried for detection per direction before giving up


@dataclass
class StreamProtocol:
    name: str
    detect: Callable[[bytes], bool]
    pdu_len: Callable[[bytes, int], "int | None"]
    dissect: Callable
    ports: frozenset | None = None


PROTOCOLS: list[StreamProtocol] = []


def register_stream_protocol(name: str, detect, pdu_len, dissect, ports=None) -> None:
    """Register a PDU protocol carried over TCP.  `ports` (optional) limits it to flows
    with one of these port numbers; otherwise `detect` alone decides."""
    for i, p in enumerate(PROTOCOLS):
        if p.name == name:
            PROTOCOLS[i] = StreamProtocol(name, detect, pdu_len, dissect, frozenset(ports) if ports else None)
            return
    PROTOCOLS.append(StreamProtocol(name, detect, pdu_len, dissect, frozenset(ports) if ports else None))


class _Direction:
    __slots__ = ("stream", "proto", "buf", "tries", "resync", "partial_from")

    def __init__(self):
        self.stream = TcpStream()
        self.proto: StreamProtocol | None = None
        self.buf = bytearray()        # undelivered PDU bytes
        self.tries = 0
        self.resync = False
        self.partial_from: list = []   # packets holding bytes of buf


def _safe(fn, *a, default=None):
    try:
        return fn(*a)
    except Exception:
        return default


class TcpStage(Stage):
    name = "tcp"

    def __init__(self, pipeline):
        super().__init__(pipeline)
        self.flows: dict[tuple, _Direction] = {}
        self.stream_ids: dict[tuple, int] = {}
        self.max_flows = 65536

    # ---- helpers
    def _stream_id(self, flow: tuple) -> int:
        a, b = (flow[0], flow[1]), (flow[2], flow[3])
        key = (a, b) if a <= b else (b, a)
        sid = self.stream_ids.get(key)
        if sid is None:
            sid = self.stream_ids[key] = len(self.stream_ids)
        return sid

    def process(self, pkt, d: Dissection, first_pass: bool) -> None:
        t = d.ctx.get("tcp")
        if t is None:
            return
        node = t.get("node")
        src_index = t.get("source", 0)
        buf = d.sources[src_index][1]
        poff, plen = t["payload_off"], t["payload_len"]
        if first_pass:
            self._first_pass(pkt, d, t, buf, poff, plen)
        aux = pkt.aux
        if "tcp.stream" in aux:
            d.add(node, "tcp.stream", aux["tcp.stream"], 0, 0)
        for flag in ("retransmission", "out_of_order", "lost_segment"):
            if aux.get("tcp." + flag):
                d.add(node, "tcp.analysis." + flag, True, 0, 0)
                d.note("note" if flag != "lost_segment" else "warn", "sequence", "tcp", poff,
                       {"retransmission": "TCP retransmission (bytes already seen)",
                        "out_of_order": "TCP out-of-order segment (buffered)",
                        "lost_segment": "Previous segment(s) not captured; PDU stream resynchronised"}[flag],
                       node)
        pdus = aux.get("tcp.pdus")
        if pdus:
            self._dissect_pdus(pkt, d, pdus, buf, poff, plen, src_index)
        elif plen > 0:
            if aux.get("tcp.reassembled_in") is not None:
                d.add(node, "tcp.reassembled_in", aux["tcp.reassembled_in"], 0, 0)
            if aux.get("tcp.proto"):
                d.add(node, "tcp.segment_data", bytes(buf[poff:poff + plen]), poff, plen)
                d.info = f"{d.info} [TCP segment of a reassembled PDU]"
            else:
                d.add(node, "tcp.payload", bytes(buf[poff:poff + plen]), poff, plen)
                # no stream protocol: per-segment hand-off by port (lower port first), else data
                sport, dport = t["flow"][1], t["flow"][3]
                tbl = table("tcp.port")
                lo, hi = (sport, dport) if sport <= dport else (dport, sport)
                old = d.source
                d.source = src_index
                try:
                    if tbl.entries and (tbl.dispatch(lo, buf, poff, poff + plen, d, d.root, try_heuristics=False)
                                        or (hi != lo and tbl.dispatch(hi, buf, poff, poff + plen, d, d.root,
                                                                      try_heuristics=False))):
                        return
                finally:
                    d.source = old
                d.layer("data", f"Data ({plen} bytes)", poff, plen)
                d.add(None, "data.data", bytes(buf[poff:poff + plen]), poff, plen)

    def _first_pass(self, pkt, d, t, buf, poff, plen) -> None:
        flow = t["flow"]
        st = self.flows.get(flow)
        if st is None:
            if len(self.flows) >= self.max_flows:
                self.flows.pop(next(iter(self.flows)))
            st = self.flows[flow] = _Direction()
        aux = pkt.aux
        aux["tcp.stream"] = self._stream_id(flow)
        flags = t["flags"]
        ngaps = len(st.stream.gaps)
        data = st.stream.add(t["seq"], bytes(buf[poff:poff + plen]), bool(flags & 2), bool(flags & 1))
        if st.stream.last_was_retransmission:
            aux["tcp.retransmission"] = True
        if st.stream.last_was_out_of_order:
            aux["tcp.out_of_order"] = True
        if len(st.stream.gaps) != ngaps:
            aux["tcp.lost_segment"] = True
            st.buf.clear()
            st.partial_from.clear()
            if st.proto is not None:
                st.resync = True
        if not data:
            if st.proto is not None and plen and not st.stream.last_was_retransmission:
                aux["tcp.proto"] = st.proto.name
            return
        # the first `direct` delivered bytes are this segment's tail, in the frame itself
        direct = st.stream.last_direct
        frame_start = poff + plen - direct
        if st.proto is None:
            if st.tries >= DETECT_TRIES:
                return
            st.tries += 1
            ports = (flow[1], flow[3])
            for p in PROTOCOLS:
                if p.ports is not None and not (ports[0] in p.ports or ports[1] in p.ports):
                    continue
                if _safe(p.detect, data, default=False):
                    st.proto = p
                    break
            if st.proto is None:
                return
            st.buf.clear()
            st.partial_from.clear()
        aux["tcp.proto"] = st.proto.name
        base = len(st.buf)            # offset of this segment's bytes in st.buf
        st.buf += data
        pdus = []
        off = 0
        p = st.proto
        view = bytes(st.buf)
        while off < len(view):
            if st.resync:
                # look for a position where the protocol is recognised again
                found = None
                for k in range(off, min(len(view), off + 4096)):
                    if _safe(p.detect, view[k:], default=False):
                        found = k
                        break
                if found is None:
                    off = len(view)
                    break
                off = found
                st.resync = False
            n = _safe(p.pdu_len, view, off)
            if n is None:
                break
            if n <= 0 or n > MAX_PDU:
                st.resync = True
                off += 1
                continue
            if off + n > len(view):
                break
            if off >= base and off + n <= base + direct:
                pdus.append((p.name, "frame", frame_start + off - base, frame_start + off - base + n))
            else:
                pdus.append((p.name, "reassembled", view[off:off + n], [q.number for q in st.partial_from]))
                for q in st.partial_from:
                    q.aux["tcp.reassembled_in"] = pkt.number
                st.partial_from.clear()
            off += n
        del st.buf[:off]
        if st.buf and len(st.buf) > MAX_PDU:
            st.buf.clear()
            st.resync = True
        if st.buf:
            st.partial_from.append(pkt)
        if pdus:
            aux["tcp.pdus"] = pdus

    def _dissect_pdus(self, pkt, d: Dissection, pdus, buf, poff, plen, src_index) -> None:
        by_name = {p.name: p for p in PROTOCOLS}
        parent = d.root
        old = d.source
        for entry in pdus:
            name, kind = entry[0], entry[1]
            p = by_name.get(name)
            if p is None:
                continue
            if kind == "frame":
                start, end = entry[2], entry[3]
                d.source = src_index
                call(name, p.dissect, buf, start, end, d, parent)
            else:
                data, frames = entry[2], entry[3]
                d.new_source("Reassembled TCP", data)
                if parent is not None:
                    lbl = d.label(parent, f"[{len(frames) + 1} Reassembled TCP Segments ({len(data)} bytes): "
                                          + " ".join(f"#{n}" for n in frames + [pkt.number]) + "]", 0, len(data))
                    if lbl is not None:
                        lbl.expanded = False
                d.add(None, "tcp.reassembled.length", len(data), 0, len(data))
                call(name, p.dissect, data, 0, len(data), d, parent)
        d.source = old


register_stage(10, "tcp", TcpStage)

__all__ = ["register_stream_protocol", "TcpStage", "PROTOCOLS", "StreamProtocol"]
