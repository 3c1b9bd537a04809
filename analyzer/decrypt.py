"""DLMS decryption stage (pipeline stage, order 40).

Consumes the ciphered-APDU descriptors the xDLMS dissector leaves in `ctx["dlms.ciphered"]`
(glo-*, ded-*, general-glo/ded-ciphering, general-ciphering, general-signing; also the
ciphered initiate inside AARQ/AARE/RLRQ/RLRE), finds the key and the IV system title from
the association, verifies/decrypts, and dissects the plaintext with the same xDLMS dissector
in a new data source "Decrypted xDLMS".  The plaintext is kept in `pkt.aux` so one packet can
be re-dissected with a full tree later.

Per APDU status (`dlms.sec.status`, `d.status`): decrypted / auth-ok / auth-failed / no-key /
unauthenticated / unsupported, plus the key set's *name* (`dlms.sec.keyset`).  Key bytes are
never shown.  Each candidate key set is tried at most once per IV title, the sender's title
first, then the peer's (raising "IV uses the peer's system title"); nothing loops.
"""
from __future__ import annotations

import collections
import hashlib
import struct
from typing import Any

from dissectors.core import FT_BOOL, FT_BYTES, FT_STR, FT_UINT, field, table

from . import dlmscrypto as dc
from .associations import Association, is_copy, transport_of
from .bounded import Tally, Window
from .lontrack import crc_bad
from .pipeline import Stage, register_stage

STATUSES = ("decrypted", "auth-ok", "auth-failed", "no-key", "unauthenticated", "unsupported")
field("dlms.sec.status", FT_STR, "Decryption status (decrypted, auth-ok, auth-failed, no-key, unauthenticated, unsupported)")
field("dlms.sec.keyset", FT_STR, "Name of the key set that decrypted/verified this APDU (never its bytes)")
field("dlms.sec.key", FT_STR, "Key used")
field("dlms.sec.iv_title", FT_BYTES, "System title used in the IV")
field("dlms.sec.iv_peer_title", FT_BOOL, "The IV used the peer's system title (anomaly)")
field("dlms.sec.signature_status", FT_STR, "general-signing signature check: verified, failed, no-key")
field("dlms.sec.plaintext_len", FT_UINT, "Length of the decrypted APDU")
field("dlms.sec.plaintext", FT_BYTES, "Decrypted bytes (no xDLMS dissector for them)")
field("osgp.digest_status", FT_STR, "OSGP legacy OMA digest check: verified, failed, no-key")
field("osgp.keyset", FT_STR, "Name of the key set whose OMA key verified the digest")
field("lon.auth_check", FT_STR, "14908 authentication reply check: matches, not-confirmed (inferred algorithm), no-key")

_U32 = struct.Struct(">I").unpack_from
_RANK = {"auth-failed": 6, "no-key": 5, "unsupported": 4, "unauthenticated": 3, "decrypted": 2, "auth-ok": 1}

KNOWN_PLAIN = frozenset([0x01, 0x05, 0x06, 0x08, 0x0C, 0x0D, 0x0E, 0x0F, 0x16, 0x18, 0x60, 0x61, 0x62,
                         0x63, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC7, 0xD8, 0xD9, 0xDA, 0xE0])


def expected_plain_tag(tag: int | None) -> int | None:
    if tag is None:
        return None
    if 0xC8 <= tag <= 0xCF:
        return tag - 0x08
    if 0xD0 <= tag <= 0xD7:
        return tag - 0x10
    if 0x21 <= tag <= 0x38:
        return tag - 0x20
    if 0x41 <= tag <= 0x58:
        return tag - 0x40
    return None


def plausible(pt: bytes, tag: int | None) -> bool:
    if not pt:
        return False
    exp = expected_plain_tag(tag)
    if exp is not None:
        return pt[0] == exp
    return pt[0] in KNOWN_PLAIN


class Result:
    __slots__ = ("status", "plaintext", "keyset", "key", "iv_title", "peer_title", "sc", "ic",
                 "kind", "tag", "message")

    def __init__(self, status, plaintext=None, keyset=None, key=None, iv_title=None, peer_title=False,
                 sc=None, ic=None, kind=None, tag=None, message=None):
        self.status = status
        self.plaintext = plaintext
        self.keyset = keyset
        self.key = key
        self.iv_title = iv_title
        self.peer_title = peer_title
        self.sc = sc
        self.ic = ic
        self.kind = kind
        self.tag = tag
        self.message = message

    def __repr__(self):
        return f"Result({self.status}, keyset={self.keyset!r}, {len(self.plaintext or b'')} bytes)"


def _pick_keys(ks, kind: str, sc: dc.SecurityControl, assoc: Association | None, key_info: dict | None):
    """(encryption key, key label) for one key set, or (None, reason)."""
    if kind in ("ded", "general-ded"):
        if assoc is not None and assoc.dedicated_key is not None:
            return assoc.dedicated_key, "dedicated"
        if ks.dedicated_key:
            return ks.dedicated_key, "dedicated"
        return None, "dedicated"
    if kind == "general-ciphering" and key_info is not None:
        t = key_info.get("type")
        if t == "identified":
            if key_info.get("key_id") == 1:
                return ks.bk, "global-broadcast"
            return ks.ek, "global-unicast"
        if t == "wrapped":
            if not ks.kek:
                return None, "wrapped"
            try:
                return dc.key_unwrap(ks.kek, key_info["wrapped"]), "wrapped"
            except dc.CryptoError:
                return b"", "wrapped"      # present but wrong: counts as a failed try
        if t == "agreed":
            return None, "agreed"          # handled separately (needs ECDH)
    if sc.broadcast:
        return ks.bk, "global-broadcast"
    return ks.ek, "global-unicast"


