"""ACSE APDUs of DLMS/COSEM (AARQ, AARE, RLRQ, RLRE; BER, X.227 subset).

Every field of the DLMS profile is decoded; object identifiers are named (application
context 2.16.756.5.8.1.x, mechanism 2.16.756.5.8.2.x); the user-information octet string
is handed to the xDLMS dissector (InitiateRequest/Response, ConfirmedServiceError or a
ciphered glo-/ded-initiate whose descriptor gets the AP title of this APDU).

What the association stage needs is left in `ctx["dlms.acse"]`.
Field names follow Wireshark 4.6's generated `cosem.*` ACSE fields where they exist.
"""
from __future__ import annotations

from .axdr import read_length
from .core import FT_BOOL, FT_BYTES, FT_INT, FT_STR, FT_UINT, Truncated, field, need

ACSE_NAMES = {0x60: "aarq", 0x61: "aare", 0x62: "rlrq", 0x63: "rlre"}

APP_CONTEXTS = {1: "LN", 2: "SN", 3: "LN-ciphered", 4: "SN-ciphered"}
APP_CONTEXT_TEXT = {1: "Logical Name Referencing, without ciphering",
                    2: "Short Name Referencing, without ciphering",
                    3: "Logical Name Referencing, with ciphering",
                    4: "Short Name Referencing, with ciphering"}
MECHANISMS = {0: "none", 1: "LLS", 2: "HLS", 3: "HLS-MD5", 4: "HLS-SHA1", 5: "HLS-GMAC",
              6: "HLS-SHA256", 7: "HLS-ECDSA"}
MECHANISM_TEXT = {0: "lowest level security (no authentication)", 1: "low level security (password)",
                  2: "high level security, manufacturer specific", 3: "high level security, MD5",
                  4: "high level security, SHA-1", 5: "high level security, GMAC",
                  6: "high level security, SHA-256", 7: "high level security, ECDSA"}
RESULTS = {0: "accepted", 1: "rejected-permanent", 2: "rejected-transient"}
SERVICE_USER_DIAG = {0: "null", 1: "no-reason-given", 2: "application-context-name-not-supported",
                     3: "calling-AP-title-not-recognized", 4: "calling-AP-invocation-identifier-not-recognized",
                     5: "calling-AE-qualifier-not-recognized", 6: "calling-AE-invocation-identifier-not-recognized",
                     7: "called-AP-title-not-recognized", 8: "called-AP-invocation-identifier-not-recognized",
                     9: "called-AE-qualifier-not-recognized", 10: "called-AE-invocation-identifier-not-recognized",
                     11: "authentication-mechanism-name-not-recognised",
                     12: "authentication-mechanism-name-required", 13: "authentication-failure",
                     14: "authentication-required"}
SERVICE_PROVIDER_DIAG = {0: "null", 1: "no-reason-given", 2: "no-common-acse-version"}
RLRQ_REASONS = {0: "normal", 1: "urgent", 30: "user-defined"}
RLRE_REASONS = {0: "normal", 1: "not-finished", 30: "user-defined"}
DLMS_OID_PREFIX = (2, 16, 756, 5, 8)

