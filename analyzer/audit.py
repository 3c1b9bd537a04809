"""Security audit (pipeline stage, order 60): a catalogue of rules evaluated over what the
association tracking and decryption stages observed, plus per-packet observations of
14908 network management and OSGP legacy security.

`Audit.findings()` returns a list of dicts (for `lonscope audit`, exports and the TUI):
``{"id", "rule", "severity", "title", "message", "explanation", "recommendation",
"frame", "frames", "assoc_id"}``.  Severities: info, low, medium, high, critical.
Evidence never contains key material (an LLS password is shown: it travels in clear).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .associations import CLIENT_TAGS, REQUEST_TAGS
from .pipeline import Stage, register_stage

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}
MAX_EVIDENCE = 50


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


def _pw_text(pw: bytes) -> str:
    try:
        s = pw.decode("ascii")
        if s.isprintable():
            return f"'{s}'"
    except UnicodeDecodeError:
        pass
    return pw.hex()


class Audit(Stage):
    name = "audit"

    def __init__(self, pipeline):
        super().__init__(pipeline)
        # plaintext data APDUs per association: count, first evidence frames, and the last
        # request digests (bounded) for the relay rule
        self.plain_count: dict = {}
        self.plain_frames: dict = {}
        self.plain_reqs: dict = {}            # assoc_id -> [(digest, ns, frame)], bounded
        self.nm: list[tuple] = []             # (frame, code, src, dst)
        self.lon_challenges: dict[tuple, list[int]] = {}
        self.osgp_digest: list[int] = []
        self.osgp_authfail: list[int] = []
        self.signing: list[tuple] = []        # (frame, status)
        self._cache = None

    def process(self, pkt, d, first_pass: bool) -> None:
        if not first_pass:
            return
        self._cache = None
        f = d.fields
        aids = f.get("dlms.assoc_id")
        aid = aids[0] if aids else None
        for rec in d.ctx.get("dlms.apdus", ()):
            tag = rec.get("tag")
            if rec.get("ciphered") or rec.get("decrypted") or tag not in DATA_TAGS:
                continue
            if d.ctx.get("dlms.hop_copy"):
                continue
            b = rec.get("bytes") or b""
            self.plain_count[aid] = self.plain_count.get(aid, 0) + 1
            fl = self.plain_frames.setdefault(aid, [])
            if len(fl) < MAX_EVIDENCE and (not fl or fl[-1] != pkt.number):
                fl.append(pkt.number)
            if aid is not None and (tag in REQUEST_TAGS or tag in CLIENT_TAGS):
                rq = self.plain_reqs.setdefault(aid, [])
                rq.append((hashlib.blake2b(b, digest_size=12).digest(), pkt.ts_ns, pkt.number))
                if len(rq) > 4000:
                    del rq[:2000]
        for st in f.get("dlms.sec.signature_status", ()):
            self.signing.append((pkt.number, st))
        lon = d.ctx.get("lon")
        if lon is not None:
            src = f"{lon.get('src_subnet')}/{lon.get('src_node')}"
            dst = f"{lon.get('dst_subnet')}/{lon.get('dst_node')}" if lon.get("dst_subnet") is not None \
                else str(lon.get("group") or lon.get("nid") or "?")
            is_resp = lon.get("type") in ("RESPONSE", "ACK")
            if not is_resp and not lon.get("auth"):
                for code in f.get("lon.nm", ()):
                    if code in NM_CHANGING:
                        self.nm.append((pkt.number, code, src, dst))
            for t in f.get("lon.authpdu_type", ()):
                if t in (0, 1):   # challenge: receiver -> original sender
                    key = (src, dst, lon.get("tid"))
                    self.lon_challenges.setdefault(key, []).append(pkt.number)
        if "osgp.digest" in f:
            self.osgp_digest.append(pkt.number)
        for c in f.get("osgp.response.code", ()):
            if c == 0x0B:
                self.osgp_authfail.append(pkt.number)

    def finish(self):
        return ()

    # ------------------------------------------------------------------ evaluation
    def findings(self) -> list[dict]:
        if self._cache is not None:
            return list(self._cache)
        out: list[dict] = []

        def add(rule_id, frames, assoc=None, message="", severity=None, count=None):
            r = RULES[rule_id]
            frames = sorted(set(x for x in frames if x is not None))
            out.append({"id": "", "rule": r.id, "severity": severity or r.severity, "title": r.title,
                        "message": message, "explanation": r.explanation,
                        "recommendation": r.recommendation,
                        "frame": frames[0] if frames else None, "frames": frames[:MAX_EVIDENCE],
                        "evidence_count": count if count is not None else len(frames), "assoc_id": assoc})

        ast = self.pipeline.stage("associations")
        dst = self.pipeline.stage("decrypt")
        assocs = list(ast.records) if ast is not None else []
        stats = dict(dst.stats) if dst is not None else {}
        incidents = list(dst.incidents) if dst is not None else []
        ciphered_assocs = set()
        if dst is not None:
            for a in assocs:
                if a.ciphered_count:
                    ciphered_assocs.add(a.id)

        for a in assocs:
            if a.lls_password is not None:
                add("lls-cleartext", [a.lls_frame], a.id,
                    f"association {a.id} ({a.client} -> {a.server}): password "
                    f"{_pw_text(a.lls_password) if a.lls_password else '(empty)'}")
            if a.mechanism is not None and 2 <= a.mechanism <= 6:
                add("hls-weak-mechanism", [a.aarq_frame], a.id,
                    f"association {a.id} uses mechanism {a.mechanism} ({a.mechanism_name})")
            for which, st, fr in (("pass 3", a.hls_pass3, a.pass3_frame), ("pass 4", a.hls_pass4, a.pass4_frame)):
                if st == "failed":
                    add("hls-failed", [fr], a.id, f"association {a.id}: HLS {which} does not verify")
            protected = a.id in ciphered_assocs or a.context in (3, 4)
            authenticated = a.mechanism is not None and a.mechanism >= 1
            n_plain = self.plain_count.get(a.id, 0)
            if n_plain:
                frames = self.plain_frames.get(a.id, [])
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
        # per-APDU observations, aggregated per association by the decryption stage
        names = {"enc-only": "encryption-without-authentication", "auth-only": "authentication-without-encryption",
                 "auth-failed": "decryption-failed", "peer-title": "iv-title-anomaly", "broadcast": "broadcast-key",
                 "glo-after-ded": "global-key-where-dedicated"}
        for (obs, aid), (count, frames) in stats.items():
            rule_id = names.get(obs)
            if rule_id is None:
                continue
            msg = f"{count} APDU(s)" + (f" in association {aid}" if aid else "")
            if obs == "glo-after-ded":
                msg = f"association {aid}: {count} APDU(s) under the global key after a dedicated key was agreed"
            add(rule_id, frames, aid, msg, count=count)
        for ev in incidents:
            if "ic_reuse_of" in ev:
                add("ic-reuse", [ev["ic_reuse_of"], ev["frame"]], ev.get("assoc"),
                    f"IC {ev['ic']} reused with different content (key set {ev.get('keyset') or '?'}, "
                    f"frames {ev['ic_reuse_of']} and {ev['frame']})")
            if "ic_backwards_from" in ev:
                prev_ic, prev_fr = ev["ic_backwards_from"]
                add("ic-backwards", [prev_fr, ev["frame"]], ev.get("assoc"),
                    f"IC went from {prev_ic} (frame {prev_fr}) back to {ev['ic']} (frame {ev['frame']})")
            if "replay_of" in ev:
                first = ev["replay_of"]
                first_assoc = ev.get("replay_assoc")
                if first_assoc not in (None, ev.get("assoc")):
                    add("mitm-client-relay", [first, ev["frame"]], ev.get("assoc"),
                        f"protected APDU of frame {first} (association {first_assoc}) forwarded in "
                        f"association {ev.get('assoc')} (frame {ev['frame']})")
                else:
                    add("replayed-apdu", [first, ev["frame"]], ev.get("assoc"),
                        f"frame {ev['frame']} repeats the protected APDU of frame {first}")
        for fr, st in self.signing:
            if st == "failed":
                add("signature-failed", [fr], None, f"frame {fr}")

        # dedicated key shared between associations (compared in memory, never shown)
        seen: dict[bytes, list] = {}
        for a in assocs:
            if a.dedicated_key is not None:
                seen.setdefault(hashlib.sha256(bytes(a.dedicated_key)).digest(), []).append(a)
        for lst in seen.values():
            if len(lst) > 1:
                add("dedicated-key-shared", [a.dedicated_key_frame for a in lst], lst[1].id,
                    "associations " + ", ".join(str(a.id) for a in lst) + " use the same dedicated key")

        self._relays(assocs, add)
        self._mitm_plain(assocs, add)

        # 14908 / OSGP
        if self.nm:
            by = {}
            for fr, code, src, dst_ in self.nm:
                by.setdefault((src, dst_), []).append((fr, code))
            for (src, dst_), lst in by.items():
                names = sorted({NM_CHANGING[c] for _, c in lst})
                add("lon-nm-unauthenticated", [fr for fr, _ in lst], None,
                    f"{src} -> {dst_}: {', '.join(names)} without 14908 authentication ({len(lst)} message(s))")
        for (src, dst_, tid), frames in self.lon_challenges.items():
            if len(frames) >= 3:
                add("lon-auth-failures", frames, None,
                    f"{src} challenged {dst_} {len(frames)} times for transaction {tid}")
        if len(self.osgp_authfail) >= 1:
            add("lon-auth-failures", self.osgp_authfail, None,
                f"{len(self.osgp_authfail)} OSGP authentication-failure response(s)",
                severity="medium" if len(self.osgp_authfail) >= 2 else "low")
        if self.osgp_digest:
            add("osgp-legacy-security", self.osgp_digest, None,
                f"{len(self.osgp_digest)} OSGP message(s) with the legacy OMA digest trailer")

        out.sort(key=lambda f: (-SEV_RANK[f["severity"]], f["frame"] or 0, f["rule"]))
        for i, f in enumerate(out, 1):
            f["id"] = f"F{i}"
        self._cache = out
        return list(out)

    def _relays(self, assocs, add) -> None:
        closed = ("released", "rejected", "aborted", "replaced", "timeout")

        def end(a):
            return a.last_ns if a.state in closed else float("inf")

        def overlap(a, b):
            return a.first_ns <= end(b) and b.first_ns <= end(a)

        values = []
        for a in assocs:
            for what, v, fr in (("CtoS", a.ctos, a.aarq_frame), ("StoC", a.stoc, a.aare_frame),
                                ("f(StoC)", a.f_stoc, a.pass3_frame), ("f(CtoS)", a.f_ctos, a.pass4_frame)):
                if v is not None and len(v) >= 4:
                    values.append((bytes(v), what, a, fr))
        by_val: dict[bytes, list] = {}
        for v, what, a, fr in values:
            by_val.setdefault(v, []).append((what, a, fr))
        reported = set()
        for v, lst in by_val.items():
            ids = {a.id for _, a, _ in lst}
            if len(ids) < 2:
                continue
            key = tuple(sorted(ids))
            if key in reported:
                continue
            reported.add(key)
            (w1, a1, f1), (w2, a2, f2) = lst[0], next(x for x in lst if x[1].id != lst[0][1].id)
            sev = "critical" if overlap(a1, a2) else "high"
            add("hls-challenge-relay", [f1, f2], a2.id,
                f"{w1} of association {a1.id} reappears as {w2} of association {a2.id}", severity=sev)
        # an AARE answering with another client's calling title (reflection)
        for a in assocs:
            if a.server_title is None:
                continue
            for b in assocs:
                if b is a or b.client_title is None:
                    continue
                if b.client_title == a.server_title and a.client_title != a.server_title \
                        and overlap(a, b):
                    add("hls-challenge-relay", [a.aare_frame, b.aarq_frame], a.id,
                        f"AARE of association {a.id} responds with the calling title of association {b.id} "
                        f"({a.server_title.hex()})", severity="critical")

    def _mitm_plain(self, assocs, add) -> None:
        """Identical plaintext requests in two concurrent associations from different clients,
        each copy following the original within a second (>= 3 times)."""
        by_assoc = self.plain_reqs
        ids = sorted(by_assoc)
        amap = {a.id: a for a in assocs}
        for i, x in enumerate(ids):
            for y in ids[i + 1:]:
                ax, ay = amap.get(x), amap.get(y)
                if ax is None or ay is None or ax.client == ay.client:
                    continue
                first = {}
                for dg, ns, fr in by_assoc[x]:
                    first.setdefault(dg, (ns, fr))
                hits = []
                for dg, ns, fr in by_assoc[y]:
                    if dg in first and 0 <= ns - first[dg][0] <= 1_000_000_000:
                        hits.append((first[dg][1], fr))
                if len(hits) >= 3:
                    add("mitm-client-relay", [f for h in hits for f in h], y,
                        f"{len(hits)} requests of association {x} ({ax.client}) repeated in association {y} "
                        f"({ay.client}) within 1 s")


def findings_of(pipeline) -> list[dict]:
    st = pipeline.stage("audit") if pipeline is not None else None
    return st.findings() if st is not None else []


def has_high(findings) -> bool:
    return any(SEV_RANK.get(f["severity"], 0) >= SEV_RANK["high"] for f in findings)


register_stage(60, "audit", Audit)

__all__ = ["Audit", "RULES", "Rule", "SEVERITIES", "findings_of", "has_high"]