def _agreed_key(ks, key_info: dict, gen: dict, suite: int) -> bytes | None:
    """One-pass DH C(1e,1s): key-ciphered-data = ephemeral public key || signature; the
    recipient's private key (from the key set) gives Z."""
    data = key_info.get("data") or b""
    params = key_info.get("params") or b""
    if params[:1] != b"\x01":
        return None
    try:
        size = dc.suite_params(suite)[2]
    except dc.CryptoError:
        return None
    pub_raw = data[:2 * size]
    try:
        pub = dc.public_key_from_bytes(pub_raw, suite)
    except dc.CryptoError:
        return None
    for priv in ks.private_keys():
        try:
            return dc.ecdh_agree(priv, pub, suite, gen.get("originator") or b"", gen.get("recipient") or b"")
        except dc.CryptoError:
            continue
    return None


_FAST_KINDS = frozenset(("glo", "general-glo"))
# Replay / counter windows (per generation; see bounded.Window): a replay or counter reuse is
# found while the first APDU is among the last REPLAY_WINDOW protected APDUs; a counter
# going backwards is found against the per-(key, system title, direction) high-water mark.
REPLAY_WINDOW = 16384      # per generation: at most 2x this many entries per map (~6 MB)


def decrypt_one(keys, desc: dict, buf: bytes, assoc: Association | None, direction: str,
                gen: dict | None = None) -> Result:
    """Verify/decrypt one descriptor.  `buf` is the data source holding SC at desc["offset"].

    Hot path: a global-key APDU with an authentication tag, in an association whose titles
    are known, tried with the best candidate set and the sender's title first; anything
    else (or a failure there) goes through the complete search below, which skips the
    attempt already made (each set is tried at most once per IV title)."""
    kind = desc.get("kind") or "glo"
    if gen is None and assoc is not None and keys is not None and kind in _FAST_KINDS:
        sc_b = buf[desc["offset"]] if desc.get("offset") is not None and desc["offset"] < len(buf) else 0
        server_title = assoc.server_title
        if sc_b & 0xD0 == 0x10 and (sc_b & 0x0F) <= 2 and server_title is not None:
            sender = desc.get("system_title") or (assoc.client_title if direction == "c2s" else server_title)
            if sender is not None:
                sets = keys.candidates(server_title, sender, assoc.client_title)
                if sets and sets[0].ek and len(sender) == 8:
                    ks = sets[0]
                    off = desc["offset"]
                    length = desc.get("length")
                    end = len(buf) if length is None else min(len(buf), off + length)
                    if end - off >= 5 + dc.TAG_LEN:
                        ic = _U32(buf, off + 1)[0]
                        try:
                            res = dc.unprotect(sc_b, ic, bytes(sender), ks.ek, ks.ak, bytes(buf[off + 5:end]))
                        except dc.CryptoError:
                            return _decrypt_full(keys, desc, buf, assoc, direction, gen,
                                                 skip=(ks.name, bytes(sender)))
                        return Result(res.status, res.plaintext, ks.name, "global-unicast", bytes(sender), False,
                                      sc_b, ic, kind, desc.get("tag"))
    return _decrypt_full(keys, desc, buf, assoc, direction, gen)


def _decrypt_full(keys, desc: dict, buf: bytes, assoc: Association | None, direction: str,
                  gen: dict | None = None, skip: tuple | None = None) -> Result:
    kind = desc.get("kind") or "glo"
    tag = desc.get("tag")
    off = desc.get("offset", 0)
    length = desc.get("length")
    if length is None:
        length = len(buf) - off
    end = min(len(buf), off + length)
    if end - off < 5:
        return Result("unsupported", kind=kind, tag=tag, message="ciphered content shorter than SC+IC")
    sc_b = buf[off]
    ic = _U32(buf, off + 1)[0]
    body = bytes(buf[off + 5:end])
    sc = dc.parse_sc(sc_b)
    r0 = {"sc": sc_b, "ic": ic, "kind": kind, "tag": tag}
    if sc.compressed:
        return Result("unsupported", message="compressed APDU (not supported)", **r0)
    if sc.suite > 2:
        return Result("unsupported", message=f"security suite {sc.suite} is not defined", **r0)
    if not sc.auth and not sc.enc:
        return Result("unsupported", message="security control has neither A nor E", **r0)
    if keys is None or not getattr(keys, "dlms_sets", None):
        if kind in ("ded", "general-ded") and assoc is not None and assoc.dedicated_key is not None:
            pass
        else:
            return Result("no-key", message="no key ring", **r0)
    # IV titles: the sender's own, then the peer's
    sender = desc.get("system_title")
    if kind == "general-ciphering" and gen is not None:
        sender = gen.get("originator") or sender
    peer = None
    if assoc is not None:
        if sender is None:
            sender = assoc.title_of(direction)
        peer = assoc.peer_title_of(direction)
    if sender is None:
        return Result("no-key", message="sender's system title unknown (no AARQ/AARE seen)", **r0)
    sender = bytes(sender)
    titles = [(sender, False)]
    if peer is not None and peer != sender and kind in ("glo", "ded"):
        titles.append((bytes(peer), True))
    server_title = assoc.server_title if assoc is not None else None
    client_title = assoc.client_title if assoc is not None else None
    sets = keys.candidates(server_title, sender, client_title) if keys is not None else []
    if keys is not None and server_title is None:
        # the server's title is not known yet (AARQ): every set is a candidate, once each
        sets = sets + [s for s in keys.dlms_sets if s not in sets]
    if not sets and assoc is not None and assoc.dedicated_key is not None:
        sets = [_AssocOnly()]
    key_info = gen.get("key_info") if gen else None
    aads = [None]
    if kind == "general-ciphering" and gen is not None and sc.suite in (1, 2):
        aads.append(b"\x08" + gen["transaction_id"] + b"\x08" + gen["originator"] + b"\x08" +
                    gen["recipient"] + b"\x00\x00")
    tried = False
    first_unauth: Result | None = None
    for title, is_peer in titles:
        for ks in sets:
            if skip is not None and skip == (ks.name, title):
                tried = True          # already tried (and failed) on the hot path
                continue
            if kind == "general-ciphering" and key_info is not None and key_info.get("type") == "agreed":
                ek = _agreed_key(ks, key_info, gen, sc.suite or 1)
                label = "agreed"
            else:
                ek, label = _pick_keys(ks, kind, sc, assoc, key_info)
            if ek is None:
                continue
            tried = True
            for extra in aads:
                try:
                    if extra is None:
                        res = dc.unprotect(sc_b, ic, title, ek, ks.ak, body)
                    else:
                        res = _unprotect_extra_aad(sc_b, ic, title, ek, ks.ak, body, extra)
                except dc.CryptoError:
                    continue
                r = Result(res.status, res.plaintext, ks.name, label, title, is_peer, sc_b, ic, kind, tag)
                if res.status == "unauthenticated":
                    # nothing authenticates the key: prefer a plausible plaintext
                    if plausible(res.plaintext, tag):
                        return r
                    if first_unauth is None:
                        first_unauth = r
                    break
                return r
        if first_unauth is not None:
            return first_unauth
    if not tried:
        if kind in ("ded", "general-ded"):
            return Result("no-key", message="dedicated key unknown (InitiateRequest not decrypted)", **r0)
        if key_info is not None and key_info.get("type") == "agreed":
            return Result("no-key", message="agreed key: no private key for ECDH in the key ring", **r0)
        return Result("no-key", message="no matching key set", **r0)
    return Result("auth-failed", message="authentication tag does not verify with any candidate key", **r0)


