"""Security audit (pipeline stage, order 60): a catalogue of rules evaluated over what the
association tracking and decryption stages observed, plus per-packet observations of
14908 network management and OSGP legacy security.

`Audit.findings()` returns a list of dicts (for `lonscope audit`, exports and the TUI):
``{"id", "rule", "severity", "title", "message", "explanation", "recommendation",
"frame", "frames", "assoc_id"}``.  Severities: info, low, medium, high, critical.
Evidence never contains key material (an LLS password is shown: it travels in clear).

The audit streams: its state is bounded (tallies with a count and the first evidence frames,
windows of recent values, a bounded set of tracked associations), so a capture of any size
is audited in constant memory.  Copies of an APDU (a 14908 retransmission, the same frame on
another hop behind a router or repeater) are not replays, relays or key sharing.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import bounded
from .associations import CLIENT_TAGS, REQUEST_TAGS, is_copy
from .bounded import MAX_EVIDENCE, OVERFLOW, Tally, Window
from .lontrack import crc_bad
from .pipeline import Stage, register_stage

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}

# Bounds of the audit's state (it must not grow with the capture: 10M packets and more);
# MAX_GROUPS (separate findings of one rule, further ones merged) and WINDOW (recent values
# compared across packets) are shared with the decryption stage: see analyzer/bounded.py
LIVE_ASSOCS = 2048        # associations tracked at once; the least recently seen are settled


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    title: str
    explanation: str
    recommendation: str


RULES = {r.id: r for r in [
    Rule("lls-cleartext", "high", "LLS password sent in clear",
         "Low level security (mechanism 1) sends the password as the calling-authentication-value of "
         "the AARQ, which is never ciphered: anyone on the path reads it.",
         "Use HLS (mechanism 7 ECDSA, or at least 5 GMAC) and change the exposed password."),
    Rule("hls-weak-mechanism", "medium", "Weak HLS mechanism",
         "HLS mechanisms 2 (manufacturer-specific), 3 (MD5), 4 (SHA-1), 5 (GMAC) and 6 (SHA-256) "
         "rely on a shared secret or symmetric key; 3 and 4 use broken hash functions.",
         "Use mechanism 7 (ECDSA, security suite 1 or 2)."),
    Rule("hls-challenge-relay", "critical", "HLS challenge swap / relay between associations",
         "A challenge or an HLS response of one association reappears in another, or an AARE answers "
         "with another client's calling title: the signature of a relay or reflection attack on HLS.",
         "Bind the HLS response to both system titles (mechanism 6/7), reject reflected titles, and "
         "investigate the endpoints involved."),
    Rule("mitm-client-relay", "high", "Client requests relayed between associations (MITM)",
         "The same APDUs appear in two concurrent associations with different client endpoints, the "
         "second shortly after the first: a man in the middle forwards a client's requests.",
         "Use authenticated encryption with dedicated keys and HLS bound to the system titles; locate "
         "the relaying endpoint."),
    Rule("plaintext-after-association", "medium", "xDLMS data in plaintext after an authenticated/ciphered association",
         "Data APDUs were sent unprotected in an association that authenticated or negotiated ciphering: "
         "their content and integrity are not protected.",
         "Apply a security policy that requires authenticated encryption for all xDLMS APDUs."),
    Rule("plaintext-public", "info", "Plaintext data in a public (no security) association",
         "The association uses no authentication and no ciphering (usually the public client, for "
         "reading non-sensitive data such as the logical device name or invocation counter).",
         "Make sure the public association only exposes non-sensitive objects."),
    Rule("encryption-without-authentication", "high", "Encryption without authentication",
         "APDUs are ciphered with SC E=1, A=0: GCM without a tag is plain CTR mode; the data can be "
         "modified undetected (bit flipping) and the key cannot even be checked.",
         "Use authenticated encryption (security control 0x30)."),
    Rule("authentication-without-encryption", "info", "Authentication without encryption",
         "APDUs are authenticated (A=1) but not encrypted: integrity is protected, confidentiality is not.",
         "Use authenticated encryption where the data is sensitive."),
    Rule("replayed-apdu", "high", "Replayed ciphered APDU",
         "The same protected APDU (same security header and ciphertext) was seen twice.",
         "Receivers must reject invocation counters that are not strictly increasing."),
    Rule("ic-reuse", "critical", "Invocation counter reuse (GCM nonce reuse)",
         "Two different APDUs were protected with the same key, system title and invocation counter: "
         "the GCM nonce repeats, which leaks the XOR of the plaintexts and allows tag forgery.",
         "Never reuse an invocation counter for a key; persist the counter and renew keys."),
    Rule("ic-backwards", "high", "Invocation counter going backwards",
         "The invocation counter of a sender decreased for the same key and system title.",
         "Receivers must enforce strictly increasing counters; senders must persist them."),
    Rule("dedicated-key-shared", "high", "Same dedicated key in several associations",
         "A dedicated (session) key must be fresh for each association; reusing it defeats its purpose "
         "and combined with counter resets causes nonce reuse.",
         "Generate a random dedicated key for every association."),
    Rule("global-key-where-dedicated", "medium", "Global key used where the policy asks for dedicated",
         "The association established a dedicated key (in the InitiateRequest) but data APDUs are "
         "protected with the global key.",
         "Use ded-* APDUs once a dedicated key is agreed."),
    Rule("hls-failed", "high", "HLS pass failed",
         "An HLS pass-3 or pass-4 value does not verify with the configured secret/keys: wrong secret, "
         "an impostor, or a relay.",
         "Check the key ring; if it is right, investigate the endpoint."),
    Rule("decryption-failed", "high", "Decryption / authentication tag failures",
         "Protected APDUs do not authenticate with any configured key: wrong keys, tampering or injection.",
         "Check the key ring; if it is right, treat as an integrity attack."),
    Rule("iv-title-anomaly", "medium", "IV system title anomaly",
         "The IV of protected APDUs uses the peer's system title instead of the sender's own: the two "
         "directions share nonces, so counter collisions between them reuse the GCM nonce.",
         "Fix the sender to use its own system title in the IV."),
    Rule("broadcast-key", "info", "Broadcast key in use",
         "APDUs are protected with the global broadcast key (SC bit 6): every device holding it can read "
         "and forge them.",
         "Limit broadcast-key use to data meant for every device."),
    Rule("signature-failed", "high", "general-signing signature does not verify",
         "The ECDSA signature of a general-signing APDU does not verify with the configured public keys.",
         "Check the certificates; otherwise treat as forged."),
    Rule("osgp-legacy-security", "medium", "OSGP legacy security (OMA digest / RC4) in use",
         "OSGP's legacy OMA digest and RC4 encryption are broken (Jovanovic & Neves): the digest key "
         "can be recovered from few messages and RC4 keystream reuse is practical.",
         "Migrate to OSGP-AES-128-PSK / DLMS suite 1 or 2."),
    Rule("lon-nm-unauthenticated", "high", "14908 network management without authentication",
         "Network-management messages that change keys, addresses, configuration or memory were sent "
         "without 14908 authentication: anyone on the channel can reconfigure the node.",
         "Enable 14908 authentication for network management (and OMA where available)."),
    Rule("lon-auth-failures", "medium", "Repeated 14908 / OSGP authentication failures",
         "The same transaction was challenged repeatedly, or OSGP reported authentication failures: "
         "wrong keys or an active attacker guessing.",
         "Check the domain/OMA keys; investigate the source node."),
]}

NM_CHANGING = {0x63: "update domain", 0x64: "leave domain", 0x65: "update key", 0x66: "update address",
               0x69: "update group address", 0x6B: "update NV config", 0x6C: "set node mode",
               0x6E: "write memory", 0x6F: "checksum recalculate", 0x7D: "device escape",
               0x7E: "router escape"}
DATA_TAGS = frozenset(range(0xC0, 0xC8)) | {0xD8, 0xD9, 0xDA, 0x05, 0x06, 0x0C, 0x0D, 0x16, 0x18, 0x0F, 0xE0}
CLOSED = ("released", "rejected", "aborted", "replaced", "timeout")
RELAY_WINDOW_NS = 1_000_000_000


def _pw_text(pw: bytes) -> str:
    try:
        s = pw.decode("ascii")
        if s.isprintable():
            return f"'{s}'"
    except UnicodeDecodeError:
        pass
    return pw.hex()


def _end(a) -> float:
    return a.last_ns if a.state in CLOSED else float("inf")


def _overlap(a, b) -> bool:
    return a.first_ns <= _end(b) and b.first_ns <= _end(a)


class _Sink:
    """Findings of one evaluation, at most MAX_GROUPS per rule: further findings of a rule are
    merged into one summary finding (count and first evidence frames)."""
    __slots__ = ("kept", "over")

    def __init__(self):
        self.kept: dict[str, list] = {}
        self.over: dict[str, list] = {}

    def add(self, rule_id, frames, assoc=None, message="", severity=None, count=None) -> None:
        frames = [x for x in frames if x is not None]
        if count is None:
            count = len(set(frames))
        lst = self.kept.setdefault(rule_id, [])
        if len(lst) <= bounded.MAX_GROUPS:       # (one more: a tally's own merged group)
            lst.append((rule_id, frames[:MAX_EVIDENCE], assoc, message, severity, count))
            return
        o = self.over.get(rule_id)
        if o is None:
            o = self.over[rule_id] = [0, 0, [], severity]
        o[0] += 1
        o[1] += count
        room = MAX_EVIDENCE - len(o[2])
        if room > 0:
            o[2].extend(frames[:room])

    def merge(self, other: "_Sink") -> None:
        for lst in other.kept.values():
            for args in lst:
                self.add(*args)
        for rule_id, (n, count, frames, sev) in other.over.items():
            o = self.over.setdefault(rule_id, [0, 0, [], sev])
            o[0] += n
            o[1] += count
            o[2].extend(frames[:MAX_EVIDENCE - len(o[2])])

    def items(self):
        for lst in self.kept.values():
            yield from lst
        for rule_id, (n, count, frames, sev) in self.over.items():
            yield (rule_id, frames, None, f"{n} further finding(s) of this rule ({count} evidence frame(s))",
                   sev, count)


def _finding(rule_id, frames, assoc, message, severity, count) -> dict:
    r = RULES[rule_id]
    frames = sorted(set(frames))
    return {"id": "", "rule": r.id, "severity": severity or r.severity, "title": r.title,
            "message": message, "explanation": r.explanation, "recommendation": r.recommendation,
            "frame": frames[0] if frames else None, "frames": frames[:MAX_EVIDENCE],
            "evidence_count": count if count is not None else len(frames), "assoc_id": assoc}


class Audit(Stage):
    """Rules are evaluated as packets arrive, on bounded state: evidence tallies with a count
    and the first frames, windows of recent values for the cross-association rules, and at
    most LIVE_ASSOCS associations whose per-association rules are settled when they leave the
    window (least recently seen first) or when findings are asked for."""
    name = "audit"

    def __init__(self, pipeline):
        super().__init__(pipeline)
        self.plain = Tally(max_groups=2 * LIVE_ASSOCS)   # assoc id -> unprotected data APDUs
        self.nm = Tally()                     # (src, dst) -> unauthenticated NM, info: codes
        self.lon_challenges = Window()        # (src, dst, tid) -> [count, frames]
        self.lon_auth = Tally()               # (src, dst, tid) -> repeated challenges (>= 3)
        self.osgp_digest = Tally(1)
        self.osgp_authfail = Tally(1)
        self.signing = Tally(1)               # failed general-signing signatures
        self._live: dict[int, list] = {}      # assoc id -> [Association, values seen, opened by a copy]
        self._settled = _Sink()               # findings of associations that left the window
        self._settled_ids = Window()          # their ids (one seen again is not reported twice)
        self._hls_values = Window()           # HLS challenge/response value -> (what, assoc id, frame)
        self._relays: dict[tuple, tuple] = {}  # pair of assoc ids -> finding arguments
        self._client_titles = Window()        # calling AP title -> (assoc id, AARQ frame)
        self._server_titles = Window()        # responding AP title -> (assoc id, AARE frame)
        self._ded_keys = Window()             # digest of a dedicated key -> (assoc id, frame)
        self._ded_shared: dict[bytes, list] = {}  # digest -> [assoc ids, frames]
        self._recent_reqs = Window()          # digest of a plaintext request -> (assoc, client, ns, frame)
        self._mitm_hits = Window()            # (assoc x, assoc y) -> [hits, frames, client x, client y]
        self._mitm: dict[tuple, list] = {}    # the pairs with >= 3 hits (same lists)
        self._cross_over = _Sink()             # cross-association findings past MAX_GROUPS pairs
        self._cache = None

    # ------------------------------------------------------------------ per packet
    def _assoc(self, aid):
        ast = self.pipeline.stage("associations")
        if ast is None:
            return None
        get = getattr(ast, "get", None)
        return get(aid) if get is not None else None

    def process(self, pkt, d, first_pass: bool) -> None:
        if not first_pass:
            return
        self._cache = None
        if crc_bad(d):
            return        # damaged bytes on the medium (LonTalk CRC): evidence of nothing
        f = d.fields
        copy = is_copy(d)
        aids = f.get("dlms.assoc_id")
        aid = aids[0] if aids else None
        live = None
        if aids:
            for x in aids:
                e = self._see(x, pkt, copy)
                if x == aid:
                    live = e
        apdus = d.ctx.get("dlms.apdus")
        if apdus and not copy:
            for rec in apdus:
                tag = rec.get("tag")
                if rec.get("ciphered") or rec.get("decrypted") or tag not in DATA_TAGS or aid is None:
                    continue
                self.plain.add(aid, (pkt.number,))
                if live is not None and (tag in REQUEST_TAGS or tag in CLIENT_TAGS):
                    self._plain_request(live[0], rec.get("bytes") or b"", pkt)
        for st in f.get("dlms.sec.signature_status", ()):
            if st == "failed":
                self.signing.add(None, (pkt.number,))
        lon = d.ctx.get("lon")
        if lon is not None:
            nms = f.get("lon.nm")
            auths = f.get("lon.authpdu_type")
            if nms or auths:
                src = f"{lon.get('src_subnet')}/{lon.get('src_node')}"
                dst = f"{lon.get('dst_subnet')}/{lon.get('dst_node')}" if lon.get("dst_subnet") is not None \
                    else str(lon.get("group") or lon.get("nid") or "?")
                is_resp = lon.get("type") in ("RESPONSE", "ACK")
                if nms and not is_resp and not lon.get("auth"):
                    for code in nms:
                        if code in NM_CHANGING:
                            e = self.nm.add((src, dst), (pkt.number,), set())
                            e[2].add(code)
                for t in auths or ():
                    if t in (0, 1):   # challenge: receiver -> original sender
                        self._challenge((src, dst, lon.get("tid")), pkt.number)
        if "osgp.digest" in f:
            self.osgp_digest.add(None, (pkt.number,))
        for c in f.get("osgp.response.code", ()):
            if c == 0x0B:
                self.osgp_authfail.add(None, (pkt.number,))

    def _challenge(self, key, frame) -> None:
        e = self.lon_auth.groups.get(key)
        if e is not None:
            self.lon_auth.add(key, (frame,))
            return
        w = self.lon_challenges.get(key)
        if w is None:
            w = [0, []]
            self.lon_challenges[key] = w
        w[0] += 1
        if len(w[1]) < 3:
            w[1].append(frame)
        if w[0] == 3:
            self.lon_auth.add(key, w[1], n=3)
        elif w[0] > 3:          # a transaction whose group went to OVERFLOW: one more each time
            self.lon_auth.add(key, (frame,))

    def _see(self, aid, pkt, copy: bool):
        """Track one association: values newly set on it are compared across associations."""
        live = self._live
        e = live.pop(aid, None)
        if e is None:
            a = self._assoc(aid)
            if a is None:
                return None
            # an association opened by a copy (an AARQ resent by the transport) repeats the
            # original's association-level findings: they are not reported twice
            e = [a, [None] * 7, (copy and a.first_frame == pkt.number) or aid in self._settled_ids]
        live[aid] = e
        if len(live) > LIVE_ASSOCS:
            old = live.pop(next(iter(live)))
            self._settle(old[0], self._settled, by_copy=old[2])
            self._settled_ids[old[0].id] = True
        a, seen, _ = e
        vals = (a.ctos, a.stoc, a.f_stoc, a.f_ctos, a.client_title, a.server_title, a.dedicated_key)
        if vals == tuple(seen):
            return e
        for i, v in enumerate(vals):
            if v is None or v == seen[i]:
                continue
            seen[i] = v
            if copy:
                continue      # the same APDU again on another hop / resent: nothing new
            if i < 4:
                self._hls_value(bytes(v), i, a)
            elif i == 4:
                self._title(bytes(v), a, client=True)
            elif i == 5:
                self._title(bytes(v), a, client=False)
            else:
                self._ded_key(hashlib.sha256(bytes(v)).digest(), a)
        return e

    def _hls_value(self, v: bytes, i: int, a) -> None:
        if len(v) < 4:
            return
        what = ("CtoS", "StoC", "f(StoC)", "f(CtoS)")[i]
        fr = (a.aarq_frame, a.aare_frame, a.pass3_frame, a.pass4_frame)[i]
        prev = self._hls_values.get(v)
        if prev is None:
            self._hls_values[v] = (what, a.id, fr)
            return
        w1, id1, f1 = prev
        if id1 == a.id:
            return
        key = (min(id1, a.id), max(id1, a.id))
        if key in self._relays:
            return
        a1 = self._assoc(id1)
        sev = "critical" if a1 is not None and _overlap(a1, a) else "high"
        self._relay(key, ("hls-challenge-relay", [f1, fr], a.id,
                          f"{w1} of association {id1} reappears as {what} of association {a.id}", sev, None))

    def _relay(self, key, args) -> None:
        """Keep a relay finding; past MAX_GROUPS pairs it is counted in the summary finding."""
        if len(self._relays) < bounded.MAX_GROUPS:
            self._relays[key] = args
        else:
            self._cross_over.add(*args)

    def _title(self, title: bytes, a, client: bool) -> None:
        """An AARE answering with the calling title of another, concurrent association."""
        if client:
            self._client_titles[title] = (a.id, a.aarq_frame)
            other = self._server_titles.get(title)
            if other is None or other[0] == a.id:
                return
            resp = self._assoc(other[0])
            call = a
        else:
            self._server_titles[title] = (a.id, a.aare_frame)
            other = self._client_titles.get(title)
            if other is None or other[0] == a.id:
                return
            resp = a
            call = self._assoc(other[0])
        if resp is None or call is None or resp.client_title == title or not _overlap(resp, call):
            return
        key = ("aare", resp.id, call.id)
        if key in self._relays:
            return
        self._relay(key, ("hls-challenge-relay", [resp.aare_frame, call.aarq_frame], resp.id,
                          f"AARE of association {resp.id} responds with the calling title of association "
                          f"{call.id} ({title.hex()})", "critical", None))

    def _ded_key(self, digest: bytes, a) -> None:
        """The same dedicated key in several associations (compared as a digest, never shown)."""
        g = self._ded_shared.get(digest)
        if g is not None:
            if a.id not in g[0] and len(g[0]) < MAX_EVIDENCE:
                g[0].append(a.id)
                g[1].append(a.dedicated_key_frame)
            return
        prev = self._ded_keys.get(digest)
        if prev is None:
            self._ded_keys[digest] = (a.id, a.dedicated_key_frame)
        elif prev[0] != a.id:
            if len(self._ded_shared) < bounded.MAX_GROUPS:
                self._ded_shared[digest] = [[prev[0], a.id], [prev[1], a.dedicated_key_frame]]
            else:
                self._cross_over.add("dedicated-key-shared", [prev[1], a.dedicated_key_frame], a.id,
                                     f"associations {prev[0]}, {a.id} use the same dedicated key")

    def _plain_request(self, a, b: bytes, pkt) -> None:
        """Identical plaintext requests in two associations from different clients, the copy
        within a second of the original (reported from 3 such requests)."""
        dg = hashlib.blake2b(b, digest_size=12).digest()
        ns = pkt.ts_ns
        prev = self._recent_reqs.get(dg)
        self._recent_reqs[dg] = (a.id, a.client, ns, pkt.number)
        if prev is None:
            return
        x, cx, nx, fx = prev
        if x == a.id or cx == a.client or not 0 <= ns - nx <= RELAY_WINDOW_NS:
            return
        key = (x, a.id)
        h = self._mitm.get(key)
        if h is None:
            h = self._mitm_hits.get(key)
            if h is None:
                h = [0, [], cx, a.client]
                self._mitm_hits[key] = h
        h[0] += 1
        if len(h[1]) < MAX_EVIDENCE:
            h[1].extend((fx, pkt.number))
        if h[0] >= 3 and key not in self._mitm:
            if len(self._mitm) < bounded.MAX_GROUPS:
                self._mitm[key] = h
            elif h[0] == 3:
                self._cross_over.add("mitm-client-relay", h[1], a.id,
                                     f"requests of association {x} ({cx}) repeated in association {a.id} "
                                     f"({a.client}) within 1 s", count=3)

    def finish(self):
        return ()

    # ------------------------------------------------------------------ evaluation
    def _settle(self, a, sink: _Sink, keep: bool = False, by_copy: bool = False) -> None:
        """The per-association rules of one association (`by_copy`: its AARQ-time findings
        were already reported, for the original association or when it was settled before)."""
        add = sink.add
        if a.lls_password is not None and not by_copy:
            add("lls-cleartext", [a.lls_frame], a.id,
                f"association {a.id} ({a.client} -> {a.server}): password "
                f"{_pw_text(a.lls_password) if a.lls_password else '(empty)'}")
        if a.mechanism is not None and 2 <= a.mechanism <= 6 and not by_copy:
            add("hls-weak-mechanism", [a.aarq_frame], a.id,
                f"association {a.id} uses mechanism {a.mechanism} ({a.mechanism_name})")
        for which, st, fr in (("pass 3", a.hls_pass3, a.pass3_frame), ("pass 4", a.hls_pass4, a.pass4_frame)):
            if st == "failed" and not by_copy:
                add("hls-failed", [fr], a.id, f"association {a.id}: HLS {which} does not verify")
        g = self.plain.groups.get(a.id) if keep else self.plain.groups.pop(a.id, None)
        if g is None:
            return
        n_plain, frames = g[0], g[1]
        protected = bool(a.ciphered_count) or a.context in (3, 4)
        authenticated = a.mechanism is not None and a.mechanism >= 1
        if protected or authenticated:
            # in a ciphered context this breaks the policy; after LLS/HLS alone the data
            # was simply never meant to be protected
            add("plaintext-after-association", frames, a.id,
                f"association {a.id}: {n_plain} unprotected data APDU(s) "
                f"({'ciphered context' if protected else a.mechanism_name + ', no ciphering'})",
                severity="medium" if protected else "low", count=n_plain)
        else:
            add("plaintext-public", frames, a.id,
                f"association {a.id} ({a.client} -> {a.server}): {n_plain} plaintext data APDU(s), "
                f"no authentication, no ciphering", count=n_plain)

    def findings(self) -> list[dict]:
        if self._cache is not None:
            return list(self._cache)
        sink = _Sink()
        sink.merge(self._settled)
        add = sink.add
        for a, _, by_copy in self._live.values():
            self._settle(a, sink, keep=True, by_copy=by_copy)
        dst = self.pipeline.stage("decrypt")
        # per-APDU observations, aggregated per association by the decryption stage
        names = {"enc-only": "encryption-without-authentication", "auth-only": "authentication-without-encryption",
                 "auth-failed": "decryption-failed", "peer-title": "iv-title-anomaly", "broadcast": "broadcast-key",
                 "glo-after-ded": "global-key-where-dedicated"}
        for obs, tally in (getattr(dst, "stats", None) or {}).items():
            rule_id = names.get(obs)
            if rule_id is None:
                continue
            for aid, (count, frames, _) in tally.items():
                where = " in further associations" if aid == OVERFLOW else (f" in association {aid}" if aid else "")
                msg = f"{count} APDU(s){where}"
                if obs == "glo-after-ded" and aid != OVERFLOW:
                    msg = f"association {aid}: {count} APDU(s) under the global key after a dedicated key was agreed"
                add(rule_id, frames, None if aid == OVERFLOW else aid, msg, count=count)
        for rule_id, tally in (getattr(dst, "incidents", None) or {}).items():
            for key, (count, frames, info) in tally.items():
                # evidence_count: the frames themselves while they all fit, else the incidents
                add(rule_id, frames, None if key == OVERFLOW else info.get("assoc"),
                    _incident_message(rule_id, key, count, info),
                    count=max(count, len(set(frames))))
        for e in self.signing.groups.values():
            add("signature-failed", e[1], None, f"{e[0]} general-signing APDU(s) with a bad signature", count=e[0])
        for args in self._relays.values():
            add(*args)
        for ids, frames in self._ded_shared.values():
            add("dedicated-key-shared", frames, ids[1],
                "associations " + ", ".join(str(i) for i in ids) + " use the same dedicated key")
        for (x, y), (n, frames, cx, cy) in self._mitm.items():
            add("mitm-client-relay", frames, y,
                f"{n} requests of association {x} ({cx}) repeated in association {y} ({cy}) within 1 s", count=n)
        sink.merge(self._cross_over)
        # 14908 / OSGP
        for key, (n, frames, codes) in self.nm.groups.items():
            where = "further nodes" if key == OVERFLOW else f"{key[0]} -> {key[1]}"
            add("lon-nm-unauthenticated", frames, None,
                f"{where}: {', '.join(sorted(NM_CHANGING[c] for c in codes))} without 14908 authentication "
                f"({n} message(s))", count=n)
        for key, (n, frames, _) in self.lon_auth.groups.items():
            msg = "repeated challenges of further transactions" if key == OVERFLOW else \
                f"{key[0]} challenged {key[1]} {n} times for transaction {key[2]}"
            add("lon-auth-failures", frames, None, msg, count=n)
        for n, frames, _ in self.osgp_authfail.groups.values():
            add("lon-auth-failures", frames, None, f"{n} OSGP authentication-failure response(s)",
                severity="medium" if n >= 2 else "low", count=n)
        for n, frames, _ in self.osgp_digest.groups.values():
            add("osgp-legacy-security", frames, None,
                f"{n} OSGP message(s) with the legacy OMA digest trailer", count=n)
        out = [_finding(*args) for args in sink.items()]
        out.sort(key=lambda f: (-SEV_RANK[f["severity"]], f["frame"] or 0, f["rule"]))
        for i, f in enumerate(out, 1):
            f["id"] = f"F{i}"
        self._cache = out
        return list(out)


def _incident_message(rule_id: str, key, count: int, info: dict) -> str:
    """Replays and invocation-counter incidents found by the decryption stage (`info`: the
    first incident of the group)."""
    fr = info.get("frame")
    if rule_id == "ic-reuse":
        first = f"IC {info.get('ic')} reused with different content (key set {info.get('keyset') or '?'}, " \
                f"frames {info.get('other')} and {fr})"
    elif rule_id == "ic-backwards":
        first = f"IC went from {info.get('prev_ic')} (frame {info.get('other')}) back to {info.get('ic')} (frame {fr})"
    elif rule_id == "mitm-client-relay":
        first = (f"protected APDU of frame {info.get('other')} (association {info.get('other_assoc')}) forwarded in "
                 f"association {info.get('assoc')} (frame {fr})")
    else:
        first = f"frame {fr} repeats the protected APDU of frame {info.get('other')}"
    if key == OVERFLOW:
        return f"{count} more incident(s) in further associations; first: {first}"
    if count == 1:
        return first
    return f"{count} incident(s); first: {first}"


def findings_of(pipeline) -> list[dict]:
    st = pipeline.stage("audit") if pipeline is not None else None
    return st.findings() if st is not None else []


def has_high(findings) -> bool:
    return any(SEV_RANK.get(f["severity"], 0) >= SEV_RANK["high"] for f in findings)


register_stage(60, "audit", Audit)

__all__ = ["Audit", "RULES", "Rule", "SEVERITIES", "findings_of", "has_high"]
