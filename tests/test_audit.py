"""Security audit: every rule fires on a hand-built scenario with the right evidence frames,
and not on its clean twin; the clean public captures give only justified findings; the CLI."""
from __future__ import annotations

import json
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from analyzer import dlmscrypto as dc
from analyzer.keyring import load_keys
from dissectors.lon import build_frame
from dissectors.osgp import build_request

from _dlms_frames import (a_xdr_octets, aare, aarq, action_hls, action_hls_response, c2s, glo,
                          public_key_ring, run, s2c)

EK, AK = bytes(range(16)), bytes(range(16, 32))
KEYS = [f"ek={EK.hex()}", f"ak={AK.hex()}", f"bk={bytes(range(48, 64)).hex()}"]
CT, SV = b"CLIENT01", b"SERVER01"
GET = bytes.fromhex("C001C1000F0000280000FF0200")
GET2 = bytes.fromhex("C001C2000800000100FF0200")
RSP = bytes.fromhex("C401C1000600001391")
C2 = ("10.0.0.3", 40001, 16)


def findings(frames, keys=KEYS):
    ring = load_keys(None, keys) if isinstance(keys, list) else keys
    _, pipe = run(frames, ring)
    return pipe.stage("audit").findings()


def rule(fs, name):
    return [f for f in fs if f["rule"] == name]


def ciphered_assoc(extra, ct=CT, sv=SV, client=None):
    kw = {} if client is None else {"client": client}
    return [c2s(aarq(ct, context=3), **kw), s2c(aare(sv, context=3), **kw)] + extra


def g(sc, ic, title, pt, tag=0xC8, key=EK):
    return glo(tag, dc.protect(sc, ic, title, key, AK, pt))


# ------------------------------------------------------------------ association-level rules

def test_lls_cleartext():
    fs = findings([c2s(aarq(CT, mechanism=1, auth_value=b"12345678")), s2c(aare(SV))])
    (f,) = rule(fs, "lls-cleartext")
    assert f["severity"] == "high" and f["frames"] == [1] and "'12345678'" in f["message"]
    assert not rule(findings([c2s(aarq(CT)), s2c(aare(SV))]), "lls-cleartext")


def test_weak_hls_mechanism():
    fs = findings([c2s(aarq(CT, mechanism=5, auth_value=b"K56iVagY")), s2c(aare(SV, mechanism=5, stoc=b"P6wRJ21F"))])
    (f,) = rule(fs, "hls-weak-mechanism")
    assert f["frames"] == [1] and "mechanism 5" in f["message"] and "7" in f["recommendation"]
    fs = findings([c2s(aarq(CT, mechanism=7, auth_value=b"c" * 32)), s2c(aare(SV, mechanism=7, stoc=b"s" * 32))])
    assert not rule(fs, "hls-weak-mechanism")


def _hls_pair(stoc_b, ctos_b=b"CtoS-B-challenge"):
    a = [c2s(aarq(CT, mechanism=6, auth_value=b"CtoS-A-challenge")),
         s2c(aare(SV, mechanism=6, stoc=b"StoC-A-challenge"))]
    b = [c2s(aarq(b"CLIENT02", mechanism=6, auth_value=ctos_b), client=C2),
         s2c(aare(SV, mechanism=6, stoc=stoc_b), client=C2)]
    return a + b


def test_hls_challenge_relay():
    fs = findings(_hls_pair(b"StoC-A-challenge"))       # association 2 reuses association 1's StoC
    (f,) = rule(fs, "hls-challenge-relay")
    assert f["severity"] == "critical" and f["frames"] == [2, 4] and f["assoc_id"] == 2
    # CtoS of one reappearing as the other's StoC (reflection)
    (f,) = rule(findings(_hls_pair(b"CtoS-A-challenge")), "hls-challenge-relay")
    assert f["frames"] == [1, 4]
    assert not rule(findings(_hls_pair(b"StoC-B-challenge")), "hls-challenge-relay")


def test_aare_title_reflection():
    frames = [c2s(aarq(CT)), c2s(aarq(b"CLIENT02"), client=C2), s2c(aare(CT), client=C2), s2c(aare(SV))]
    (f,) = rule(findings(frames), "hls-challenge-relay")
    assert f["frames"] == [1, 3] and "calling title" in f["message"]
    frames[2] = s2c(aare(SV), client=C2)
    assert not rule(findings(frames), "hls-challenge-relay")


