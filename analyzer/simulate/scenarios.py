"""Named scenarios: a fleet of meters behind a data concentrator on a PL-20 channel, a
head-end on the CN/IP backhaul, and the attacks from the DLMS security literature."""
from __future__ import annotations

import json
import struct
from typing import Callable

from analyzer import osgpcrypto

from . import apdu as A
from . import wire
from .dlms import PROFILES, Association, Endpoint, Keys, MeterModel, det_ec_key
from .network import Network, Node

GB_EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
GB_AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
DEMO_BK = bytes.fromhex("B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF")   # demo global broadcast key
DC_TITLE = bytes.fromhex("4C4F4E4443000001")          # "LONDC" + 1
HE_TITLE = bytes.fromhex("4C4F4E4845000001")          # "LONHE" + 1
ATTACKER_TITLE = bytes.fromhex("4D414C4C4F525931")    # "MALLORY1"
OMA_KEY = bytes.fromhex("DFDFDFDFDFDFDFDFDFDFDFDF")    # the Jovanovic/Neves test key
DOMAIN_KEY = bytes.fromhex("4C4F4E4B4559")               # 6-byte 14908 domain authentication key ("LONKEY")

FLEET_PROFILES = ["none", "lls", "hls-gmac", "ae-dedicated", "general-glo", "hls-md5", "auth-only",
                  "enc-only", "ae-global", "hls-ecdsa", "general-ded", "general-signing", "sn-c1219"]

SCENARIOS: dict[str, tuple[str, Callable]] = {}

# What a security audit must say about an association of each configuration (rule ids of
# analyzer.audit): facts of the configuration, independent of any attack.
CONFIG_FINDINGS = {
    "none": ["plaintext-public"],
    "lls": ["lls-cleartext", "plaintext-after-association"],
    "hls-md5": ["hls-weak-mechanism", "plaintext-after-association"],
    "hls-gmac": ["hls-weak-mechanism"],
    "hls-ecdsa": [],
    "auth-only": ["hls-weak-mechanism", "authentication-without-encryption"],
    "enc-only": ["encryption-without-authentication"],
    "ae-global": ["lls-cleartext"],
    "ae-dedicated": ["hls-weak-mechanism"],
    "general-glo": ["hls-weak-mechanism"],
    "general-ded": ["hls-weak-mechanism"],
    "general-signing": [],
    "sn-c1219": ["lls-cleartext", "plaintext-after-association"],
}


def scenario(name: str, desc: str):
    def deco(fn):
        SCENARIOS[name] = (desc, fn)
        return fn
    return deco


def fleet_keys(pem_dir: str | None = None) -> Keys:
    return Keys("fleet", GB_EK, GB_AK, lls_password=b"12345678", hls_secret=b"demo-hls-secret",
                client_key=det_ec_key("lonscope demo client"), server_key=det_ec_key("lonscope demo server"))


