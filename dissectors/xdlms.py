"""xDLMS APDUs (IEC 62056-5-3 / Green Book): every tag of the APDU table, LN and SN
services with all choice variants, notifications, access, exception and confirmed-service
errors, general-block-transfer, and the protected containers (glo-*, ded-*,
general-glo/ded-ciphering, general-ciphering, general-signing) parsed structurally for the
decryption stage.

Hand-offs produced for the stateful stages (see CONTRACT.md):
- `ctx["dlms.ops"]`: decoded operations (service, dir, invoke_id, class_id, obis,
  attribute_id, method_id, value, result);
- `ctx["dlms.ciphered"]`: descriptors of protected APDUs (offset/length of SC..end);
- `ctx["dlms.blocks"]`: data blocks (GET/SET/ACTION datablocks, SN block transfer, GBT)
  for `analyzer/reassembly.py`.

A-XDR is a variable-length, recursive encoding, so the parser is hand-written on
`struct.unpack_from` with every length checked (`need`/`Truncated`) before use.  The fast
pass (parent None) records the same flat fields but builds no display text.
"""
from __future__ import annotations

import struct

from . import acse as _acse
from .axdr import (TYPE_NAMES, datetime_iso, dissect_data, encode, encode_length, looks_like_datetime,
                   read_length)
from .core import (FT_BOOL, FT_BYTES, FT_STR, FT_UINT, Truncated, field, need, table)
from .cosem_names import attribute_name, class_name, method_name, obis_name

_u16 = struct.Struct(">H").unpack_from
_u32 = struct.Struct(">I").unpack_from

# --------------------------------------------------------------------------- names

APDU_NAMES = {
    0x01: "initiate-request", 0x05: "read-request", 0x06: "write-request",
    0x08: "initiate-response", 0x0C: "read-response", 0x0D: "write-response",
    0x0E: "confirmed-service-error", 0x0F: "data-notification",
    0x16: "unconfirmed-write-request", 0x18: "information-report-request",
    0x19: "ping-request", 0x1A: "register-request", 0x1C: "discover-request",
    0x1D: "discover-report", 0x1E: "ping-response",
    0x60: "aarq", 0x61: "aare", 0x62: "rlrq", 0x63: "rlre",
    0xC0: "get-request", 0xC1: "set-request", 0xC2: "event-notification-request",
    0xC3: "action-request", 0xC4: "get-response", 0xC5: "set-response", 0xC7: "action-response",
    0xD8: "exception-response", 0xD9: "access-request", 0xDA: "access-response",
    0xDB: "general-glo-ciphering", 0xDC: "general-ded-ciphering", 0xDD: "general-ciphering",
    0xDF: "general-signing", 0xE0: "general-block-transfer",
    0xE6: "gateway-request", 0xE7: "gateway-response",
}
# glo = plain + 0x20 / ded = plain + 0x40 for initiate/SN/CSE; + 0x08 / + 0x10 for LN
_GLO_DED: dict[int, tuple[str, int]] = {}
for _plain in (0x01, 0x05, 0x06, 0x08, 0x0C, 0x0D, 0x0E, 0x16, 0x18):
    _GLO_DED[_plain + 0x20] = ("glo", _plain)
    _GLO_DED[_plain + 0x40] = ("ded", _plain)
for _plain in (0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC7):
    _GLO_DED[_plain + 0x08] = ("glo", _plain)
    _GLO_DED[_plain + 0x10] = ("ded", _plain)
for _t, (_k, _p) in _GLO_DED.items():
    APDU_NAMES[_t] = f"{_k}-{APDU_NAMES[_p]}"

GET_REQ = {1: "normal", 2: "next", 3: "with-list"}
GET_RESP = {1: "normal", 2: "with-datablock", 3: "with-list"}
SET_REQ = {1: "normal", 2: "with-first-datablock", 3: "with-datablock", 4: "with-list",
           5: "with-list-and-first-datablock"}
SET_RESP = {1: "normal", 2: "datablock", 3: "last-datablock", 4: "last-datablock-with-list",
            5: "with-list"}
ACTION_REQ = {1: "normal", 2: "next-pblock", 3: "with-list", 4: "with-first-pblock",
              5: "with-list-and-first-pblock", 6: "with-pblock"}
ACTION_RESP = {1: "normal", 2: "with-pblock", 3: "with-list", 4: "next-pblock"}

DATA_ACCESS_RESULT = {0: "success", 1: "hardware-fault", 2: "temporary-failure",
                      3: "read-write-denied", 4: "object-undefined", 9: "object-class-inconsistent",
                      11: "object-unavailable", 12: "type-unmatched", 13: "scope-of-access-violated",
                      14: "data-block-unavailable", 15: "long-get-aborted", 16: "no-long-get-in-progress",
                      17: "long-set-aborted", 18: "no-long-set-in-progress",
                      19: "data-block-number-invalid", 250: "other-reason"}
ACTION_RESULT = {0: "success", 1: "hardware-fault", 2: "temporary-failure", 3: "read-write-denied",
                 4: "object-undefined", 9: "object-class-inconsistent", 11: "object-unavailable",
                 12: "type-unmatched", 13: "scope-of-access-violated", 14: "data-block-unavailable",
                 15: "long-action-aborted", 16: "no-long-action-in-progress", 250: "other-reason"}
STATE_ERROR = {1: "service-not-allowed", 2: "service-unknown"}
SERVICE_ERROR = {1: "operation-not-possible", 2: "service-not-supported", 3: "other-reason",
                 4: "pdu-too-long", 5: "deciphering-error", 6: "invocation-counter-error"}
CSE_SERVICE = {1: "initiateError", 2: "getStatus", 3: "getNameList", 4: "getVariableAttribute",
               5: "read", 6: "write", 7: "getDataSetAttribute", 8: "getTIAttribute",
               9: "changeScope", 10: "start", 11: "stop", 12: "resume", 13: "makeUsable",
               14: "initiateLoad", 15: "loadSegment", 16: "terminateLoad", 17: "initiateUpLoad",
               18: "upLoadSegment", 19: "terminateUpLoad"}
SERVICE_ERROR_CHOICE = {0: "application-reference", 1: "hardware-resource", 2: "vde-state-error",
                        3: "service", 4: "definition", 5: "access", 6: "initiate",
                        7: "load-data-set", 8: "change-scope", 9: "task", 10: "other"}
SERVICE_ERROR_ENUMS = {
    0: {0: "other", 1: "time-elapsed", 2: "application-unreachable", 3: "application-reference-invalid",
        4: "application-context-unsupported", 5: "provider-communication-error", 6: "deciphering-error"},
    1: {0: "other", 1: "memory-unavailable", 2: "processor-resource-unavailable",
        3: "mass-storage-unavailable", 4: "other-resource-unavailable"},
    2: {0: "other", 1: "no-dlms-context", 2: "loading-data-set", 3: "status-nochange", 4: "status-inoperable"},
    3: {0: "other", 1: "pdu-size", 2: "service-unsupported"},
    4: {0: "other", 1: "object-undefined", 2: "object-class-inconsistent", 3: "object-attribute-inconsistent"},
    5: {0: "other", 1: "scope-of-access-violated", 2: "object-access-violated", 3: "hardware-fault",
        4: "object-unavailable"},
    6: {0: "other", 1: "dlms-version-too-low", 2: "incompatible-conformance", 3: "pdu-size-too-short",
        4: "refused-by-the-VDE-Handler"},
    7: {0: "other", 1: "primitive-out-of-sequence", 2: "not-loadable", 3: "dataset-size-too-large",
        4: "not-awaited-segment", 5: "interpretation-failure", 6: "storage-failure",
        7: "data-set-not-ready"},
    9: {0: "other", 1: "no-remote-control", 2: "ti-stopped", 3: "ti-running", 4: "ti-unusable"},
}
CONFORMANCE_BITS = {
    0: "reserved-zero", 1: "general-protection", 2: "general-block-transfer", 3: "read", 4: "write",
    5: "unconfirmed-write", 6: "delta-value-encoding", 7: "reserved-seven",
    8: "attribute0-supported-with-set", 9: "priority-mgmt-supported",
    10: "attribute0-supported-with-get", 11: "block-transfer-with-get-or-read",
    12: "block-transfer-with-set-or-write", 13: "block-transfer-with-action",
    14: "multiple-references", 15: "information-report", 16: "data-notification", 17: "access",
    18: "parameterized-access", 19: "get", 20: "set", 21: "selective-access",
    22: "event-notification", 23: "action",
}
ACCESS_SPEC = {1: "get", 2: "set", 3: "action", 4: "get-with-selection", 5: "set-with-selection"}
VAS_NAMES = {2: "variable-name", 3: "detailed-access", 4: "parameterized-access",
             5: "block-number-access", 6: "read-data-block-access", 7: "write-data-block-access"}
KEY_INFO = {0: "identified-key", 1: "wrapped-key", 2: "agreed-key"}

# --------------------------------------------------------------------------- fields

field("dlms.apdu", FT_STR, "APDU (e.g. get-request, aarq, glo-get-response)")
field("dlms.apdu_tag", FT_UINT, "APDU tag", base="hex")
for _svc, _names in (("get_request", GET_REQ), ("get_response", GET_RESP), ("set_request", SET_REQ),
                     ("set_response", SET_RESP), ("action_request", ACTION_REQ),
                     ("action_response", ACTION_RESP)):
    field(f"dlms.{_svc}", FT_UINT, f"{_svc.replace('_', ' ').title()} choice", _names)
    field(f"dlms.{_svc}_type", FT_STR, f"{_svc.replace('_', ' ').title()} choice name")
