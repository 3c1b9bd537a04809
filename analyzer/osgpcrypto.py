"""OSGP / ISO/IEC 14908 security primitives.

Legacy OSGP: the OMA digest (8-byte MAC over the request, and over request || response for
the reply) and RC4 encryption of the code-through-sequence-number part.  The digest
reproduces the published MEP test vectors exactly (tests/test_osgp_crypto.py).

OSGP-AES-128-PSK (IEC 62056-8-8 Annex D): AES-CCM, AES-CMAC and a CMAC-based KDF.  The
primitives are checked against NIST SP 800-38C and RFC 4493 vectors; how they are applied to
a protected adaptation PDU (nonce, tag length, key derivation label) is not public and comes
from the adaptation profile (inferred, configurable).

The 14908 authentication reply (challenge folded with the APDU under the domain key) is a
sibling of the OMA digest; without a public vector its exact input order is inferred, so a
mismatch is reported as "not confirmed", never as an attack.
"""
from __future__ import annotations

import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import cmac as _cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM


class OsgpCryptoError(Exception):
    """Verification failed or bad parameters (messages never contain key bytes)."""


# --------------------------------------------------------------------------- OMA digest

def _rotl(x: int) -> int:
    return ((x << 1) | (x >> 7)) & 0xFF


def _rotr(x: int) -> int:
    return ((x >> 1) | (x << 7)) & 0xFF