class World:
    """A network plus the DLMS endpoints and the scenario's expected findings."""

    def __init__(self, seed: int, n_meters: int = 8, fast: bool = False, max_hops: int = 3,
                 crc_error_rate: float = 0.01, loss_rate: float = 0.01):
        self.net = Network(seed, fast=fast, crc_error_rate=crc_error_rate, loss_rate=loss_rate)
        self.rng = self.net.rng
        net = self.net
        self.keys = fleet_keys()
        self.dc = net.add_node("dc", 1, 1, "dc", system_title=DC_TITLE, ip=bytes([10, 0, 0, 2]),
                               mac=bytes.fromhex("020000000002"))
        self.he = net.add_node("headend", 10, 1, "headend", system_title=HE_TITLE, medium="ip",
                               ip=bytes([10, 0, 0, 1]), mac=bytes.fromhex("020000000001"))
        self.meters: list[Node] = []
        direct: list[Node] = []
        for i in range(n_meters):
            sn, nd = 1 + i // 100, 10 + i % 100           # node ids are 7 bits: 100 per subnet
            m = net.add_node(f"meter-{i + 1:02d}", sn, nd, "meter",
                             system_title=bytes.fromhex("4C4F4E4D") + struct.pack(">I", 0x1000 + i + 1),
                             keyset="fleet")
            # every third meter beyond the first few sits behind 1..max_hops repeaters
            if i >= 3 and i % 3 == 0 and direct:
                hops = 1 + self.rng.randrange(max_hops)
                m.route = [direct[(i + k) % len(direct)] for k in range(min(hops, len(direct)))]
            else:
                direct.append(m)
            m.model = MeterModel(self.rng, f"LNS{0x4000 + i:06d}", net.t)
            self.meters.append(m)
        self.eps: dict[str, Endpoint] = {}
        self.findings: list[dict] = []
        self._fkeys: set = set()
        self.associations: list[dict] = []
        self.osgp_seq: dict[str, int] = {}

    def finding(self, **f) -> None:
        """An expected audit finding (rule ids of analyzer.audit)."""
        key = (f["rule"], f.get("association"), f.get("command"))
        if key not in self._fkeys:
            self._fkeys.add(key)
            self.findings.append(f)

    def ep(self, node: Node, title: bytes | None = None) -> Endpoint:
        key = node.name if title is None else f"{node.name}:{title.hex()}"
        if key not in self.eps:
            self.eps[key] = Endpoint(title or node.system_title, 1 + self.rng.randrange(50))
        return self.eps[key]

    def transport(self, client: Node, server: Node, client_sap: int = 1, server_sap: int = 1):
        net = self.net
        via = server.route if client.medium == "pl" and client.role == "dc" else []

        def send(rw: bytes, sw: bytes, rt: dict, st: dict) -> None:
            req = wire.adaptation(rw, client_sap=client_sap, server_sap=server_sap)
            resp = wire.adaptation(sw, client_sap=client_sap, server_sap=server_sap)
            net.request_response(client, server, req, resp, rt, st, via=via)
        return send

    def association(self, name: str, client: Node, server: Node, profile: str, client_sap: int = 1) -> Association:
        a = Association(name, self.net, client, server, PROFILES[profile], self.keys,
                        self.ep(client), self.ep(server), self.transport(client, server, client_sap),
                        "fleet", server.model)
        self.associations.append({"name": name, "client": client.addr, "server": server.addr,
                                  "profile": profile, "mechanism": PROFILES[profile].mechanism,
                                  "keyset": "fleet", "route": [r.addr for r in server.route]})
        for rule in CONFIG_FINDINGS[profile]:
            self.finding(rule=rule, association=name, severity=None)
        return a

    def poll(self, a: Association, big: bool = False) -> None:
        m = a.server
        m.model.now = self.net.t
        if a.p.context == "sn":
            a.sn_read([0x1000 + 0x20 * 1 + 0x18, 0x1000 + 0x20 * 23 + 0x18])
            return
        a.get(8, "0.0.1.0.0.255", 2)
        a.get(3, "1.0.1.8.0.255", 2)
        a.get(3, "1.0.1.8.0.255", 3)
        a.get(3, "1.0.32.7.0.255", 2)
        a.get(3, "1.0.32.7.0.255", 3)
        if big:
            a.get(7, "1.0.99.1.0.255", 2)

    def push(self, meter: Node, prof: str) -> None:
        """A meter's data notification (ACKD) to the concentrator, protected like its
        association profile with general-glo-ciphering when ciphered."""
        m = meter
        val = ("structure", [("octet-string", bytes.fromhex("0000190900FF")),
                             ("double-long-unsigned", m.model.energy),
                             ("long-unsigned", 2250 + self.rng.randrange(100))])
        ep = self.ep(m)
        plain = A.data_notification(0x80000000 | (ep.ic & 0xFFFFFF), val, m.model.clock(self.net.t))
        p = PROFILES[prof]
        prot = None
        wire_apdu = plain
        if p.protection and p.protection != "signing":
            from analyzer import dlmscrypto as dc
            ic = ep.next_ic()
            body = dc.protect(0x30, ic, ep.title, self.keys.ek, self.keys.ak, plain)
            wire_apdu = A.wrap_general(ep.title, body)
            prot = {"kind": "general-glo", "sc": 0x30, "ic": ic, "system_title": ep.title.hex(), "tag": "0xdb"}
        truth = {"layers": ["lon", "adp", "dlms"],
                 "dlms": {"association": None, "client": self.dc.addr, "server": m.addr, "direction": "push",
                          "profile": prof, "keyset": "fleet", "apdu": A.APDU_NAMES[wire_apdu[0]],
                          "plain_apdu": "data-notification", "plaintext": plain.hex(), "wire": wire_apdu.hex(),
                          "protection": prot, "decryption": "decrypted" if prot else None,
                          "ops": [{"service": "notify", "dir": "request", "value": A.jsonable(val),
                                   "type": "structure"}]}}
        self.net.ackd(m, self.dc, wire.adaptation(wire_apdu, client_sap=102, server_sap=1), truth)

    # ------------------------------------------------------------ OSGP legacy
    def osgp(self, meter: Node, service: str, table: int, offset: int | None = None, count: int | None = None,
             data: bytes = b"", client: Node | None = None, key: bytes | None = OMA_KEY,
             seq: int | None = None, outcome: str = "ok") -> None:
        """One OSGP table service with the legacy trailer: request `code..seq` + OMA digest,
        response `code [count data]` + digest over request || response.  `outcome`:
        "ok", "auth-failure" (the meter rejects a wrong digest: 0x0B), "sequence-error"
        (a stale sequence number: 0x0C with the expected one)."""
        client = client or self.dc
        expected = self.osgp_seq.get(meter.name, 0x2C000000 + self.rng.randrange(1 << 16)) + 1
        if seq is None:
            seq = expected
        body = wire.osgp_request(service, table, offset, count, data, seq=seq)
        digest = osgpcrypto.oma_digest(key, body) if key else bytes(self.rng.randrange(256) for _ in range(8))
        req = body + digest
        if outcome == "ok":
            self.osgp_seq[meter.name] = seq
            rdata = bytes(self.rng.randrange(256) for _ in range(count or 16)) if "read" in service else None
            rbody = wire.osgp_response(0, rdata)
        elif outcome == "sequence-error":
            rbody = wire.osgp_response(0x0C, None, expected_seq=expected)
        else:
            rbody = wire.osgp_response(0x0B)
        resp = rbody + osgpcrypto.oma_digest(OMA_KEY, body + rbody)
        rt = {"layers": ["lon", "osgp"],
              "osgp": {"service": service, "table": table, "seq": seq, "dir": "request", "keyset": "osgp-legacy",
                       "digest": "ok" if key == OMA_KEY else "bad"}}
        st = {"layers": ["lon", "osgp"],
              "osgp": {"code": rbody[0], "dir": "response", "keyset": "osgp-legacy", "digest": "ok"}}
        if outcome == "ok" and "read" in service:
            st["osgp"].update(count=len(rdata), data=rdata.hex())
        self.net.request_response(client, meter, req, resp, rt, st, via=meter.route if client is self.dc else [])

    def osgp_read(self, meter: Node, table: int, count_bytes: int = 16) -> None:
        self.osgp(meter, "full-read", table, count=count_bytes)

    # ------------------------------------------------------------ 14908 background traffic
    def nd_query_status(self, meter: Node) -> None:
        """Network diagnostics: query status (0x51) and its 15-byte status response (0x31)."""
        st = struct.pack(">HHHHH", self.rng.randrange(20), self.rng.randrange(5), 0,
                         self.rng.randrange(3), self.rng.randrange(3)) + bytes([0, 4, 0x80, 0, 0x0C])
        self.net.request_response(self.dc, meter, b"\x51", b"\x31" + st,
                                  {"layers": ["lon"], "nd": {"command": "query-status", "code": 0x51}},
                                  {"layers": ["lon"], "nd": {"command": "query-status", "code": 0x31,
                                                             "response": "success"}}, via=meter.route)

    def nv_update(self, meter: Node, group: int = 1) -> None:
        """A meter publishes its power (SNVT_power_kilo, NV selector 0x0010) to group 1."""
        from dissectors.lon import build_nv
        value = self.rng.randrange(0, 12000)
        apdu = build_nv(0x0010, struct.pack(">H", value), direction=1)
        self.net.unackd_rpt(meter, group, apdu, {"layers": ["lon"], "nv": {"selector": 0x0010, "value": value}})

    def nm_authenticated(self, meter: Node) -> None:
        """The concentrator changes a meter's node mode with 14908 authentication."""
        self.net.authenticated(self.dc, meter, bytes([0x6C, 0x01]),
                               {"layers": ["lon"], "nm": {"command": "set-node-mode", "code": 0x6C}}, DOMAIN_KEY)

    def broadcast_clock(self, group: int = 1) -> None:
        """Clock synchronisation of a whole group: an unconfirmed set-request (clock time)
        protected with the global broadcast key (SC 0x70: A+E, broadcast key set) in a
        general-glo-ciphering APDU (it names the sender's system title: there is no
        association to learn it from), sent as an unacknowledged-repeated multicast."""
        from analyzer import dlmscrypto as dc
        ep = self.ep(self.dc)
        now = self.meters[0].model.clock(self.net.t)
        iip = 0x80 | 0x01                                  # high priority, unconfirmed, invoke id 1
        plain = A.set_request(iip, 8, "0.0.1.0.0.255", 2, ("octet-string", now))
        ic = ep.next_ic()
        body = dc.protect(0x70, ic, ep.title, DEMO_BK, self.keys.ak, plain)
        wire_apdu = A.wrap_general(ep.title, body)
        truth = {"layers": ["lon", "adp", "dlms"],
                 "dlms": {"association": None, "client": self.dc.addr, "server": f"grp {group}",
                          "direction": "request", "profile": "broadcast", "keyset": "fleet",
                          "apdu": A.APDU_NAMES[wire_apdu[0]], "plain_apdu": "set-request",
                          "plaintext": plain.hex(), "wire": wire_apdu.hex(),
                          "protection": {"kind": "general-glo", "sc": 0x70, "ic": ic, "system_title": ep.title.hex(),
                                         "tag": f"0x{wire_apdu[0]:02x}", "key": "broadcast"},
                          "decryption": "decrypted",
                          "ops": [{"service": "set", "dir": "request", "invoke_id": 1, "class_id": 8,
                                   "obis": "0.0.1.0.0.255", "attribute_id": 2, "value": now.hex(),
                                   "type": "octet-string"}]}}
        self.net.unackd_rpt(self.dc, group, wire.adaptation(wire_apdu, client_sap=1, server_sap=0x7F), truth)
        self.finding(rule="broadcast-key", severity="info")

    def gap(self, lo_ms: int = 200, hi_ms: int = 1500) -> None:
        self.net.wait(lo_ms * 1_000_000, hi_ms * 1_000_000)