field("dlms.invoke_id", FT_UINT, "Invoke id")
field("dlms.service_class", FT_UINT, "Service class", {0: "unconfirmed", 1: "confirmed"})
field("dlms.priority", FT_UINT, "Priority", {0: "normal", 1: "high"})
field("dlms.long_invoke_id", FT_UINT, "Long invoke id (24 bits)")
field("dlms.long_invoke_id_and_priority", FT_UINT, "Long-Invoke-Id-And-Priority", base="hex")
field("dlms.self_descriptive", FT_BOOL, "Self-descriptive")
field("dlms.processing_option", FT_BOOL, "Processing option (break on error)")
field("dlms.class_id", FT_UINT, "COSEM interface class id")
field("dlms.class_name", FT_STR, "COSEM interface class name")
field("dlms.obis", FT_STR, "COSEM logical name (OBIS a.b.c.d.e.f)")
field("dlms.obis_name", FT_STR, "OBIS code name")
field("dlms.attribute_id", FT_UINT, "Attribute id")
field("dlms.attribute_name", FT_STR, "Attribute name")
field("dlms.method_id", FT_UINT, "Method id")
field("dlms.method_name", FT_STR, "Method name")
field("dlms.access_selector", FT_UINT, "Selective access selector")
field("dlms.data_access_result", FT_UINT, "Data access result", DATA_ACCESS_RESULT)
field("dlms.action_result", FT_UINT, "Action result", ACTION_RESULT)
field("dlms.result", FT_STR, "Result name (success, read-write-denied, ...)")
field("dlms.block_number", FT_UINT, "Block number")
field("dlms.last_block", FT_BOOL, "Last block")
field("dlms.raw_data", FT_BYTES, "Raw data of a data block")
field("dlms.list_count", FT_UINT, "Number of items in a with-list request/response")
field("dlms.state_error", FT_UINT, "State error", STATE_ERROR)
field("dlms.service_error", FT_UINT, "Service error", SERVICE_ERROR)
field("dlms.expected_ic", FT_UINT, "Expected invocation counter (exception-response)")
field("dlms.cse.service", FT_UINT, "Confirmed service error: service", CSE_SERVICE)
field("dlms.cse.error_type", FT_UINT, "Confirmed service error: ServiceError choice", SERVICE_ERROR_CHOICE)
field("dlms.cse.error", FT_UINT, "Confirmed service error: value")
field("dlms.cse.error_name", FT_STR, "Confirmed service error name")
field("dlms.dedicated_key_present", FT_BOOL, "InitiateRequest carries a dedicated key (the key itself is never a field)")
field("dlms.response_allowed", FT_BOOL, "Response allowed")
field("dlms.quality_of_service", FT_UINT, "Proposed/negotiated quality of service")
field("dlms.dlms_version", FT_UINT, "DLMS version number")
field("dlms.conformance", FT_UINT, "Conformance block (24 bits, bit 0 = MSB)", base="hex")
field("dlms.conformance_name", FT_STR, "Conformance bits set (names)")
for _b, _n in CONFORMANCE_BITS.items():
    field(f"dlms.conformance.{_n.replace('-', '_')}", FT_BOOL, f"Conformance: {_n}")
field("dlms.client_max_receive_pdu_size", FT_UINT, "Client max receive PDU size")
field("dlms.server_max_receive_pdu_size", FT_UINT, "Server max receive PDU size")
field("dlms.vaa_name", FT_UINT, "VAA name (0x0007 LN, 0xFA00 SN)", base="hex")
field("dlms.date_time", FT_BYTES, "Date-time octet string of a notification/access APDU")
field("dlms.access.spec", FT_STR, "Access request specification (get, set, action, ...)")
field("dlms.sn.variable_name", FT_UINT, "SN variable name (short name)", base="hex")
field("dlms.sn.access", FT_STR, "SN variable access specification choice")
field("dlms.sn.result", FT_STR, "SN read/write result choice")
# security
field("dlms.sec.sc", FT_UINT, "Security control byte", base="hex")
field("dlms.sec.suite", FT_UINT, "Security suite id")
field("dlms.sec.auth", FT_BOOL, "Authentication (A) bit")
field("dlms.sec.enc", FT_BOOL, "Encryption (E) bit")
field("dlms.sec.broadcast", FT_BOOL, "Key set (broadcast) bit")
field("dlms.sec.compressed", FT_BOOL, "Compression bit")
field("dlms.sec.ic", FT_UINT, "Invocation counter")
field("dlms.sec.system_title", FT_BYTES, "System title")
field("dlms.sec.ciphertext_len", FT_UINT, "Length of the ciphered information")
field("dlms.sec.tag", FT_BYTES, "Authentication tag (12 bytes)")
field("dlms.sec.transaction_id", FT_BYTES, "General-ciphering/signing transaction id")
field("dlms.sec.originator", FT_BYTES, "Originator system title")
field("dlms.sec.recipient", FT_BYTES, "Recipient system title")
field("dlms.sec.other_info", FT_BYTES, "Other information")
field("dlms.sec.key_info", FT_STR, "Key info choice (identified-key, wrapped-key, agreed-key)")
field("dlms.sec.key_id", FT_UINT, "Key id (0 global unicast, 1 global broadcast)")
field("dlms.sec.kek_id", FT_UINT, "KEK id (0 master key)")
field("dlms.sec.key_parameters", FT_UINT, "Agreed-key parameters (1 one-pass DH, 2 static unified)")
field("dlms.sec.key_ciphered_data", FT_BYTES, "Key ciphered data")
field("dlms.sec.signature", FT_BYTES, "Signature (r||s)")
# general-block-transfer
field("dlms.gbt.last_block", FT_BOOL, "GBT last block")
field("dlms.gbt.streaming", FT_BOOL, "GBT streaming")
field("dlms.gbt.window", FT_UINT, "GBT window size")
field("dlms.gbt.block_number", FT_UINT, "GBT block number")
field("dlms.gbt.block_number_ack", FT_UINT, "GBT block number acknowledged")
field("dlms.gbt.block_data_len", FT_UINT, "GBT block data length")

# --------------------------------------------------------------------------- helpers


class _P:
    """Per-APDU parse state (keeps the hot functions' argument lists short)."""
    __slots__ = ("buf", "end", "d", "ctx", "svc", "dir", "iid")

    def __init__(self, buf, end, d):
        self.buf = buf
        self.end = end
        self.d = d
        self.ctx = d.ctx
        self.svc = ""
        self.dir = ""
        self.iid = None


def _op(s: _P, **kw) -> dict:
    op = {"service": s.svc, "dir": s.dir, "invoke_id": s.iid, "class_id": None, "obis": None,
          "attribute_id": None, "method_id": None, "value": None, "result": None}
    op.update(kw)
    ops = s.ctx.get("dlms.ops")
    if ops is None:
        s.ctx["dlms.ops"] = [op]
    else:
        ops.append(op)
    return op


def _u8(s: _P, p: int, what: str) -> int:
    if p >= s.end:
        raise Truncated(p, 1, 0, what)
    return s.buf[p]


def _iip(s: _P, p: int, node) -> int:
    b = _u8(s, p, "invoke-id-and-priority")
    d = s.d
    iid = b & 0x0F
    s.iid = iid
    if node is not None:
        n = d.label(node, f"Invoke-Id-And-Priority: 0x{b:02x}", p, 1)
        d.add(n, "dlms.invoke_id", iid, p, 1)
        d.add(n, "dlms.service_class", b >> 6 & 1, p, 1)
        d.add(n, "dlms.priority", b >> 7, p, 1)
    else:
        add = d.add
        add(None, "dlms.invoke_id", iid, p, 1)
        add(None, "dlms.service_class", b >> 6 & 1, p, 1)
        add(None, "dlms.priority", b >> 7, p, 1)
    return p + 1


def _long_iip(s: _P, p: int, node) -> int:
    need(s.end, p, 4, "long-invoke-id-and-priority")
    v = _u32(s.buf, p)[0]
    d = s.d
    s.iid = v & 0xFFFFFF
    n = d.add(node, "dlms.long_invoke_id_and_priority", v, p, 4,
              f"Long-Invoke-Id-And-Priority: 0x{v:08x}" if node is not None else None)
    d.add(n, "dlms.long_invoke_id", v & 0xFFFFFF, p, 4)
    d.add(n, "dlms.self_descriptive", bool(v >> 28 & 1), p, 4)
    d.add(n, "dlms.processing_option", bool(v >> 29 & 1), p, 4)
    d.add(n, "dlms.service_class", v >> 30 & 1, p, 4)
    d.add(n, "dlms.priority", v >> 31 & 1, p, 4)
    return p + 4


def _descriptor(s: _P, p: int, node, method: bool, op: dict | None) -> tuple[int, str]:
    """Cosem attribute/method descriptor: class u16 | OBIS 6 | id i8.  Returns (offset, info)."""
    need(s.end, p, 9, "COSEM descriptor")
    b = s.buf
    cid = _u16(b, p)[0]
    obis = f"{b[p + 2]}.{b[p + 3]}.{b[p + 4]}.{b[p + 5]}.{b[p + 6]}.{b[p + 7]}"
    mid = b[p + 8]
    d = s.d
    cname = class_name(cid)
    oname = obis_name(obis)
    aname = method_name(cid, mid) if method else attribute_name(cid, mid)
    if node is not None:
        n = d.label(node, f"COSEM {'Method' if method else 'Attribute'} Descriptor: "
                          f"{cname or 'class ' + str(cid)} {obis}{' (' + oname + ')' if oname else ''} "
                          f"{'method' if method else 'attr'} {mid}{' ' + aname if aname else ''}", p, 9)
        d.add(n, "dlms.class_id", cid, p, 2, f"Class id: {cname or 'unknown'} ({cid})")
        d.add(n, "dlms.obis", obis, p + 2, 6, f"Instance id (OBIS): {obis}{' — ' + oname if oname else ''}")
        d.add(n, "dlms.method_id" if method else "dlms.attribute_id", mid, p + 8, 1,
              f"{'Method' if method else 'Attribute'} id: {aname or 'unknown'} ({mid})")
    else:
        add = d.add
        add(None, "dlms.class_id", cid, p, 2)
        add(None, "dlms.obis", obis, p + 2, 6)
        add(None, "dlms.method_id" if method else "dlms.attribute_id", mid, p + 8, 1)
    if cname:
        d.add(None, "dlms.class_name", cname, p, 2)
    if oname:
        d.add(None, "dlms.obis_name", oname, p + 2, 6)
    if aname:
        d.add(None, "dlms.method_name" if method else "dlms.attribute_name", aname, p + 8, 1)
    if op is not None:
        op["class_id"] = cid
        op["obis"] = obis
        op["method_id" if method else "attribute_id"] = mid
    info = f"{obis} {oname or cname or 'class ' + str(cid)} {'method' if method else 'attr'} {mid}"
    return p + 9, info