def test_mitm_client_relay_plaintext():
    reqs = [GET, GET2, bytes.fromhex("C001C3000300000100FF0200")]
    frames = [c2s(aarq(CT)), s2c(aare(SV)), c2s(aarq(CT), client=C2), s2c(aare(SV), client=C2)]
    for r in reqs:
        frames += [c2s(r), c2s(r, client=C2)]
    (f,) = rule(findings(frames), "mitm-client-relay")
    assert f["frames"] == [5, 6, 7, 8, 9, 10] and f["assoc_id"] == 2
    twin = frames[:4] + [c2s(reqs[0]), c2s(reqs[1], client=C2), c2s(reqs[2]), c2s(GET, client=C2)]
    assert not rule(findings(twin), "mitm-client-relay")


def test_mitm_relay_of_ciphered_apdu():
    apdu = g(0x30, 7, CT, GET)
    frames = ciphered_assoc([c2s(apdu)]) + ciphered_assoc([c2s(apdu, client=C2)], client=C2)
    (f,) = rule(findings(frames), "mitm-client-relay")
    assert f["frames"] == [3, 6]


def test_plaintext_after_ciphered_association_and_public():
    fs = findings(ciphered_assoc([c2s(g(0x30, 1, CT, GET)), c2s(GET2)]))
    (f,) = rule(fs, "plaintext-after-association")
    assert f["frames"] == [4] and f["severity"] == "medium"
    assert not rule(findings(ciphered_assoc([c2s(g(0x30, 1, CT, GET)), c2s(g(0x30, 2, CT, GET2))])),
                    "plaintext-after-association")
    fs = findings([c2s(aarq(None)), s2c(aare(None)), c2s(GET), s2c(RSP)])
    (f,) = rule(fs, "plaintext-public")
    assert f["severity"] == "info" and f["frames"] == [3, 4]
    assert not [x for x in fs if x["severity"] != "info"]


# ------------------------------------------------------------------ protection rules

@pytest.mark.parametrize("sc,name,sev", [(0x20, "encryption-without-authentication", "high"),
                                         (0x10, "authentication-without-encryption", "info"),
                                         (0x70, "broadcast-key", "info")])
def test_protection_modes(sc, name, sev):
    key = bytes(range(48, 64)) if sc & 0x40 else EK
    fs = findings(ciphered_assoc([c2s(g(sc, 1, CT, GET, key=key)), c2s(g(sc, 2, CT, GET2, key=key))]))
    (f,) = rule(fs, name)
    assert f["severity"] == sev and f["frames"] == [3, 4]
    fs = findings(ciphered_assoc([c2s(g(0x30, 1, CT, GET)), c2s(g(0x30, 2, CT, GET2))]))
    assert not rule(fs, name)
    assert not [x for x in fs if x["severity"] in ("high", "critical")]


def test_replay_ic_reuse_and_backwards():
    a = g(0x30, 5, CT, GET)
    (f,) = rule(findings(ciphered_assoc([c2s(a), c2s(a)])), "replayed-apdu")
    assert f["frames"] == [3, 4]
    fs = findings(ciphered_assoc([c2s(a), c2s(g(0x30, 5, CT, GET2))]))
    (f,) = rule(fs, "ic-reuse")
    assert f["severity"] == "critical" and f["frames"] == [3, 4]
    (f,) = rule(findings(ciphered_assoc([c2s(a), c2s(g(0x30, 3, CT, GET2))])), "ic-backwards")
    assert f["frames"] == [3, 4]
    clean = findings(ciphered_assoc([c2s(a), c2s(g(0x30, 6, CT, GET2)), s2c(g(0x30, 5, SV, RSP, tag=0xCC))]))
    assert not {"replayed-apdu", "ic-reuse", "ic-backwards"} & {x["rule"] for x in clean}


def _ded_assoc(dk, client=None, ic=1):
    init = bytes.fromhex("010110") + dk + bytes.fromhex("0000065F1F0400007E1F04B0")
    body = dc.protect(0x30, ic, CT, EK, AK, init)
    kw = {} if client is None else {"client": client}
    return [c2s(aarq(CT, context=3, user_info=b"\x21" + bytes([len(body)]) + body), **kw),
            s2c(aare(SV, context=3), **kw)]


