"""Test helpers (decryption/association/audit tests): put xDLMS APDUs into Ethernet/IPv4/UDP
frames with an IEC 62056-47 wrapper and run them through the pipeline."""
from __future__ import annotations

import struct

from analyzer.packet import Record
from analyzer.pipeline import Pipeline
from dissectors.wrapper import build as build_wrapper

CLIENT = ("10.0.0.2", 40000, 16)
SERVER = ("10.0.0.1", 4059, 1)


def _ip(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def udp_frame(apdu: bytes, src=CLIENT, dst=SERVER) -> bytes:
    payload = build_wrapper(src[2], dst[2], apdu)
    udp = struct.pack(">HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, _ip(src[0]), _ip(dst[0]))
    csum = 0
    for i in range(0, 20, 2):
        csum += (ip[i] << 8) | ip[i + 1]
    while csum >> 16:
        csum = (csum & 0xFFFF) + (csum >> 16)
    ip = ip[:10] + struct.pack(">H", ~csum & 0xFFFF) + ip[12:]
    eth = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"
    return eth + ip + udp


def c2s(apdu: bytes, client=CLIENT, server=SERVER) -> bytes:
    return udp_frame(apdu, client, server)


def s2c(apdu: bytes, client=CLIENT, server=SERVER) -> bytes:
    return udp_frame(apdu, server, client)


def run(frames, keys=None, t0: float = 1_700_000_000.0, step: float = 0.01):
    """Feed frames (bytes, or (time, bytes)) through a fresh pipeline: (packets, pipeline)."""
    pipe = Pipeline(keys=keys)
    pkts = []
    for i, fr in enumerate(frames):
        lt = 1
        if isinstance(fr, tuple) and len(fr) == 3:
            ts, data, lt = fr
            ts = t0 + i * step if ts is None else ts
        elif isinstance(fr, tuple):
            ts, data = fr
        else:
            ts, data = t0 + i * step, fr
        pkts.append(pipe.feed(Record(int(ts * 1e9), data, lt, len(data))))
    pipe.finish()
    return pkts, pipe


def aarq(calling_title: bytes | None = None, mechanism: int = 0, auth_value: bytes | None = None,
         context: int = 1, user_info: bytes | None = None) -> bytes:
    """A BER AARQ (hand-assembled test input)."""
    body = bytes.fromhex("A109060760857405080100")[:-1] + bytes([context])
    if calling_title is not None:
        body += b"\xA6" + bytes([len(calling_title) + 2, 0x04, len(calling_title)]) + calling_title
    if mechanism:
        body += bytes.fromhex("8A020780") + bytes.fromhex("8B0760857405080200")[:-1] + bytes([mechanism])
    if auth_value is not None:
        body += b"\xAC" + bytes([len(auth_value) + 2, 0x80, len(auth_value)]) + auth_value
    if user_info is None:
        user_info = bytes.fromhex("01000000065F1F0400007E1F04B0")
    body += b"\xBE" + bytes([len(user_info) + 2, 0x04, len(user_info)]) + user_info
    return b"\x60" + bytes([len(body)]) + body


def aare(responding_title: bytes | None = None, mechanism: int = 0, stoc: bytes | None = None,
         result: int = 0, diag: int = 0, context: int = 1, user_info: bytes | None = None) -> bytes:
    body = bytes.fromhex("A109060760857405080100")[:-1] + bytes([context])
    body += bytes([0xA2, 3, 2, 1, result, 0xA3, 5, 0xA1, 3, 2, 1, diag])
    if responding_title is not None:
        body += b"\xA4" + bytes([len(responding_title) + 2, 0x04, len(responding_title)]) + responding_title
    if mechanism:
        body += bytes.fromhex("88020780") + bytes.fromhex("890760857405080200")[:-1] + bytes([mechanism])
    if stoc is not None:
        body += b"\xAA" + bytes([len(stoc) + 2, 0x80, len(stoc)]) + stoc
    if user_info is None:
        user_info = bytes.fromhex("0800065F1F040000501F01F40007")
    body += b"\xBE" + bytes([len(user_info) + 2, 0x04, len(user_info)]) + user_info
    return b"\x61" + bytes([len(body)]) + body


def action_hls(value: bytes, invoke: int = 1) -> bytes:
    return bytes([0xC3, 0x01, 0xC0 | invoke]) + bytes.fromhex("000F0000280000FF0101") + \
        bytes([0x09, len(value)]) + value


def action_hls_response(value: bytes, invoke: int = 1) -> bytes:
    return bytes([0xC7, 0x01, 0xC0 | invoke, 0x00, 0x01, 0x00, 0x09, len(value)]) + value


def glo(tag: int, body: bytes) -> bytes:
    """glo-/ded- APDU: tag | length | SC IC ... (body = protect() output)."""
    n = len(body)
    ln = bytes([n]) if n < 0x80 else (b"\x81" + bytes([n]) if n < 0x100 else b"\x82" + n.to_bytes(2, "big"))
    return bytes([tag]) + ln + body


def public_key_ring(tmp_path, public_key, entry: str, name: str, extra: str = ""):
    """A key ring file with one [[dlms]] set whose `entry` (certificate, peer_certificate)
    names a PEM file holding `public_key`."""
    from cryptography.hazmat.primitives import serialization

    pem = tmp_path / f"{name}-pub.pem"
    pem.write_bytes(public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    ring = tmp_path / "r.toml"
    ring.write_text(f'[[dlms]]\nname="{name}"\n{extra}{entry}="{pem}"\n')
    ring.chmod(0o600)
    return ring


def a_xdr_octets(b: bytes) -> bytes:
    """A short A-XDR octet-string (length byte + contents)."""
    return bytes([len(b)]) + b