def _selection(s: _P, p: int, node, op: dict | None) -> int:
    """access-selection OPTIONAL: 00, or 01 selector u8 Data."""
    flag = _u8(s, p, "access-selection")
    if flag == 0:
        return p + 1
    sel = _u8(s, p + 1, "access-selector")
    d = s.d
    n = d.add(node, "dlms.access_selector", sel, p + 1, 1,
              f"Selective access: selector {sel} ({ {1: 'range', 2: 'entry'}.get(sel, 'other') })"
              if node is not None else None)
    q, v = dissect_data(s.buf, p + 2, s.end, d, n, 0, "access-parameters")
    if op is not None:
        op["selector"] = sel
        op["access_parameters"] = v
    if n is not None:
        n.length = q - p - 1
    return q


def _data(s: _P, p: int, node, label: str | None = None):
    return dissect_data(s.buf, p, s.end, s.d, node, 0, label)


def _gdr(s: _P, p: int, node, op: dict) -> tuple[int, str]:
    """Get-Data-Result: 00 Data | 01 data-access-result."""
    c = _u8(s, p, "Get-Data-Result")
    d = s.d
    if c == 0:
        q, v = _data(s, p + 1, node, "data")
        op["value"] = v
        op["result"] = "success"
        return q, "data"
    if c == 1:
        r = _u8(s, p + 1, "data-access-result")
        d.add(node, "dlms.data_access_result", r, p + 1, 1)
        name = DATA_ACCESS_RESULT.get(r, f"unknown-{r}")
        d.add(None, "dlms.result", name, p + 1, 1)
        op["result"] = name
        return p + 2, name
    raise Truncated(p, 0, s.end - p, f"Get-Data-Result choice {c}")


def _dar(s: _P, p: int, node) -> tuple[int, str]:
    r = _u8(s, p, "data-access-result")
    s.d.add(node, "dlms.data_access_result", r, p, 1)
    name = DATA_ACCESS_RESULT.get(r, f"unknown-{r}")
    s.d.add(None, "dlms.result", name, p, 1)
    return p + 1, name


def _count(s: _P, p: int, what: str, node=None) -> tuple[int, int]:
    n, q = read_length(s.buf, p, s.end)
    if n > s.end - q:
        raise Truncated(q, n, s.end - q, f"{what} count {n}")
    s.d.add(node, "dlms.list_count", n, p, q - p, f"{what}: {n} item(s)" if node is not None else None)
    return q, n


def _octets(s: _P, p: int, what: str) -> tuple[int, int, int]:
    """A-XDR octet string -> (content offset, content end, next offset)."""
    n, q = read_length(s.buf, p, s.end)
    if n > s.end - q:
        raise Truncated(q, n, s.end - q, what)
    return q, q + n, q + n


def _block(s: _P, service: str, p: int, node, bn: int, last: bool, raw_off: int, raw_end: int,
           first: dict | None = None, kind: str = "data") -> None:
    """Record a data block for the reassembly stage."""
    entry = {"service": service, "dir": s.dir, "invoke_id": s.iid, "block_number": bn,
             "last": last, "data": bytes(s.buf[raw_off:raw_end]), "offset": raw_off,
             "length": raw_end - raw_off, "source": s.d.source, "kind": kind}
    if first is not None:
        entry["first"] = first
    blocks = s.ctx.get("dlms.blocks")
    if blocks is None:
        s.ctx["dlms.blocks"] = [entry]
    else:
        blocks.append(entry)


def _datablock_sa(s: _P, p: int, node, service: str, first: dict | None) -> tuple[int, str]:
    """DataBlock-SA: last-block bool | block-number u32 | raw-data octet-string."""
    need(s.end, p, 5, "DataBlock-SA")
    b = s.buf
    last = b[p] != 0
    bn = _u32(b, p + 1)[0]
    d = s.d
    d.add(node, "dlms.last_block", last, p, 1)
    d.add(node, "dlms.block_number", bn, p + 1, 4)
    cs, ce, q = _octets(s, p + 5, "raw-data")
    d.add(node, "dlms.raw_data", bytes(b[cs:ce]), cs, ce - cs,
          f"raw-data ({ce - cs} bytes)" if node is not None else None)
    _block(s, service, p, node, bn, last, cs, ce, first)
    return q, f"block {bn}{' (last)' if last else ''}"


# --------------------------------------------------------------------------- LN services

def _get_request(s: _P, p: int, node) -> str:
    c = _u8(s, p, "get-request choice")
    name = GET_REQ.get(c)
    if name is None:
        raise Truncated(p, 0, s.end - p, f"unknown get-request choice {c}")
    s.svc, s.dir = "get", "request"
    _choice(s, "get_request", c, name, p, node)
    q = _iip(s, p + 1, node)
    if c == 1:
        op = _op(s, choice=name)
        q, info = _descriptor(s, q, node, False, op)
        q = _selection(s, q, node, op)
        return _end(s, q, node, f"get-request normal [invoke {s.iid}] {info}")
    if c == 2:
        need(s.end, q, 4, "block-number")
        bn = _u32(s.buf, q)[0]
        s.d.add(node, "dlms.block_number", bn, q, 4)
        _op(s, choice=name, block_number=bn)
        return _end(s, q + 4, node, f"get-request next [invoke {s.iid}] block {bn}")
    q, n = _count(s, q, "attribute descriptor list", node)
    infos = []
    for _ in range(n):
        op = _op(s, choice=name)
        q, info = _descriptor(s, q, node, False, op)
        q = _selection(s, q, node, op)
        infos.append(info)
    return _end(s, q, node, f"get-request with-list [invoke {s.iid}] {n} items: " + ", ".join(infos[:4])
                + (" …" if n > 4 else ""))


def _get_response(s: _P, p: int, node) -> str:
    c = _u8(s, p, "get-response choice")
    name = GET_RESP.get(c)
    if name is None:
        raise Truncated(p, 0, s.end - p, f"unknown get-response choice {c}")
    s.svc, s.dir = "get", "response"
    _choice(s, "get_response", c, name, p, node)
    q = _iip(s, p + 1, node)
    if c == 1:
        op = _op(s, choice=name)
        q, res = _gdr(s, q, node, op)
        return _end(s, q, node, f"get-response normal [invoke {s.iid}] {_value_info(op, res)}")
    if c == 2:
        need(s.end, q, 6, "DataBlock-G")
        b = s.buf
        last = b[q] != 0
        bn = _u32(b, q + 1)[0]
        d = s.d
        d.add(node, "dlms.last_block", last, q, 1)
        d.add(node, "dlms.block_number", bn, q + 1, 4)
        rc = b[q + 5]
        op = _op(s, choice=name, block_number=bn, last_block=last)
        if rc == 0:
            cs, ce, q2 = _octets(s, q + 6, "raw-data")
            d.add(node, "dlms.raw_data", bytes(b[cs:ce]), cs, ce - cs,
                  f"raw-data ({ce - cs} bytes)" if node is not None else None)
            _block(s, "get", q, node, bn, last, cs, ce)
            op["partial"] = True
            return _end(s, q2, node, f"get-response with-datablock [invoke {s.iid}] block {bn}"
                        f"{' (last)' if last else ''}, {ce - cs} bytes")
        if rc == 1:
            q2, res = _dar(s, q + 6, node)
            op["result"] = res
            _block_error(s, "get", bn, last, res)
            return _end(s, q2, node, f"get-response with-datablock [invoke {s.iid}] block {bn} {res}")
        raise Truncated(q + 5, 0, s.end - q - 5, f"DataBlock-G result choice {rc}")
    q, n = _count(s, q, "result list", node)
    for _ in range(n):
        op = _op(s, choice=name)
        q, _r = _gdr(s, q, node, op)
    return _end(s, q, node, f"get-response with-list [invoke {s.iid}] {n} results")


def _block_error(s: _P, service: str, bn: int, last: bool, res: str) -> None:
    entry = {"service": service, "dir": s.dir, "invoke_id": s.iid, "block_number": bn, "last": True,
             "data": b"", "error": res, "offset": 0, "length": 0, "source": s.d.source, "kind": "data"}
    s.ctx.setdefault("dlms.blocks", []).append(entry)


def _set_request(s: _P, p: int, node) -> str:
    c = _u8(s, p, "set-request choice")
    name = SET_REQ.get(c)
    if name is None:
        raise Truncated(p, 0, s.end - p, f"unknown set-request choice {c}")
    s.svc, s.dir = "set", "request"
    _choice(s, "set_request", c, name, p, node)
    q = _iip(s, p + 1, node)
    if c in (1, 2):
        op = _op(s, choice=name)
        q, info = _descriptor(s, q, node, False, op)
        q = _selection(s, q, node, op)
        if c == 1:
            q, v = _data(s, q, node, "value")
            op["value"] = v
            return _end(s, q, node, f"set-request normal [invoke {s.iid}] {info}")
        first = {k: op[k] for k in ("class_id", "obis", "attribute_id")}
        q, binfo = _datablock_sa(s, q, node, "set", first)
        op["partial"] = True
        return _end(s, q, node, f"set-request with-first-datablock [invoke {s.iid}] {info} {binfo}")
    if c == 3:
        op = _op(s, choice=name, partial=True)
        q, binfo = _datablock_sa(s, q, node, "set", None)
        return _end(s, q, node, f"set-request with-datablock [invoke {s.iid}] {binfo}")
    q, n = _count(s, q, "attribute descriptor list", node)
    ops = []
    for _ in range(n):
        op = _op(s, choice=name)
        q, _info = _descriptor(s, q, node, False, op)
        q = _selection(s, q, node, op)
        ops.append(op)
    if c == 4:
        q, m = _count(s, q, "value list", node)
        for i in range(m):
            q, v = _data(s, q, node, "value")
            if i < len(ops):
                ops[i]["value"] = v
        return _end(s, q, node, f"set-request with-list [invoke {s.iid}] {n} items")
    first = {"list": [{k: o[k] for k in ("class_id", "obis", "attribute_id")} for o in ops]}
    q, binfo = _datablock_sa(s, q, node, "set", first)
    return _end(s, q, node, f"set-request with-list-and-first-datablock [invoke {s.iid}] {n} items {binfo}")


