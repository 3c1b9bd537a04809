"""DLMS/COSEM security primitives (suites 0, 1 and 2).

Everything here is a pure function of its inputs: AES-GCM with the 12-byte DLMS tag in the
three protection modes, GMAC, AES key wrap, ECDH with the SP 800-56A concatenation KDF,
ECDSA with raw r||s signatures, and the HLS pass-3/pass-4 functions of mechanisms 2..7.
The simulator uses the same functions to encrypt.

Keys are secrets: no function here formats a key into a message.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                            encode_dss_signature)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import (InvalidUnwrap, aes_key_unwrap,
                                                    aes_key_wrap)

TAG_LEN = 12

# Security control byte bits
SC_SUITE_MASK = 0x0F
SC_AUTH = 0x10
SC_ENC = 0x20
SC_BROADCAST = 0x40
SC_COMPRESSED = 0x80


class SecurityControl(NamedTuple):
    suite: int
    auth: bool
    enc: bool
    broadcast: bool
    compressed: bool

    @property
    def mode(self) -> str:
        if self.auth and self.enc:
            return "authenticated-encryption"
        if self.auth:
            return "authentication-only"
        if self.enc:
            return "encryption-only"
        return "none"


_SC_TABLE = tuple(SecurityControl(sc & SC_SUITE_MASK, bool(sc & SC_AUTH), bool(sc & SC_ENC),
                                   bool(sc & SC_BROADCAST), bool(sc & SC_COMPRESSED)) for sc in range(256))


def parse_sc(sc: int) -> SecurityControl:
    return _SC_TABLE[sc & 0xFF]


_IC = struct.Struct(">I")


class CryptoError(Exception):
    """Authentication failed or the input cannot be processed (message never holds key bytes)."""


def make_iv(system_title: bytes, ic: int) -> bytes:
    return bytes(system_title) + _IC.pack(ic & 0xFFFFFFFF)


def _check_key(key: bytes, what: str = "key") -> None:
    if key is None or len(key) not in (16, 24, 32):
        raise CryptoError(f"{what} must be 16, 24 or 32 bytes long")


# --------------------------------------------------------------------------- GCM / CTR

def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """GCM's keystream without a tag: CTR mode starting at counter 2 (J0 + 1)."""
    if len(iv) != 12:
        raise CryptoError("IV must be 12 bytes (system title 8 + invocation counter 4)")
    if not data:
        return b""
    return _gcm(key).encrypt(iv, data, None)[:-16]


def _gcm(key: bytes) -> AESGCM:
    """AES-GCM object per key (bounded in-memory cache: the hot path makes one Rust call)."""
    g = _GCM_CACHE.get(key)
    if g is None:
        if key is None or len(key) not in (16, 24, 32):
            raise CryptoError("key must be 16, 24 or 32 bytes long")
        if len(_GCM_CACHE) > 256:
            _GCM_CACHE.clear()
        k = bytes(key)
        g = _GCM_CACHE[k] = AESGCM(k)
    return g


_GCM_CACHE: dict[bytes, AESGCM] = {}