field("cosem.protocol_version", FT_UINT, "ACSE protocol-version (bit string value)")
field("cosem.application_context_name", FT_STR, "Application context name (OID)")
field("cosem.aSO_context_name", FT_STR, "AARE application context name (OID)")
field("dlms.acse.context", FT_STR, "Application context (LN, SN, LN-ciphered, SN-ciphered)")
field("dlms.acse.context_id", FT_UINT, "Application context id (last OID arc)", APP_CONTEXT_TEXT)
field("cosem.called_AP_title", FT_BYTES, "Called AP title")
field("cosem.called_AE_qualifier", FT_BYTES, "Called AE qualifier")
field("cosem.called_AP_invocation_identifier", FT_INT, "Called AP invocation identifier")
field("cosem.called_AE_invocation_identifier", FT_INT, "Called AE invocation identifier")
field("cosem.calling_AP_title", FT_BYTES, "Calling AP title (client system title)")
field("cosem.calling_AE_qualifier", FT_BYTES, "Calling AE qualifier (client certificate with suites 1/2)")
field("cosem.calling_AP_invocation_identifier", FT_INT, "Calling AP invocation identifier")
field("cosem.calling_AE_invocation_identifier", FT_INT, "Calling AE invocation identifier")
field("cosem.responding_AP_title", FT_BYTES, "Responding AP title (server system title)")
field("cosem.responding_AE_qualifier", FT_BYTES, "Responding AE qualifier")
field("cosem.responding_AP_invocation_identifier", FT_INT, "Responding AP invocation identifier")
field("cosem.responding_AE_invocation_identifier", FT_INT, "Responding AE invocation identifier")
field("cosem.sender_acse_requirements", FT_UINT, "Sender ACSE requirements (bit 0 authentication)")
field("cosem.responder_acse_requirements", FT_UINT, "Responder ACSE requirements (bit 0 authentication)")
field("cosem.mechanism_name", FT_STR, "Authentication mechanism name (OID)")
field("dlms.acse.mechanism", FT_STR, "Authentication mechanism (none, LLS, HLS, HLS-MD5, HLS-SHA1, HLS-GMAC, HLS-SHA256, HLS-ECDSA)")
field("dlms.acse.mechanism_id", FT_UINT, "Authentication mechanism id (last OID arc)", MECHANISM_TEXT)
field("cosem.calling_authentication_value", FT_BYTES, "Calling authentication value (LLS password or CtoS challenge)")
field("cosem.responding_authentication_value", FT_BYTES, "Responding authentication value (StoC challenge)")
field("dlms.acse.password", FT_STR, "LLS password (calling authentication value as text)")
field("dlms.acse.ctos", FT_BYTES, "HLS client-to-server challenge")
field("dlms.acse.stoc", FT_BYTES, "HLS server-to-client challenge")
field("cosem.implementation_information", FT_STR, "Implementation information")
field("cosem.user_information", FT_BYTES, "User information (xDLMS APDU)")
field("cosem.result", FT_UINT, "Association result", RESULTS)
field("dlms.acse.result", FT_STR, "Association result name")
field("cosem.acse_service_user", FT_UINT, "Result source diagnostic (acse-service-user)", SERVICE_USER_DIAG)
field("cosem.acse_service_provider", FT_UINT, "Result source diagnostic (acse-service-provider)", SERVICE_PROVIDER_DIAG)
field("dlms.acse.diagnostic", FT_STR, "Result source diagnostic name")
field("cosem.reason", FT_UINT, "Release request/response reason")
field("dlms.acse.reason", FT_STR, "Release reason name")
field("dlms.acse.authentication", FT_BOOL, "ACSE authentication functional unit selected")


