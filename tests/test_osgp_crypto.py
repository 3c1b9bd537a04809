"""OSGP legacy (OMA digest, RC4) and OSGP-AES-128-PSK primitives against published vectors."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import CounterLocation, KBKDFCMAC, Mode

from analyzer import osgpcrypto as oc

MEP_KEY = b"\x01" * 16
MEP_REQ = bytes.fromhex("3F0017000000002C01020304")


# ---- OMA digest: MEP guide App. A test vectors (docs/lon-wire-formats.md §8.3)
def test_oma_digest_mep_request():
    assert oc.oma_digest(MEP_KEY, MEP_REQ) == bytes.fromhex("74861F6D7658DD56")
    assert oc.oma_verify_request(MEP_KEY, MEP_REQ, bytes.fromhex("74861F6D7658DD56"))


def test_oma_digest_mep_response_continues_over_request():
    rsp = bytes.fromhex("0C77635B90")
    assert oc.oma_digest(MEP_KEY, MEP_REQ + rsp) == bytes.fromhex("35863C1DF5B91482")
    assert oc.oma_verify_response(MEP_KEY, MEP_REQ, rsp, bytes.fromhex("35863C1DF5B91482"))
    assert not oc.oma_verify_response(MEP_KEY, MEP_REQ, bytes.fromhex("0C77635B91"),
                                      bytes.fromhex("35863C1DF5B91482"))


def test_oma_digest_mep_resent_with_new_sequence():
    req = bytes.fromhex("3F0017000000002C77635B91")
    assert oc.oma_digest(MEP_KEY, req) == bytes.fromhex("13DB85A135A0575E")
    assert not oc.oma_verify_request(b"\x02" * 16, req, bytes.fromhex("13DB85A135A0575E"))


def test_oma_digest_long_input_and_12_byte_key():
    k = b"\xdf" * 12
    one = oc.oma_digest(k, b"\x11" * 144)
    two = oc.oma_digest(k, b"\x11" * 145)
    assert len(one) == len(two) == 8 and one != two
    # short input is zero-padded to the end of the pass
    assert oc.oma_digest(k, b"\x11\x22") == oc.oma_digest(k, b"\x11\x22" + b"\x00" * 142)
    with pytest.raises(oc.OsgpCryptoError):
        oc.oma_digest(b"\x00" * 5, b"x")


# ---- RC4: RFC 6229 (40-bit key) and the classic published vectors
def test_rc4_rfc6229_and_classic():
    ks = oc.rc4(bytes.fromhex("0102030405"), b"\x00" * 32)
    assert ks[:16] == bytes.fromhex("b2396305f03dc027ccc3524a0a1118a8")
    assert ks[16:] == bytes.fromhex("6982944f18fc82d589c403a47a0d0919")
    assert oc.rc4(b"Key", b"Plaintext") == bytes.fromhex("BBF316E8D940AF0AD3")
    assert oc.rc4(b"Wiki", b"pedia") == bytes.fromhex("1021BF0420")
    assert oc.rc4(b"Secret", b"Attack at dawn") == bytes.fromhex("45A01F645FC35B383552544B9BF5")


def test_osgp_rc4_roundtrip_with_digest_check():
    oma = b"\xdf" * 12
    base = bytes(range(16))
    pt = MEP_REQ
    dg = oc.oma_digest(oma, pt)
    ct = oc.rc4(oc.osgp_rc4_key(base, dg), pt)
    assert ct != pt
    assert oc.osgp_decrypt(base, ct, dg, oma) == (pt, True)
    assert oc.osgp_decrypt(base, ct, dg, b"\xde" * 12)[1] is False


# ---- AES-CMAC: RFC 4493 §4
K = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
M64 = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")


@pytest.mark.parametrize("n,mac", [
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
])
def test_aes_cmac_rfc4493(n, mac):
    assert oc.aes_cmac(K, M64[:n]) == bytes.fromhex(mac)


def test_cmac_subkeys_rfc4493():
    k1, k2 = oc.cmac_subkeys(K)
    assert k1 == bytes.fromhex("fbeed618357133667c85e08f7236a8de")
    assert k2 == bytes.fromhex("f7ddac306ae266ccf90bc11ee46d513b")


def test_cmac_kdf_matches_sp800_108_counter_mode():
    z = b"OSGP label" + bytes(range(20))
    ref = KBKDFCMAC(algorithm=algorithms.AES, mode=Mode.CounterMode, length=40, rlen=2, llen=None,
                    location=CounterLocation.BeforeFixed, label=None, context=None, fixed=z).derive(K)
    assert oc.cmac_kdf(K, z, 40) == ref
    assert oc.cmac_kdf(K, z, 16) == oc.aes_cmac(K, b"\x00\x01" + z)


# ---- AES-CCM: NIST SP 800-38C Appendix C examples 1-3
CK = bytes.fromhex("404142434445464748494a4b4c4d4e4f")


@pytest.mark.parametrize("nonce,aad,pt,tlen,ct", [
    ("10111213141516", "0001020304050607", "20212223", 4, "7162015b4dac255d"),
    ("1011121314151617", "000102030405060708090a0b0c0d0e0f", "202122232425262728292a2b2c2d2e2f", 6,
     "d2a1f0e051ea5f62081a7792073d593d1fc64fbfaccd"),
    ("101112131415161718191a1b", "000102030405060708090a0b0c0d0e0f10111213",
     "202122232425262728292a2b2c2d2e2f3031323334353637", 8,
     "e3b201a9f5b71a7a9b1ceaeccd97e70b6176aad9a4428aa5484392fbc1b09951"),
])
def test_aes_ccm_sp800_38c(nonce, aad, pt, tlen, ct):
    n, a, p, c = (bytes.fromhex(x) for x in (nonce, aad, pt, ct))
    assert oc.ccm_encrypt(CK, n, p, a, tlen) == c
    assert oc.ccm_decrypt(CK, n, c, a, tlen) == p
    bad = bytearray(c)
    bad[0] ^= 1
    with pytest.raises(oc.OsgpCryptoError):
        oc.ccm_decrypt(CK, n, bytes(bad), a, tlen)


def test_lon_auth_reply_depends_on_everything():
    k = b"\x10" * 12
    r = oc.lon_auth_reply(k, b"\x01" * 8, b"\x60\x01\x02")
    assert len(r) == 8
    assert r != oc.lon_auth_reply(k, b"\x02" * 8, b"\x60\x01\x02")
    assert r != oc.lon_auth_reply(k, b"\x01" * 8, b"\x60\x01\x03")
    assert r != oc.lon_auth_reply(k, b"\x01" * 8, b"\x60\x01\x02", oma_address=b"\xff" * 13)
    assert r == oc.oma_digest(k, b"\x02\x01\x60", state=b"\x01" * 8)


def test_pipeline_verifies_mep_digests_over_lontalk():
    """The MEP request/response pair (published digests) carried in LonTalk SPDUs: the
    decryption stage checks both with the [[lon]] OMA key of the meter."""
    from dissectors.lon import build_frame
    from analyzer.keyring import load_keys
    from _dlms_frames import run
    req = MEP_REQ + bytes.fromhex("74861F6D7658DD56")
    rsp = bytes.fromhex("0C77635B90") + bytes.fromhex("35863C1DF5B91482")
    frames = [(None, build_frame(pdu="spdu", spdu_type=0, src_subnet=1, src_node=2, dst_subnet=1, dst_node=9,
                                 apdu=req), 147),
              (None, build_frame(pdu="spdu", spdu_type=2, src_subnet=1, src_node=9, dst_subnet=1, dst_node=2,
                                 apdu=rsp), 147)]
    pkts, pipe = run(frames, load_keys(None, ["lon.oma_key=" + MEP_KEY.hex(), "lon.address=1/9",
                                              "lon.name=meter-9"]))
    assert [p.fields.get("osgp.digest_status") for p in pkts] == [["verified"], ["verified"]]
    assert pkts[0].fields["osgp.keyset"] == ["meter-9"]
    assert pkts[1].fields["osgp.expected_seq"] == [0x77635B90]
    pkts, _ = run(frames, load_keys(None, ["lon.oma_key=" + "02" * 16]))
    assert [p.fields.get("osgp.digest_status") for p in pkts] == [["failed"], ["failed"]]
    pkts, _ = run(frames, None)
    assert [p.fields.get("osgp.digest_status") for p in pkts] == [["no-key"], ["no-key"]]
    findings = [f["rule"] for f in pipe.stage("audit").findings()]
    assert "osgp-legacy-security" in findings


def test_pipeline_14908_challenge_reply_check():
    """Authenticated 14908 request, challenge, reply: with the domain key provisioned the
    reply is checked.  The reply function has no public vector (inferred from a description),
    so the reply here is computed by it: this checks the message/challenge/reply pairing and
    the statuses, not the algorithm."""
    from dissectors.lon import build_frame
    from analyzer.keyring import load_keys
    from _dlms_frames import run
    key, chal, apdu = bytes(range(1, 7)), bytes(range(10, 18)), bytes([0x65, 0]) + b"\x11" * 12
    reply = oc.lon_auth_reply(key, chal, apdu)
    common = dict(domain=b"\x0a", tid=3)
    frames = [(None, build_frame(pdu="spdu", spdu_type=0, auth=True, src_subnet=1, src_node=2, dst_subnet=1,
                                 dst_node=9, apdu=apdu, **common), 147),
              (None, build_frame(pdu="auth", auth_type=0, src_subnet=1, src_node=9, dst_subnet=1, dst_node=2,
                                 auth_value=chal, **common), 147),
              (None, build_frame(pdu="auth", auth_type=2, src_subnet=1, src_node=2, dst_subnet=1, dst_node=9,
                                 auth_value=reply, **common), 147)]
    for ring, want in (([f"lon.auth_key={key.hex()}", "lon.address=1/9", "lon.domain=0a"], "matches"),
                       (["lon.auth_key=" + "00" * 6, "lon.address=1/9"], "not-confirmed"),
                       ([], "no-key")):
        pkts, pipe = run(frames, load_keys(None, ring))
        assert [p.fields.get("lon.auth_check") for p in pkts] == [None, None, [want]]
        # authenticated NM: no "unauthenticated network management" finding
        assert not [f for f in pipe.stage("audit").findings() if f["rule"] == "lon-nm-unauthenticated"]