def gcm_encrypt_raw(key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """AES-GCM: (ciphertext, 16-byte tag)."""
    if len(iv) != 12:
        raise CryptoError("IV must be 12 bytes")
    out = _gcm(key).encrypt(iv, plaintext, aad or None)
    return out[:-16], out[-16:]


def gcm_decrypt_raw(key: bytes, iv: bytes, ciphertext: bytes, aad: bytes, tag: bytes) -> bytes:
    """AES-GCM decrypt and verify a (possibly truncated, >= 12 byte) tag; raises CryptoError.

    DLMS truncates the tag to 12 bytes, which the AEAD interface cannot verify directly:
    the plaintext is recovered with the same keystream (GCM encryption of the ciphertext
    under the same IV XORs the same counter blocks), then re-encrypted to recompute the
    full tag, compared in constant time on its first len(tag) bytes."""
    if len(iv) != 12:
        raise CryptoError("IV must be 12 bytes")
    if not 12 <= len(tag) <= 16:
        raise CryptoError("tag must be 12..16 bytes")
    g = _gcm(key)
    a = aad or None
    if len(tag) == 16:
        try:
            return g.decrypt(iv, bytes(ciphertext) + bytes(tag), a)
        except InvalidTag:
            raise CryptoError("authentication tag mismatch") from None
    pt = g.encrypt(iv, ciphertext, None)[:-16] if ciphertext else b""
    full = g.encrypt(iv, pt, a)[-16:]
    if not hmac.compare_digest(full[:len(tag)], bytes(tag)):
        raise CryptoError("authentication tag mismatch")
    return pt


def protect(sc: int, ic: int, system_title: bytes, ek: bytes | None, ak: bytes | None,
            plaintext: bytes) -> bytes:
    """Build the protected body SC || IC || (ciphertext|plaintext) || [tag] for a plaintext APDU."""
    s = parse_sc(sc)
    iv = make_iv(system_title, ic)
    hdr = bytes([sc]) + struct.pack(">I", ic)
    ak = ak or b""
    if s.auth and s.enc:
        ct, tag = gcm_encrypt_raw(ek, iv, plaintext, bytes([sc]) + ak)
        return hdr + ct + tag[:TAG_LEN]
    if s.auth:
        _, tag = gcm_encrypt_raw(ek, iv, b"", bytes([sc]) + ak + plaintext)
        return hdr + plaintext + tag[:TAG_LEN]
    if s.enc:
        _check_key(ek)
        return hdr + _ctr(ek, iv, plaintext)
    return hdr + plaintext


class Unprotected(NamedTuple):
    plaintext: bytes
    status: str          # "decrypted" | "auth-ok" | "unauthenticated" | "plain"
    tag: bytes | None


def unprotect(sc: int, ic: int, system_title: bytes, ek: bytes | None, ak: bytes | None,
              body: bytes) -> Unprotected:
    """Reverse `protect` for `body` = the bytes after SC||IC.  Raises CryptoError when the
    tag does not verify (wrong key, wrong title, or damaged data)."""
    iv = system_title + _IC.pack(ic & 0xFFFFFFFF)
    if sc & SC_AUTH:
        if len(body) < TAG_LEN:
            raise CryptoError("ciphered content shorter than the authentication tag")
        data, tag = body[:-TAG_LEN], body[-TAG_LEN:]
        if sc & SC_ENC:
            return Unprotected(gcm_decrypt_raw(ek, iv, data, bytes((sc,)) + (ak or b""), tag), "decrypted", tag)
        gcm_decrypt_raw(ek, iv, b"", bytes((sc,)) + (ak or b"") + data, tag)
        return Unprotected(data, "auth-ok", tag)
    if sc & SC_ENC:
        _check_key(ek)
        return Unprotected(_ctr(ek, iv, body), "unauthenticated", None)
    return Unprotected(body, "plain", None)


def gmac(ek: bytes, ak: bytes, system_title: bytes, ic: int, data: bytes, sc: int = 0x10) -> bytes:
    """The 12-byte GMAC of SC || AK || data (HLS-GMAC, authentication-only)."""
    _, tag = gcm_encrypt_raw(ek, make_iv(system_title, ic), b"", bytes([sc]) + (ak or b"") + data)
    return tag[:TAG_LEN]


# --------------------------------------------------------------------------- key wrap

def key_wrap(kek: bytes, key: bytes) -> bytes:
    _check_key(kek, "KEK")
    return aes_key_wrap(kek, key)


def key_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    _check_key(kek, "KEK")
    try:
        return aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise CryptoError("key unwrap failed (wrong KEK or damaged data)") from None


# --------------------------------------------------------------------------- ECC (suites 1/2)

_CURVES = {1: (ec.SECP256R1, hashes.SHA256, 32), 2: (ec.SECP384R1, hashes.SHA384, 48)}

# AlgorithmID of the KDF OtherInfo: the cipher OID 2.16.756.5.8.3.<suite> in DER content
# form.  Not verified against a public vector (docs: "not verified"); overridable.
ALGORITHM_ID = {1: bytes.fromhex("60857405080300"), 2: bytes.fromhex("60857405080301")}


def suite_params(suite: int):
    try:
        return _CURVES[suite]
    except KeyError:
        raise CryptoError(f"security suite {suite} has no ECC parameters") from None


def raw_to_der(sig: bytes) -> bytes:
    h = len(sig) // 2
    return encode_dss_signature(int.from_bytes(sig[:h], "big"), int.from_bytes(sig[h:], "big"))


def der_to_raw(sig: bytes, size: int) -> bytes:
    r, s = decode_dss_signature(sig)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_sign(private_key, data: bytes, suite: int = 1) -> bytes:
    _, h, size = suite_params(suite)
    return der_to_raw(private_key.sign(data, ec.ECDSA(h())), size)


def ecdsa_verify(public_key, data: bytes, signature: bytes, suite: int | None = None) -> bool:
    """Verify a raw r||s signature (64 bytes P-256, 96 bytes P-384)."""
    if suite is None:
        suite = 1 if len(signature) == 64 else 2
    try:
        _, h, size = suite_params(suite)
    except CryptoError:
        return False
    if len(signature) != 2 * size:
        return False
    try:
        public_key.verify(raw_to_der(signature), data, ec.ECDSA(h()))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def public_key_from_bytes(data: bytes, suite: int = 1):
    """A public key from the raw X||Y (64/96 bytes) or SEC1 04||X||Y form."""
    curve, _, size = suite_params(suite)
    if len(data) == 2 * size:
        data = b"\x04" + data
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve(), data)
    except ValueError:
        raise CryptoError("not a valid public key point") from None