def _set_response(s: _P, p: int, node) -> str:
    c = _u8(s, p, "set-response choice")
    name = SET_RESP.get(c)
    if name is None:
        raise Truncated(p, 0, s.end - p, f"unknown set-response choice {c}")
    s.svc, s.dir = "set", "response"
    _choice(s, "set_response", c, name, p, node)
    q = _iip(s, p + 1, node)
    d = s.d
    if c == 1:
        q, res = _dar(s, q, node)
        _op(s, choice=name, result=res)
        return _end(s, q, node, f"set-response normal [invoke {s.iid}] {res}")
    if c == 2:
        need(s.end, q, 4, "block-number")
        bn = _u32(s.buf, q)[0]
        d.add(node, "dlms.block_number", bn, q, 4)
        _op(s, choice=name, block_number=bn)
        return _end(s, q + 4, node, f"set-response datablock [invoke {s.iid}] block {bn}")
    if c == 3:
        q, res = _dar(s, q, node)
        need(s.end, q, 4, "block-number")
        bn = _u32(s.buf, q)[0]
        d.add(node, "dlms.block_number", bn, q, 4)
        _op(s, choice=name, result=res, block_number=bn)
        return _end(s, q + 4, node, f"set-response last-datablock [invoke {s.iid}] block {bn} {res}")
    q, n = _count(s, q, "result list", node)
    res_list = []
    for _ in range(n):
        q, res = _dar(s, q, node)
        _op(s, choice=name, result=res)
        res_list.append(res)
    if c == 4:
        need(s.end, q, 4, "block-number")
        bn = _u32(s.buf, q)[0]
        d.add(node, "dlms.block_number", bn, q, 4)
        q += 4
    return _end(s, q, node, f"set-response {name} [invoke {s.iid}] " + ", ".join(res_list[:4]))


def _action_request(s: _P, p: int, node) -> str:
    c = _u8(s, p, "action-request choice")
    name = ACTION_REQ.get(c)
    if name is None:
        raise Truncated(p, 0, s.end - p, f"unknown action-request choice {c}")
    s.svc, s.dir = "action", "request"
    _choice(s, "action_request", c, name, p, node)
    q = _iip(s, p + 1, node)
    if c == 1:
        op = _op(s, choice=name)
        q, info = _descriptor(s, q, node, True, op)
        flag = _u8(s, q, "method-invocation-parameters")
        q += 1
        if flag:
            q, v = _data(s, q, node, "parameters")
            op["value"] = v
        return _end(s, q, node, f"action-request normal [invoke {s.iid}] {info}")
    if c == 2:
        need(s.end, q, 4, "block-number")
        bn = _u32(s.buf, q)[0]
        s.d.add(node, "dlms.block_number", bn, q, 4)
        _op(s, choice=name, block_number=bn)
        return _end(s, q + 4, node, f"action-request next-pblock [invoke {s.iid}] block {bn}")
    if c == 4:
        op = _op(s, choice=name, partial=True)
        q, info = _descriptor(s, q, node, True, op)
        first = {k: op[k] for k in ("class_id", "obis", "method_id")}
        q, binfo = _datablock_sa(s, q, node, "action", first)
        return _end(s, q, node, f"action-request with-first-pblock [invoke {s.iid}] {info} {binfo}")
    if c == 6:
        _op(s, choice=name, partial=True)
        q, binfo = _datablock_sa(s, q, node, "action", None)
        return _end(s, q, node, f"action-request with-pblock [invoke {s.iid}] {binfo}")
    q, n = _count(s, q, "method descriptor list", node)
    ops = []
    for _ in range(n):
        op = _op(s, choice=name)
        q, _info = _descriptor(s, q, node, True, op)
        ops.append(op)
    if c == 3:
        q, m = _count(s, q, "parameter list", node)
        for i in range(m):
            q, v = _data(s, q, node, "parameters")
            if i < len(ops):
                ops[i]["value"] = v
        return _end(s, q, node, f"action-request with-list [invoke {s.iid}] {n} items")
    first = {"list": [{k: o[k] for k in ("class_id", "obis", "method_id")} for o in ops]}
    q, binfo = _datablock_sa(s, q, node, "action", first)
    return _end(s, q, node, f"action-request with-list-and-first-pblock [invoke {s.iid}] {n} items {binfo}")


def _action_result(s: _P, p: int, node, op: dict) -> tuple[int, str]:
    r = _u8(s, p, "action-result")
    s.d.add(node, "dlms.action_result", r, p, 1)
    name = ACTION_RESULT.get(r, f"unknown-{r}")
    s.d.add(None, "dlms.result", name, p, 1)
    op["result"] = name
    q = p + 1
    flag = _u8(s, q, "return-parameters")
    q += 1
    if flag:
        c = _u8(s, q, "Get-Data-Result")
        if c == 0:
            q, v = _data(s, q + 1, node, "return-parameters")
            op["value"] = v
        elif c == 1:
            q, r2 = _dar(s, q + 1, node)
            op["return_result"] = r2
        else:
            raise Truncated(q, 0, s.end - q, f"Get-Data-Result choice {c}")
    return q, name


def _action_response(s: _P, p: int, node) -> str:
    c = _u8(s, p, "action-response choice")
    name = ACTION_RESP.get(c)
    if name is None:
        raise Truncated(p, 0, s.end - p, f"unknown action-response choice {c}")
    s.svc, s.dir = "action", "response"
    _choice(s, "action_response", c, name, p, node)
    q = _iip(s, p + 1, node)
    if c == 1:
        op = _op(s, choice=name)
        q, res = _action_result(s, q, node, op)
        if op.get("return_result"):
            res = f"{res}, return {op['return_result']}"
        elif op.get("value") is not None:
            res = f"{res}, {_value_info(op, 'data')}"
        return _end(s, q, node, f"action-response normal [invoke {s.iid}] {res}")
    if c == 2:
        _op(s, choice=name, partial=True)
        q, binfo = _datablock_sa(s, q, node, "action", None)
        return _end(s, q, node, f"action-response with-pblock [invoke {s.iid}] {binfo}")
    if c == 4:
        need(s.end, q, 4, "block-number")
        bn = _u32(s.buf, q)[0]
        s.d.add(node, "dlms.block_number", bn, q, 4)
        _op(s, choice=name, block_number=bn)
        return _end(s, q + 4, node, f"action-response next-pblock [invoke {s.iid}] block {bn}")
    q, n = _count(s, q, "result list", node)
    for _ in range(n):
        op = _op(s, choice=name)
        q, _res = _action_result(s, q, node, op)
    return _end(s, q, node, f"action-response with-list [invoke {s.iid}] {n} results")


def _event_notification(s: _P, p: int, node) -> str:
    s.svc, s.dir = "event", "request"
    flag = _u8(s, p, "time")
    q = p + 1
    if flag:
        cs, ce, q = _octets(s, q, "time")
        s.d.add(node, "dlms.date_time", bytes(s.buf[cs:ce]), cs, ce - cs)
    op = _op(s)
    q, info = _descriptor(s, q, node, False, op)
    q, v = _data(s, q, node, "value")
    op["value"] = v
    return _end(s, q, node, f"event-notification-request {info}")


def _data_notification(s: _P, p: int, node) -> str:
    s.svc, s.dir = "notify", "request"
    q = _long_iip(s, p, node)
    cs, ce, q = _octets(s, q, "date-time")
    if ce > cs:
        s.d.add(node, "dlms.date_time", bytes(s.buf[cs:ce]), cs, ce - cs)
        if ce - cs == 12:
            s.d.add(None, "dlms.data.datetime", datetime_iso(s.buf, cs), cs, 12)
    op = _op(s)
    q, v = _data(s, q, node, "notification-body")
    op["value"] = v
    return _end(s, q, node, f"data-notification [invoke {s.iid}]")


def _access_request(s: _P, p: int, node) -> str:
    s.svc, s.dir = "access", "request"
    q = _long_iip(s, p, node)
    cs, ce, q = _octets(s, q, "date-time")
    if ce > cs:
        s.d.add(node, "dlms.date_time", bytes(s.buf[cs:ce]), cs, ce - cs)
    q, n = _count(s, q, "access-request-specification", node)
    ops = []
    for _ in range(n):
        c = _u8(s, q, "access-request-specification choice")
        spec = ACCESS_SPEC.get(c)
        if spec is None:
            raise Truncated(q, 0, s.end - q, f"access-request-specification choice {c}")
        s.d.add(node, "dlms.access.spec", spec, q, 1)
        op = _op(s, access=spec)
        q, _info = _descriptor(s, q + 1, node, c == 3, op)
        if c in (4, 5):
            sel = _u8(s, q, "access-selector")
            s.d.add(node, "dlms.access_selector", sel, q, 1)
            q, v = _data(s, q + 1, node, "access-parameters")
            op["selector"] = sel
            op["access_parameters"] = v
        ops.append(op)
    q, m = _count(s, q, "access-request-list-of-data", node)
    for i in range(m):
        q, v = _data(s, q, node, "data")
        if i < len(ops) and ops[i].get("access") != "get":
            ops[i]["value"] = v
    return _end(s, q, node, f"access-request [invoke {s.iid}] {n} specs")


def _access_response(s: _P, p: int, node) -> str:
    s.svc, s.dir = "access", "response"
    q = _long_iip(s, p, node)
    cs, ce, q = _octets(s, q, "date-time")
    if ce > cs:
        s.d.add(node, "dlms.date_time", bytes(s.buf[cs:ce]), cs, ce - cs)
    flag = _u8(s, q, "access-request-specification OPTIONAL")
    q += 1
    if flag:
        q, n0 = _count(s, q, "access-request-specification", node)
        for _ in range(n0):
            c = _u8(s, q, "access-request-specification choice")
            spec = ACCESS_SPEC.get(c)
            if spec is None:
                raise Truncated(q, 0, s.end - q, f"access-request-specification choice {c}")
            q, _info = _descriptor(s, q + 1, node, c == 3, None)
            if c in (4, 5):
                q, _v = _data(s, q + 1, node, "access-parameters")
    q, m = _count(s, q, "access-response-list-of-data", node)
    values = []
    for _ in range(m):
        q, v = _data(s, q, node, "data")
        values.append(v)
    q, n = _count(s, q, "access-response-specification", node)
    for i in range(n):
        c = _u8(s, q, "access-response-specification choice")
        spec = {1: "get", 2: "set", 3: "action"}.get(c)
        if spec is None:
            raise Truncated(q, 0, s.end - q, f"access-response-specification choice {c}")
        s.d.add(node, "dlms.access.spec", spec, q, 1)
        q, res = _dar(s, q + 1, node)
        _op(s, access=spec, result=res, value=values[i] if i < len(values) else None)
    return _end(s, q, node, f"access-response [invoke {s.iid}] {n} results")