class _AssocOnly:
    """A stand-in key set when only the association's dedicated key is known."""
    name = "dedicated (learned)"
    ek = bk = kek = dedicated_key = None
    ak = None

    def private_keys(self):
        return []


def _unprotect_extra_aad(sc, ic, title, ek, ak, body, extra) -> dc.Unprotected:
    s = dc.parse_sc(sc)
    iv = dc.make_iv(title, ic)
    ak = ak or b""
    if len(body) < dc.TAG_LEN:
        raise dc.CryptoError("short")
    data, tag = body[:-dc.TAG_LEN], body[-dc.TAG_LEN:]
    if s.enc:
        return dc.Unprotected(dc.gcm_decrypt_raw(ek, iv, data, bytes([sc]) + ak + extra, tag), "decrypted", tag)
    dc.gcm_decrypt_raw(ek, iv, b"", bytes([sc]) + ak + extra + data, tag)
    return dc.Unprotected(data, "auth-ok", tag)


def verify_signing(keys, gen: dict, apdu: bytes) -> str:
    """general-signing: ECDSA over the APDU fields before the signature."""
    sig = gen.get("signature") or b""
    if not sig:
        return "no-key"
    if keys is None:
        return "no-key"
    suite = 1 if len(sig) == 64 else 2 if len(sig) == 96 else None
    if suite is None:
        return "failed"
    signed = [bytes(apdu[1:gen["signed_end"]]), bytes(apdu[:gen["signed_end"]])]
    had = False
    for ks in keys.candidates(gen.get("originator"), gen.get("recipient")):
        for pk in ks.public_keys():
            had = True
            for msg in signed:
                if dc.ecdsa_verify(pk, msg, sig, suite):
                    return "verified"
    return "failed" if had else "no-key"


def adp_sender_ids(lon: dict, ks) -> list[bytes]:
    """Candidate 6-byte sender blocks for the CCM nonce: the Neuron ID when the key set has
    one, else domain || subnet || node padded with 0xFF (the 14908 OMA address style)."""
    out = []
    if ks is not None and getattr(ks, "neuron_id", None) and len(ks.neuron_id) == 6:
        out.append(bytes(ks.neuron_id))
    nid = lon.get("nid")
    if isinstance(nid, (bytes, bytearray)) and len(nid) == 6:
        out.append(bytes(nid))
    dom = bytes(lon.get("domain") or b"")
    sn, nd = lon.get("src_subnet"), lon.get("src_node")
    if sn is not None and nd is not None:
        out.append((dom + bytes([sn & 0xFF, nd & 0x7F]) + b"\xff" * 6)[:6])
    return out


def adp_nonce(desc: dict, buf: bytes, sender: bytes) -> bytes:
    parts = []
    for item in desc.get("nonce") or ["sender_id:6", "counter:4", "key_id:1", "code:1", "control:1"]:
        name, _, size = str(item).partition(":")
        n = int(size or 1)
        if name == "sender_id":
            v = sender
        elif name in ("counter", "key_id"):
            v = int(desc.get(name) or 0).to_bytes(n, "big")
        elif name == "code":
            v = bytes(buf[desc["code_offset"]:desc["code_offset"] + 1])
        elif name == "control":
            v = bytes(buf[desc["code_offset"] + 1:desc["code_offset"] + 2])
        else:
            v = b""
        parts.append(bytes(v).ljust(n, b"\x00")[:n])
    return b"".join(parts)