def test_dedicated_key_shared_and_global_where_dedicated():
    dk = bytes(range(32, 48))
    fs = findings(_ded_assoc(dk) + _ded_assoc(dk, C2, ic=2))
    (f,) = rule(fs, "dedicated-key-shared")
    assert f["frames"] == [1, 3] and dk.hex() not in json.dumps(fs)
    assert not rule(findings(_ded_assoc(dk) + _ded_assoc(bytes(16), C2, ic=2)), "dedicated-key-shared")
    (f,) = rule(findings(_ded_assoc(dk) + [c2s(g(0x30, 3, CT, GET))]), "global-key-where-dedicated")
    assert f["frames"] == [3]
    fs = findings(_ded_assoc(dk) + [c2s(g(0x30, 3, CT, GET, tag=0xD0, key=dk))])
    assert not rule(fs, "global-key-where-dedicated")


def test_hls_failed_and_decryption_failed(vectors):
    v3 = next(v for v in vectors if v["name"] == "greenbook_hls5_gmac_pass3_f_stoc")
    v4 = next(v for v in vectors if v["name"] == "greenbook_hls5_gmac_pass4_f_ctos")
    gb = ["ek=000102030405060708090A0B0C0D0E0F", "ak=D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"]
    stc, sts = bytes.fromhex("4D4D4D0000000001"), bytes.fromhex("4D4D4D0000BC614E")
    f3, f4 = bytes.fromhex(v3["hex"]), bytes.fromhex(v4["hex"])
    base = [c2s(aarq(stc, mechanism=5, auth_value=b"K56iVagY")), s2c(aare(sts, mechanism=5, stoc=b"P6wRJ21F"))]
    bad = bytearray(f4)
    bad[-1] ^= 1
    (f,) = rule(findings(base + [c2s(action_hls(f3)), s2c(action_hls_response(bytes(bad)))], gb), "hls-failed")
    assert f["frames"] == [4] and "pass 4" in f["message"]
    assert not rule(findings(base + [c2s(action_hls(f3)), s2c(action_hls_response(f4))], gb), "hls-failed")
    wrong = [f"ek={'77' * 16}", f"ak={AK.hex()}"]
    frames = ciphered_assoc([c2s(g(0x30, 1, CT, GET)), c2s(g(0x30, 2, CT, GET2))])
    (f,) = rule(findings(frames, wrong), "decryption-failed")
    assert f["frames"] == [3, 4]
    assert not rule(findings(frames), "decryption-failed")


def test_iv_title_anomaly():
    (f,) = rule(findings(ciphered_assoc([c2s(g(0x30, 1, SV, GET))])), "iv-title-anomaly")
    assert f["frames"] == [3]
    assert not rule(findings(ciphered_assoc([c2s(g(0x30, 1, CT, GET))])), "iv-title-anomaly")


def test_signature_failed(tmp_path):
    k = ec.generate_private_key(ec.SECP256R1())
    ring = public_key_ring(tmp_path, k.public_key(), "peer_certificate", "ecc")
    os_ = a_xdr_octets
    head = os_(b"\x00" * 8) + os_(SV) + os_(CT) + os_(b"") + os_(b"") + os_(GET)
    good = dc.ecdsa_sign(k, head, 1)
    bad = bytes([good[0] ^ 1]) + good[1:]
    (f,) = rule(findings([s2c(b"\xDF" + head + os_(bad))], load_keys(ring)), "signature-failed")
    assert f["frames"] == [1]
    _, pipe = run([s2c(b"\xDF" + head + os_(good))], load_keys(ring))
    assert not rule(pipe.stage("audit").findings(), "signature-failed")


# ------------------------------------------------------------------ copies are not attacks

def _lon_dlms(apdu, src, dst, tid, typ=0):
    """An xDLMS APDU in an adaptation PDU in a LonTalk SPDU (request typ=0, response typ=2)."""
    from dissectors.adaptation import build_pdu
    return (None, build_frame(pdu="spdu", spdu_type=typ, src_subnet=src[0], src_node=src[1],
                              dst_subnet=dst[0], dst_node=dst[1], domain=b"\x0a", tid=tid,
                              apdu=build_pdu(apdu)), 147)