def kdf(shared: bytes, suite: int, party_u: bytes, party_v: bytes,
        algorithm_id: bytes | None = None, length: int | None = None) -> bytes:
    """NIST SP 800-56A concatenation KDF: OtherInfo = AlgorithmID || PartyUInfo || PartyVInfo."""
    _, h, _ = suite_params(suite)
    if length is None:
        length = 16 if suite == 1 else 32
    other = (ALGORITHM_ID[suite] if algorithm_id is None else algorithm_id) + party_u + party_v
    return ConcatKDFHash(algorithm=h(), length=length, otherinfo=other).derive(shared)


def ecdh_agree(private_key, peer_public, suite: int, party_u: bytes, party_v: bytes,
               algorithm_id: bytes | None = None) -> bytes:
    """ECDH shared secret Z, then the KDF: the agreed AES key."""
    try:
        z = private_key.exchange(ec.ECDH(), peer_public)
    except (ValueError, TypeError):
        raise CryptoError("ECDH failed (curve mismatch)") from None
    return kdf(z, suite, party_u, party_v, algorithm_id)


# --------------------------------------------------------------------------- HLS

MECHANISMS = {0: "none", 1: "LLS", 2: "HLS", 3: "HLS-MD5", 4: "HLS-SHA1", 5: "HLS-GMAC",
              6: "HLS-SHA256", 7: "HLS-ECDSA"}


def hls_mech2_aes_ecb(secret: bytes, challenge: bytes) -> bytes:
    """Mechanism 2 as commonly implemented: AES-128-ECB under the secret zero-padded to 16
    bytes (longer secrets are truncated to a valid AES size), challenge zero-padded to 16."""
    key = bytes(secret)
    if len(key) <= 16:
        key = key.ljust(16, b"\x00")
    elif len(key) <= 24:
        key = key.ljust(24, b"\x00")
    else:
        key = key[:32].ljust(32, b"\x00")
    data = bytes(challenge)
    if len(data) % 16:
        data = data.ljust(len(data) + 16 - len(data) % 16, b"\x00")
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def hls_response(mechanism: int, challenge: bytes, *, secret: bytes | None = None,
                 ek: bytes | None = None, ak: bytes | None = None,
                 own_title: bytes = b"", peer_title: bytes = b"", other_challenge: bytes = b"",
                 ic: int = 0, private_key=None, suite: int = 1) -> bytes:
    """f(challenge) computed by the party whose title is `own_title`.

    Pass 3 (client): challenge = StoC, other_challenge = CtoS, own = client title.
    Pass 4 (server): challenge = CtoS, other_challenge = StoC, own = server title."""
    if mechanism == 2:
        return hls_mech2_aes_ecb(secret or b"", challenge)
    if mechanism == 3:
        return hashlib.md5(challenge + (secret or b"")).digest()
    if mechanism == 4:
        return hashlib.sha1(challenge + (secret or b"")).digest()
    if mechanism == 5:
        return bytes([0x10]) + struct.pack(">I", ic) + gmac(ek, ak, own_title, ic, challenge)
    if mechanism == 6:
        return hashlib.sha256((secret or b"") + own_title + peer_title + challenge + other_challenge).digest()
    if mechanism == 7:
        if private_key is None:
            raise CryptoError("HLS-ECDSA needs the signer's private key")
        return ecdsa_sign(private_key, own_title + peer_title + challenge + other_challenge, suite)
    raise CryptoError(f"mechanism {mechanism} has no HLS function")


def hls_verify(mechanism: int, response: bytes, challenge: bytes, *, secret: bytes | None = None,
               ek: bytes | None = None, ak: bytes | None = None, own_title: bytes = b"",
               peer_title: bytes = b"", other_challenge: bytes = b"", public_key=None,
               suite: int = 1) -> bool:
    """Check a pass-3/pass-4 value.  For GMAC the IC is taken from the response itself
    (SC || IC || tag), which differs from the enclosing APDU's IC."""
    response = bytes(response)
    if mechanism == 5:
        if len(response) != 5 + TAG_LEN or ek is None:
            return False
        sc = response[0]
        ic = struct.unpack_from(">I", response, 1)[0]
        exp = gmac(ek, ak, own_title, ic, challenge, sc)
        return hmac.compare_digest(exp, response[5:])
    if mechanism == 7:
        if public_key is None:
            return False
        return ecdsa_verify(public_key, own_title + peer_title + challenge + other_challenge, response,
                            None)
    if mechanism == 2:
        exp = hls_mech2_aes_ecb(secret or b"", challenge)
        # Some stacks send only the first len(challenge) bytes of the padded block.
        return len(response) > 0 and hmac.compare_digest(exp[:len(response)], response) and \
            len(response) >= min(len(exp), 16)
    exp = hls_response(mechanism, challenge, secret=secret, ek=ek, ak=ak, own_title=own_title,
                       peer_title=peer_title, other_challenge=other_challenge)
    return hmac.compare_digest(exp, response)


__all__ = [n for n in dir() if not n.startswith("_")]