def _exception_response(s: _P, p: int, node) -> str:
    s.svc, s.dir = "exception", "response"
    need(s.end, p, 2, "exception-response")
    b = s.buf
    st, se = b[p], b[p + 1]
    s.d.add(node, "dlms.state_error", st, p, 1)
    s.d.add(node, "dlms.service_error", se, p + 1, 1)
    q = p + 2
    op = _op(s, result=SERVICE_ERROR.get(se, f"unknown-{se}"), state_error=STATE_ERROR.get(st, st))
    if se == 6:
        need(s.end, q, 4, "expected invocation counter")
        ic = _u32(b, q)[0]
        s.d.add(node, "dlms.expected_ic", ic, q, 4)
        op["expected_ic"] = ic
        q += 4
    return _end(s, q, node, f"exception-response {STATE_ERROR.get(st, st)} {SERVICE_ERROR.get(se, se)}")


def _confirmed_service_error(s: _P, p: int, node) -> str:
    s.svc, s.dir = "error", "response"
    need(s.end, p, 3, "confirmed-service-error")
    b = s.buf
    svc, et, ev = b[p], b[p + 1], b[p + 2]
    d = s.d
    d.add(node, "dlms.cse.service", svc, p, 1)
    d.add(node, "dlms.cse.error_type", et, p + 1, 1)
    en = SERVICE_ERROR_ENUMS.get(et, {}).get(ev, str(ev))
    d.add(node, "dlms.cse.error", ev, p + 2, 1,
          f"{SERVICE_ERROR_CHOICE.get(et, et)}: {en} ({ev})" if node is not None else None)
    d.add(None, "dlms.cse.error_name", en, p + 2, 1)
    _op(s, result=en, error_service=CSE_SERVICE.get(svc, svc), error_type=SERVICE_ERROR_CHOICE.get(et, et))
    return _end(s, p + 3, node, f"confirmed-service-error {CSE_SERVICE.get(svc, svc)} "
                f"{SERVICE_ERROR_CHOICE.get(et, et)} {en}")


# --------------------------------------------------------------------------- Initiate

def _conformance(s: _P, p: int, node) -> int:
    need(s.end, p, 7, "conformance")
    b = s.buf
    if b[p] != 0x5F or b[p + 1] != 0x1F or b[p + 2] != 0x04:
        raise Truncated(p, 0, s.end - p, "conformance: expected 5F 1F 04")
    v = (b[p + 4] << 16) | (b[p + 5] << 8) | b[p + 6]
    d = s.d
    names = [n for i, n in CONFORMANCE_BITS.items() if v >> (23 - i) & 1]
    n = d.add(node, "dlms.conformance", v, p, 7,
              f"Conformance: 0x{v:06x} ({', '.join(names)})" if node is not None else None)
    d.add(None, "dlms.conformance_name", ",".join(names), p + 4, 3)
    if n is not None:
        # a field (True) for each set bit, as in the fast pass; unset bits are text only
        for i, nm in CONFORMANCE_BITS.items():
            if v >> (23 - i) & 1:
                d.add(n, f"dlms.conformance.{nm.replace('-', '_')}", True, p + 4, 3, f"1 .... bit {i:2d} {nm}")
            else:
                d.label(n, f"0 .... bit {i:2d} {nm}", p + 4, 3)
    else:
        for i, nm in CONFORMANCE_BITS.items():
            if v >> (23 - i) & 1:
                d.add(None, f"dlms.conformance.{nm.replace('-', '_')}", True, p + 4, 3)
    s.ctx["dlms.conformance"] = v
    return p + 7


def _initiate_request(s: _P, p: int, node) -> str:
    s.svc, s.dir = "initiate", "request"
    d = s.d
    q = p
    flag = _u8(s, q, "dedicated-key")
    q += 1
    has_key = bool(flag)
    d.add(None, "dlms.dedicated_key_present", has_key, q - 1, 1)
    if flag:
        cs, ce, q = _octets(s, q, "dedicated-key")
        # a secret: handed to the decryption stage through ctx only, never a field or text
        s.ctx["dlms.dedicated_key"] = bytes(s.buf[cs:ce])
        d.label(node, f"dedicated-key: present ({ce - cs} bytes, not shown)", cs, ce - cs)
    flag = _u8(s, q, "response-allowed")
    q += 1
    ra = True
    if flag:
        ra = _u8(s, q, "response-allowed") != 0
        q += 1
    d.add(node, "dlms.response_allowed", ra, q - 1, 1)
    flag = _u8(s, q, "proposed-quality-of-service")
    q += 1
    if flag:
        d.add(node, "dlms.quality_of_service", _u8(s, q, "quality-of-service"), q, 1)
        q += 1
    ver = _u8(s, q, "dlms-version-number")
    d.add(node, "dlms.dlms_version", ver, q, 1)
    q = _conformance(s, q + 1, node)
    need(s.end, q, 2, "client-max-receive-pdu-size")
    mx = _u16(s.buf, q)[0]
    d.add(node, "dlms.client_max_receive_pdu_size", mx, q, 2)
    _op(s, value={"dlms_version": ver, "conformance": s.ctx["dlms.conformance"], "max_pdu_size": mx,
                  "dedicated_key": has_key})
    return _end(s, q + 2, node, f"initiate-request v{ver} max-pdu {mx}")


def _initiate_response(s: _P, p: int, node) -> str:
    s.svc, s.dir = "initiate", "response"
    d = s.d
    q = p
    flag = _u8(s, q, "negotiated-quality-of-service")
    q += 1
    if flag:
        d.add(node, "dlms.quality_of_service", _u8(s, q, "quality-of-service"), q, 1)
        q += 1
    ver = _u8(s, q, "dlms-version-number")
    d.add(node, "dlms.dlms_version", ver, q, 1)
    q = _conformance(s, q + 1, node)
    need(s.end, q, 4, "server-max-receive-pdu-size, vaa-name")
    mx, vaa = _u16(s.buf, q)[0], _u16(s.buf, q + 2)[0]
    d.add(node, "dlms.server_max_receive_pdu_size", mx, q, 2)
    d.add(node, "dlms.vaa_name", vaa, q + 2, 2,
          f"vaa-name: 0x{vaa:04x} ({ {7: 'LN', 0xFA00: 'SN'}.get(vaa, 'unknown') })" if node is not None else None)
    _op(s, value={"dlms_version": ver, "conformance": s.ctx["dlms.conformance"], "max_pdu_size": mx,
                  "vaa_name": vaa})
    return _end(s, q + 4, node, f"initiate-response v{ver} max-pdu {mx}")


# --------------------------------------------------------------------------- SN services

def _vas(s: _P, p: int, node, op: dict, writing: bool) -> int:
    c = _u8(s, p, "variable-access-specification")
    d = s.d
    name = VAS_NAMES.get(c)
    if name is None:
        raise Truncated(p, 0, s.end - p, f"variable-access-specification choice {c}")
    d.add(None, "dlms.sn.access", name, p, 1)
    op["access"] = name
    b = s.buf
    if c == 2:
        need(s.end, p + 1, 2, "variable-name")
        sn = _u16(b, p + 1)[0]
        d.add(node, "dlms.sn.variable_name", sn, p + 1, 2,
              f"variable-name: 0x{sn:04x}" if node is not None else None)
        op["short_name"] = sn
        return p + 3
    if c == 4:
        need(s.end, p + 1, 3, "parameterized-access")
        sn = _u16(b, p + 1)[0]
        sel = b[p + 3]
        d.add(node, "dlms.sn.variable_name", sn, p + 1, 2,
              f"variable-name: 0x{sn:04x}" if node is not None else None)
        d.add(node, "dlms.access_selector", sel, p + 3, 1)
        q, v = _data(s, p + 4, node, "parameter")
        op.update(short_name=sn, selector=sel, access_parameters=v)
        return q
    if c == 5:
        need(s.end, p + 1, 2, "block-number-access")
        bn = _u16(b, p + 1)[0]
        d.add(node, "dlms.block_number", bn, p + 1, 2)
        op["block_number"] = bn
        return p + 3
    if c == 6:
        need(s.end, p + 1, 3, "read-data-block-access")
        last = b[p + 1] != 0
        bn = _u16(b, p + 2)[0]
        d.add(node, "dlms.last_block", last, p + 1, 1)
        d.add(node, "dlms.block_number", bn, p + 2, 2)
        cs, ce, q = _octets(s, p + 4, "raw-data")
        _block(s, "read", p, node, bn, last, cs, ce, kind="sn-request")
        op.update(block_number=bn, last_block=last)
        return q
    if c == 7:
        need(s.end, p + 1, 3, "write-data-block-access")
        last = b[p + 1] != 0
        bn = _u16(b, p + 2)[0]
        d.add(node, "dlms.last_block", last, p + 1, 1)
        d.add(node, "dlms.block_number", bn, p + 2, 2)
        op.update(block_number=bn, last_block=last)
        s.ctx.setdefault("dlms.sn_write_block", []).append((bn, last))
        return p + 4
    # detailed-access (3): variable-name, then an opaque description we cannot bound: stop
    raise Truncated(p, 0, s.end - p, "detailed-access is not decodable")


def _read_request(s: _P, p: int, node) -> str:
    s.svc, s.dir = "read", "request"
    s.iid = None
    q, n = _count(s, p, "variable-access-specification", node)
    names = []
    for _ in range(n):
        op = _op(s)
        q = _vas(s, q, node, op, False)
        if "short_name" in op:
            names.append(f"0x{op['short_name']:04x}")
    return _end(s, q, node, f"read-request {', '.join(names[:4]) or str(n) + ' items'}")


