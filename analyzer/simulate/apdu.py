"""xDLMS / ACSE APDUs for the simulator, built through the xDLMS owner's encoders
(`dissectors.axdr.encode`, `dissectors.xdlms.build_*`) when they are importable.

Values are typed tuples `(type_name, value)` with the A-XDR type names of the Blue Book
("double-long-unsigned", "octet-string", "structure", ...); `jsonable()` gives the form
written to the ground-truth file (numbers stay numbers, byte strings become hex).
"""
from __future__ import annotations

import struct
from typing import Any

from . import wire

TAGS = {"null-data": 0, "array": 1, "structure": 2, "boolean": 3, "bit-string": 4,
        "double-long": 5, "double-long-unsigned": 6, "octet-string": 9, "visible-string": 10,
        "utf8-string": 12, "bcd": 13, "integer": 15, "long": 16, "unsigned": 17,
        "long-unsigned": 18, "long64": 20, "long64-unsigned": 21, "enum": 22, "float32": 23,
        "float64": 24, "date-time": 25, "date": 26, "time": 27}
_INT_FMT = {"double-long": ">i", "double-long-unsigned": ">I", "integer": ">b", "long": ">h",
            "unsigned": ">B", "long-unsigned": ">H", "long64": ">q", "long64-unsigned": ">Q",
            "enum": ">B", "bcd": ">B", "float32": ">f", "float64": ">d"}


def blen(n: int) -> bytes:
    """A-XDR / BER length."""
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82]) + struct.pack(">H", n)


def _axdr_interim(v: tuple) -> bytes:
    t, val = v
    tag = TAGS[t]
    if t == "null-data":
        return b"\x00"
    if t in ("array", "structure"):
        return bytes([tag]) + blen(len(val)) + b"".join(_axdr_interim(x) for x in val)
    if t == "boolean":
        return bytes([tag, 1 if val else 0])
    if t in ("octet-string", "visible-string", "utf8-string"):
        b = val if isinstance(val, bytes) else val.encode()
        return bytes([tag]) + blen(len(b)) + b
    if t in ("date-time", "date", "time"):
        return bytes([tag]) + val
    return bytes([tag]) + struct.pack(_INT_FMT[t], val)


def axdr(v: tuple) -> bytes:
    fn = wire._use("axdr", "dissectors.axdr", "encode")
    if fn is not None:
        try:
            return fn(v)
        except Exception:
            wire.SOURCES["axdr"] = "analyzer.simulate.apdu (interim; owner encoder rejected typed tuple)"
    return _axdr_interim(v)


def jsonable(v: tuple) -> Any:
    t, val = v
    if t in ("array", "structure"):
        return [jsonable(x) for x in val]
    if isinstance(val, bytes):
        return val.hex()
    return val


def obis_bytes(obis: str) -> bytes:
    return bytes(int(x) for x in obis.split("."))


def datetime_bytes(y, mo, d, h, mi, s, wd=0xFF, hundredths=0, deviation=-60, status=0x00) -> bytes:
    return struct.pack(">HBBBBBBBhB", y, mo, d, wd, h, mi, s, hundredths, deviation, status)


# --------------------------------------------------------------------------- ACSE

APP_CONTEXT = {"ln": 1, "sn": 2, "ln-cipher": 3, "sn-cipher": 4}
CONFORMANCE_LN = 0x00781F | 0x001000 | 0x600000   # get/set/action/selective/block, GBT, general-protection
CONFORMANCE_SN = 0x1C0320


def initiate_request(conformance: int, max_pdu: int = 0x04B0, dedicated_key: bytes | None = None) -> bytes:
    out = bytearray([0x01])
    out += (b"\x01" + blen(len(dedicated_key)) + dedicated_key) if dedicated_key else b"\x00"
    out += b"\x00\x00\x06"
    out += b"\x5F\x1F\x04\x00" + conformance.to_bytes(3, "big")
    out += struct.pack(">H", max_pdu)
    return bytes(out)


def initiate_response(conformance: int, max_pdu: int = 0x01F4, vaa: int = 0x0007) -> bytes:
    return b"\x08\x00\x06\x5F\x1F\x04\x00" + conformance.to_bytes(3, "big") + struct.pack(">HH", max_pdu, vaa)


def _ctx_name(ctx: int) -> bytes:
    return b"\xA1\x09\x06\x07\x60\x85\x74\x05\x08\x01" + bytes([ctx])