# --------------------------------------------------------------------------- scenarios

def _fleet_run(w: World, profiles: list[str], big_every: int = 3, pushes: bool = True,
               headend: bool = True) -> None:
    for i, m in enumerate(w.meters):
        prof = profiles[i % len(profiles)]
        m.profile = prof
        client = w.he if (headend and not m.route and i % 4 == 2) else w.dc
        a = w.association(f"a{len(w.associations) + 1}", client, m, prof)
        a.associate()
        w.poll(a, big=(i % big_every == 0 or PROFILES[prof].gbt) and PROFILES[prof].context != "sn")
        if i % 5 == 1 and PROFILES[prof].context != "sn":
            a.set(8, "0.0.1.0.0.255", 2, ("octet-string", m.model.clock(w.net.t)))
        if i % 5 == 3 and PROFILES[prof].context != "sn":
            a.action(70, "0.0.96.3.10.255", 2, ("integer", 0))
        a.release()
        w.gap()
        if i % 4 == 0:
            w.nd_query_status(m)
            w.gap(50, 300)
        if i % 3 == 2:
            w.nv_update(m)
            w.gap(50, 300)
        if pushes and i % 2 == 1:
            w.push(m, prof)
            w.gap()


@scenario("fleet", "a concentrator, N meters (direct and 1-3 repeater hops), CN/IP head-end, every security configuration")
def sc_fleet(w: World, target: int | None) -> None:
    _fleet_run(w, FLEET_PROFILES)
    w.broadcast_clock()
    w.gap()
    while target and len(w.net.rec.frames) < target:
        _fleet_run(w, FLEET_PROFILES, pushes=True)