def decrypt_adp(keys, desc: dict, buf: bytes) -> Result:
    """OSGP-AES-128-PSK protected adaptation PDU (layout from the profile: inferred)."""
    from . import osgpcrypto as oc
    kind = "adp"
    if str(desc.get("cipher", "aes-128-ccm")).lower() not in ("aes-128-ccm", "aes-ccm", "ccm"):
        return Result("unsupported", kind=kind, message=f"cipher {desc.get('cipher')} not supported")
    lon = desc.get("lon") or {}
    sets = []
    if keys is not None:
        sets = [s for s in keys.match_lon(lon.get("nid") if isinstance(lon.get("nid"), bytes) else None,
                                          lon.get("src_subnet"), lon.get("src_node"), lon.get("domain"))
                if s.psk]
        sets += [s for s in keys.match_lon(None, lon.get("dst_subnet"), lon.get("dst_node"), lon.get("domain"))
                 if s.psk and s not in sets]
        sets += [s for s in keys.lon_sets if s.psk and s not in sets]
    if not sets:
        return Result("no-key", kind=kind, message="no OSGP-AES-128-PSK key for this node")
    ho, hl = desc["header_offset"], desc["header_length"]
    aad = bytes(buf[ho:ho + hl])
    co, cl = desc["ciphertext_offset"], desc["ciphertext_length"]
    mo, ml = desc["mac_offset"], desc["mac_length"]
    data = bytes(buf[co:co + cl]) + bytes(buf[mo:mo + ml])
    if ml not in (4, 6, 8, 10, 12, 14, 16):
        return Result("unsupported", kind=kind, message=f"CCM tag length {ml} not allowed")
    for ks in sets:
        for sender in adp_sender_ids(lon, ks):
            try:
                pt = oc.ccm_decrypt(ks.psk, adp_nonce(desc, buf, sender), data, aad, ml)
            except oc.OsgpCryptoError:
                continue
            return Result("decrypted", pt, ks.name, "psk", sender, False, kind=kind)
    return Result("auth-failed", kind=kind, message="CCM tag does not verify with any PSK")


def _gen_from_desc(desc: dict) -> dict | None:
    """general-ciphering/-signing header as the xDLMS dissector decoded it into the
    ciphered-APDU descriptor (the only parse of that header)."""
    if "transaction_id" not in desc:
        return None
    gen = {k: desc.get(k) or b"" for k in ("transaction_id", "originator", "recipient", "date_time",
                                            "other_information")}
    ki = desc.get("key_info")
    if ki:
        c = ki.get("choice")
        if c in (0, "identified-key"):
            gen["key_info"] = {"type": "identified", "key_id": ki.get("key_id")}
        elif c in (1, "wrapped-key"):
            gen["key_info"] = {"type": "wrapped", "kek_id": ki.get("kek_id"), "wrapped": ki.get("key_ciphered_data")}
        elif c in (2, "agreed-key"):
            gen["key_info"] = {"type": "agreed", "params": ki.get("key_parameters") or b"",
                               "data": ki.get("key_ciphered_data") or b""}
    else:
        gen["key_info"] = None
    if "signature" in desc:
        gen["signature"] = desc.get("signature")
    return gen


def _status_info(d) -> None:
    """Text summaries carry the status with the key set's name: "[decrypted: meter-42]"."""
    names = []
    for n in d.fields.get("dlms.sec.keyset", ()):
        if n not in names:
            names.append(n)
    if d.status and names and d.status in ("decrypted", "auth-ok", "unauthenticated"):
        tag = f"[{d.status}: {', '.join(names)}]"
        if tag not in d.info:
            d.info = f"{d.info} {tag}" if d.info else tag


def _notes(d, desc, res: Result, message: str | None) -> None:
    """Expert notes of one APDU's result (first pass and redissection alike)."""
    off, node = desc.get("offset", 0), desc.get("node")
    if res.peer_title:
        d.note("warn", "security", "dlms", off, "IV uses the peer's system title", node)
    if res.status == "auth-failed":
        d.note("warn", "decryption", "dlms", off,
               "Authentication failed: wrong key, wrong system title, or damaged data", node)
    elif res.status in ("no-key", "unsupported") and message:
        d.note("note", "decryption", "dlms", off, f"Not decrypted: {message}", node)


def _record_of(d, desc):
    for rec in d.ctx.get("dlms.apdus", ()):
        for x in rec.get("ciphered", ()):
            if x is desc:
                return rec
    return None


