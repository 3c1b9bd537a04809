"""HLS pass 3/4 verification through the pipeline, for mechanisms 2..7, LN and SN."""
from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from analyzer import dlmscrypto as dc
from analyzer.keyring import load_keys

from _dlms_frames import aare, aarq, action_hls, action_hls_response, c2s, run, s2c

GB = ["ek=000102030405060708090A0B0C0D0E0F", "ak=D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"]
STC = bytes.fromhex("4D4D4D0000000001")
STS = bytes.fromhex("4D4D4D0000BC614E")


def V(vectors, name):
    return next(v for v in vectors if v["name"] == name)


def _flow(mech, ctos, stoc, f_stoc, f_ctos, ct=STC, sv=STS):
    return [c2s(aarq(ct, mechanism=mech, auth_value=ctos)),
            s2c(aare(sv, mechanism=mech, stoc=stoc, diag=14)),
            c2s(action_hls(f_stoc)), s2c(action_hls_response(f_ctos))]


def _passes(pkts):
    return (pkts[2].fields.get("dlms.sec.hls_pass3"), pkts[3].fields.get("dlms.sec.hls_pass4"))


def test_greenbook_hls_gmac(vectors):
    f3 = bytes.fromhex(V(vectors, "greenbook_hls5_gmac_pass3_f_stoc")["hex"])
    f4 = bytes.fromhex(V(vectors, "greenbook_hls5_gmac_pass4_f_ctos")["hex"])
    frames = _flow(5, b"K56iVagY", b"P6wRJ21F", f3, f4)
    pkts, pipe = run(frames, load_keys(None, GB))
    assert _passes(pkts) == (["verified"], ["verified"])
    a = pipe.stage("associations").records[0]
    assert a.state == "authenticated" and a.mechanism == 5
    # the response time of the pass-4 reply is measured
    assert pkts[3].fields["dlms.response_to"] == [3]
    assert pkts[2].fields["dlms.response_in"] == [4]
    # a wrong AK: both fail; no keys: no-key
    pkts, pipe = run(frames, load_keys(None, [GB[0], "ak=" + "00" * 16]))
    assert _passes(pkts) == (["failed"], ["failed"])
    assert pipe.stage("associations").records[0].state == "hls-failed"
    assert any("HLS pass 3 verification failed" in e.message for e in pkts[2].d.expert)
    pkts, _ = run(frames, None)
    assert _passes(pkts) == (["no-key"], ["no-key"])


def test_gurux_mechanism2(vectors):
    e = V(vectors, "gurux_hls2_aes_ecb_f_stoc")["expected"]
    frames = _flow(2, bytes.fromhex(e["CtoS"]), bytes.fromhex(e["StoC"]), bytes.fromhex(e["f_StoC"]),
                   bytes.fromhex(e["f_CtoS"]))
    pkts, _ = run(frames, load_keys(None, ["hls_secret_text=Gurux"]))
    assert _passes(pkts) == (["verified"], ["verified"])
    pkts, _ = run(frames, load_keys(None, ["hls_secret_text=Guruy"]))
    assert _passes(pkts) == (["failed"], ["failed"])


@pytest.mark.parametrize("mech", [3, 4, 6])
def test_hash_mechanisms(mech):
    sec, ctos, stoc = b"s3cr3t-pw", b"CtoS-challenge-1", b"StoC-challenge-2"
    if mech == 3:
        f3, f4 = hashlib.md5(stoc + sec).digest(), hashlib.md5(ctos + sec).digest()
    elif mech == 4:
        f3, f4 = hashlib.sha1(stoc + sec).digest(), hashlib.sha1(ctos + sec).digest()
    else:
        f3 = hashlib.sha256(sec + STC + STS + stoc + ctos).digest()
        f4 = hashlib.sha256(sec + STS + STC + ctos + stoc).digest()
    pkts, _ = run(_flow(mech, ctos, stoc, f3, f4), load_keys(None, ["hls_secret_text=s3cr3t-pw"]))
    assert _passes(pkts) == (["verified"], ["verified"])
    # swapped values: both fail
    pkts, _ = run(_flow(mech, ctos, stoc, f4, f3), load_keys(None, ["hls_secret_text=s3cr3t-pw"]))
    assert _passes(pkts) == (["failed"], ["failed"])


def test_ecdsa_mechanism7(tmp_path):
    kc = ec.generate_private_key(ec.SECP256R1())
    ks = ec.generate_private_key(ec.SECP256R1())
    for name, k in (("client.pem", kc), ("server.pem", ks)):
        (tmp_path / name).write_bytes(k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ctos, stoc = b"c" * 32, b"s" * 32
    f3 = dc.ecdsa_sign(kc, STC + STS + stoc + ctos, 1)
    f4 = dc.ecdsa_sign(ks, STS + STC + ctos + stoc, 1)
    ring = tmp_path / "r.toml"
    ring.write_text(f'[[dlms]]\nname="ecc"\nclient_certificate="{tmp_path / "client.pem"}"\n'
                    f'server_certificate="{tmp_path / "server.pem"}"\n')
    ring.chmod(0o600)
    pkts, _ = run(_flow(7, ctos, stoc, f3, f4), load_keys(ring))
    assert _passes(pkts) == (["verified"], ["verified"])
    bad = bytearray(f4)
    bad[5] ^= 1
    pkts, _ = run(_flow(7, ctos, stoc, f3, bytes(bad)), load_keys(ring))
    assert _passes(pkts) == (["verified"], ["failed"])


def test_sn_write_and_parameterized_read(vectors):
    e = V(vectors, "gurux_hls2_aes_ecb_f_stoc")["expected"]
    ctos, stoc = bytes.fromhex(e["CtoS"]), bytes.fromhex(e["StoC"])
    f3, f4 = bytes.fromhex(e["f_StoC"]), bytes.fromhex(e["f_CtoS"])
    keys = load_keys(None, ["hls_secret_text=Gurux"])
    write = bytes.fromhex("060102FA58010910") + f3
    read_param = bytes.fromhex("050104FA58020910") + f3
    rsp = bytes.fromhex("0C01000910") + f4
    for req in (write, read_param):
        frames = [c2s(aarq(STC, mechanism=2, auth_value=ctos, context=2)),
                  s2c(aare(STS, mechanism=2, stoc=stoc, context=2)), c2s(req), s2c(rsp)]
        pkts, pipe = run(frames, keys)
        assert _passes(pkts) == (["verified"], ["verified"])
        assert pipe.stage("associations").records[0].context_name == "SN"