@scenario("lls-sniff", "an LLS association: the password travels in clear in the AARQ")
def sc_lls(w: World, target: int | None) -> None:
    m = w.meters[0]
    a = w.association("lls1", w.dc, m, "lls")
    a.associate()
    w.poll(a)
    a.release()
    w.finding(**{"rule": "lls-cleartext", "association": "lls1", "severity": "high"})


@scenario("hls-swap", "HLS challenge swap: the attacker poses as the meter to the concentrator and swaps the two associations' challenges")
def sc_hls_swap(w: World, target: int | None) -> None:
    net = w.net
    m = w.meters[0]
    x = net.add_node("attacker", 1, 120, "attacker", system_title=ATTACKER_TITLE)
    # the concentrator has been led to the attacker's address for this meter; the attacker
    # answers with the meter's system title
    fake = Node("fake-meter", x.subnet, x.node, x.nid, "attacker", system_title=m.system_title)
    fake.model = m.model
    ac = w.association("swap-victim", w.dc, fake, "hls-md5")     # concentrator -> attacker
    ax = w.association("swap-attacker", x, m, "hls-md5")         # attacker -> meter
    adp = wire.adaptation
    # 1. the concentrator's AARQ (challenge CtoS) reaches the attacker
    req_v, rt_v = ac.aarq_apdu()
    tid_v = net.send_request(w.dc, fake, adp(req_v), rt_v)
    w.gap(20, 60)
    # 2. the attacker opens its own association to the meter with the concentrator's CtoS
    req_x, rt_x = ax.aarq_apdu(ctos=ac.ctos)
    tid_x = net.send_request(x, m, adp(req_x), rt_x)
    w.gap(20, 90)
    resp_x, st_x = ax.aare_apdu()                                  # the meter's StoC
    net.send_response(m, x, tid_x, adp(resp_x), st_x)
    w.gap(20, 60)
    # 3. ... and hands the meter's StoC to the concentrator as its own challenge
    ac.forced_stoc = ax.stoc
    resp_v, st_v = ac.aare_apdu()
    net.send_response(fake, w.dc, tid_v, adp(resp_v), st_v)
    w.gap(50, 150)
    # 4. the concentrator answers the meter's challenge (pass 3); the attacker relays it to
    #    the meter, which accepts and answers the concentrator's challenge (pass 4); the
    #    attacker relays that back: both associations authenticate, the attacker holds one
    p3_v, p4_v, rq_v, rs_v = ac.hls_apdus()
    p3_x, p4_x, rq_x, rs_x = ax.hls_apdus(f_stoc=ac.pass3, f_ctos=ac.f_ctos())
    tid_v = net.send_request(w.dc, fake, adp(p3_v), ac._truth("request", p3_v, p3_v, None, rq_v))
    w.gap(20, 60)
    tid_x = net.send_request(x, m, adp(p3_x), ax._truth("request", p3_x, p3_x, None, rq_x))
    w.gap(20, 90)
    net.send_response(m, x, tid_x, adp(p4_x), ax._truth("response", p4_x, p4_x, None, rs_x))
    w.gap(20, 60)
    net.send_response(fake, w.dc, tid_v, adp(p4_v), ac._truth("response", p4_v, p4_v, None, rs_v))
    w.gap(200, 600)
    # 5. the attacker uses its authenticated association
    ax.get(3, "1.0.1.8.0.255", 2)
    ax.action(70, "0.0.96.3.10.255", 1, ("integer", 0))
    ax.release()
    w.finding(rule="hls-challenge-relay", associations=["swap-victim", "swap-attacker"], severity="critical")


