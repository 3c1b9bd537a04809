"""xDLMS / ACSE APDUs for the simulator, built with the xDLMS owner's encoders
(`dissectors.axdr.encode`, `dissectors.xdlms.build_*`).  Only what has no owner builder is
composed here: the SN read/write services and the protection wrappers (glo-/ded-,
general-glo/ded-ciphering, general-signing) around bytes from `analyzer.dlmscrypto`.

Values are typed tuples `(type_name, value)` with the A-XDR type names of the Blue Book
("double-long-unsigned", "octet-string", "structure", ...); `jsonable()` gives the form
written to the ground-truth file (numbers stay numbers, byte strings become hex).
"""
from __future__ import annotations

import struct
from typing import Any

from dissectors import axdr as _axdr

from . import wire


def blen(n: int) -> bytes:
    """A-XDR / BER length."""
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82]) + struct.pack(">H", n)


def axdr(v: tuple) -> bytes:
    wire.SOURCES["axdr"] = "dissectors.axdr.encode"
    return _axdr.encode(v)


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


# --------------------------------------------------------------------------- ACSE + LN (owner builders)

from dissectors import xdlms as _X  # noqa: E402

APP_CONTEXT = {"ln": 1, "sn": 2, "ln-cipher": 3, "sn-cipher": 4}
# get/set/action, selective access, block transfer, data-notification, GBT, general-protection
CONFORMANCE_LN = 0x00781F | 0x001000 | 0x600000 | 0x000080
CONFORMANCE_SN = 0x1C0320


def _ii(iip: int) -> dict:
    wire.SOURCES["xdlms"] = "dissectors.xdlms.build_*"
    return {"invoke_id": iip & 0x0F, "priority": iip >> 7 & 1}


def initiate_request(conformance: int, max_pdu: int = 0x04B0, dedicated_key: bytes | None = None) -> bytes:
    return _X.build_initiate_request(conformance, max_pdu, dedicated_key=dedicated_key)


def initiate_response(conformance: int, max_pdu: int = 0x01F4, vaa: int = 0x0007) -> bytes:
    return _X.build_initiate_response(conformance, max_pdu, vaa_name=vaa)


def aarq(context: int, user_info: bytes, calling_title: bytes | None = None, mechanism: int = 0,
         auth_value: bytes | None = None) -> bytes:
    wire.SOURCES["acse"] = "dissectors.xdlms.build_aarq/build_aare"
    return _X.build_aarq(context, mechanism or None, auth_value, calling_title, user_info)


def aare(context: int, result: int, diag: int, user_info: bytes, responding_title: bytes | None = None,
         mechanism: int = 0, auth_value: bytes | None = None) -> bytes:
    return _X.build_aare(result, diag, context, mechanism or None, responding_title, auth_value, user_info)


def rlrq(reason: int = 0) -> bytes:
    return _X.build_rlrq(reason)


def rlre(reason: int = 0) -> bytes:
    return _X.build_rlre(reason)


def get_request(iip: int, class_id: int, obis: str, attr: int) -> bytes:
    return _X.build_get_request(class_id, obis, attr, **_ii(iip))


def get_request_next(iip: int, block: int) -> bytes:
    return _X.build_get_request_next(block, **_ii(iip))


def get_response(iip: int, value: tuple | None, dar: int = 0) -> bytes:
    if value is None:
        return _X.build_get_response(None, result=dar, **_ii(iip))
    return _X.build_get_response(value, **_ii(iip))


def get_response_block(iip: int, last: bool, block: int, raw: bytes) -> bytes:
    return _X.build_get_response_block(raw, block, last, **_ii(iip))


def set_request(iip: int, class_id: int, obis: str, attr: int, value: tuple) -> bytes:
    return _X.build_set_request(class_id, obis, attr, value, **_ii(iip))


def set_response(iip: int, dar: int = 0) -> bytes:
    return _X.build_set_response(dar, **_ii(iip))


def action_request(iip: int, class_id: int, obis: str, method: int, param: tuple | None) -> bytes:
    return _X.build_action_request(class_id, obis, method, param, **_ii(iip))


def action_response(iip: int, result: int = 0, ret: tuple | None = None) -> bytes:
    return _X.build_action_response(result, ret, **_ii(iip))


def data_notification(long_iip: int, value: tuple, dt: bytes | None = None) -> bytes:
    return _X.build_data_notification(value, long_iip, dt or b"")


def exception_response(state: int, service: int, ic: int | None = None) -> bytes:
    return _X.build_exception_response(state, service, ic)


def gbt(last: bool, block: int, ack: int, data: bytes, window: int = 1) -> bytes:
    return _X.build_gbt(data, block, ack, last, window=window)


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
    wire.SOURCES["protection"] = "analyzer.dlmscrypto.protect + analyzer.simulate.apdu wrappers"
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
