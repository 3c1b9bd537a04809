"""The simulated network: nodes, the PL-20 power-line channel and the CN/IP backhaul,
14908 transport behaviour (ACKD/ACK, REQUEST/RESPONSE, retries, duplicates, CRC errors),
repeating chains (Annex E proxy), and the recorder that turns it all into capture records
plus the per-frame ground truth.

Everything is driven by one `random.Random(seed)` and a simulated clock that starts at a
fixed instant: the same seed gives the same bytes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from dissectors.net import LINKTYPE_ETHERNET, LINKTYPE_USER0

from . import wire

START_NS = 1_767_225_600_000_000_000       # 2026-01-01T00:00:00Z
PL_BITRATE = 5400.0                        # PL-20 (CENELEC A band) bit rate, bit/s
PL_OVERHEAD_BITS = 40                      # preamble, sync and end-of-frame code
BETA1_NS = 2_000_000                       # idle time after a packet before arbitration
SLOT_NS = 1_300_000                        # one randomising slot on PL-20
IP_LATENCY_NS = 1_500_000                  # backhaul one-way latency


@dataclass
class Node:
    name: str
    subnet: int
    node: int
    nid: bytes
    role: str = "meter"                    # "dc" | "meter" | "headend" | "attacker"
    system_title: bytes | None = None
    keyset: str | None = None              # key ring set name (never key bytes)
    route: list["Node"] = field(default_factory=list)   # repeaters between DC and this node
    medium: str = "pl"                     # "pl" | "ip"
    ip: bytes | None = None
    mac: bytes | None = None
    tid: int = 0

    @property
    def addr(self) -> str:
        return f"{self.subnet}/{self.node}"

    def next_tid(self) -> int:
        self.tid = self.tid % 15 + 1         # TIDs cycle 1..15 (0 is left unused after reset)
        return self.tid


class Recorder:
    """Collects frames in time order with their ground truth."""

    def __init__(self):
        self.frames: list[tuple[int, int, bytes, int, tuple, dict]] = []

    def add(self, ts_ns: int, iface: int, data: bytes, linktype: int, comments: tuple, truth: dict):
        self.frames.append((ts_ns, iface, data, linktype, comments, truth))

    def sorted(self):
        return sorted(self.frames, key=lambda f: (f[0], f[1]))


class Network:
    """The channel clock and the transport services used by the scenarios."""

    def __init__(self, seed: int, domain: bytes = b"\x4c", crc_error_rate: float = 0.01,
                 loss_rate: float = 0.01, start_ns: int = START_NS, fast: bool = False):
        self.rng = random.Random(seed)
        self.t = start_ns
        self.domain = domain
        self.crc_error_rate = crc_error_rate
        self.loss_rate = loss_rate
        self.rec = Recorder()
        self.nodes: dict[str, Node] = {}
        self.cnip_seq = 0
        self.cnip_session = 0x4C530001
        self.ip_id = 0x100
        self.fast = fast
        self.dc: Node | None = None
        self.stats = {"crc_errors": 0, "retries": 0, "duplicates": 0}
        self.force_loss = 0          # scenarios may ask for the next responses to be lost

    # ---------------------------------------------------------------- topology
    def add_node(self, name: str, subnet: int, node: int, role: str = "meter", **kw) -> Node:
        nid = bytes([0x05]) + self.rng.getrandbits(40).to_bytes(5, "big")
        n = Node(name, subnet, node, nid, role, **kw)
        self.nodes[name] = n
        if role == "dc":
            self.dc = n
        return n

    # ---------------------------------------------------------------- timing
    def frame_ns(self, nbytes: int) -> int:
        return int((nbytes * 8 + PL_OVERHEAD_BITS) / PL_BITRATE * 1e9)

    def idle(self, backlog: int = 0) -> None:
        """Channel access: beta1 plus a random number of priority/randomising slots whose
        window widens with the channel backlog."""
        window = 16 + 4 * min(backlog, 15)
        self.t += BETA1_NS + self.rng.randrange(window) * SLOT_NS

    def wait(self, ns_min: int, ns_max: int) -> None:
        self.t += self.rng.randrange(ns_min, ns_max)

    # ---------------------------------------------------------------- emitting
    def _lon_model(self, src: Node, dst: Node | None, pdu: str, typ: str | None, tid: int,
                   apdu: bytes, backlog: int = 0, dst_type: str = "unicast", auth: bool = False,
                   priority: bool = False, **extra) -> dict:
        f = {"src_subnet": src.subnet, "src_node": src.node, "dst_type": dst_type,
             "domain": self.domain, "pdu": pdu, "type": typ, "tid": tid, "auth": auth,
             "priority": int(priority), "backlog": backlog, "apdu": apdu}
        if dst is not None and dst_type in ("unicast", "groupack"):
            f["dst_subnet"], f["dst_node"] = dst.subnet, dst.node
        if dst_type == "nid":
            f["dst_subnet"], f["nid"] = 0, dst.nid
        if dst_type == "bcast":
            f["dst_subnet"] = 0
        f.update(extra)
        return f

    @staticmethod
    def lon_truth(f: dict, crc_ok: bool = True) -> dict:
        t = {"src": f"{f['src_subnet']}/{f['src_node']}", "src_subnet": f["src_subnet"],
             "src_node": f["src_node"], "dst_type": f["dst_type"], "pdu": f["pdu"],
             "type": f["type"], "tid": f["tid"], "auth": bool(f["auth"]),
             "domain": f["domain"].hex(), "crc_ok": crc_ok,
             "pdufmt": wire.PDUFMT[f["pdu"]], "addrfmt": wire.ADDRFMT[f["dst_type"]]}
        if f["dst_type"] in ("unicast", "groupack"):
            t["dst"] = f"{f['dst_subnet']}/{f['dst_node']}"
            t["dst_subnet"], t["dst_node"] = f["dst_subnet"], f["dst_node"]
        elif f["dst_type"] == "nid":
            t["dst"] = f["nid"].hex()
            t["nid"] = f["nid"].hex()
        elif f["dst_type"] == "bcast":
            t["dst"] = "bcast"
        elif f["dst_type"] == "group":
            t["dst"] = f"grp {f['group']}"
            t["group"] = f["group"]
        apdu = f.get("apdu") or b""
        if f["pdu"] != "auth" and apdu:
            t["code"] = apdu[0]
        return t

    def emit_pl(self, f: dict, truth: dict, corrupt: bool = False) -> bytes:
        """Put one LonTalk frame on the power line (sniffer interface 0)."""
        frame = wire.lon_frame(f, crc=True)
        data = frame
        if corrupt:
            # a burst hits the frame body; the CRC no longer matches
            pos = 2 + self.rng.randrange(max(1, len(frame) - 4))
            data = frame[:pos] + bytes([frame[pos] ^ (1 << self.rng.randrange(8))]) + frame[pos + 1:]
            self.stats["crc_errors"] += 1
        self.idle(f.get("backlog", 0))
        # the same comment form as a live NI in mode 2: zero-crossing phase and the two
        # signal-strength register bytes
        phase = self.rng.randrange(3)
        ssi = (0x40 + self.rng.randrange(0x90)) << 8 | self.rng.randrange(0x30)
        comments = () if self.fast else (f"phase={phase} ssi=0x{ssi:04x}",)
        truth = dict(truth)
        truth["medium"] = "pl"
        truth["lon"] = self.lon_truth(f, not corrupt)
        self.rec.add(self.t, 0, data, LINKTYPE_USER0, comments, truth)
        self.t += self.frame_ns(len(data))
        return data

    def emit_ip(self, src: Node, dst: Node, f: dict, truth: dict) -> None:
        """The same NPDU on the CN/IP backhaul (interface 1), no L2 CRC."""
        self.cnip_seq += 1
        self.ip_id += 1
        ts_ms = (self.t // 1_000_000) & 0xFFFFFFFF
        payload = wire.cnip(wire.lon_frame(f, crc=False), self.cnip_seq, self.cnip_session, ts_ms)
        pkt = wire.ether_udp(src.mac, dst.mac, src.ip, dst.ip, 1628, 1628, payload, self.ip_id)
        truth = dict(truth)
        truth["medium"] = "ip"
        truth["lon"] = self.lon_truth(f, True)
        truth["lon"]["crc_ok"] = None
        truth["cnip"] = {"seqno": self.cnip_seq, "session": self.cnip_session, "type": 1,
                         "src_ip": ".".join(map(str, src.ip)), "dst_ip": ".".join(map(str, dst.ip)),
                         "udp_port": 1628}
        self.rec.add(self.t, 1, pkt, LINKTYPE_ETHERNET, (), truth)
        self.t += IP_LATENCY_NS

    # ---------------------------------------------------------------- transport
    def _hop(self, src: Node, dst: Node, pdu: str, typ: str, tid: int, apdu: bytes, truth: dict,
             backlog: int = 0, deliver_prob: float | None = None, auth: bool = False) -> int:
        """Send one frame from src to dst on the medium between them; returns the number of
        transmissions needed (CRC errors cause retransmission by the transport)."""
        f = self._lon_model(src, dst, pdu, typ, tid, apdu, backlog=backlog, auth=auth)
        if src.medium == "ip" or dst.medium == "ip":
            ip_side, pl_side = (src, dst) if src.medium == "ip" else (dst, src)
            router = self.dc
            if src.medium == "ip":
                self.emit_ip(src, router, f, truth)
                self.wait(3_000_000, 12_000_000)       # router queueing
                self.emit_pl(f, dict(truth, routed=True))
            else:
                self.emit_pl(f, truth)
                self.wait(3_000_000, 12_000_000)
                self.emit_ip(router, dst, f, dict(truth, routed=True))
            return 1
        sent = 0
        while True:
            sent += 1
            corrupt = sent < 4 and self.rng.random() < self.crc_error_rate
            t = dict(truth)
            if sent > 1:
                t["retry"] = sent - 1
                self.stats["retries"] += 1
            self.emit_pl(f, t, corrupt=corrupt)
            if not corrupt:
                return sent
            self.wait(48_000_000, 96_000_000)        # transaction retry timer

    def request_response(self, client: Node, server: Node, req_apdu: bytes, resp_apdu: bytes,
                         req_truth: dict, resp_truth: dict, via: list[Node] | None = None,
                         proxy_wrap=None, proc_ns: tuple[int, int] = (20_000_000, 90_000_000)) -> None:
        """One 14908 request/response transaction (SPDU REQUEST/RESPONSE, same TID), through
        a repeating chain when `via` is non-empty (each hop its own transaction)."""
        via = via or []
        if via:
            self._proxied(client, server, req_apdu, resp_apdu, req_truth, resp_truth, via, proxy_wrap, proc_ns)
            return
        tid = client.next_tid()
        self._hop(client, server, "spdu", "REQUEST", tid, req_apdu, req_truth, backlog=1)
        self.wait(*proc_ns)
        lost = self.rng.random() < self.loss_rate and client.medium == "pl" and server.medium == "pl"
        if self.force_loss and client.medium == "pl" and server.medium == "pl":
            self.force_loss -= 1
            lost = True
        self._hop(server, client, "spdu", "RESPONSE", tid, resp_apdu, resp_truth)
        if lost:
            # the client missed the response: it repeats the request with the same TID, the
            # server recognises the duplicate and answers again from its response cache
            self.wait(60_000_000, 120_000_000)
            self.stats["duplicates"] += 1
            self._hop(client, server, "spdu", "REQUEST", tid, req_apdu, dict(req_truth, duplicate=True), backlog=1)
            self.wait(5_000_000, 15_000_000)
            self._hop(server, client, "spdu", "RESPONSE", tid, resp_apdu, dict(resp_truth, duplicate=True))

    def send_request(self, client: Node, server: Node, apdu: bytes, truth: dict) -> int:
        """The request half of a transaction (for interleaved attack stories); returns the TID."""
        tid = client.next_tid()
        self._hop(client, server, "spdu", "REQUEST", tid, apdu, truth, backlog=1)
        return tid

    def send_response(self, server: Node, client: Node, tid: int, apdu: bytes, truth: dict) -> None:
        self._hop(server, client, "spdu", "RESPONSE", tid, apdu, truth)

    def _proxied(self, client, server, req_apdu, resp_apdu, req_truth, resp_truth, via, proxy_wrap, proc_ns):
        chain = [client] + via + [server]
        tids = []
        # downlink: client -> R1 -> ... -> Rn carry code 0x4D, Rn -> server the bare APDU
        for i in range(len(chain) - 1):
            a, b = chain[i], chain[i + 1]
            tid = a.next_tid()
            tids.append(tid)
            remaining = chain[i + 2:-1]
            if b is server:
                apdu = req_apdu
                t = dict(req_truth, proxy={"role": "agent-to-target", "hops_left": 0})
            else:
                apdu = wire.proxy([(h.subnet, h.node) for h in remaining], (server.subnet, server.node),
                                  req_apdu)
                t = dict(req_truth, proxy={"role": "request", "hops_left": len(remaining),
                                           "hops": [h.addr for h in remaining], "target": server.addr})
            self._hop(a, b, "spdu", "REQUEST", tid, apdu, t, backlog=len(chain) - 1 - i)
            self.wait(8_000_000, 25_000_000)
        self.wait(*proc_ns)
        # uplink: the target's response is relayed back unchanged, each hop answering its
        # own transaction
        for i in range(len(chain) - 1, 0, -1):
            a, b = chain[i], chain[i - 1]
            t = dict(resp_truth, proxy={"role": "response" if a is server else "relay"})
            self._hop(a, b, "spdu", "RESPONSE", tids[i - 1], resp_apdu, t)
            self.wait(8_000_000, 25_000_000)

    def ackd(self, src: Node, dst: Node, apdu: bytes, truth: dict, auth: bool = False,
             ack_truth: dict | None = None) -> None:
        """An acknowledged message (TPDU ACKD) and its ACK; a lost ACK makes the sender
        retransmit and the receiver acknowledge the duplicate again."""
        tid = src.next_tid()
        self._hop(src, dst, "tpdu", "ACKD", tid, apdu, truth, backlog=1, auth=auth)
        self.wait(4_000_000, 12_000_000)
        at = dict(ack_truth or {}, layers=["lon"])
        self._hop(dst, src, "tpdu", "ACK", tid, b"", at)
        if self.rng.random() < self.loss_rate and src.medium == "pl":
            self.wait(60_000_000, 120_000_000)
            self.stats["duplicates"] += 1
            self._hop(src, dst, "tpdu", "ACKD", tid, apdu, dict(truth, duplicate=True), backlog=1, auth=auth)
            self.wait(4_000_000, 12_000_000)
            self._hop(dst, src, "tpdu", "ACK", tid, b"", dict(at, duplicate=True))

    def authenticated(self, src: Node, dst: Node, apdu: bytes, truth: dict, key: bytes) -> None:
        """An ACKD message with the 14908 authentication bit: the receiver challenges the
        sender (AuthPDU CHALLENGE, same TID), the sender replies with the 8-byte value
        computed from the challenge and the APDU under the domain key, then the ACK."""
        from analyzer.osgpcrypto import lon_auth_reply
        tid = src.next_tid()
        self._hop(src, dst, "tpdu", "ACKD", tid, apdu, dict(truth, lon_auth="request"), backlog=1, auth=True)
        self.wait(5_000_000, 15_000_000)
        challenge = self.rng.getrandbits(64).to_bytes(8, "big")
        f = self._lon_model(dst, src, "auth", "CHALLENGE", tid, b"", auth_value=challenge, auth_fmt=2)
        self.emit_pl(f, {"layers": ["lon"], "lon_auth": "challenge", "challenge": challenge.hex()})
        self.wait(5_000_000, 15_000_000)
        reply = lon_auth_reply(key, challenge, apdu)
        f = self._lon_model(src, dst, "auth", "REPLY", tid, b"", auth_value=reply, auth_fmt=2)
        self.emit_pl(f, {"layers": ["lon"], "lon_auth": "reply", "reply": reply.hex(), "keyset": "domain-4c"})
        self.wait(5_000_000, 15_000_000)
        self._hop(dst, src, "tpdu", "ACK", tid, b"", {"layers": ["lon"]})

    def unackd_rpt(self, src: Node, group: int, apdu: bytes, truth: dict, repeats: int = 2) -> None:
        """An unacknowledged-repeated multicast (e.g. an NV update to a group): the same TID
        sent 1 + repeats times."""
        tid = src.next_tid()
        for k in range(1 + repeats):
            f = self._lon_model(src, None, "tpdu", "UNACKD_RPT", tid, apdu, dst_type="group", group=group)
            self.emit_pl(f, dict(truth, repeat=k) if k else truth)
            self.wait(16_000_000, 40_000_000)