@scenario("mitm-relay", "MITM relaying a client's HLS pass 3 (attacker acting as client)")
def sc_mitm(w: World, target: int | None) -> None:
    net = w.net
    m = w.meters[1]
    x = net.add_node("attacker", 1, 121, "attacker", system_title=ATTACKER_TITLE)
    # the victim's association with the real meter; the attacker copies the meter's challenge
    av = w.association("relay-victim", w.dc, m, "hls-md5")
    av.associate(hls=False)
    # the attacker opens its own association and gets the same challenge replayed by a
    # meter with a weak RNG (a fixed StoC per session start)
    ax = w.association("relay-attacker", x, m, "hls-md5")
    ax.forced_stoc = av.stoc
    ax.associate(hls=False)
    fs = av.f_stoc()
    av.hls_passes(f_stoc=fs)
    ax.hls_passes(f_stoc=fs)          # the victim's pass 3, relayed from the attacker's address
    ax.set(8, "0.0.1.0.0.255", 2, ("octet-string", m.model.clock(net.t + 3_600_000_000_000)))
    ax.release()
    av.release()
    w.finding(**{"rule": "hls-challenge-relay", "associations": ["relay-victim", "relay-attacker"],
                       "severity": "high"})
    w.finding(**{"rule": "hls-challenge-relay", "associations": ["relay-victim", "relay-attacker"],
                       "severity": "high"})