def _key_walk(key: bytes) -> bytes:
    """The key bytes used per pass: 1.5 times the key (a 6-byte key once)."""
    if len(key) == 6:
        return bytes(key)
    return bytes(key) + bytes(key[: len(key) // 2])


def _fold(state: list[int], walk: bytes, msg, start: int) -> int:
    """One pass: each key byte's bits (LSB first) drive state index 7..0, one message byte
    per step.  Returns the message index after the pass."""
    p = start
    for kb in walk:
        for step in range(8):
            v = 7 - step
            t = (~(state[v] + v)) & 0xFF
            m = msg[p]
            p += 1
            if (kb >> step) & 1:
                state[v] = (state[(v + 1) & 7] + m + _rotl(t)) & 0xFF
            else:
                state[v] = (state[(v + 1) & 7] + m - _rotr(t)) & 0xFF
    return p


def oma_digest(key: bytes, message: bytes, state: bytes | None = None) -> bytes:
    """The 8-byte OMA digest of `message` under a 12- (OSGP PLC) or 16-byte (MEP) key.
    Short input is zero-padded to the end of the pass; longer input takes several passes."""
    if len(key) not in (6, 12, 16):
        raise OsgpCryptoError("OMA key must be 6, 12 or 16 bytes")
    walk = _key_walk(key)
    per = len(walk) * 8
    st = list(state) if state is not None else [0] * 8
    n = max(1, -(-len(message) // per))
    msg = bytes(message).ljust(n * per, b"\x00")
    p = 0
    for _ in range(n):
        p = _fold(st, walk, msg, p)
    return bytes(st)


def oma_verify_request(key: bytes, request: bytes, digest: bytes) -> bool:
    """`request` = code .. sequence number (the digest covers them)."""
    return hmac.compare_digest(oma_digest(key, request), bytes(digest))


def oma_verify_response(key: bytes, request: bytes, response: bytes, digest: bytes) -> bool:
    """The response digest continues over request || response (lengths excluded)."""
    return hmac.compare_digest(oma_digest(key, bytes(request) + bytes(response)), bytes(digest))


def lon_auth_reply(key: bytes, challenge: bytes, apdu: bytes, oma_address: bytes | None = None) -> bytes:
    """14908 authentication reply (inferred): start from the 8-byte challenge and fold the
    APDU (preceded by the 13-byte OMA address block in OMA mode) read backwards under the
    6-byte (classic) or 12-byte (OMA: domain-0 key || domain-1 key) key."""
    if len(challenge) != 8:
        raise OsgpCryptoError("challenge must be 8 bytes")
    data = (bytes(oma_address) if oma_address else b"") + bytes(apdu)
    return oma_digest(key, data[::-1], state=bytes(challenge))


# --------------------------------------------------------------------------- RC4

def rc4(key: bytes, data: bytes, skip: int = 0) -> bytes:
    """RC4 keystream XOR (encrypt == decrypt).  `skip` drops that many keystream bytes."""
    if not 1 <= len(key) <= 256:
        raise OsgpCryptoError("RC4 key must be 1..256 bytes")
    s = list(range(256))
    j = 0
    kl = len(key)
    for i in range(256):
        j = (j + s[i] + key[i % kl]) & 0xFF
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray(len(data))
    for _ in range(skip):
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
    for n, b in enumerate(data):
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out[n] = b ^ s[(s[i] + s[j]) & 0xFF]
    return bytes(out)


def osgp_rc4_key(base_key: bytes, digest: bytes) -> bytes:
    """PLC variant: the 16-byte base key XORed in its first 8 bytes with the message digest."""
    if len(base_key) != 16 or len(digest) != 8:
        raise OsgpCryptoError("RC4 base key must be 16 bytes and the digest 8 bytes")
    return bytes(a ^ b for a, b in zip(base_key[:8], digest)) + bytes(base_key[8:])


def osgp_decrypt(base_key: bytes, ciphertext: bytes, digest: bytes, oma_key: bytes | None = None) -> tuple[bytes, bool | None]:
    """Decrypt an RC4-protected OSGP request body (code .. sequence number) and, when the
    OMA key is known, check the digest over the plaintext.  Returns (plaintext, ok|None)."""
    pt = rc4(osgp_rc4_key(base_key, digest), ciphertext)
    ok = oma_verify_request(oma_key, pt, digest) if oma_key else None
    return pt, ok


# --------------------------------------------------------------------------- OSGP-AES-128-PSK

def aes_cmac(key: bytes, data: bytes) -> bytes:
    c = _cmac.CMAC(algorithms.AES(bytes(key)))
    c.update(bytes(data))
    return c.finalize()


def cmac_subkeys(key: bytes) -> tuple[bytes, bytes]:
    """RFC 4493 K1, K2 (exposed for the published subkey vectors)."""
    enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()
    l_ = int.from_bytes(enc.update(b"\x00" * 16) + enc.finalize(), "big")

    def dbl(x: int) -> int:
        x <<= 1
        if x >> 128:
            x = (x & ((1 << 128) - 1)) ^ 0x87
        return x
    k1 = dbl(l_)
    k2 = dbl(k1)
    return k1.to_bytes(16, "big"), k2.to_bytes(16, "big")


def cmac_kdf(key: bytes, data: bytes, length: int = 16) -> bytes:
    """CMAC-based KDF in the GKDF form (RFC 5433 §4, with AES-CMAC as the MAC):
    output = first `length` bytes of MAC(1 || Z) || MAC(2 || Z) || ..., the counter being
    a 2-byte big-endian integer.  This equals NIST SP 800-108 counter mode with a 16-bit
    counter before the fixed input and no length field."""
    if length <= 0 or length > 16 * 0xFFFF:
        raise OsgpCryptoError("bad KDF output length")
    out = b""
    i = 1
    while len(out) < length:
        out += aes_cmac(key, struct.pack(">H", i) + bytes(data))
        i += 1
    return out[:length]


def ccm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"", tag_len: int = 8) -> bytes:
    try:
        return AESCCM(bytes(key), tag_length=tag_len).encrypt(bytes(nonce), bytes(plaintext), bytes(aad) or None)
    except ValueError as e:
        raise OsgpCryptoError(f"CCM parameters rejected: {e}") from None


def ccm_decrypt(key: bytes, nonce: bytes, ciphertext_and_tag: bytes, aad: bytes = b"", tag_len: int = 8) -> bytes:
    """Decrypt and verify; raises OsgpCryptoError on a tag mismatch."""
    try:
        return AESCCM(bytes(key), tag_length=tag_len).decrypt(bytes(nonce), bytes(ciphertext_and_tag),
                                                              bytes(aad) or None)
    except InvalidTag:
        raise OsgpCryptoError("CCM authentication tag mismatch") from None
    except ValueError as e:
        raise OsgpCryptoError(f"CCM parameters rejected: {e}") from None


__all__ = ["OsgpCryptoError", "oma_digest", "oma_verify_request", "oma_verify_response",
           "lon_auth_reply", "rc4", "osgp_rc4_key", "osgp_decrypt", "aes_cmac", "cmac_subkeys",
           "cmac_kdf", "ccm_encrypt", "ccm_decrypt"]