LC, LM = (1, 1), (1, 13)


def _cnip_copy(apdu, src, dst, tid, typ=0):
    """The same LonTalk frame forwarded by a router onto the CN/IP backhaul (UDP 1628)."""
    from dissectors.adaptation import build_pdu
    from analyzer.simulate.wire import cnip, ether_udp
    npdu = build_frame(pdu="spdu", spdu_type=typ, src_subnet=src[0], src_node=src[1], dst_subnet=dst[0],
                       dst_node=dst[1], domain=b"\x0a", tid=tid, apdu=build_pdu(apdu), crc=False)
    return ether_udp(b"\x02" * 6, b"\x04" * 6, bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]), 1628, 1628,
                     cnip(npdu, 1, 1, 0), 1)


def test_retransmissions_are_not_replays_but_a_later_resend_is():
    """A 14908 retransmission of a ciphered request (the source's last transaction again:
    same destination, TID and bytes), and the copy a router forwards onto CN/IP (arriving
    after the next request), are neither a replay nor a counter going backwards; the same
    APDU sent again in a new transaction, or the captured frame replayed byte for byte after
    its transaction is over, is a replay (and its counter goes back)."""
    req5, req6 = g(0x30, 5, CT, GET), g(0x30, 6, CT, GET2)
    frames = [_lon_dlms(aarq(CT, context=3), LC, LM, 1), _lon_dlms(aare(SV, context=3), LM, LC, 1, 2),
              _lon_dlms(req5, LC, LM, 2), _lon_dlms(req5, LC, LM, 2),
              _lon_dlms(req6, LC, LM, 3), _cnip_copy(req5, LC, LM, 2)]
    pkts, pipe = run(frames, load_keys(None, KEYS))
    assert pkts[5].fields["cnip.type"] == [1] and pkts[5].fields["dlms.sec.status"] == ["decrypted"]
    fs = pipe.stage("audit").findings()
    assert not {"replayed-apdu", "ic-reuse", "ic-backwards", "mitm-client-relay"} & {f["rule"] for f in fs}, fs
    fs = findings(frames + [_lon_dlms(req5, LC, LM, 4)])
    (f,) = rule(fs, "replayed-apdu")
    assert f["frames"] == [3, 7] and f["evidence_count"] == 2 and "frame 7 repeats" in f["message"]
    (f,) = rule(fs, "ic-backwards")
    assert f["frames"] == [5, 7] and "from 6" in f["message"]
    late = (1_700_000_100.0, _lon_dlms(req5, LC, LM, 2)[1], 147)
    (f,) = rule(findings(frames + [late]), "replayed-apdu")
    assert f["frames"] == [3, 7]


def test_frames_damaged_on_the_medium_are_not_evidence():
    """A ciphered request whose LonTalk CRC fails (bytes damaged on the power line) fails
    its tag, but is neither a decryption failure (tampering), nor a replay or counter
    incident; its intact retry decrypts and counts as the first copy."""
    from dissectors.lon import crc16
    req5, req6 = g(0x30, 5, CT, GET), g(0x30, 6, CT, GET2)
    _, good6, lt = _lon_dlms(req6, LC, LM, 3)
    bad6 = bytearray(good6)
    bad6[-6] ^= 0x40                                   # a bit of the GCM tag, CRC left as it was
    assert crc16(bytes(bad6[:-2])) != int.from_bytes(bad6[-2:], "big")
    frames = [_lon_dlms(aarq(CT, context=3), LC, LM, 1), _lon_dlms(aare(SV, context=3), LM, LC, 1, 2),
              _lon_dlms(req5, LC, LM, 2), (None, bytes(bad6), lt), (None, good6, lt),
              _lon_dlms(g(0x30, 7, CT, GET), LC, LM, 4)]
    pkts, pipe = run(frames, load_keys(None, KEYS))
    assert pkts[3].fields["dlms.sec.status"] == ["auth-failed"]
    assert pkts[4].fields["dlms.sec.status"] == ["decrypted"]
    assert not {"decryption-failed", "replayed-apdu", "ic-backwards", "ic-reuse"} & \
        {f["rule"] for f in pipe.stage("audit").findings()}