@scenario("replay", "replay of a ciphered request (same invocation counter twice)")
def sc_replay(w: World, target: int | None) -> None:
    m = w.meters[0]
    a = w.association("replay1", w.dc, m, "hls-gmac")
    a.associate()
    kept = {}

    def keep(req, rt, resp, st):
        kept["req"], kept["rt"] = req, rt
        return req, rt, resp, st
    a.mitm = keep
    a.action(70, "0.0.96.3.10.255", 2, ("integer", 0))
    a.mitm = None
    a.get(3, "1.0.1.8.0.255", 2)
    w.gap()
    # the attacker re-sends the captured request bytes verbatim (same IC), spoofing the
    # concentrator's LonTalk address (nothing in 14908 without authentication prevents it)
    rw = kept["req"]
    rt = json.loads(json.dumps(kept["rt"]))
    rt["findings"] = ["replayed-apdu"]
    rt["dlms"]["replay"] = True
    rt["spoofed_by"] = "attacker"
    exc = A.exception_response(1, 6, a.cep.ic)
    st = a._truth("response", exc, exc, None, [{"service": "exception", "dir": "response"}])
    w.net.request_response(w.dc, m, wire.adaptation(rw), wire.adaptation(exc), rt, st)
    a.release()
    w.finding(**{"rule": "replayed-apdu", "association": "replay1", "severity": "high"})
    # the meter's exception-response is not ciphered; the replayed IC is below the last one
    w.finding(rule="plaintext-after-association", association="replay1", severity=None)
    w.finding(rule="ic-backwards", association="replay1", severity="high")


@scenario("tamper", "a ciphered request whose ciphertext was modified in transit (tag fails)")
def sc_tamper(w: World, target: int | None) -> None:
    m = w.meters[0]
    a = w.association("tamper1", w.dc, m, "hls-gmac")
    a.associate()
    a.get(3, "1.0.1.8.0.255", 2)

    def flip(req, rt, resp, st):
        b = bytearray(req)
        b[9] ^= 0x01
        rt = dict(rt)
        rt["dlms"] = dict(rt["dlms"], decryption="auth-failed", wire=bytes(b).hex(), ops=[], tampered=True)
        rt["findings"] = ["decryption-failed"]
        exc = A.exception_response(1, 5)
        st = dict(st)
        st["dlms"] = dict(st["dlms"], apdu="exception-response", plain_apdu="exception-response",
                          plaintext=exc.hex(), wire=exc.hex(), protection=None, decryption=None,
                          ops=[{"service": "exception", "dir": "response"}])
        return bytes(b), rt, exc, st
    a.mitm = flip
    a.set(8, "0.0.1.0.0.255", 2, ("octet-string", m.model.clock(w.net.t)))
    a.mitm = None
    a.get(8, "0.0.1.0.0.255", 2)
    a.release()
    w.finding(**{"rule": "decryption-failed", "association": "tamper1", "severity": "high"})
    w.finding(rule="plaintext-after-association", association="tamper1", severity=None)


@scenario("ic-reuse", "a meter that reuses its invocation counter for different responses (GCM nonce reuse)")
def sc_ic_reuse(w: World, target: int | None) -> None:
    m = w.meters[0]
    a = w.association("icreuse1", w.dc, m, "ae-global")
    a.associate()
    a.get(3, "1.0.1.8.0.255", 2)
    ic = a.sep.ic
    m.model.now = w.net.t
    iid = a._next_iid() | 0xC0
    v1 = m.model.read(3, "1.0.32.7.0.255", 2)
    a.exchange(A.get_request(iid, 3, "1.0.32.7.0.255", 2), A.get_response(iid, v1),
               [{"service": "get", "dir": "request", "invoke_id": iid & 0xF, "class_id": 3,
                 "obis": "1.0.32.7.0.255", "attribute_id": 2}],
               [{"service": "get", "dir": "response", "invoke_id": iid & 0xF, "result": 0,
                 "value": v1[1], "type": v1[0]}], resp_force_ic=ic)
    iid = a._next_iid() | 0xC0
    v2 = m.model.read(3, "1.0.1.8.0.255", 2)
    a.exchange(A.get_request(iid, 3, "1.0.1.8.0.255", 2), A.get_response(iid, v2),
               [{"service": "get", "dir": "request", "invoke_id": iid & 0xF, "class_id": 3,
                 "obis": "1.0.1.8.0.255", "attribute_id": 2}],
               [{"service": "get", "dir": "response", "invoke_id": iid & 0xF, "result": 0,
                 "value": v2[1], "type": v2[0]}], resp_force_ic=ic)
    w.net.rec.frames[-1][5].setdefault("findings", []).append("ic-reuse")
    a.release()
    w.finding(**{"rule": "ic-reuse", "association": "icreuse1", "severity": "high"})