def _read_response(s: _P, p: int, node) -> str:
    s.svc, s.dir = "read", "response"
    s.iid = None
    q, n = _count(s, p, "read-result", node)
    d = s.d
    results = []
    for _ in range(n):
        c = _u8(s, q, "read-result choice")
        op = _op(s)
        if c == 0:
            d.add(None, "dlms.sn.result", "data", q, 1)
            q, v = _data(s, q + 1, node, "data")
            op.update(value=v, result="success")
            results.append("data")
        elif c == 1:
            d.add(None, "dlms.sn.result", "data-access-error", q, 1)
            q, res = _dar(s, q + 1, node)
            op["result"] = res
            results.append(res)
        elif c == 2:
            d.add(None, "dlms.sn.result", "data-block-result", q, 1)
            need(s.end, q + 1, 3, "data-block-result")
            last = s.buf[q + 1] != 0
            bn = _u16(s.buf, q + 2)[0]
            d.add(node, "dlms.last_block", last, q + 1, 1)
            d.add(node, "dlms.block_number", bn, q + 2, 2)
            cs, ce, q2 = _octets(s, q + 4, "raw-data")
            d.add(node, "dlms.raw_data", bytes(s.buf[cs:ce]), cs, ce - cs,
                  f"raw-data ({ce - cs} bytes)" if node is not None else None)
            _block(s, "read", q, node, bn, last, cs, ce)
            op.update(block_number=bn, last_block=last, partial=True)
            results.append(f"block {bn}{' (last)' if last else ''}")
            q = q2
        elif c == 3:
            d.add(None, "dlms.sn.result", "block-number", q, 1)
            need(s.end, q + 1, 2, "block-number")
            bn = _u16(s.buf, q + 1)[0]
            d.add(node, "dlms.block_number", bn, q + 1, 2)
            op["block_number"] = bn
            results.append(f"block-number {bn}")
            q += 3
        else:
            raise Truncated(q, 0, s.end - q, f"read-result choice {c}")
    return _end(s, q, node, f"read-response {', '.join(results[:4])}")


def _write_like(s: _P, p: int, node, name: str) -> str:
    q, n = _count(s, p, "variable-access-specification", node)
    ops = []
    for _ in range(n):
        op = _op(s)
        q = _vas(s, q, node, op, True)
        ops.append(op)
    q, m = _count(s, q, "list-of-data", node)
    for i in range(m):
        vstart = q
        q, v = _data(s, q, node, "data")
        if i < len(ops):
            ops[i]["value"] = v
            if ops[i].get("access") == "write-data-block-access" and s.buf[vstart] == 9:
                # the datum of a write-data-block-access is the raw block (octet-string)
                cs, ce, _q = _octets(s, vstart + 1, "raw-data")
                _block(s, "write", vstart, node, ops[i]["block_number"], ops[i]["last_block"], cs, ce)
    names = [f"0x{o['short_name']:04x}" for o in ops if "short_name" in o]
    return _end(s, q, node, f"{name} {', '.join(names[:4]) or str(n) + ' items'}")


def _write_request(s: _P, p: int, node) -> str:
    s.svc, s.dir = "write", "request"
    s.iid = None
    return _write_like(s, p, node, "write-request")


def _unconfirmed_write(s: _P, p: int, node) -> str:
    s.svc, s.dir = "unconfirmed-write", "request"
    s.iid = None
    return _write_like(s, p, node, "unconfirmed-write-request")


def _information_report(s: _P, p: int, node) -> str:
    s.svc, s.dir = "information-report", "request"
    s.iid = None
    flag = _u8(s, p, "current-time")
    q = p + 1
    if flag:
        cs, ce, q = _octets(s, q, "current-time")
        s.d.add(node, "dlms.date_time", bytes(s.buf[cs:ce]), cs, ce - cs)
    return _write_like(s, q, node, "information-report-request")


def _write_response(s: _P, p: int, node) -> str:
    s.svc, s.dir = "write", "response"
    s.iid = None
    q, n = _count(s, p, "write-result", node)
    d = s.d
    out = []
    for _ in range(n):
        c = _u8(s, q, "write-result choice")
        if c == 0:
            d.add(None, "dlms.sn.result", "success", q, 1)
            d.add(None, "dlms.result", "success", q, 1)
            _op(s, result="success")
            out.append("success")
            q += 1
        elif c == 1:
            d.add(None, "dlms.sn.result", "data-access-error", q, 1)
            q, res = _dar(s, q + 1, node)
            _op(s, result=res)
            out.append(res)
        elif c == 2:
            d.add(None, "dlms.sn.result", "block-number", q, 1)
            need(s.end, q + 1, 2, "block-number")
            bn = _u16(s.buf, q + 1)[0]
            d.add(node, "dlms.block_number", bn, q + 1, 2)
            _op(s, block_number=bn)
            out.append(f"block-number {bn}")
            q += 3
        else:
            raise Truncated(q, 0, s.end - q, f"write-result choice {c}")
    return _end(s, q, node, f"write-response {', '.join(out[:4])}")


# --------------------------------------------------------------------------- protection

def _sec_header(s: _P, p: int, end: int, node, desc: dict) -> None:
    """SC | IC | information | tag at p..end (the ciphered octet string's contents)."""
    need(end, p, 1, "security control")
    b = s.buf
    sc = b[p]
    d = s.d
    desc["sc"] = sc
    if node is not None:
        n = d.add(node, "dlms.sec.sc", sc, p, 1,
                  f"Security control: 0x{sc:02x} (suite {sc & 0x0F}"
                  f"{', A' if sc & 0x10 else ''}{', E' if sc & 0x20 else ''}"
                  f"{', broadcast key' if sc & 0x40 else ''}{', compressed' if sc & 0x80 else ''})")
    else:
        n = None
        d.add(None, "dlms.sec.sc", sc, p, 1)
    d.add(n, "dlms.sec.suite", sc & 0x0F, p, 1)
    d.add(n, "dlms.sec.auth", bool(sc & 0x10), p, 1)
    d.add(n, "dlms.sec.enc", bool(sc & 0x20), p, 1)
    d.add(n, "dlms.sec.broadcast", bool(sc & 0x40), p, 1)
    d.add(n, "dlms.sec.compressed", bool(sc & 0x80), p, 1)
    if end - p >= 5:
        ic = _u32(b, p + 1)[0]
        desc["ic"] = ic
        d.add(node, "dlms.sec.ic", ic, p + 1, 4)
        info_len = end - p - 5
        taglen = 12 if sc & 0x10 else 0
        if taglen and info_len >= taglen:
            d.add(node, "dlms.sec.ciphertext_len", info_len - taglen, p + 5, info_len - taglen)
            tag = bytes(b[end - 12:end])
            d.add(node, "dlms.sec.tag", tag, end - 12, 12)
            desc["auth_tag"] = tag
        else:
            d.add(node, "dlms.sec.ciphertext_len", info_len, p + 5, info_len)
    else:
        desc["ic"] = None
        d.malformed("dlms", p, "security header shorter than SC + IC", node)


def _add_ciphered(s: _P, desc: dict) -> None:
    lst = s.ctx.get("dlms.ciphered")
    if lst is None:
        s.ctx["dlms.ciphered"] = [desc]
    else:
        lst.append(desc)


def _glo_ded(s: _P, tag: int, p: int, node) -> str:
    kind, plain = _GLO_DED[tag]
    cs, ce, q = _octets(s, p, "ciphered APDU")
    desc = {"kind": kind, "tag": tag, "plain_tag": plain, "sc": None, "ic": None,
            "system_title": None, "offset": cs, "length": ce - cs, "source": s.d.source, "node": node}
    _sec_header(s, cs, ce, node, desc)
    _add_ciphered(s, desc)
    s.svc = "ciphered"
    return _end(s, q, node, f"{APDU_NAMES[tag]} SC 0x{desc['sc']:02x} IC {desc['ic']}"
                if desc["ic"] is not None else APDU_NAMES[tag])


def _title(s: _P, p: int, node, fld: str, what: str) -> tuple[int, bytes]:
    cs, ce, q = _octets(s, p, what)
    t = bytes(s.buf[cs:ce])
    s.d.add(node, fld, t, cs, ce - cs)
    return q, t


def _general_glo_ded(s: _P, tag: int, p: int, node) -> str:
    q, st = _title(s, p, node, "dlms.sec.system_title", "system-title")
    cs, ce, q = _octets(s, q, "ciphered content")
    kind = "general-glo" if tag == 0xDB else "general-ded"
    desc = {"kind": kind, "tag": tag, "sc": None, "ic": None, "system_title": st, "offset": cs,
            "length": ce - cs, "source": s.d.source, "node": node}
    _sec_header(s, cs, ce, node, desc)
    _add_ciphered(s, desc)
    s.svc = "ciphered"
    return _end(s, q, node, f"{kind}-ciphering ST {st.hex()} SC 0x{desc['sc']:02x} IC {desc['ic']}"
                if desc["ic"] is not None else f"{kind}-ciphering")


def _general_header(s: _P, p: int, node, desc: dict) -> int:
    q, desc["transaction_id"] = _title(s, p, node, "dlms.sec.transaction_id", "transaction-id")
    q, desc["originator"] = _title(s, q, node, "dlms.sec.originator", "originator-system-title")
    q, desc["recipient"] = _title(s, q, node, "dlms.sec.recipient", "recipient-system-title")
    cs, ce, q = _octets(s, q, "date-time")
    desc["date_time"] = bytes(s.buf[cs:ce])
    if ce > cs:
        s.d.add(node, "dlms.date_time", desc["date_time"], cs, ce - cs)
    q, desc["other_information"] = _title(s, q, node, "dlms.sec.other_info", "other-information")
    if desc["originator"]:
        s.d.add(None, "dlms.sec.system_title", desc["originator"], p, 0)
    return q