def _mech_name(tag: int, mech: int) -> bytes:
    return bytes([tag, 0x07, 0x60, 0x85, 0x74, 0x05, 0x08, 0x02, mech])


def aarq(context: int, user_info: bytes, calling_title: bytes | None = None, mechanism: int = 0,
         auth_value: bytes | None = None) -> bytes:
    fn = wire._use("xdlms.aarq", "dissectors.xdlms", "build_aarq")
    if fn is not None:
        return fn(context=context, user_info=user_info, calling_title=calling_title,
                  mechanism=mechanism, auth_value=auth_value)
    body = bytearray(_ctx_name(context))
    if calling_title is not None:
        body += b"\xA6" + blen(len(calling_title) + 2) + b"\x04" + blen(len(calling_title)) + calling_title
    if mechanism:
        body += b"\x8A\x02\x07\x80" + _mech_name(0x8B, mechanism)
        av = auth_value or b""
        body += b"\xAC" + blen(len(av) + 2) + b"\x80" + blen(len(av)) + av
    body += b"\xBE" + blen(len(user_info) + 2) + b"\x04" + blen(len(user_info)) + user_info
    return b"\x60" + blen(len(body)) + bytes(body)


def aare(context: int, result: int, diag: int, user_info: bytes, responding_title: bytes | None = None,
         mechanism: int = 0, auth_value: bytes | None = None) -> bytes:
    fn = wire._use("xdlms.aare", "dissectors.xdlms", "build_aare")
    if fn is not None:
        return fn(context=context, result=result, diag=diag, user_info=user_info,
                  responding_title=responding_title, mechanism=mechanism, auth_value=auth_value)
    body = bytearray(_ctx_name(context))
    body += b"\xA2\x03\x02\x01" + bytes([result])
    body += b"\xA3\x05\xA1\x03\x02\x01" + bytes([diag])
    if responding_title is not None:
        body += b"\xA4" + blen(len(responding_title) + 2) + b"\x04" + blen(len(responding_title)) + responding_title
    if mechanism:
        body += b"\x88\x02\x07\x80" + _mech_name(0x89, mechanism)
        if auth_value is not None:
            body += b"\xAA" + blen(len(auth_value) + 2) + b"\x80" + blen(len(auth_value)) + auth_value
    body += b"\xBE" + blen(len(user_info) + 2) + b"\x04" + blen(len(user_info)) + user_info
    return b"\x61" + blen(len(body)) + bytes(body)


def rlrq(reason: int = 0) -> bytes:
    return bytes([0x62, 0x03, 0x80, 0x01, reason])


def rlre(reason: int = 0) -> bytes:
    return bytes([0x63, 0x03, 0x80, 0x01, reason])


# --------------------------------------------------------------------------- LN services

def _desc(class_id: int, obis: str, attr: int) -> bytes:
    return struct.pack(">H", class_id) + obis_bytes(obis) + bytes([attr & 0xFF])


def get_request(iip: int, class_id: int, obis: str, attr: int) -> bytes:
    return b"\xC0\x01" + bytes([iip]) + _desc(class_id, obis, attr) + b"\x00"


def get_request_next(iip: int, block: int) -> bytes:
    return b"\xC0\x02" + bytes([iip]) + struct.pack(">I", block)


def get_response(iip: int, value: tuple | None, dar: int = 0) -> bytes:
    if value is None:
        return b"\xC4\x01" + bytes([iip, 0x01, dar])
    return b"\xC4\x01" + bytes([iip, 0x00]) + axdr(value)


def get_response_block(iip: int, last: bool, block: int, raw: bytes) -> bytes:
    return b"\xC4\x02" + bytes([iip, 1 if last else 0]) + struct.pack(">I", block) + b"\x00" + blen(len(raw)) + raw


def set_request(iip: int, class_id: int, obis: str, attr: int, value: tuple) -> bytes:
    return b"\xC1\x01" + bytes([iip]) + _desc(class_id, obis, attr) + b"\x00" + axdr(value)


def set_response(iip: int, dar: int = 0) -> bytes:
    return b"\xC5\x01" + bytes([iip, dar])


def action_request(iip: int, class_id: int, obis: str, method: int, param: tuple | None) -> bytes:
    out = b"\xC3\x01" + bytes([iip]) + _desc(class_id, obis, method)
    return out + (b"\x01" + axdr(param) if param is not None else b"\x00")