class Decrypt(Stage):
    name = "decrypt"

    def __init__(self, pipeline):
        super().__init__(pipeline)
        # Bounded state only (nothing kept per packet for the whole capture):
        self.events = collections.deque(maxlen=1000)       # the latest per-APDU events (inspection)
        self.stats: dict[str, Tally] = {}                   # observation -> Tally by association
        self.incidents: dict[str, Tally] = {}               # audit rule -> Tally of replays / IC incidents
        self._seen = Window(REPLAY_WINDOW)                  # ciphered bytes digest -> (first frame, assoc)
        self._ic = Window(REPLAY_WINDOW)                    # (key id, title, dir) -> (high-water IC, frame)
        self._ic_seen = Window(REPLAY_WINDOW)               # (key id, title, ic) -> (frame, digest)
        self._lon_msgs = Window(4096)                       # 14908 authenticated message per transaction
        self._lon_challenges = Window(4096)                 # 14908 challenge per transaction
        self._osgp_req = Window(4096)                       # OSGP request body per node pair

    @property
    def keys(self):
        return getattr(self.pipeline, "keys", None)

    def _assoc_stage(self):
        return self.pipeline.stage("associations")

    def process(self, pkt, d, first_pass: bool) -> None:
        if d.ctx.get("adp.protected"):
            self._adp(pkt, d, first_pass)
        if "osgp.digest" in d.fields:
            self._osgp(pkt, d, first_pass)
        lon = d.ctx.get("lon")
        if lon is not None and (lon.get("auth") or lon.get("pdu") == "auth"):
            self._lon_auth(pkt, d, lon, first_pass)
        cip = d.ctx.get("dlms.ciphered")
        if not cip and not (not first_pass and pkt.aux.get("decrypt")):
            return
        if not first_pass:
            self._replay(pkt, d)
            return
        ast = self._assoc_stage()
        assoc = ast.assoc_for(d) if ast is not None else None
        if assoc is None and ast is not None and crc_bad(d):
            # the association stage ignores damaged frames; their APDUs are still shown
            # decrypted (or failing) with the association's titles, read-only
            assoc = getattr(ast, "current", {}).get(transport_of(d)[0])
        tr = d.ctx.get("dlms.transport")
        if tr is None:
            key, src, dst, _ = transport_of(d)
        else:
            key, src, dst = tr
        stored = []
        statuses = []
        i = 0
        depth_guard = 0
        while i < len(cip) and depth_guard < 64:
            desc = cip[i]
            i += 1
            depth_guard += 1
            rec = _record_of(d, desc)
            res, pt_tag = self._one(pkt, d, desc, rec, assoc, src, ast)
            # what a redissection needs, without empty entries (kept per packet: small)
            stored.append({k: v for k, v in res.items() if v is not None and v is not False})
            statuses.append(res["status"])
        if statuses:
            pkt.aux["decrypt"] = stored
            d.status = max(statuses, key=lambda s: _RANK.get(s, 0))
            _status_info(d)

    def _one(self, pkt, d, desc, rec, assoc, src, ast):
        kind = desc.get("kind") or "glo"
        damaged = crc_bad(d)
        live = None if damaged else assoc      # the association learns from intact frames only
        src_idx = desc.get("source", 0)
        try:
            buf = d.sources[src_idx][1]
        except (IndexError, TypeError):
            buf = b""
        apdu_bytes = None
        gen = _gen_from_desc(desc) if kind in ("general-ciphering", "general-signing") else None
        if assoc is not None and ast is not None:
            direction = ast.direction(assoc, (rec or {}).get("tag") if kind in ("glo", "ded") else None, src)
        else:
            direction = "c2s"
        # general-glo/ded and general-ciphering carry the sender's title: learn it
        title = desc.get("system_title") if kind not in ("general-ciphering",) else (gen or {}).get("originator")
        if live is not None and title and kind.startswith("general") and not desc.get("in_acse"):
            if direction == "c2s" and live.client_title is None:
                live.client_title = bytes(title)
            elif direction == "s2c" and live.server_title is None:
                live.server_title = bytes(title)
        out: dict[str, Any] = {"kind": kind}
        if kind == "general-signing":
            # the signed part: the APDU from its tag to the end of the content
            if gen is not None and desc.get("signed_offset") is not None:
                so, sl = desc["signed_offset"], desc.get("signed_length") or 0
                apdu_bytes = b"\xDF" + bytes(buf[so:so + sl])
                gen["signed_end"] = 1 + sl
            st = verify_signing(self.keys, gen, apdu_bytes) if gen and apdu_bytes else "no-key"
            d.add(None, "dlms.sec.signature_status", st, 0, 0)
            out.update(status="auth-ok" if st == "verified" else ("auth-failed" if st == "failed" else "no-key"),
                       signature=st)
            self._fields(d, desc, out["status"], None, None)
            return out, None
        res = decrypt_one(self.keys, desc, buf, assoc, direction, gen)
        out.update(status=res.status, keyset=res.keyset, key=res.key, sc=res.sc, ic=res.ic,
                   iv_title=res.iv_title, peer=res.peer_title, message=res.message)
        ev = {"frame": pkt.number, "ns": pkt.ts_ns, "assoc": assoc.id if assoc else None,
              "kind": kind, "tag": desc.get("tag"), "status": res.status, "sc": res.sc, "ic": res.ic,
              "keyset": res.keyset, "key": res.key, "direction": direction, "peer_title": res.peer_title,
              "in_acse": desc.get("in_acse"), "policy_dedicated": bool(assoc and assoc.policy_dedicated)}
        if res.sc is not None:
            s = dc.parse_sc(res.sc)
            ev.update(auth=s.auth, enc=s.enc, broadcast=s.broadcast, suite=s.suite)
            if live is not None:
                if s.auth:
                    live.security.add("auth")
                if s.enc:
                    live.security.add("enc")
                live.suite = s.suite
                live.ciphered_count += 1
        # replay / invocation counter bookkeeping (on the protected bytes, no key material)
        if damaged:
            # damaged on the medium (LonTalk CRC): a failed tag or an odd counter there is
            # neither tampering, nor a replay, nor counter reuse; shown, not audited
            ev["damaged"] = True
            self.events.append(ev)
        else:
            if res.ic is not None:
                self._counters(pkt, d, desc, buf, res, assoc, direction, ev)
            self._record(ev)
        _notes(d, desc, res, res.message)
        if res.status == "unauthenticated" and res.plaintext is not None and not plausible(res.plaintext, desc.get("tag")):
            d.note("warn", "decryption", "dlms", desc.get("offset", 0),
                   "Encryption-only plaintext does not look like an xDLMS APDU (wrong key?)", desc.get("node"))
        self._fields(d, desc, res.status, res.keyset, res)
        pt_tag = None
        if res.plaintext is not None:
            out["plaintext"] = res.plaintext
            pt_tag = res.plaintext[:1]
            implausible = res.status == "unauthenticated" and not plausible(res.plaintext, desc.get("tag"))
            out["implausible"] = implausible
            recs = self._dissect_plain(d, desc, res.plaintext, implausible)
            if implausible:
                return out, None
            if live is not None and res.keyset and res.keyset != _AssocOnly.name and res.status != "unauthenticated":
                live.keyset = res.keyset
            elif live is not None and res.keyset and live.keyset is None:
                live.keyset = res.keyset
            if live is not None and ast is not None:
                if desc.get("in_acse") or (res.plaintext[:1] in (b"\x01", b"\x08")):
                    ast.initiate(pkt, live, recs)
                else:
                    key_t = d.ctx.get("dlms.transport")
                    if key_t is not None:
                        ast.observe(pkt, d, recs[0] if recs else {"tag": res.plaintext[0]},
                                    key_t[0], key_t[1], key_t[2],
                                    live.transport, plaintext=res.plaintext, decrypted=True)
        return out, pt_tag

    def _lon_auth(self, pkt, d, lon: dict, first_pass: bool) -> None:
        """14908 challenge/reply: remember authenticated messages and challenges, and check a
        reply with the domain key when one is provisioned.  The reply function is implemented
        from a description (no public vector), so a mismatch is "not-confirmed", never an
        alarm."""
        if not first_pass:
            st = pkt.aux.get("lon.auth_check")
            if st:
                d.add(None, "lon.auth_check", st, 0, 0)
            return
        from . import osgpcrypto as oc
        k = d.ctx.get("lon.txn")               # the transaction stage's key of this frame
        if k is None:
            return
        src, dst, tid, dom = k.src, k.dst[1:3], k.tid, k.domain
        if lon.get("pdu") != "auth":
            loc = d.ctx.get("lon.apdu")
            if loc is not None:
                try:
                    apdu = bytes(d.sources[loc[0]][1][loc[1]:loc[2]])
                except (IndexError, TypeError):
                    return
                self._lon_msgs[(src, dst, tid, dom)] = (apdu, dict(lon))
            return
        types = d.fields.get("lon.authpdu_type") or [None]
        value = (d.fields.get("lon.authpdu_value") or [None])[0]
        if value is None:
            return
        if types[0] in (0, 1):                 # challenge: receiver -> original sender
            self._lon_challenges[(dst, src, tid, dom)] = bytes(value)
            return
        key_t = (src, dst, tid, dom)           # reply: original sender -> receiver
        chal = self._lon_challenges.get(key_t)
        msg = self._lon_msgs.get(key_t)
        status = "no-key"
        keys = self.keys
        if chal is not None and msg is not None and keys is not None:
            oma = types[0] == 3
            apdu, mlon = msg
            block = None
            if oma:
                nid = mlon.get("nid")
                if isinstance(nid, (bytes, bytearray)) and mlon.get("dst_type") == "nid":
                    block = (bytes(nid) + b"\xff" * 13)[:13]
                else:
                    last = mlon.get("group") if mlon.get("dst_type") in ("group", "groupack") else mlon.get("dst_node")
                    block = ((dom + b"\xff" * 6)[:6] + bytes([len(dom), (mlon.get("dst_subnet") or 0) & 0xFF,
                                                                (last or 0) & 0xFF]) + b"\xff" * 4)
            for ks in keys.match_lon(None, dst[0], dst[1], dom) + keys.match_lon(None, src[0], src[1], dom):
                k = ks.oma_auth_key() if oma else (ks.auth_key or ks.domain_key)
                if not k:
                    continue
                status = "not-confirmed"
                try:
                    if oc.lon_auth_reply(bytes(k), chal, apdu, block) == bytes(value):
                        status = "matches"
                        break
                except oc.OsgpCryptoError:
                    continue
        d.add(None, "lon.auth_check", status, 0, 0)
        pkt.aux["lon.auth_check"] = status

    def _osgp(self, pkt, d, first_pass: bool) -> None:
        """OSGP legacy digest: request digest over code..sequence number, response digest
        over request || response, with the OMA key of the meter's [[lon]] set."""
        if not first_pass:
            st = pkt.aux.get("osgp")
            if st:
                d.add(None, "osgp.digest_status", st[0], 0, 0)
                if st[1]:
                    d.add(None, "osgp.keyset", st[1], 0, 0)
            return
        from . import osgpcrypto as oc
        loc = d.ctx.get("lon.apdu")
        lon = d.ctx.get("lon") or {}
        if loc is None:
            return
        try:
            apdu = bytes(d.sources[loc[0]][1][loc[1]:loc[2]])
        except (IndexError, TypeError):
            return
        if len(apdu) < 9:
            return
        body, digest = apdu[:-8], apdu[-8:]
        a = (lon.get("src_subnet"), lon.get("src_node"))
        b = (lon.get("dst_subnet"), lon.get("dst_node"))
        pair = tuple(sorted((a, b), key=str)) + (bytes(lon.get("domain") or b""),)
        is_req = (d.fields.get("osgp.direction") or [""])[0] == "request"
        if is_req:
            self._osgp_req[pair] = body
            msg = body
        else:
            req = self._osgp_req.get(pair)
            msg = (req + body) if req is not None else None
        keys = self.keys
        status, name = "no-key", None
        if keys is not None and msg is not None:
            meter = b if is_req else a
            sets = [x for x in keys.match_lon(None, meter[0], meter[1], lon.get("domain")) if x.oma_key]
            sets += [x for x in keys.lon_sets if x.oma_key and x not in sets]
            for ks in sets:
                status = "failed"
                try:
                    if oc.oma_digest(ks.oma_key, msg) == digest:
                        status, name = "verified", ks.name
                        break
                except oc.OsgpCryptoError:
                    continue
        d.add(None, "osgp.digest_status", status, 0, 0)
        if name:
            d.add(None, "osgp.keyset", name, 0, 0)
        if status == "failed":
            d.note("warn", "security", "osgp", loc[1], "OSGP digest does not verify with the OMA key")
        pkt.aux["osgp"] = (status, name)

    def _adp(self, pkt, d, first_pass: bool) -> None:
        stored = pkt.aux.get("adp") if not first_pass else None
        out = []
        for i, desc in enumerate(list(d.ctx.get("adp.protected", ()))):
            if stored is not None:
                if i >= len(stored):
                    break
                st = stored[i]
                res = Result(st["status"], st.get("plaintext"), st.get("keyset"), "psk", kind="adp",
                             message=st.get("message"))
            else:
                try:
                    buf = d.sources[desc.get("source", 0)][1]
                    res = decrypt_adp(self.keys, desc, buf)
                except (KeyError, IndexError, TypeError, ValueError) as e:
                    res = Result("unsupported", kind="adp", message=f"protected PDU layout: {type(e).__name__}")
                out.append({"status": res.status, "plaintext": res.plaintext, "keyset": res.keyset,
                            "message": res.message})
            desc2 = dict(desc, offset=desc.get("ciphertext_offset", 0))
            self._fields(d, desc2, res.status, res.keyset, res)
            if res.status == "auth-failed":
                d.note("warn", "decryption", "adp", desc2["offset"],
                       "OSGP-AES-128-PSK: CCM tag does not verify (wrong PSK, or the inferred layout differs)",
                       desc.get("node"))
            elif res.status in ("no-key", "unsupported") and res.message:
                d.note("note", "decryption", "adp", desc2["offset"], f"Not decrypted: {res.message}", desc.get("node"))
            if res.plaintext is not None:
                recs = d.ctx.setdefault("dlms.apdus", [])
                n0 = len(recs)
                self._dissect_plain(d, desc2, res.plaintext)
                ast = self._assoc_stage()
                if first_pass and ast is not None:
                    new_recs = d.ctx.get("dlms.apdus", recs)[n0:]
                    key, src, dst, kind = ast.resolve(d, pkt, new_recs)
                    d.ctx["dlms.transport"] = (key, src, dst)
                    for rec in new_recs:
                        ast.observe(pkt, d, rec, key, src, dst, kind)
            d.status = max([d.status, res.status] if d.status else [res.status], key=lambda s: _RANK.get(s, 0))
        if first_pass and out:
            pkt.aux["adp"] = out

    def _counters(self, pkt, d, desc, buf, res, assoc, direction, ev) -> None:
        """Replays, invocation counter reuse and counters going backwards, on bounded state: a
        window of recent ciphertext digests and (key, title, IC) pairs, and per-(key, title,
        direction) high-water marks.  Copies of an APDU (14908 retransmission, the same frame
        on another hop) are retransmissions, never incidents, and do not move the marks."""
        off = desc.get("offset", 0)
        ln = desc.get("length") or 0
        digest = hashlib.blake2b(bytes(buf[off:off + ln]), digest_size=16).digest()
        title = bytes(res.iv_title) if res.iv_title else bytes(desc.get("system_title") or b"")
        aid = assoc.id if assoc else None
        kid = (res.keyset or "?", res.key or "?", aid if res.key == "dedicated" else None)
        # a 14908 retransmission or the copy of a frame on another hop (both named by the
        # earlier stages, within their time windows) is the same APDU again, not a replay;
        # the same bytes in a later transaction (even with the same TID) are a replay
        copy = is_copy(d)
        first = self._seen.get(digest)
        if first is not None:
            if copy:
                ev["retransmission_of"] = first[0]
                return
            ev["replay_of"] = first[0]
            ev["replay_assoc"] = first[1]
            if first[1] not in (None, aid):
                self._incident("mitm-client-relay", (aid, first[1]), first[0], pkt.number,
                               {"assoc": aid, "frame": pkt.number, "other": first[0], "other_assoc": first[1]})
            else:
                self._incident("replayed-apdu", aid, first[0], pkt.number,
                               {"assoc": aid, "frame": pkt.number, "other": first[0]})
        else:
            self._seen[digest] = (pkt.number, aid)
            if copy:
                return
        k3 = (kid, title, res.ic)
        prev = self._ic_seen.get(k3)
        if prev is not None and prev[1] != digest:
            ev["ic_reuse_of"] = prev[0]
            self._incident("ic-reuse", (aid, res.keyset), prev[0], pkt.number,
                           {"assoc": aid, "frame": pkt.number, "other": prev[0], "ic": res.ic,
                            "keyset": res.keyset})
        elif prev is None:
            self._ic_seen[k3] = (pkt.number, digest)
        kdir = (kid, title, direction)
        last = self._ic.get(kdir)
        if last is not None and res.ic < last[0]:
            ev["ic_backwards_from"] = last
            self._incident("ic-backwards", aid, last[1], pkt.number,
                           {"assoc": aid, "frame": pkt.number, "other": last[1], "ic": res.ic, "prev_ic": last[0]})
        if last is None or res.ic > last[0]:
            self._ic[kdir] = (res.ic, pkt.number)

    def _incident(self, rule_id: str, key, first_frame: int, frame: int, info: dict) -> None:
        t = self.incidents.get(rule_id)
        if t is None:
            t = self.incidents[rule_id] = Tally()
        t.add(key, (first_frame, frame), info)

    def _record(self, ev: dict) -> None:
        """Aggregate one APDU's observations for the audit (bounded: a Tally per observation)."""
        self.events.append(ev)
        aid = ev.get("assoc")
        stats = self.stats

        def note(name):
            t = stats.get(name)
            if t is None:
                t = stats[name] = Tally()
            t.add(aid, (ev["frame"],))
        if ev.get("enc") and not ev.get("auth"):
            note("enc-only")
        if ev.get("auth") and not ev.get("enc"):
            note("auth-only")
        if ev.get("status") == "auth-failed":
            note("auth-failed")
        if ev.get("peer_title"):
            note("peer-title")
        if ev.get("broadcast"):
            note("broadcast")
        if ev.get("policy_dedicated") and ev.get("kind") in ("glo", "general-glo") and not ev.get("in_acse") \
                and ev.get("key") != "dedicated":
            note("glo-after-ded")

    def _fields(self, d, desc, status, keyset, res) -> None:
        node = desc.get("node")
        off = desc.get("offset", 0)
        src = d.source
        d.source = desc.get("source", src)
        d.add(node, "dlms.sec.status", status, off, 0, f"[Decryption: {status}]" if node is not None else None)
        if keyset:
            d.add(node, "dlms.sec.keyset", keyset, off, 0, f"[Key set: {keyset}]" if node is not None else None)
        if res is not None and res.key and res.status not in ("no-key",):
            d.add(node, "dlms.sec.key", res.key, off, 0)
        if res is not None and res.iv_title is not None and res.status not in ("no-key", "auth-failed"):
            d.add(node, "dlms.sec.iv_title", bytes(res.iv_title), off, 0)
            if res.peer_title:
                d.add(node, "dlms.sec.iv_peer_title", True, off, 0)
        if res is not None and res.plaintext is not None:
            d.add(node, "dlms.sec.plaintext_len", len(res.plaintext), off, 0)
        d.source = src

    def _dissect_plain(self, d, desc, pt: bytes, raw_only: bool = False) -> list:
        old = d.source
        d.new_source("Decrypted xDLMS", pt)
        node = desc.get("node")
        parent = d.label(node, f"Decrypted xDLMS ({len(pt)} bytes)", 0, len(pt)) if node is not None else None
        if raw_only:
            # encryption-only with an implausible result (wrong key?): bytes only, no parse
            d.add(parent, "dlms.sec.plaintext", pt, 0, len(pt))
            d.source = old
            return []
        recs = d.ctx.setdefault("dlms.apdus", [])
        n = len(recs)
        outer_info = d.info
        nroot = len(d.root.children) if d.root is not None else 0
        try:
            if not table("dlms").dispatch("apdu", pt, 0, len(pt), d, parent):
                d.add(parent, "dlms.sec.plaintext", pt, 0, len(pt))
        finally:
            d.source = old
        if parent is not None and d.root is not None and len(d.root.children) > nroot:
            # the plaintext's layer goes under "Decrypted xDLMS", below the ciphered APDU
            moved = d.root.children[nroot:]
            del d.root.children[nroot:]
            parent.children.extend(moved)
        if desc.get("in_acse") and outer_info:
            # keep the ACSE summary; the decrypted initiate goes in brackets
            d.info = f"{outer_info} → {d.info}" if d.info != outer_info else outer_info
        elif outer_info and d.info != outer_info:
            # keep what the lower layers put around the ciphered APDU's summary (LonTalk
            # "REQUEST [tid 3] ..."), as the plaintext path does
            rec = _record_of(d, desc)
            cinfo = rec.get("info") if rec is not None else None
            i = outer_info.rfind(cinfo) if cinfo else -1
            if i >= 0:
                d.info = outer_info[:i] + d.info + outer_info[i + len(cinfo):]
        # the plaintext's own records are not re-observed by the association stage
        new = d.ctx.get("dlms.apdus", recs)[n:]
        for rec in new:
            rec["decrypted"] = True
        return new

    def _replay(self, pkt, d) -> None:
        """Redissection: rebuild the decrypted sources from pkt.aux, matching descriptors by order."""
        stored = pkt.aux.get("decrypt") or []
        cip = d.ctx.get("dlms.ciphered") or []
        statuses = []
        i = 0
        j = 0
        while i < len(cip) and j < len(stored):
            desc = cip[i]
            st = stored[j]
            i += 1
            j += 1
            statuses.append(st["status"])
            if st.get("kind") == "general-signing":
                d.add(None, "dlms.sec.signature_status", st.get("signature"), 0, 0)
                self._fields(d, desc, st["status"], None, None)
                continue
            res = Result(st["status"], st.get("plaintext"), st.get("keyset"), st.get("key"),
                         st.get("iv_title"), st.get("peer"), st.get("sc"), st.get("ic"))
            _notes(d, desc, res, st.get("message"))
            self._fields(d, desc, res.status, res.keyset, res)
            if res.plaintext is not None:
                self._dissect_plain(d, desc, res.plaintext, bool(st.get("implausible")))
        if statuses:
            d.status = max(statuses, key=lambda s: _RANK.get(s, 0))
            _status_info(d)


register_stage(40, "decrypt", Decrypt)

__all__ = ["Decrypt", "decrypt_one", "verify_signing", "Result", "STATUSES", "plausible"]