def _general_ciphering(s: _P, p: int, node) -> str:
    desc = {"kind": "general-ciphering", "tag": 0xDD, "sc": None, "ic": None, "source": s.d.source,
            "node": node, "key_info": None}
    q = _general_header(s, p, node, desc)
    desc["system_title"] = desc["originator"] or None
    flag = _u8(s, q, "key-info")
    q += 1
    d = s.d
    if flag:
        c = _u8(s, q, "key-info choice")
        ki = {"choice": KEY_INFO.get(c, c)}
        d.add(node, "dlms.sec.key_info", KEY_INFO.get(c, str(c)), q, 1)
        q += 1
        if c == 0:
            ki["key_id"] = _u8(s, q, "key-id")
            d.add(node, "dlms.sec.key_id", ki["key_id"], q, 1)
            q += 1
        elif c == 1:
            ki["kek_id"] = _u8(s, q, "kek-id")
            d.add(node, "dlms.sec.kek_id", ki["kek_id"], q, 1)
            q, ki["key_ciphered_data"] = _title(s, q + 1, node, "dlms.sec.key_ciphered_data", "key-ciphered-data")
        elif c == 2:
            cs, ce, q = _octets(s, q, "key-parameters")
            kp = bytes(s.buf[cs:ce])
            ki["key_parameters"] = kp
            if len(kp) == 1:
                d.add(node, "dlms.sec.key_parameters", kp[0], cs, 1)
            q, ki["key_ciphered_data"] = _title(s, q, node, "dlms.sec.key_ciphered_data", "key-ciphered-data")
        else:
            raise Truncated(q - 1, 0, s.end - q, f"key-info choice {c}")
        desc["key_info"] = ki
    cs, ce, q = _octets(s, q, "ciphered-content")
    desc["offset"], desc["length"] = cs, ce - cs
    _sec_header(s, cs, ce, node, desc)
    _add_ciphered(s, desc)
    s.svc = "ciphered"
    return _end(s, q, node, f"general-ciphering SC 0x{desc['sc']:02x} IC {desc['ic']}"
                if desc["ic"] is not None else "general-ciphering")


def _general_signing(s: _P, p: int, node) -> str:
    desc = {"kind": "general-signing", "tag": 0xDF, "sc": None, "ic": None, "source": s.d.source,
            "node": node}
    q = _general_header(s, p, node, desc)
    desc["system_title"] = desc["originator"] or None
    cs, ce, q = _octets(s, q, "content")
    desc["content_offset"], desc["content_length"] = cs, ce - cs
    desc["offset"], desc["length"] = cs, ce - cs
    q, desc["signature"] = _title(s, q, node, "dlms.sec.signature", "signature")
    desc["signed_offset"] = p
    desc["signed_length"] = cs + (ce - cs) - p
    _add_ciphered(s, desc)
    inner = ""
    if ce > cs:
        cn = s.d.label(node, f"signed content ({ce - cs} bytes)", cs, ce - cs) if node is not None else None
        inner = _inner_apdu(s.buf, cs, ce, s.d, cn)
    s.svc = "signed"
    return _end(s, q, node, f"general-signing [{inner}] signature {len(desc['signature'])} bytes")


def _gbt(s: _P, p: int, node) -> str:
    need(s.end, p, 5, "general-block-transfer header")
    b = s.buf
    bc = b[p]
    bn, bna = _u16(b, p + 1)[0], _u16(b, p + 3)[0]
    last, streaming, window = bool(bc & 0x80), bool(bc & 0x40), bc & 0x3F
    d = s.d
    d.add(node, "dlms.gbt.last_block", last, p, 1)
    d.add(node, "dlms.gbt.streaming", streaming, p, 1)
    d.add(node, "dlms.gbt.window", window, p, 1)
    d.add(node, "dlms.gbt.block_number", bn, p + 1, 2)
    d.add(node, "dlms.gbt.block_number_ack", bna, p + 3, 2)
    cs, ce, q = _octets(s, p + 5, "block-data")
    d.add(node, "dlms.gbt.block_data_len", ce - cs, cs, ce - cs)
    entry = {"service": "gbt", "dir": None, "invoke_id": None, "block_number": bn, "ack": bna,
             "last": last, "streaming": streaming, "window": window, "data": bytes(b[cs:ce]),
             "offset": cs, "length": ce - cs, "source": d.source, "kind": "apdu"}
    s.ctx.setdefault("dlms.blocks", []).append(entry)
    s.svc = "gbt"
    return _end(s, q, node, f"general-block-transfer block {bn} ack {bna} window {window}"
                f"{' last' if last else ''}{' streaming' if streaming else ''} ({ce - cs} bytes)")


# --------------------------------------------------------------------------- dispatch

def _choice(s: _P, svc: str, c: int, name: str, p: int, node) -> None:
    s.d.add(node, f"dlms.{svc}", c, p, 1)
    s.d.add(None, f"dlms.{svc}_type", name, p, 1)


def _end(s: _P, q: int, node, info: str) -> str:
    if q < s.end:
        s.d.note("warn", "malformed", "dlms", q, f"{s.end - q} trailing byte(s) after the APDU", node)
    return info


def _value_info(op: dict, res: str) -> str:
    if res != "data":
        return res
    v = op.get("value")
    if isinstance(v, list):
        return f"{len(v)} element(s)"
    if isinstance(v, bytes):
        if len(v) == 12 and looks_like_datetime(v):
            return datetime_iso(v)
        return (v.hex() or "(empty)") if len(v) <= 16 else f"{len(v)} bytes"
    return str(v) if v is not None else "null"


_HANDLERS = {
    0x01: _initiate_request, 0x08: _initiate_response, 0x05: _read_request, 0x0C: _read_response,
    0x06: _write_request, 0x0D: _write_response, 0x0E: _confirmed_service_error,
    0x0F: _data_notification, 0x16: _unconfirmed_write, 0x18: _information_report,
    0xC0: _get_request, 0xC1: _set_request, 0xC2: _event_notification, 0xC3: _action_request,
    0xC4: _get_response, 0xC5: _set_response, 0xC7: _action_response, 0xD8: _exception_response,
    0xD9: _access_request, 0xDA: _access_response, 0xDD: _general_ciphering,
    0xDF: _general_signing, 0xE0: _gbt,
}


def _looks_glo_body(buf: bytes, off: int, end: int) -> bool:
    """Tag 0x00 followed by a glo-style body (length == rest, plausible SC): Gurux emits this
    for ciphered access request/response."""
    try:
        n, p = read_length(buf, off + 1, end)
    except Truncated:
        return False
    return p + n == end and n >= 5 and (buf[p] & 0x30) != 0 and (buf[p] & 0x0F) <= 2


def _dissect(buf: bytes, off: int, end: int, d, node) -> str:
    """Dissect one APDU at off (no layer); returns the summary.  Raises Truncated."""
    need(end, off, 1, "APDU tag")
    tag = buf[off]
    name = APDU_NAMES.get(tag)
    s = _P(buf, end, d)
    if name is None:
        d.add(node, "dlms.apdu", f"unknown-0x{tag:02x}", off, 1, f"APDU: unknown tag 0x{tag:02x}")
        d.add(None, "dlms.apdu_tag", tag, off, 1)
        if tag == 0x00 and _looks_glo_body(buf, off, end):
            d.note("warn", "protocol", "dlms", off,
                   "Unknown APDU tag 0x00 with a glo-ciphered body (sent by some stacks for "
                   "ciphered access request/response); parsed as ciphered", node)
            cs, ce, q = _octets(s, off + 1, "ciphered APDU")
            desc = {"kind": "glo", "tag": 0, "plain_tag": None, "sc": None, "ic": None,
                    "system_title": None, "offset": cs, "length": ce - cs, "source": d.source,
                    "node": node, "unknown_tag": True}
            _sec_header(s, cs, ce, node, desc)
            _add_ciphered(s, desc)
            return f"unknown tag 0x00 (ciphered, SC 0x{desc['sc']:02x} IC {desc['ic']})"
        d.note("warn", "protocol", "dlms", off, f"Unknown APDU tag 0x{tag:02x}", node)
        return f"unknown APDU 0x{tag:02x}"
    if node is not None:
        d.add(node, "dlms.apdu", name, off, end - off, f"APDU: {name} (0x{tag:02x})")
    else:
        d.add(None, "dlms.apdu", name, off, end - off)
    d.add(None, "dlms.apdu_tag", tag, off, 1)
    h = _HANDLERS.get(tag)
    if h is not None:
        return h(s, off + 1, node)
    if tag in _GLO_DED:
        return _glo_ded(s, tag, off + 1, node)
    if tag == 0xDB or tag == 0xDC:
        return _general_glo_ded(s, tag, off + 1, node)
    if tag in (0x60, 0x61, 0x62, 0x63):
        return _acse.dissect_acse(buf, off, end, d, node, _inner_apdu)
    # gateway and CIASE APDUs: named, body shown as bytes
    d.label(node, f"{name} body ({end - off - 1} bytes, not decoded)", off + 1, end - off - 1)
    return name


def _inner_apdu(buf: bytes, off: int, end: int, d, node) -> str:
    """A nested APDU (user-information, signed content): malformed data stays local."""
    try:
        return _dissect(buf, off, end, d, node)
    except Truncated as exc:
        d.malformed("dlms", exc.offset, str(exc), node)
    except Exception as exc:   # never let a nested APDU break the outer one
        d.malformed("dlms", off, f"{type(exc).__name__}: {exc}", node)
    return "malformed"


def dissect_apdu(buf: bytes, off: int, end: int, d, parent) -> None:
    """Dissect a bare xDLMS/ACSE APDU (the `table("dlms")` key "apdu" entry point).
    Starts a `dlms` layer, records fields, ops, ciphered descriptors and blocks, and sets
    the Info column.  Never raises."""
    node = d.layer("dlms", "DLMS/COSEM APDU", off, end - off)
    try:
        info = _dissect(buf, off, end, d, node)
    except Truncated as exc:
        d.malformed("dlms", exc.offset, str(exc), node)
        info = f"{APDU_NAMES.get(buf[off], 'APDU') if off < end else 'APDU'} [malformed]"
    except Exception as exc:
        d.malformed("dlms", off, f"{type(exc).__name__}: {exc}", node)
        info = "APDU [malformed]"
    if node is not None:
        node.text = f"DLMS/COSEM {info}"
    d.info = info
    d.ctx["dlms.info"] = info