# ------------------------------------------------------------------ 14908 / OSGP rules

def _lon(apdu=b"", **kw):
    base = dict(pdu="spdu", spdu_type=0, src_subnet=1, src_node=2, dst_subnet=1, dst_node=9, domain=b"\x0a")
    base.update(kw)
    return (None, build_frame(apdu=apdu, **base), 147)


def test_lon_network_management_without_authentication():
    upd_key = bytes([0x65, 0]) + b"\x11" * 12
    wr_mem = bytes([0x6E, 0x01, 0x00, 0x10, 0x02, 0xAA, 0xBB])
    (f,) = rule(findings([_lon(b"\x61\x00"), _lon(upd_key), _lon(wr_mem)]), "lon-nm-unauthenticated")
    assert f["frames"] == [2, 3] and "update key" in f["message"] and "write memory" in f["message"]
    assert not rule(findings([_lon(upd_key, auth=True), _lon(wr_mem, auth=True)]), "lon-nm-unauthenticated")


def test_lon_repeated_authentication_failures():
    ch = _lon(pdu="auth", auth_type=0, src_node=9, dst_node=2, tid=3)
    (f,) = rule(findings([ch, ch, ch]), "lon-auth-failures")
    assert f["frames"] == [1, 2, 3]
    assert not rule(findings([ch]), "lon-auth-failures")


def test_osgp_legacy_security():
    req = build_request("full-read", 23, seq=5, digest=b"\x01" * 8)
    (f,) = rule(findings([_lon(b"\x61\x00"), _lon(req)]), "osgp-legacy-security")
    assert f["frames"] == [2]
    assert not rule(findings([_lon(build_request("full-read", 23))]), "osgp-legacy-security")


# ------------------------------------------------------------------ captures and CLI

def test_clean_captures_only_justified(pcaps):
    import analyzer
    for name, allowed in (("Output-EPRI.pcap", {"plaintext-public"}), ("Output.pcap", {"plaintext-public"})):
        cap = analyzer.open_capture(pcaps / "htanwar922-wireshark-dlms" / name)
        list(cap)
        fs = cap.pipeline.stage("audit").findings()
        assert {f["rule"] for f in fs} == allowed
        assert all(f["severity"] == "info" for f in fs)


def test_audit_cli(lonscope_cmd, pcaps, tmp_path):
    ring = tmp_path / "ring.toml"
    ring.write_text((__import__("pathlib").Path(__file__).parent.parent / "keys" / "gurux-captures.toml").read_text())
    ring.chmod(0o600)
    ht = pcaps / "htanwar922-wireshark-dlms"
    out = subprocess.run(lonscope_cmd + ["audit", str(ht / "Output-Ciphered.pcap"), "--keys", str(ring), "-T", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert [f["rule"] for f in doc["findings"]] == ["encryption-without-authentication"]
    assert doc["findings"][0]["evidence_count"] == 263 or doc["findings"][0]["evidence_count"] >= 262
    out = subprocess.run(lonscope_cmd + ["audit", str(ht / "Output-Ciphered-HLS.pcap"), "--keys", str(ring)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "[MEDIUM] F1 hls-weak-mechanism" in out.stdout and "mechanism 5 (HLS-GMAC)" in out.stdout
    out = subprocess.run(lonscope_cmd + ["audit", str(ht / "Output-Ciphered-Director.pcap")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "password (empty)" in out.stdout
    out = subprocess.run(lonscope_cmd + ["audit", str(tmp_path / "missing.pcap")], capture_output=True, text=True)
    assert out.returncode == 2 and "no such file" in out.stderr and "Traceback" not in out.stderr
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"\x01\x02\x03\x04" * 20)
    out = subprocess.run(lonscope_cmd + ["audit", str(junk)], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    # a damaged capture is audited up to the damage, with the damage on stderr
    trunc = tmp_path / "trunc.pcap"
    trunc.write_bytes((ht / "Output-Ciphered-Director.pcap").read_bytes()[:-40])
    out = subprocess.run(lonscope_cmd + ["audit", str(trunc)], capture_output=True, text=True)
    assert out.returncode == 1 and "lls-cleartext" in out.stdout and "truncated" in out.stderr
