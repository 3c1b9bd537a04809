"""IPv4 and IPv6 fragment reassembly stage (pipeline order 5).

The IPv4/IPv6 dissectors stop at a fragment and leave `ctx["ipfrag"]`; this stage collects
the fragments of each datagram (key: src, dst, id, protocol), and when the datagram is
complete dissects it from the transport layer up in a new data source "Reassembled IPv4" (or IPv6)
attached to the packet carrying the last missing fragment.  Memory is bounded (pending
datagrams, bytes per datagram) and incomplete datagrams time out (capture time).
"""
from __future__ import annotations

from dissectors.core import FT_BOOL, FT_UINT, Dissection, field, table

from .pipeline import Stage, register_stage

field("ip.reassembled_in", FT_UINT, "Reassembled IPv4 in frame")
field("ip.reassembled.length", FT_UINT, "Reassembled IPv4 length")
field("ip.fragment.count", FT_UINT, "Fragment count")
field("ip.fragment.overlap", FT_BOOL, "Fragment overlap")

MAX_PENDING = 1024                 # datagrams being reassembled at once
MAX_DATAGRAM = 65535               # IPv4 limit
TIMEOUT_NS = 30 * 1_000_000_000    # drop incomplete datagrams after 30 s of capture time


class _Datagram:
    __slots__ = ("frags", "total", "first_ts", "packets", "overlap")

    def __init__(self, ts: int):
        self.frags: dict[int, bytes] = {}
        self.total: int | None = None
        self.first_ts = ts
        self.packets: list = []
        self.overlap = False

    def complete(self) -> bytes | None:
        if self.total is None:
            return None
        have = 0
        for off in sorted(self.frags):
            if off > have:
                return None
            have = max(have, off + len(self.frags[off]))
        if have < self.total:
            return None
        out = bytearray(self.total)
        # later offsets first, so that the first-arrived data at an offset wins on overlap
        for off in sorted(self.frags, reverse=True):
            chunk = self.frags[off][:max(0, self.total - off)]
            out[off:off + len(chunk)] = chunk
        return bytes(out)


class IpDefragStage(Stage):
    name = "ipdefrag"

    def __init__(self, pipeline):
        super().__init__(pipeline)
        self.pending: dict[tuple, _Datagram] = {}
        self.timed_out = 0

    def process(self, pkt, d: Dissection, first_pass: bool) -> None:
        f = d.ctx.get("ipfrag")
        if f is None:
            return
        if first_pass:
            self._collect(pkt, d, f)
        aux = pkt.aux
        if aux.get("ip.reassembled_in") is not None and "ip.reassembled" not in aux:
            d.add(None, "ip.reassembled_in", aux["ip.reassembled_in"], 0, 0)
        r = aux.get("ip.reassembled")
        if r is None:
            return
        data, proto, frames = r
        ver = aux.get("ip.reassembled.version", 4)
        parent = d.root
        old = d.source
        d.new_source(f"Reassembled IPv{ver}", data)
        if parent is not None:
            d.label(parent, f"[{len(frames)} IPv{ver} Fragments ({len(data)} bytes): "
                            + " ".join(f"#{n}" for n in frames) + "]", 0, len(data))
        d.add(None, "ip.reassembled.length", len(data), 0, len(data))
        d.add(None, "ip.fragment.count", len(frames), 0, 0)
        if aux.get("ip.fragment.overlap"):
            d.add(None, "ip.fragment.overlap", True, 0, 0)
            d.note("warn", "malformed", "ip", 0, "Overlapping IPv4 fragments (first copy kept)")
        d.info = ""
        if not table("ip.proto").dispatch(proto, data, 0, len(data), d, parent, try_heuristics=False):
            from dissectors.net import show_data
            show_data(data, 0, len(data), d, parent)
        # ctx["tcp"]["source"] names the reassembled source for the TCP stage
        d.source = old

    def _collect(self, pkt, d: Dissection, f: dict) -> None:
        ts = pkt.ts_ns
        # time out old datagrams
        if self.pending:
            first_key = next(iter(self.pending))
            while self.pending and ts - self.pending[first_key].first_ts > TIMEOUT_NS:
                self.pending.pop(first_key)
                self.timed_out += 1
                if not self.pending:
                    break
                first_key = next(iter(self.pending))
        key = (f.get("version", 4), f["src"], f["dst"], f["id"], f["proto"])
        dg = self.pending.get(key)
        if dg is None:
            if len(self.pending) >= MAX_PENDING:
                self.pending.pop(next(iter(self.pending)))
            dg = self.pending[key] = _Datagram(ts)
        src = d.sources[f["source"]][1]
        chunk = bytes(src[f["payload_off"]:f["payload_off"] + f["payload_len"]])
        off = f["offset"]
        if off + len(chunk) > MAX_DATAGRAM:
            d.malformed("ip", f["payload_off"], "fragment exceeds the 65535-byte datagram limit")
            self.pending.pop(key, None)
            return
        prev = dg.frags.get(off)
        for o, c in dg.frags.items():
            if o != off and o < off + len(chunk) and off < o + len(c):
                dg.overlap = True
        if prev is None or len(chunk) > len(prev):
            dg.frags[off] = chunk if prev is None else prev + chunk[len(prev):]
        if not f["more"]:
            dg.total = off + len(chunk)
        dg.packets.append(pkt)
        data = dg.complete()
        if data is None:
            return
        del self.pending[key]
        frames = [p.number for p in dg.packets]
        for p in dg.packets[:-1]:
            p.aux["ip.reassembled_in"] = pkt.number
        pkt.aux["ip.reassembled"] = (data, f["proto"], frames)
        if f.get("version", 4) != 4:
            pkt.aux["ip.reassembled.version"] = f["version"]
        if dg.overlap:
            pkt.aux["ip.fragment.overlap"] = True


register_stage(5, "ipdefrag", IpDefragStage)

__all__ = ["IpDefragStage"]
