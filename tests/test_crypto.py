"""DLMS security primitives against the published vectors in ../shared/vectors."""
from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from analyzer import dlmscrypto as dc

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
ST_GB = bytes.fromhex("4D4D4D0000BC614E")
PLAIN_GET = bytes.fromhex("C0010000080000010000FF0200")


def _vec(vectors, name):
    for v in vectors:
        if v["name"] == name:
            return v
    raise KeyError(name)


@pytest.mark.parametrize("name,sc,status", [
    ("greenbook_glo_get_request_sc10", 0x10, "auth-ok"),
    ("greenbook_glo_get_request_sc20", 0x20, "unauthenticated"),
    ("greenbook_glo_get_request_sc30", 0x30, "decrypted"),
])
def test_greenbook_get_request_three_modes(vectors, name, sc, status):
    v = _vec(vectors, name)
    apdu = bytes.fromhex(v["hex"])
    assert apdu[0] == 0xC8 and apdu[2] == sc
    ic = int(v["expected"]["invocation_counter"], 16)
    res = dc.unprotect(apdu[2], ic, bytes.fromhex(v["keys"]["system_title_sender"]),
                       bytes.fromhex(v["keys"]["EK"]), bytes.fromhex(v["keys"]["AK"]), apdu[7:])
    assert res.plaintext == bytes.fromhex(v["expected"]["plaintext"])
    assert res.status == status
    # and the encoder reproduces the published bytes
    assert dc.protect(sc, ic, ST_GB, EK, AK, PLAIN_GET) == apdu[2:]


def test_wrong_key_fails_authentication(vectors):
    apdu = bytes.fromhex(_vec(vectors, "greenbook_glo_get_request_sc30")["hex"])
    with pytest.raises(dc.CryptoError) as ei:
        dc.unprotect(0x30, 0x01234567, ST_GB, bytes(16), AK, apdu[7:])
    assert "mismatch" in str(ei.value)
    # the peer's title is not the sender's: fails too
    with pytest.raises(dc.CryptoError):
        dc.unprotect(0x30, 0x01234567, b"ABCDEFGH", EK, AK, apdu[7:])
    # authentication-only with a tampered plaintext byte
    a10 = bytearray(bytes.fromhex(_vec(vectors, "greenbook_glo_get_request_sc10")["hex"]))
    a10[10] ^= 1
    with pytest.raises(dc.CryptoError):
        dc.unprotect(0x10, 0x01234567, ST_GB, EK, AK, bytes(a10[7:]))


def test_short_body_and_bad_key_are_crypto_errors():
    with pytest.raises(dc.CryptoError):
        dc.unprotect(0x30, 1, ST_GB, EK, AK, b"\x00" * 5)
    with pytest.raises(dc.CryptoError) as ei:
        dc.unprotect(0x30, 1, ST_GB, b"\x01" * 7, AK, b"\x00" * 20)
    assert "0101" not in str(ei.value)


def test_sc_bits():
    s = dc.parse_sc(0x21)
    assert (s.suite, s.auth, s.enc, s.broadcast, s.compressed) == (1, False, True, False, False)
    assert dc.parse_sc(0xF0) == dc.SecurityControl(0, True, True, True, True)
    assert dc.parse_sc(0x30).mode == "authenticated-encryption"


def test_hls_gmac_greenbook_passes(vectors):
    p3 = _vec(vectors, "greenbook_hls5_gmac_pass3_f_stoc")
    p4 = _vec(vectors, "greenbook_hls5_gmac_pass4_f_ctos")
    stc = bytes.fromhex(p3["keys"]["system_title_client"])
    sts = bytes.fromhex(p3["keys"]["system_title_server"])
    f_stoc = dc.hls_response(5, b"P6wRJ21F", ek=EK, ak=AK, own_title=stc, ic=1)
    assert f_stoc == bytes.fromhex(p3["hex"])
    assert dc.hls_verify(5, bytes.fromhex(p3["hex"]), b"P6wRJ21F", ek=EK, ak=AK, own_title=stc)
    assert dc.hls_verify(5, bytes.fromhex(p4["hex"]), b"K56iVagY", ek=EK, ak=AK, own_title=sts)
    # wrong title / wrong challenge / wrong key
    assert not dc.hls_verify(5, bytes.fromhex(p4["hex"]), b"K56iVagY", ek=EK, ak=AK, own_title=stc)
    assert not dc.hls_verify(5, bytes.fromhex(p3["hex"]), b"P6wRJ21G", ek=EK, ak=AK, own_title=stc)
    assert not dc.hls_verify(5, bytes.fromhex(p3["hex"]), b"P6wRJ21F", ek=bytes(16), ak=AK, own_title=stc)