def decode_oid(raw: bytes) -> tuple[int, ...]:
    arcs: list[int] = []
    v = 0
    first = True
    for b in raw:
        v = (v << 7) | (b & 0x7F)
        if b & 0x80:
            if v > 1 << 64:
                break
            continue
        if first:
            if v < 80:
                arcs.extend((v // 40, v % 40))
            else:
                arcs.extend((2, v - 80))
            first = False
        else:
            arcs.append(v)
        v = 0
    return tuple(arcs)


def oid_str(arcs: tuple[int, ...]) -> str:
    return ".".join(str(a) for a in arcs)


def _tlv(buf: bytes, off: int, end: int) -> tuple[int, int, int]:
    """-> (tag, content offset, content end).  Only single-byte tags occur in DLMS ACSE."""
    need(end, off, 2, "ACSE element")
    tag = buf[off]
    n, p = read_length(buf, off + 1, end)
    if n > end - p:
        raise Truncated(p, n, end - p, f"ACSE element 0x{tag:02x}")
    return tag, p, p + n


def _inner(buf, p, e, want: int | tuple, what: str) -> tuple[int, int]:
    """An explicitly tagged element's inner TLV with the expected universal tag(s)."""
    tag, cp, ce = _tlv(buf, p, e)
    ok = tag in want if isinstance(want, tuple) else tag == want
    if not ok:
        raise Truncated(p, 0, e - p, f"{what}: unexpected inner tag 0x{tag:02x}")
    return cp, ce


def _int(buf, p, e) -> int:
    return int.from_bytes(buf[p:e], "big", signed=True) if e > p else 0


def _bits(buf, p, e) -> int:
    """BER BIT STRING -> integer with bit 0 = MSB of the first content byte."""
    if e - p < 1:
        return 0
    unused = buf[p]
    raw = buf[p + 1:e]
    nbits = len(raw) * 8 - (unused & 7)
    v = int.from_bytes(raw, "big") >> (unused & 7) if raw else 0
    # reverse to "bit n" numbering
    out = 0
    for i in range(nbits):
        if v >> (nbits - 1 - i) & 1:
            out |= 1 << i
    return out


def _oid_fields(d, node, arcs, field_oid, kind: str, off, length):
    s = oid_str(arcs)
    known = arcs[:5] == DLMS_OID_PREFIX and len(arcs) == 7
    if kind == "context":
        cid = arcs[6] if known and arcs[5] == 1 else None
        name = APP_CONTEXTS.get(cid) if cid is not None else None
        if node is not None:
            d.add(node, field_oid, s, off, length,
                  f"{'application-context-name' if field_oid.endswith('application_context_name') else 'aSO-context-name'}: {s}"
                  + (f" ({APP_CONTEXT_TEXT[cid]})" if name else " (not a DLMS context)"))
        else:
            d.add(None, field_oid, s, off, length)
        if name:
            d.add(node, "dlms.acse.context_id", cid, off, length)
            d.add(None, "dlms.acse.context", name, off, length)
        return name
    mid = arcs[6] if known and arcs[5] == 2 else None
    name = MECHANISMS.get(mid) if mid is not None else None
    d.add(node, field_oid, s, off, length,
          f"mechanism-name: {s}" + (f" ({MECHANISM_TEXT[mid]})" if name else " (unknown mechanism)")
          if node is not None else None)
    if name:
        d.add(node, "dlms.acse.mechanism_id", mid, off, length)
        d.add(None, "dlms.acse.mechanism", name, off, length)
    return name


def dissect_acse(buf: bytes, off: int, end: int, d, node, inner) -> str:
    """Dissect an ACSE APDU (tag at off).  `inner(buf, off, end, d, node)` dissects the
    user-information xDLMS APDU and returns its summary.  Returns the Info summary."""
    tag = buf[off]
    kind = ACSE_NAMES[tag]
    n, p = read_length(buf, off + 1, end)
    if n > end - p:
        d.malformed("dlms", p, f"{kind} length {n} exceeds the {end - p} bytes left", node)
        n = end - p
    e = p + n
    if e < end:
        # some stacks (the Gurux server's RLRE) declare ACSE lengths shorter than what they
        # send; elements are decoded up to the transport's end and the anomaly is reported
        d.note("warn", "malformed", "dlms", off + 1,
               f"{kind} declares {n} bytes but {end - p} follow; decoding to the end of the PDU", node)
    acse = {"apdu": kind}
    d.ctx["dlms.acse"] = acse
    summary = [kind]
    user_summary = ""
    req = tag == 0x60
    while p < e:
        t, cp, ce = _tlv(buf, p, end)
        elen = ce - p
        try:
            if tag in (0x62, 0x63):
                if t == 0x80:
                    r = _int(buf, cp, ce)
                    names = RLRQ_REASONS if tag == 0x62 else RLRE_REASONS
                    d.add(node, "cosem.reason", r, p, elen,
                          f"reason: {names.get(r, 'unknown')} ({r})" if node is not None else None)
                    d.add(None, "dlms.acse.reason", names.get(r, str(r)), p, elen)
                    acse["reason"] = r
                    summary.append(names.get(r, str(r)))
                elif t == 0xBE:
                    user_summary, ce = _user_info(buf, cp, ce, d, node, inner, acse, p, elen, end)
                else:
                    d.note("warn", "protocol", "dlms", p, f"{kind}: unexpected element 0x{t:02x}", node)
                p = ce
                continue
            if t == 0x80:
                v = _bits(buf, cp, ce)
                d.add(node, "cosem.protocol_version", v, p, elen,
                      f"protocol-version: {v} ({'version1' if v & 1 else 'unknown'})" if node is not None else None)
            elif t == 0xA1:
                cp2, ce2 = _inner(buf, cp, ce, 0x06, "application-context-name")
                arcs = decode_oid(buf[cp2:ce2])
                name = _oid_fields(d, node, arcs, "cosem.application_context_name" if req else "cosem.aSO_context_name",
                                   "context", p, elen)
                acse["context"] = name
                acse["context_oid"] = oid_str(arcs)
                if name:
                    summary.append(name)
            elif req and t in (0xA2, 0xA6):
                cp2, ce2 = _inner(buf, cp, ce, (0x04, 0x06, 0x13, 0x30), "AP-title")
                title = bytes(buf[cp2:ce2])
                f = "cosem.calling_AP_title" if t == 0xA6 else "cosem.called_AP_title"
                d.add(node, f, title, p, elen,
                      f"{'calling' if t == 0xA6 else 'called'}-AP-title: {title.hex()}{_title_text(title)}"
                      if node is not None else None)
                acse["calling_ap_title" if t == 0xA6 else "called_ap_title"] = title
            elif req and t in (0xA3, 0xA7):
                cp2, ce2 = _inner(buf, cp, ce, (0x04, 0x02, 0x13, 0x31), "AE-qualifier")
                q = bytes(buf[cp2:ce2])
                f = "cosem.calling_AE_qualifier" if t == 0xA7 else "cosem.called_AE_qualifier"
                d.add(node, f, q, p, elen,
                      f"{'calling' if t == 0xA7 else 'called'}-AE-qualifier ({len(q)} bytes): {q[:32].hex()}{'…' if len(q) > 32 else ''}"
                      if node is not None else None)
                acse["calling_ae_qualifier" if t == 0xA7 else "called_ae_qualifier"] = q
            elif req and t in (0xA4, 0xA5, 0xA8, 0xA9):
                cp2, ce2 = _inner(buf, cp, ce, 0x02, "invocation-identifier")
                v = _int(buf, cp2, ce2)
                f = {0xA4: "cosem.called_AP_invocation_identifier", 0xA5: "cosem.called_AE_invocation_identifier",
                     0xA8: "cosem.calling_AP_invocation_identifier", 0xA9: "cosem.calling_AE_invocation_identifier"}[t]
                d.add(node, f, v, p, elen)
            elif not req and t == 0xA2:
                cp2, ce2 = _inner(buf, cp, ce, 0x02, "result")
                r = _int(buf, cp2, ce2)
                d.add(node, "cosem.result", r, p, elen)
                d.add(None, "dlms.acse.result", RESULTS.get(r, str(r)), p, elen)
                acse["result"] = r
                summary.append(RESULTS.get(r, f"result {r}"))
            elif not req and t == 0xA3:
                st, sp, se = _tlv(buf, cp, ce)
                cp2, ce2 = _inner(buf, sp, se, 0x02, "result-source-diagnostic")
                v = _int(buf, cp2, ce2)
                if st == 0xA1:
                    d.add(node, "cosem.acse_service_user", v, p, elen)
                    dn = SERVICE_USER_DIAG.get(v, str(v))
                else:
                    d.add(node, "cosem.acse_service_provider", v, p, elen)
                    dn = SERVICE_PROVIDER_DIAG.get(v, str(v))
                d.add(None, "dlms.acse.diagnostic", dn, p, elen)
                acse["diagnostic"] = v
                acse["diagnostic_source"] = "acse-service-user" if st == 0xA1 else "acse-service-provider"
                if v:
                    summary.append(f"({dn})")
            elif not req and t == 0xA4:
                cp2, ce2 = _inner(buf, cp, ce, (0x04, 0x06, 0x13, 0x30), "responding-AP-title")
                title = bytes(buf[cp2:ce2])
                d.add(node, "cosem.responding_AP_title", title, p, elen,
                      f"responding-AP-title: {title.hex()}{_title_text(title)}" if node is not None else None)
                acse["responding_ap_title"] = title
            elif not req and t == 0xA5:
                cp2, ce2 = _inner(buf, cp, ce, (0x04, 0x02, 0x13, 0x31), "responding-AE-qualifier")
                q = bytes(buf[cp2:ce2])
                d.add(node, "cosem.responding_AE_qualifier", q, p, elen)
                acse["responding_ae_qualifier"] = q
            elif not req and t in (0xA6, 0xA7):
                cp2, ce2 = _inner(buf, cp, ce, 0x02, "invocation-identifier")
                v = _int(buf, cp2, ce2)
                d.add(node, "cosem.responding_AP_invocation_identifier" if t == 0xA6
                      else "cosem.responding_AE_invocation_identifier", v, p, elen)
            elif (req and t == 0x8A) or (not req and t == 0x88):
                v = _bits(buf, cp, ce)
                d.add(node, "cosem.sender_acse_requirements" if req else "cosem.responder_acse_requirements", v, p, elen,
                      f"{'sender' if req else 'responder'}-acse-requirements: {v}"
                      f"{' (authentication)' if v & 1 else ''}" if node is not None else None)
                d.add(None, "dlms.acse.authentication", bool(v & 1), p, elen)
            elif (req and t == 0x8B) or (not req and t == 0x89):
                arcs = decode_oid(buf[cp:ce])
                name = _oid_fields(d, node, arcs, "cosem.mechanism_name", "mechanism", p, elen)
                acse["mechanism"] = arcs[6] if name else None
                acse["mechanism_oid"] = oid_str(arcs)
                if name and req:
                    summary.append(name)
            elif (req and t == 0xAC) or (not req and t == 0xAA):
                it, ip, ie = _tlv(buf, cp, ce)
                raw = bytes(buf[ip:ie])
                if it == 0x81 and raw:        # bitstring: drop the unused-bits byte
                    raw = raw[1:]
                f = "cosem.calling_authentication_value" if req else "cosem.responding_authentication_value"
                kind_av = {0x80: "charstring", 0x81: "bitstring", 0xA2: "external", 0xA3: "other"}.get(it, f"0x{it:02x}")
                d.add(node, f, raw, p, elen,
                      f"{'calling' if req else 'responding'}-authentication-value ({kind_av}, {len(raw)} bytes): {raw.hex()}"
                      + (f" '{_printable(raw)}'" if _printable(raw) else "") if node is not None else None)
                if req:
                    acse["calling_authentication_value"] = raw
                else:
                    acse["stoc"] = raw
                    d.add(None, "dlms.acse.stoc", raw, ip, ie - ip)
            elif t == 0xBD:
                it, ip, ie = _tlv(buf, cp, ce)
                s = bytes(buf[ip:ie]).decode("latin-1")
                d.add(node, "cosem.implementation_information", s, p, elen)
            elif t == 0xBE:
                user_summary, ce = _user_info(buf, cp, ce, d, node, inner, acse, p, elen, end)
            else:
                d.note("warn", "protocol", "dlms", p, f"{kind}: unknown element 0x{t:02x} ({ce - cp} bytes)", node)
        except Truncated as exc:
            d.malformed("dlms", exc.offset, f"{kind} element 0x{t:02x}: {exc}", node)
        p = ce
    # LLS password vs HLS challenge depends on the mechanism, known once all elements are read
    av = acse.get("calling_authentication_value")
    if av is not None:
        if acse.get("mechanism") == 1:
            pw = av.decode("latin-1")
            d.add(None, "dlms.acse.password", pw, off, 0)
            acse["password"] = pw
            summary.append(f"password '{pw}'" if _printable(av) or not av else f"password {av.hex()}")
        else:
            d.add(None, "dlms.acse.ctos", av, off, 0)
            acse["ctos"] = av
    if user_summary:
        summary.append(f"[{user_summary}]")
    return " ".join(summary)


def _user_info(buf, cp, ce, d, node, inner, acse, p, elen, end) -> tuple[str, int]:
    it, ip, ie = _tlv(buf, cp, end)
    if it != 0x04:
        d.malformed("dlms", cp, f"user-information: expected OCTET STRING, got 0x{it:02x}", node)
        return "", ce
    if ie > ce:
        d.note("warn", "malformed", "dlms", p,
               f"user-information declares {ce - cp} bytes but its octet string needs {ie - cp}", node)
    un = d.label(node, f"user-information ({ie - ip} bytes)", p, elen) if node is not None else None
    before = len(d.ctx.get("dlms.ciphered", ()))
    s = inner(buf, ip, ie, d, un)
    # a ciphered initiate inside AARQ/AARE is protected with this APDU's AP title
    title = acse.get("calling_ap_title") if acse["apdu"] in ("aarq", "rlrq") else acse.get("responding_ap_title")
    for desc in d.ctx.get("dlms.ciphered", ())[before:]:
        if desc.get("system_title") is None and title is not None:
            desc["system_title"] = title
        desc["in_acse"] = acse["apdu"]
    acse["user_information"] = s
    return s, max(ce, ie)


def _printable(b: bytes) -> str:
    try:
        s = b.decode("ascii")
    except UnicodeDecodeError:
        return ""
    return s if s and s.isprintable() else ""


def _title_text(t: bytes) -> str:
    s = _printable(t[:3])
    return f" (manufacturer '{s}')" if len(t) == 8 and len(s) == 3 and s.isalpha() else ""