@scenario("nm-unauth", "unauthenticated 14908 network management: update key and write memory")
def sc_nm(w: World, target: int | None) -> None:
    net = w.net
    x = net.add_node("attacker", 1, 123, "attacker")
    m = w.meters[0]
    cmds = [
        (bytes([0x65, 0x00]) + bytes.fromhex("A1A2A3A4A5A6"), bytes([0x25]), "update-key"),
        (bytes([0x6E, 0x01, 0x00, 0x10, 0x04, 0x00]) + bytes.fromhex("DEADBEEF"), bytes([0x2E]), "write-memory"),
        (bytes([0x6C, 0x01]), bytes([0x2C]), "set-node-mode"),
    ]
    w.nm_authenticated(m)         # the legitimate, authenticated way first
    w.gap(100, 400)
    for req, resp, name in cmds:
        rt = {"layers": ["lon"], "nm": {"command": name, "code": req[0]}, "findings": ["lon-nm-unauthenticated"]}
        st = {"layers": ["lon"], "nm": {"command": name, "code": resp[0], "response": "success"}}
        net.request_response(x, m, req, resp, rt, st)
        w.gap(50, 300)
        w.finding(**{"rule": "lon-nm-unauthenticated", "command": name, "severity": "high"})


@scenario("osgp-legacy", "OSGP table reads with the legacy OMA digest (and the legacy-crypto finding)")
def sc_osgp(w: World, target: int | None) -> None:
    for m in w.meters[:3]:
        for table in (1, 23, 2048 + 51):
            w.osgp_read(m, table)
            w.gap(100, 400)
    m = w.meters[0]
    w.osgp(m, "partial-read", 2048 + 51, offset=16, count=8)          # ET51 partial read
    w.gap(100, 400)
    w.osgp(m, "full-write", 7, data=bytes([0x0A, 0x00, 0x00, 0x01]))   # BT07 procedure request
    w.gap(100, 400)
    w.osgp(m, "full-read", 8, count=6)                                 # BT08 procedure response
    w.gap(100, 400)
    # a concentrator restart: it reuses an old sequence number and is told the right one
    w.osgp(m, "full-read", 23, seq=w.osgp_seq[m.name] - 5, outcome="sequence-error")
    w.gap(100, 400)
    w.osgp(m, "full-read", 23)
    w.gap(300, 900)
    # a foreign node without the OMA key guesses digests: the meter rejects them
    x = w.net.add_node("attacker", 1, 124, "attacker")
    for _ in range(2):
        w.osgp(m, "full-write", 2048 + 51, data=bytes(8), client=x, key=None, outcome="auth-failure")
        w.gap(100, 400)
    w.finding(**{"rule": "osgp-legacy-security", "severity": "medium"})
    w.finding(rule="lon-auth-failures", severity="medium")


@scenario("demo", "the README demo: one small fleet with repeaters, mixed security and an LLS sniffing attack")
def sc_demo(w: World, target: int | None) -> None:
    _fleet_run(w, FLEET_PROFILES, big_every=4)
    w.broadcast_clock()
    w.gap()
    # a response the concentrator misses: it repeats the request (same TID), the meter
    # answers the duplicate from its response cache
    w.net.force_loss = 1
    w.nd_query_status(w.meters[1])
    w.gap()
    sc_osgp(w, None)
    sc_nm(w, None)


@scenario("bench", "fast bulk traffic for benchmarks (fleet polling; tiled to the requested packet count)")
def sc_bench(w: World, target: int | None) -> None:
    _fleet_run(w, FLEET_PROFILES)
