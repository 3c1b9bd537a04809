"""IEC 62056-8-8 adaptation layer (DLMS/COSEM over ISO/IEC 14908), driven by a profile.

The layout of the adaptation PDUs is not public, so it is described by one data file,
``dissectors/profiles/iec62056-8-8.toml`` (the default, an inference documented inside the
file).  The profile says which 14908 APDU codes carry adaptation PDUs, OSGP table services
and proxy frames, the fields of the adaptation header (control byte, client/server SAPs,
segment byte), the meaning of their bits, and the protected-PDU (Annex D,
OSGP-AES-128-PSK) header and trailer.  Nodes decoded through an inferred layout say so
(``[inferred layout]`` in the tree, ``adp.inferred = True``).

Selecting a profile: dissectors are pure, so the active profile is a module-level setting
changed only through :func:`use_profile` (the CLI's ``--profile FILE`` and
``Pipeline(profile=...)`` call it once before dissecting)::

    from dissectors.adaptation import load_profile, use_profile
    use_profile(load_profile("my-62056-8-8.toml"))

``use_profile`` re-registers the ``table("lon.apdu")`` entries for the profile's codes.

Hand-offs: the xDLMS APDU inside goes to ``table("dlms").dispatch("apdu", ...)``.  For a
protected PDU a descriptor is appended to ``d.ctx["adp.protected"]`` for the decryption
stage; segments of a segmented PDU are described in ``d.ctx["adp.segments"]`` and
reassembled by ``analyzer.dlms_streams``.  A heuristic on ``table("lon.apdu")`` finds an
xDLMS APDU inside application/foreign messages that no profile rule claims
(``adp.heuristic = True``).
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field as dc_field
from typing import Any

from .core import (FT_BOOL, FT_BYTES, FT_STR, FT_UINT, REGISTRY, Dissection, Node, Truncated,
                   field, table)
from .axdr import read_length
from . import osgp as _osgp
from . import proxy as _proxy

DEFAULT_PROFILE_PATH = os.path.join(os.path.dirname(__file__), "profiles", "iec62056-8-8.toml")
ROLES_BITS = ("protected", "segmented", "type", "last", "number")
KNOWN_CODE_ROLES = ("adp", "osgp_requests", "osgp_responses", "proxy")
INFERRED = " [inferred layout]"

field("adp", FT_BOOL, "IEC 62056-8-8 adaptation layer")
field("adp.code", FT_UINT, "14908 APDU code carrying the adaptation PDU", base="hex")
field("adp.inferred", FT_BOOL, "Decoded through an inferred (not normative) layout")
field("adp.heuristic", FT_BOOL, "xDLMS APDU located by the heuristic, not by a profile rule")
field("adp.header", FT_BYTES, "Bytes before the xDLMS APDU (heuristic: unknown header)")
field("adp.control", FT_UINT, "Control field", base="hex")
field("adp.sap.client", FT_UINT, "Client SAP")
field("adp.sap.server", FT_UINT, "Server SAP")
field("adp.segment", FT_UINT, "Segment field", base="hex")
field("adp.protected", FT_BOOL, "Protected PDU (Annex D)")
field("adp.segmented", FT_BOOL, "Segmented PDU")
field("adp.confirmed", FT_BOOL, "Confirmed")
field("adp.type", FT_UINT, "PDU type")
field("adp.last", FT_BOOL, "Last segment")
field("adp.segment_number", FT_UINT, "Segment number")
field("adp.segment_data", FT_BYTES, "Segment data (reassembled when the last segment arrives)")
field("adp.key_id", FT_UINT, "Key identifier (protected PDU)")
field("adp.counter", FT_UINT, "Message counter (protected PDU, nonce input)")
field("adp.ciphertext", FT_BYTES, "Ciphertext (protected PDU)")
field("adp.mac", FT_BYTES, "Message authentication code (protected PDU)")
field("adp.suite", FT_STR, "Protection suite (profile)")
field("adp.profile", FT_STR, "Adaptation profile name")


class ProfileError(ValueError):
    """The profile file is unreadable or inconsistent (one-line message for users)."""


@dataclass
class BitDef:
    name: str
    mask: int
    shift: int
    role: str | None = None
    labels: dict | None = None

    def get(self, v: int) -> int:
        return (v & self.mask) >> self.shift


@dataclass
class FieldDef:
    name: str
    size: int
    when: str | None = None
    role: str | None = None


@dataclass
class Profile:
    name: str
    inferred: bool
    codes: dict[str, list[int]]
    header: list[FieldDef]
    bits: dict[str, list[BitDef]]
    protected: dict[str, Any]
    protected_header: list[FieldDef]
    heuristic: bool = True
    max_offset: int = 8
    path: str | None = None
    code_role: dict[int, str] = dc_field(default_factory=dict)

    @property
    def mac_length(self) -> int:
        return int(self.protected.get("mac_length", 8))

    def role_bit(self, role: str) -> tuple[str, BitDef] | None:
        for fname, defs in self.bits.items():
            for b in defs:
                if b.role == role:
                    return fname, b
        return None


def _int(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ProfileError(f"{what}: expected an integer, got {x!r}")
    return x


def _parse_fields(items, what: str) -> list[FieldDef]:
    out = []
    if not isinstance(items, list):
        raise ProfileError(f"{what}: expected an array of tables")
    for i, it in enumerate(items):
        if not isinstance(it, dict) or "name" not in it:
            raise ProfileError(f"{what}[{i}]: needs a name")
        size = _int(it.get("size", 1), f"{what}[{i}].size")
        if not 1 <= size <= 8:
            raise ProfileError(f"{what}[{i}].size must be 1..8")
        out.append(FieldDef(str(it["name"]), size, it.get("when"), it.get("role")))
    return out


def _parse_bits(items, what: str) -> list[BitDef]:
    out = []
    if not isinstance(items, list):
        raise ProfileError(f"{what}: expected an array of tables")
    for i, it in enumerate(items):
        if not isinstance(it, dict) or "name" not in it or "mask" not in it:
            raise ProfileError(f"{what}[{i}]: needs name and mask")
        mask = _int(it["mask"], f"{what}[{i}].mask")
        if not 0 < mask <= 0xFF:
            raise ProfileError(f"{what}[{i}].mask must be within one byte")
        shift = (mask & -mask).bit_length() - 1
        labels = None
        if "labels" in it:
            try:
                labels = {int(k, 0): str(v) for k, v in dict(it["labels"]).items()}
            except (TypeError, ValueError):
                raise ProfileError(f"{what}[{i}].labels: keys must be numbers") from None
        role = it.get("role")
        if role is not None and role not in ROLES_BITS:
            raise ProfileError(f"{what}[{i}].role {role!r} is not one of {', '.join(ROLES_BITS)}")
        out.append(BitDef(str(it["name"]), mask, shift, role, labels))
    return out


def parse_profile(data: dict, path: str | None = None) -> Profile:
    """Build a Profile from parsed TOML (raises ProfileError)."""
    meta = data.get("profile", {})
    codes_raw = data.get("codes")
    if not isinstance(codes_raw, dict):
        raise ProfileError("[codes] table missing")
    codes: dict[str, list[int]] = {}
    code_role: dict[int, str] = {}
    for role, lst in codes_raw.items():
        if role not in KNOWN_CODE_ROLES:
            raise ProfileError(f"[codes].{role}: unknown role (known: {', '.join(KNOWN_CODE_ROLES)})")
        if not isinstance(lst, list):
            raise ProfileError(f"[codes].{role}: expected a list of codes")
        vals = []
        for c in lst:
            c = _int(c, f"[codes].{role}")
            if not 0 <= c <= 0x4F:
                raise ProfileError(f"[codes].{role}: 0x{c:02x} is not an application/foreign code (0x00-0x4F)")
            if c in code_role:
                raise ProfileError(f"[codes]: 0x{c:02x} listed for both {code_role[c]} and {role}")
            code_role[c] = role
            vals.append(c)
        codes[role] = vals
    header = _parse_fields(data.get("header", []), "[[header]]")
    names = {f.name for f in header}
    bits: dict[str, list[BitDef]] = {}
    for fname in names:
        if fname in data:
            bits[fname] = _parse_bits(data[fname], f"[[{fname}]]")
    prot = dict(data.get("protected", {}))
    pheader = _parse_fields(prot.pop("header", []), "[[protected.header]]")
    if "mac_length" in prot and not 0 <= _int(prot["mac_length"], "[protected].mac_length") <= 32:
        raise ProfileError("[protected].mac_length must be 0..32")
    heur = data.get("heuristic", {})
    p = Profile(name=str(meta.get("name", os.path.basename(path or "profile"))),
                inferred=bool(meta.get("inferred", True)), codes=codes, header=header, bits=bits,
                protected=prot, protected_header=pheader, heuristic=bool(heur.get("enabled", True)),
                max_offset=max(1, min(64, _int(heur.get("max_offset", 8), "[heuristic].max_offset"))),
                path=path, code_role=code_role)
    for f in header:
        if f.when is not None and p.role_bit(f.when) is None and not any(
                b.name == f.when for defs in bits.values() for b in defs):
            raise ProfileError(f"[[header]] {f.name}: 'when' names unknown bit {f.when!r}")
    _register_profile_fields(p)
    return p


def _register_profile_fields(p: Profile) -> None:
    """Fields a corrected profile may add (adp.<name>) are registered when it loads."""
    for f in p.header + p.protected_header:
        name = "adp." + f.name
        if name not in REGISTRY:
            field(name, FT_UINT, f"{f.name} (from profile {p.name})")
    for defs in p.bits.values():
        for b in defs:
            name = "adp." + b.name
            if name not in REGISTRY:
                field(name, FT_UINT, f"{b.name} (from profile {p.name})", labels=b.labels)


def load_profile(path: str | None = None) -> Profile:
    """Load a profile TOML file (None: the default inferred profile)."""
    path = path or DEFAULT_PROFILE_PATH
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as e:
        raise ProfileError(f"cannot read profile {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"profile {path}: {e}") from None
    return parse_profile(data, path)


_ACTIVE: Profile | None = None
_DEFAULT: Profile | None = None
_OURS = ("adp", "osgp", "lonproxy")


def active_profile() -> Profile:
    if _ACTIVE is None:
        use_profile(None)
    return _ACTIVE


def use_profile(profile: Profile | str | None) -> Profile:
    """Make `profile` (a Profile, a path, or None for the default) the active one and
    register its codes in table("lon.apdu").  Call once before dissecting."""
    global _ACTIVE, _DEFAULT
    if profile is None:
        if _DEFAULT is None:
            _DEFAULT = load_profile()
        profile = _DEFAULT
    elif isinstance(profile, (str, os.PathLike)):
        profile = load_profile(os.fspath(profile))
    tbl = table("lon.apdu")
    for k in [k for k, (proto, _fn) in tbl.entries.items() if proto in _OURS]:
        del tbl.entries[k]
    for code, role in profile.code_role.items():
        if role == "adp":
            tbl.register(code, "adp", _adp_entry)
        elif role == "osgp_requests":
            tbl.register(code, "osgp", _osgp_request_entry)
        elif role == "osgp_responses":
            tbl.register(code, "osgp", _osgp_response_entry)
        elif role == "proxy":
            tbl.register(code, "lonproxy", _proxy_entry)
    _ACTIVE = profile
    return profile


# --------------------------------------------------------------------------- dissection

def _is_response(d: Dissection) -> bool:
    lon = d.ctx.get("lon") or {}
    return lon.get("type") == "RESPONSE"


def _remember_info(d: Dissection, before: str) -> None:
    """Keep the summary our layers (and the xDLMS layer inside) produced for the Info
    column: the LonTalk layer writes its own summary after the APDU hand-off returns, and
    `analyzer.dlms_streams` puts ours back behind the LonTalk prefix."""
    if d.info and d.info != before:
        d.ctx["lon.app_info"] = d.info


def _keeping_info(fn):
    """A lon.apdu entry around `fn` whose Info summary survives the LonTalk layer."""
    def entry(buf, off, end, d, parent):
        before = d.info
        try:
            fn(buf, off, end, d, parent)
        finally:
            _remember_info(d, before)
    return entry


def _osgp_response_or_heuristic(buf, off, end, d, parent):
    """Status codes 0x00..0x0C are OSGP responses only inside an SPDU RESPONSE."""
    if _is_response(d):
        _osgp.dissect_response(buf, off, end, d, parent)
        return
    if not heuristic_locate(buf, off, end, d, parent) and end > off + 1:
        d.add(parent, "data.data" if "data.data" in REGISTRY else "adp.header",
              bytes(buf[off + 1:end]), off + 1, end - off - 1)


def dissect_adp(buf, off: int, end: int, d: Dissection, parent: Node | None) -> None:
    """An adaptation PDU; buf[off] is the 14908 APDU code."""
    prof = active_profile()
    title = "IEC 62056-8-8 adaptation layer" + (INFERRED if prof.inferred else "")
    node = d.layer("adp", title, off, end - off)
    tree = node is not None
    d.add(node, "adp.inferred", prof.inferred, off, 0)
    d.add(node, "adp.code", buf[off], off, 1)
    p = off + 1
    roles: dict[str, int] = {}
    values: dict[str, int] = {}
    byname: dict[str, int] = {}
    for f in prof.header:
        if f.when is not None and not (byname.get(f.when) or roles.get(f.when)):
            continue
        if end - p < f.size:
            d.malformed("adp", p, f"header field {f.name} needs {f.size} bytes, {end - p} present", node)
            return
        v = int.from_bytes(buf[p:p + f.size], "big")
        values[f.name] = v
        fn = d.add(node, "adp." + f.name, v, p, f.size)
        if fn is not None and prof.inferred:
            fn.text += INFERRED
        if f.role:
            roles[f.role] = v
        for b in prof.bits.get(f.name, ()):
            bv = b.get(v)
            byname[b.name] = bv
            if b.role:
                roles[b.role] = bv
            name = "adp." + b.name
            ftype = REGISTRY[name].type if name in REGISTRY else FT_UINT
            val = bool(bv) if ftype == FT_BOOL else bv
            if fn is not None:
                lab = b.labels.get(bv) if b.labels else None
                txt = f"{b.name}: {lab + f' ({bv})' if lab else val}"
                d.add(fn, name, val, p, f.size, txt)
            else:
                d.add(None, name, val, p, f.size)
        p += f.size
    client = values.get("sap.client")
    server = values.get("sap.server")
    sap = f"c{client}/s{server}" if client is not None and server is not None else ""
    prot = bool(roles.get("protected"))
    seg = bool(roles.get("segmented"))
    last = bool(roles.get("last", 1))
    number = roles.get("number", 0)
    if tree:
        node.text = (f"IEC 62056-8-8 adaptation layer{INFERRED if prof.inferred else ''}, "
                     f"SAP client {client} server {server}"
                     + (", protected" if prot else "") + (f", segment {number}{' (last)' if last else ''}" if seg else ""))
    d.set_info(f"ADP {sap}".strip())
    if prot:
        _dissect_protected(buf, off, p, end, d, node, prof)
        return
    if seg and not (number == 0 and last):
        segs = d.ctx.setdefault("adp.segments", [])
        lon = d.ctx.get("lon") or {}
        segs.append({"source": d.source, "offset": p, "length": end - p, "number": number,
                     "last": last, "client": client, "server": server,
                     "src": (lon.get("src_subnet"), lon.get("src_node")),
                     "dst": (lon.get("dst_subnet"), lon.get("dst_node"), lon.get("group")),
                     "node": node})
        d.add(node, "adp.segment_data", bytes(buf[p:end]), p, end - p)
        d.set_info(f"ADP {sap} segment {number}{' last' if last else ''}")
        return
    if p >= end:
        return
    if not table("dlms").dispatch("apdu", buf, p, end, d, parent):
        d.add(node, "adp.segment_data", bytes(buf[p:end]), p, end - p, "Data (no xDLMS dissector)" if tree else None)


def _dissect_protected(buf, code_off: int, p: int, end: int, d: Dissection, node, prof: Profile) -> None:
    hdr_start = p
    info: dict[str, Any] = {}
    for f in prof.protected_header:
        if end - p < f.size:
            d.malformed("adp", p, f"protected header field {f.name} needs {f.size} bytes", node)
            return
        v = int.from_bytes(buf[p:p + f.size], "big")
        fn = d.add(node, "adp." + f.name, v, p, f.size)
        if fn is not None and prof.inferred:
            fn.text += INFERRED
        info[f.role or f.name] = (v, p, f.size)
        p += f.size
    mac_len = prof.mac_length
    if end - p < mac_len:
        d.malformed("adp", p, f"protected PDU shorter than its {mac_len}-byte MAC", node)
        return
    ct_end = end - mac_len
    suite = str(prof.protected.get("suite", ""))
    d.add(node, "adp.suite", suite, hdr_start, p - hdr_start)
    d.add(node, "adp.ciphertext", bytes(buf[p:ct_end]), p, ct_end - p)
    if mac_len:
        d.add(node, "adp.mac", bytes(buf[ct_end:end]), ct_end, mac_len)
    lon = d.ctx.get("lon") or {}
    desc = {
        "kind": "adp", "suite": suite, "cipher": prof.protected.get("cipher"),
        "source": d.source, "code_offset": code_off,
        "header_offset": code_off, "header_length": p - code_off,   # code + ADP + protected header
        "ciphertext_offset": p, "ciphertext_length": ct_end - p,
        "mac_offset": ct_end, "mac_length": mac_len,
        "aad": list(prof.protected.get("aad", [])), "nonce": list(prof.protected.get("nonce", [])),
        "inferred": prof.inferred, "node": node,
        "lon": {k: lon.get(k) for k in ("src_subnet", "src_node", "dst_subnet", "dst_node",
                                        "domain", "nid", "dst_type")},
    }
    for role in ("key_id", "counter"):
        if role in info:
            v, o, n = info[role]
            desc[role] = v
            desc[role + "_offset"] = o
            desc[role + "_length"] = n
    d.ctx.setdefault("adp.protected", []).append(desc)
    kid = desc.get("key_id")
    ctr = desc.get("counter")
    d.set_info(f"{d.info} protected" + (f" key {kid}" if kid is not None else "")
               + (f" ctr {ctr}" if ctr is not None else ""))
    if node is not None:
        d.label(node, f"Ciphertext {ct_end - p} bytes, MAC {mac_len} bytes ({suite}{INFERRED if prof.inferred else ''})",
                p, end - p)


# --------------------------------------------------------------------------- heuristic

_GLO = frozenset([0x21, 0x25, 0x26, 0x28, 0x2C, 0x2D, 0x2E, 0x36, 0x38,
                  0x41, 0x45, 0x46, 0x48, 0x4C, 0x4D, 0x4E, 0x56, 0x58]
                 + [t for t in range(0xC8, 0xD8) if t not in (0xCE, 0xD6)])
_SUBTYPES = {0xC0: 3, 0xC1: 5, 0xC3: 6, 0xC4: 3, 0xC5: 5, 0xC7: 4}


def _ber_len(buf, q: int, end: int):
    """(length, header size) of the A-XDR/BER length at q (`axdr.read_length`), or None."""
    try:
        n, p = read_length(buf, q, end)
    except Truncated:
        return None
    return n, p - q


def plausible_apdu(buf, q: int, end: int) -> bool:
    """Is there an xDLMS/ACSE APDU at q that fills buf[q:end]?  Strict checks, so that a
    random application message is rarely taken for DLMS."""
    n = end - q
    if n < 2:
        return False
    t = buf[q]
    if 0x60 <= t <= 0x63:
        bl = _ber_len(buf, q + 1, end)
        if bl is None or q + 1 + bl[1] + bl[0] != end:
            return False
        if t in (0x60, 0x61):
            return bl[0] > 0 and buf[q + 1 + bl[1]] in (0x80, 0xA1)
        return bl[0] == 0 or buf[q + 1 + bl[1]] in (0x80, 0xBE)
    if t in _SUBTYPES:
        if n < 3 or not 1 <= buf[q + 1] <= _SUBTYPES[t]:
            return False
        if t == 0xC0 and buf[q + 1] == 1:
            return n in (13, ) or (n > 13 and buf[q + 12] == 1)
        if t == 0xC0 and buf[q + 1] == 2:
            return n == 7
        return n >= 4
    if t in _GLO:
        bl = _ber_len(buf, q + 1, end)
        if bl is None or q + 1 + bl[1] + bl[0] != end or bl[0] < 5:
            return False
        sc = buf[q + 1 + bl[1]]
        return sc & 0x30 != 0 and sc & 0x0F <= 2
    if t in (0xDB, 0xDC):
        if n < 12 or buf[q + 1] != 8:
            return False
        bl = _ber_len(buf, q + 10, end)
        return bl is not None and q + 10 + bl[1] + bl[0] == end
    if t == 0xE0:
        if n < 7:
            return False
        bl = _ber_len(buf, q + 6, end)
        return bl is not None and q + 6 + bl[1] + bl[0] == end
    if t == 0xD8:
        return n == 3 or (n == 7 and buf[q + 2] == 6)
    if t == 0x0F:
        return n >= 7 and buf[q + 5] in (0x00, 0x0C)
    if t in (0x05, 0x06, 0x0C, 0x0D):
        return n >= 4 and 1 <= buf[q + 1] <= 32 and buf[q + 2] in (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07)
    return False


def heuristic_locate(buf, off: int, end: int, d: Dissection, parent: Node | None) -> bool:
    """Heuristic on table("lon.apdu"): an xDLMS APDU a few bytes after the code."""
    prof = active_profile()
    if not prof.heuristic:
        return False
    if buf[off] > 0x4F:
        return False
    for k in range(1, prof.max_offset + 1):
        q = off + k
        if q >= end - 1:
            break
        if plausible_apdu(buf, q, end):
            node = d.layer("adp", "DLMS in a 14908 message [heuristic]", off, end - off)
            d.add(node, "adp.heuristic", True, off, 0)
            d.add(node, "adp.code", buf[off], off, 1)
            if q > off + 1:
                d.add(node, "adp.header", bytes(buf[off + 1:q]), off + 1, q - off - 1)
            d.note("note", "protocol", "adp", q,
                   f"xDLMS APDU located heuristically {k} byte(s) after APDU code 0x{buf[off]:02x}", node)
            before = d.info
            d.set_info("ADP [heuristic]")
            table("dlms").dispatch("apdu", buf, q, end, d, parent)
            _remember_info(d, before)
            return True
    return False


table("lon.apdu").register_heuristic("adp", heuristic_locate)


# --------------------------------------------------------------------------- builders

def _set_bits(defs: list[BitDef], fields: dict, roles: dict) -> int:
    v = 0
    for b in defs:
        val = fields.get(b.name)
        if val is None and b.role is not None:
            val = roles.get(b.role)
        if val is None:
            continue
        v |= (int(val) << b.shift) & b.mask
    return v


def build_pdu(apdu: bytes, *, code: int | None = None, client_sap: int = 0x10, server_sap: int = 0x01,
              protected: bool = False, segmented: bool = False, segment_number: int = 0,
              last: bool = True, pdu_type: int = 0, key_id: int = 0, counter: int = 0,
              mac: bytes | None = None, profile: Profile | None = None, **fields) -> bytes:
    """Build an adaptation PDU (14908 APDU code first) with the active (or given) profile.
    For a protected PDU, `apdu` is the ciphertext and `mac` the tag (zeros by default):
    encryption is the caller's business.  Extra profile fields may be given by name
    (dots as underscores)."""
    prof = profile or active_profile()
    if code is None:
        if not prof.codes.get("adp"):
            raise ValueError("the profile lists no adaptation code")
        code = prof.codes["adp"][0]
    roles = {"protected": int(protected), "segmented": int(segmented), "last": int(last),
             "number": segment_number, "type": pdu_type}
    vals = {k.replace("_", "."): v for k, v in fields.items()}
    vals.update({k: v for k, v in fields.items()})
    vals.setdefault("sap.client", client_sap)
    vals.setdefault("sap.server", server_sap)
    out = bytearray([code & 0xFF])
    bitvals: dict[str, int] = {}
    for f in prof.header:
        if f.name in prof.bits:
            v = _set_bits(prof.bits[f.name], vals, roles)
            for b in prof.bits[f.name]:
                bitvals[b.name] = b.get(v)
        else:
            v = int(vals.get(f.name, roles.get(f.role or "", 0)) or 0)
        if f.when is not None and not (bitvals.get(f.when) or roles.get(f.when)):
            continue
        out += (v & ((1 << (8 * f.size)) - 1)).to_bytes(f.size, "big")
    if protected:
        pv = {"key_id": key_id, "counter": counter}
        for f in prof.protected_header:
            v = int(vals.get(f.name, pv.get(f.role or f.name, 0)) or 0)
            out += (v & ((1 << (8 * f.size)) - 1)).to_bytes(f.size, "big")
        out += bytes(apdu)
        out += mac if mac is not None else bytes(prof.mac_length)
        return bytes(out)
    return bytes(out) + bytes(apdu)


def segment_apdu(apdu: bytes, max_data: int, **fields) -> list[bytes]:
    """Split an xDLMS APDU into adaptation PDUs of at most `max_data` APDU bytes each."""
    if max_data < 1:
        raise ValueError("max_data must be positive")
    chunks = [apdu[i:i + max_data] for i in range(0, len(apdu), max_data)] or [b""]
    if len(chunks) == 1:
        return [build_pdu(chunks[0], **fields)]
    return [build_pdu(c, segmented=True, segment_number=i & 0x7F, last=i == len(chunks) - 1, **fields)
            for i, c in enumerate(chunks)]


_adp_entry = _keeping_info(dissect_adp)
_proxy_entry = _keeping_info(_proxy.dissect_proxy)
_osgp_request_entry = _keeping_info(_osgp.dissect_request)
_osgp_response_entry = _keeping_info(_osgp_response_or_heuristic)
use_profile(None)