def test_hls_gmac_gurux_capture(vectors):
    v = _vec(vectors, "gurux_hls5_gmac_from_capture")
    e = v["expected"]
    stc = bytes.fromhex(v["keys"]["system_title_client"])
    sts = bytes.fromhex(v["keys"]["system_title_server"])
    assert dc.hls_verify(5, bytes.fromhex(v["hex"]), bytes.fromhex(e["StoC"]), ek=EK, ak=AK, own_title=stc)
    f_ctos = bytes.fromhex("100000010D3AAF0E22605F26FB155CF2CB")
    assert dc.hls_verify(5, f_ctos, bytes.fromhex(e["CtoS"]), ek=EK, ak=AK, own_title=sts)


def test_hls_mech2_aes_ecb_gurux(vectors):
    v = _vec(vectors, "gurux_hls2_aes_ecb_f_stoc")
    e = v["expected"]
    assert dc.hls_response(2, bytes.fromhex(e["StoC"]), secret=b"Gurux") == bytes.fromhex(e["f_StoC"])
    assert dc.hls_verify(2, bytes.fromhex(e["f_CtoS"]), bytes.fromhex(e["CtoS"]), secret=b"Gurux")
    assert not dc.hls_verify(2, bytes.fromhex(e["f_CtoS"]), bytes.fromhex(e["CtoS"]), secret=b"gurux")


def test_hls_hash_mechanisms_formulas():
    # formulas from the docs (§3), computed with hashlib as the independent side
    stoc, ctos, sec = b"P6wRJ21F", b"K56iVagY", b"secret"
    assert dc.hls_response(3, stoc, secret=sec) == hashlib.md5(stoc + sec).digest()
    assert dc.hls_response(4, stoc, secret=sec) == hashlib.sha1(stoc + sec).digest()
    c, s = b"CLIENT01", b"SERVER01"
    exp = hashlib.sha256(sec + c + s + stoc + ctos).digest()
    assert dc.hls_response(6, stoc, secret=sec, own_title=c, peer_title=s, other_challenge=ctos) == exp
    assert dc.hls_verify(6, exp, stoc, secret=sec, own_title=c, peer_title=s, other_challenge=ctos)
    assert not dc.hls_verify(6, exp, stoc, secret=sec, own_title=s, peer_title=c, other_challenge=ctos)
    assert dc.hls_verify(3, hashlib.md5(ctos + sec).digest(), ctos, secret=sec)


@pytest.mark.parametrize("suite,curve", [(1, ec.SECP256R1()), (2, ec.SECP384R1())])
def test_ecdsa_raw_signatures(suite, curve):
    k = ec.generate_private_key(curve)
    msg = b"CLIENT01SERVER01" + b"c" * 16 + b"s" * 16
    sig = dc.hls_response(7, b"c" * 16, own_title=b"CLIENT01", peer_title=b"SERVER01",
                          other_challenge=b"s" * 16, private_key=k, suite=suite)
    assert len(sig) == (64 if suite == 1 else 96)
    assert dc.ecdsa_verify(k.public_key(), msg, sig)
    assert not dc.ecdsa_verify(k.public_key(), msg + b"x", sig)
    assert not dc.ecdsa_verify(k.public_key(), msg, sig[:-1])
    assert dc.hls_verify(7, sig, b"c" * 16, own_title=b"CLIENT01", peer_title=b"SERVER01",
                         other_challenge=b"s" * 16, public_key=k.public_key())


def test_key_wrap_rfc3394():
    # RFC 3394 §4.1: 128-bit key data with a 128-bit KEK
    kek = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    wrapped = bytes.fromhex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")
    assert dc.key_wrap(kek, key) == wrapped
    assert dc.key_unwrap(kek, wrapped) == key
    with pytest.raises(dc.CryptoError):
        dc.key_unwrap(bytes(16), wrapped)


def test_ecdh_both_sides_agree():
    a = ec.generate_private_key(ec.SECP256R1())
    b = ec.generate_private_key(ec.SECP256R1())
    k1 = dc.ecdh_agree(a, b.public_key(), 1, b"CLIENT01", b"SERVER01")
    k2 = dc.ecdh_agree(b, a.public_key(), 1, b"CLIENT01", b"SERVER01")
    assert k1 == k2 and len(k1) == 16
    raw = b.public_key().public_bytes(
        encoding=__import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.X962,
        format=__import__("cryptography.hazmat.primitives.serialization", fromlist=["PublicFormat"]).PublicFormat.UncompressedPoint)
    assert dc.public_key_from_bytes(raw[1:], 1).public_numbers() == b.public_key().public_numbers()


def test_suite1_enc_only_tirol(vectors):
    v = _vec(vectors, "tirol_kaifa_mbus_general_glo_ciphering_suite1_enc_only")
    apdu = bytes.fromhex(v["hex"])
    assert apdu[0] == 0xDB and apdu[1] == 8
    st = apdu[2:10]
    assert apdu[10:13] == b"\x82\x01\x09"
    body = apdu[13:13 + 0x109]
    sc, ic = body[0], int.from_bytes(body[1:5], "big")
    res = dc.unprotect(sc, ic, st, bytes.fromhex(v["keys"]["EK"]), None, body[5:])
    assert res.status == "unauthenticated"
    assert res.plaintext == bytes.fromhex(v["expected"]["plaintext"])