table("dlms", "xDLMS/ACSE APDU").register("apdu", "dlms", dissect_apdu)


# --------------------------------------------------------------------------- builders
# Small APDU builders for the simulator and for fuzz seeds (never used as a test oracle).

def _iip_byte(invoke_id: int, priority: int = 1, confirmed: int = 1) -> bytes:
    return bytes(((priority & 1) << 7 | (confirmed & 1) << 6 | (invoke_id & 0x0F),))


def _desc_bytes(class_id: int, obis: str | bytes, idx: int) -> bytes:
    ob = obis if isinstance(obis, (bytes, bytearray)) else bytes(int(x) for x in obis.split("."))
    return struct.pack(">H", class_id) + bytes(ob) + bytes((idx & 0xFF,))


def _sel_bytes(selector: int | None, params) -> bytes:
    if selector is None:
        return b"\x00"
    return b"\x01" + bytes((selector,)) + encode(params)


def build_get_request(class_id: int, obis, attribute_id: int, invoke_id: int = 1, priority: int = 1,
                      selector: int | None = None, params=None) -> bytes:
    return (b"\xC0\x01" + _iip_byte(invoke_id, priority) + _desc_bytes(class_id, obis, attribute_id)
            + _sel_bytes(selector, params))


def build_get_request_next(block_number: int, invoke_id: int = 1, priority: int = 1) -> bytes:
    return b"\xC0\x02" + _iip_byte(invoke_id, priority) + struct.pack(">I", block_number)


def build_get_request_with_list(items, invoke_id: int = 1, priority: int = 1) -> bytes:
    """items: iterable of (class_id, obis, attribute_id)."""
    items = list(items)
    body = b"".join(_desc_bytes(c, o, a) + b"\x00" for c, o, a in items)
    return b"\xC0\x03" + _iip_byte(invoke_id, priority) + encode_length(len(items)) + body


def build_get_response(value=None, invoke_id: int = 1, priority: int = 1, result: int | None = None) -> bytes:
    """Get-response-normal with Data `value` (an axdr.encode spec) or a data-access-result."""
    head = b"\xC4\x01" + _iip_byte(invoke_id, priority)
    if result is not None:
        return head + b"\x01" + bytes((result,))
    return head + b"\x00" + encode(value)


def build_get_response_block(raw: bytes, block_number: int, last: bool, invoke_id: int = 1,
                             priority: int = 1) -> bytes:
    return (b"\xC4\x02" + _iip_byte(invoke_id, priority) + (b"\x01" if last else b"\x00")
            + struct.pack(">I", block_number) + b"\x00" + encode_length(len(raw)) + raw)


def build_set_request(class_id: int, obis, attribute_id: int, value, invoke_id: int = 1,
                      priority: int = 1) -> bytes:
    return (b"\xC1\x01" + _iip_byte(invoke_id, priority) + _desc_bytes(class_id, obis, attribute_id)
            + b"\x00" + encode(value))


def build_set_request_first_block(class_id: int, obis, attribute_id: int, raw: bytes, last: bool = False,
                                  invoke_id: int = 1, priority: int = 1) -> bytes:
    return (b"\xC1\x02" + _iip_byte(invoke_id, priority) + _desc_bytes(class_id, obis, attribute_id)
            + b"\x00" + (b"\x01" if last else b"\x00") + struct.pack(">I", 1) + encode_length(len(raw)) + raw)


def build_set_request_block(raw: bytes, block_number: int, last: bool, invoke_id: int = 1,
                            priority: int = 1) -> bytes:
    return (b"\xC1\x03" + _iip_byte(invoke_id, priority) + (b"\x01" if last else b"\x00")
            + struct.pack(">I", block_number) + encode_length(len(raw)) + raw)


def build_set_response(result: int = 0, invoke_id: int = 1, priority: int = 1) -> bytes:
    return b"\xC5\x01" + _iip_byte(invoke_id, priority) + bytes((result,))


def build_set_response_block(block_number: int, invoke_id: int = 1, priority: int = 1) -> bytes:
    return b"\xC5\x02" + _iip_byte(invoke_id, priority) + struct.pack(">I", block_number)


def build_set_response_last_block(block_number: int, result: int = 0, invoke_id: int = 1,
                                  priority: int = 1) -> bytes:
    return b"\xC5\x03" + _iip_byte(invoke_id, priority) + bytes((result,)) + struct.pack(">I", block_number)


def build_action_request(class_id: int, obis, method_id: int, params=None, invoke_id: int = 1,
                         priority: int = 1) -> bytes:
    body = b"\x00" if params is None else b"\x01" + encode(params)
    return b"\xC3\x01" + _iip_byte(invoke_id, priority) + _desc_bytes(class_id, obis, method_id) + body


def build_action_response(result: int = 0, value=None, invoke_id: int = 1, priority: int = 1,
                          with_data: bool = False) -> bytes:
    body = bytes((result,))
    if value is not None or with_data:
        body += b"\x01\x00" + encode(value)
    else:
        body += b"\x00"
    return b"\xC7\x01" + _iip_byte(invoke_id, priority) + body


def build_data_notification(value, long_invoke_id: int = 1, date_time: bytes = b"") -> bytes:
    return (b"\x0F" + struct.pack(">I", long_invoke_id) + encode_length(len(date_time)) + date_time
            + encode(value))


def build_gbt(block_data: bytes, block_number: int, ack: int = 0, last: bool = True,
              streaming: bool = False, window: int = 1) -> bytes:
    bc = (0x80 if last else 0) | (0x40 if streaming else 0) | (window & 0x3F)
    return bytes((0xE0, bc)) + struct.pack(">HH", block_number, ack) + encode_length(len(block_data)) + block_data


def build_exception_response(state_error: int = 1, service_error: int = 2, expected_ic: int | None = None) -> bytes:
    out = bytes((0xD8, state_error, service_error))
    if service_error == 6 and expected_ic is not None:
        out += struct.pack(">I", expected_ic)
    return out


def _oid_bytes(arcs) -> bytes:
    out = bytearray([arcs[0] * 40 + arcs[1]])
    for a in arcs[2:]:
        enc = [a & 0x7F]
        a >>= 7
        while a:
            enc.append(0x80 | (a & 0x7F))
            a >>= 7
        out += bytes(reversed(enc))
    return bytes(out)


def _ber(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(content)) + content


def build_initiate_request(conformance: int = 0x007E1F, max_pdu: int = 0xFFFF, version: int = 6,
                           dedicated_key: bytes | None = None) -> bytes:
    dk = b"\x00" if dedicated_key is None else b"\x01" + encode_length(len(dedicated_key)) + dedicated_key
    return (b"\x01" + dk + b"\x00\x00" + bytes((version,)) + b"\x5F\x1F\x04\x00"
            + conformance.to_bytes(3, "big") + struct.pack(">H", max_pdu))


def build_initiate_response(conformance: int = 0x00501F, max_pdu: int = 0x01F4, version: int = 6,
                            vaa_name: int = 0x0007) -> bytes:
    return (b"\x08\x00" + bytes((version,)) + b"\x5F\x1F\x04\x00" + conformance.to_bytes(3, "big")
            + struct.pack(">HH", max_pdu, vaa_name))


def build_aarq(context: int = 1, mechanism: int | None = None, auth_value: bytes | None = None,
               calling_ap_title: bytes | None = None, user_information: bytes | None = None) -> bytes:
    body = _ber(0xA1, _ber(0x06, _oid_bytes((2, 16, 756, 5, 8, 1, context))))
    if calling_ap_title is not None:
        body += _ber(0xA6, _ber(0x04, calling_ap_title))
    if mechanism is not None:
        body += b"\x8A\x02\x07\x80" + _ber(0x8B, _oid_bytes((2, 16, 756, 5, 8, 2, mechanism)))
        if auth_value is not None:
            body += _ber(0xAC, _ber(0x80, auth_value))
    ui = build_initiate_request() if user_information is None else user_information
    body += _ber(0xBE, _ber(0x04, ui))
    return _ber(0x60, body)


def build_aare(result: int = 0, diagnostic: int = 0, context: int = 1, mechanism: int | None = None,
               responding_ap_title: bytes | None = None, stoc: bytes | None = None,
               user_information: bytes | None = None) -> bytes:
    body = _ber(0xA1, _ber(0x06, _oid_bytes((2, 16, 756, 5, 8, 1, context))))
    body += _ber(0xA2, _ber(0x02, bytes((result,))))
    body += _ber(0xA3, _ber(0xA1, _ber(0x02, bytes((diagnostic,)))))
    if responding_ap_title is not None:
        body += _ber(0xA4, _ber(0x04, responding_ap_title))
    if mechanism is not None:
        body += b"\x88\x02\x07\x80" + _ber(0x89, _oid_bytes((2, 16, 756, 5, 8, 2, mechanism)))
        if stoc is not None:
            body += _ber(0xAA, _ber(0x80, stoc))
    ui = build_initiate_response() if user_information is None else user_information
    body += _ber(0xBE, _ber(0x04, ui))
    return _ber(0x61, body)


def build_rlrq(reason: int = 0, user_information: bytes | None = None) -> bytes:
    body = b"\x80\x01" + bytes((reason,))
    if user_information is not None:
        body += _ber(0xBE, _ber(0x04, user_information))
    return _ber(0x62, body)


def build_rlre(reason: int = 0, user_information: bytes | None = None) -> bytes:
    body = b"\x80\x01" + bytes((reason,))
    if user_information is not None:
        body += _ber(0xBE, _ber(0x04, user_information))
    return _ber(0x63, body)


__all__ = ["APDU_NAMES", "dissect_apdu", "CONFORMANCE_BITS", "DATA_ACCESS_RESULT", "ACTION_RESULT",
           "build_get_request", "build_get_request_next", "build_get_request_with_list",
           "build_get_response", "build_get_response_block", "build_set_request",
           "build_set_request_first_block", "build_set_request_block", "build_set_response",
           "build_set_response_block", "build_set_response_last_block", "build_action_request",
           "build_action_response", "build_data_notification", "build_gbt",
           "build_exception_response", "build_initiate_request", "build_initiate_response",
           "build_aarq", "build_aare", "build_rlrq", "build_rlre"]