def action_response(iip: int, result: int = 0, ret: tuple | None = None) -> bytes:
    out = b"\xC7\x01" + bytes([iip, result])
    return out + (b"\x01\x00" + axdr(ret) if ret is not None else b"\x00")


def data_notification(long_iip: int, value: tuple, dt: bytes | None = None) -> bytes:
    out = b"\x0F" + struct.pack(">I", long_iip)
    out += (b"\x0C" + dt) if dt else b"\x00"
    return out + axdr(value)


def exception_response(state: int, service: int, ic: int | None = None) -> bytes:
    out = bytes([0xD8, state, service])
    return out + (struct.pack(">I", ic) if ic is not None else b"")


def gbt(last: bool, block: int, ack: int, data: bytes, window: int = 1) -> bytes:
    return bytes([0xE0, (0x80 if last else 0) | (window & 0x3F)]) + struct.pack(">HH", block, ack) + blen(len(data)) + data


# --------------------------------------------------------------------------- SN services

def read_request(names: list[int]) -> bytes:
    return b"\x05" + blen(len(names)) + b"".join(b"\x02" + struct.pack(">H", n) for n in names)


def read_response(values: list[tuple]) -> bytes:
    return b"\x0C" + blen(len(values)) + b"".join(b"\x00" + axdr(v) for v in values)


def write_request(names: list[int], values: list[tuple]) -> bytes:
    return (b"\x06" + blen(len(names)) + b"".join(b"\x02" + struct.pack(">H", n) for n in names)
            + blen(len(values)) + b"".join(axdr(v) for v in values))


def write_response(n: int = 1) -> bytes:
    return b"\x0D" + blen(n) + b"\x00" * n


# --------------------------------------------------------------------------- protection

def glo_tag(plain_tag: int, dedicated: bool = False) -> int:
    if plain_tag >= 0xC0:
        return plain_tag + (0x10 if dedicated else 0x08)
    return plain_tag + (0x40 if dedicated else 0x20)


def wrap_service(plain: bytes, protected_body: bytes, dedicated: bool = False) -> bytes:
    """glo-/ded-xxx: tag | len | SC IC ... (protected_body = SC || IC || ct || tag)."""
    return bytes([glo_tag(plain[0], dedicated)]) + blen(len(protected_body)) + protected_body


def wrap_general(system_title: bytes, protected_body: bytes, dedicated: bool = False) -> bytes:
    """general-glo-ciphering (DB) / general-ded-ciphering (DC)."""
    return (bytes([0xDC if dedicated else 0xDB]) + blen(len(system_title)) + system_title
            + blen(len(protected_body)) + protected_body)


def _os(b: bytes) -> bytes:
    return blen(len(b)) + b


def general_signing(transaction_id: bytes, originator: bytes, recipient: bytes, content: bytes,
                    signature: bytes) -> bytes:
    return b"\xDF" + _os(transaction_id) + _os(originator) + _os(recipient) + _os(b"") + _os(b"") \
        + _os(content) + _os(signature)


def general_signing_signed_part(transaction_id: bytes, originator: bytes, recipient: bytes,
                                content: bytes) -> bytes:
    """The bytes covered by the general-signing signature: every field before the signature."""
    return b"\xDF" + _os(transaction_id) + _os(originator) + _os(recipient) + _os(b"") + _os(b"") + _os(content)


APDU_NAMES = {0x01: "initiate-request", 0x08: "initiate-response", 0x05: "read-request",
              0x06: "write-request", 0x0C: "read-response", 0x0D: "write-response",
              0x0F: "data-notification", 0x60: "aarq", 0x61: "aare", 0x62: "rlrq", 0x63: "rlre",
              0xC0: "get-request", 0xC1: "set-request", 0xC3: "action-request",
              0xC4: "get-response", 0xC5: "set-response", 0xC7: "action-response",
              0xD8: "exception-response", 0xE0: "general-block-transfer",
              0xC8: "glo-get-request", 0xC9: "glo-set-request", 0xCB: "glo-action-request",
              0xCC: "glo-get-response", 0xCD: "glo-set-response", 0xCF: "glo-action-response",
              0xD0: "ded-get-request", 0xD1: "ded-set-request", 0xD3: "ded-action-request",
              0xD4: "ded-get-response", 0xD5: "ded-set-response", 0xD7: "ded-action-response",
              0x21: "glo-initiate-request", 0x28: "glo-initiate-response",
              0xDB: "general-glo-ciphering", 0xDC: "general-ded-ciphering",
              0xDD: "general-ciphering", 0xDF: "general-signing"}
