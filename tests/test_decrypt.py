"""Decryption stage: the ciphered vectors of ../shared/vectors through the real pipeline
(wrapper over UDP), with the documented plaintexts as the oracle; wrong keys; no keys."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from analyzer import dlmscrypto as dc
from analyzer.decrypt import STATUSES
from analyzer.keyring import load_keys

from _dlms_frames import aare, c2s, glo, run, s2c
from conftest import need_or_skip

GB = ["ek=000102030405060708090A0B0C0D0E0F", "ak=D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"]
WRONG = ["ek=0F0E0D0C0B0A09080706050403020100", "ak=D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"]
ST_GB = bytes.fromhex("4D4D4D0000BC614E")


def V(vectors, name):
    return next(v for v in vectors if v["name"] == name)


def _plain(pkt, i=0):
    return pkt.aux["decrypt"][i].get("plaintext")


def _greenbook_flow(vectors):
    return [
        c2s(bytes.fromhex(V(vectors, "greenbook_aarq_ciphered_lls")["hex"])),
        s2c(aare(ST_GB, context=3)),
        c2s(bytes.fromhex(V(vectors, "greenbook_glo_get_request_sc10")["hex"])),
        c2s(bytes.fromhex(V(vectors, "greenbook_glo_get_request_sc20")["hex"])),
        c2s(bytes.fromhex(V(vectors, "greenbook_glo_get_request_sc30")["hex"])),
        c2s(bytes.fromhex(V(vectors, "greenbook_rlrq_glo_initiate_request")["hex"])),
        s2c(bytes.fromhex(V(vectors, "greenbook_rlre_glo_initiate_response")["hex"])),
    ]


def test_greenbook_vectors_decrypt(vectors):
    pkts, pipe = run(_greenbook_flow(vectors), load_keys(None, GB))
    aarq_v = V(vectors, "greenbook_aarq_ciphered_lls")["expected"]["user_information"]
    assert _plain(pkts[0]) == bytes.fromhex(aarq_v["plaintext"])
    assert pkts[0].fields["dlms.sec.status"] == ["decrypted"]
    # glo-get-request in the three modes
    want = bytes.fromhex(V(vectors, "greenbook_glo_get_request_sc30")["expected"]["plaintext"])
    for p, status in zip(pkts[2:5], ("auth-ok", "unauthenticated", "decrypted")):
        assert _plain(p) == want
        assert p.fields["dlms.sec.status"] == [status]
        assert p.fields["dlms.sec.keyset"] == ["command line"]
        assert p.d.status == status
        # the plaintext was dissected by the xDLMS dissector: GET clock time
        assert "get-request" in p.fields["dlms.apdu"]
        assert p.fields["dlms.obis"] == ["0.0.1.0.0.255"]
        assert p.fields["dlms.class_id"] == [8] and p.fields["dlms.attribute_id"] == [2]
        assert p.fields["dlms.sec.iv_title"] == [ST_GB]
    # RLRQ/RLRE: the titles come from the association (not carried in the APDU)
    rlrq = V(vectors, "greenbook_rlrq_glo_initiate_request")["expected"]["user_information"]
    rlre = V(vectors, "greenbook_rlre_glo_initiate_response")["expected"]["user_information"]
    assert _plain(pkts[5]) == bytes.fromhex(rlrq["plaintext"])
    assert _plain(pkts[6]) == bytes.fromhex(rlre["plaintext"])
    assert pkts[6].fields["dlms.server_max_receive_pdu_size"] == [1024]
    a = pipe.stage("associations").records[0]
    assert a.dedicated_key == bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    assert a.state == "released" and a.mechanism == 1
    assert all(p.fields["dlms.assoc_id"] == [1] for p in pkts)


def test_greenbook_wrong_key_and_no_key(vectors):
    pkts, _ = run(_greenbook_flow(vectors), load_keys(None, WRONG))
    got = [p.fields.get("dlms.sec.status") for p in pkts]
    assert got == [["auth-failed"], None, ["auth-failed"], ["unauthenticated"], ["auth-failed"],
                   ["auth-failed"], ["auth-failed"]]
    assert any("Authentication failed" in e.message for e in pkts[2].d.expert)
    # E-only with the wrong key: garbage, flagged as implausible
    assert any("does not look like" in e.message for e in pkts[3].d.expert)
    pkts, _ = run(_greenbook_flow(vectors), None)
    assert [p.fields.get("dlms.sec.status") for p in pkts if p.fields.get("dlms.sec.ic") is not None] == \
        [["no-key"]] * 6


def test_general_glo_data_notification_udp(vectors):
    v = V(vectors, "dlmscosem_udp_general_glo_ciphering_data_notification")
    raw = bytes.fromhex(v["hex"])
    from _dlms_frames import udp_frame, CLIENT, SERVER
    import struct
    # the vector is a complete wrapper PDU: strip the header, rebuild with the same wPorts
    apdu = raw[8:]
    keys = load_keys(None, ["ek_text=MYDUMMYGLOBALKEY", "ak_text=MYDUMMYGLOBALKEY"])
    pkts, _ = run([s2c(apdu)], keys)
    p = pkts[0]
    assert _plain(p) == bytes.fromhex(v["expected"]["plaintext"])
    assert p.fields["dlms.sec.status"] == ["decrypted"]
    assert p.fields["dlms.sec.iv_title"] == [bytes.fromhex("2F19229199164103")]
    assert "data-notification" in p.fields["dlms.apdu"]
    assert p.fields["dlms.long_invoke_id"] == [0x1DB]


def test_suite1_encryption_only_push(vectors):
    v = V(vectors, "tirol_kaifa_mbus_general_glo_ciphering_suite1_enc_only")
    keys = load_keys(None, ["ek=" + v["keys"]["EK"]])
    pkts, _ = run([s2c(bytes.fromhex(v["hex"]))], keys)
    p = pkts[0]
    assert _plain(p) == bytes.fromhex(v["expected"]["plaintext"])
    assert p.fields["dlms.sec.status"] == ["unauthenticated"]
    assert p.fields["dlms.sec.suite"] == [1]
    # the published decoding: 1.0.1.8.0.255 (active energy import) = 0x2394 Wh
    assert bytes.fromhex("0100010800FF") in p.fields["dlms.data.value"]
    assert 0x2394 in p.fields["dlms.data.int"]
    assert b"1KFM0100000035" in p.fields["dlms.data.value"]
    # wrong key: still unauthenticated (nothing can tell), but flagged
    pkts, _ = run([s2c(bytes.fromhex(v["hex"]))], load_keys(None, ["ek=" + "00" * 16]))
    assert pkts[0].fields["dlms.sec.status"] == ["unauthenticated"]
    assert any("does not look like" in e.message for e in pkts[0].d.expert)


def test_iv_peer_title_anomaly():
    """A client that ciphers with the server's title: decrypted, with an expert warning."""
    ek, ak = bytes(range(16)), bytes(range(16, 32))
    keys = load_keys(None, [f"ek={ek.hex()}", f"ak={ak.hex()}"])
    ct = b"CLIENT01"
    sv = b"SERVER01"
    plain = bytes.fromhex("C001C1000F0000280000FF0200")
    frames = [c2s(__import__("_dlms_frames").aarq(ct, context=3)), s2c(aare(sv, context=3)),
              c2s(glo(0xC8, dc.protect(0x30, 5, sv, ek, ak, plain)))]
    pkts, pipe = run(frames, keys)
    p = pkts[2]
    assert _plain(p) == plain
    assert p.fields["dlms.sec.status"] == ["decrypted"]
    assert p.fields["dlms.sec.iv_peer_title"] == [True]
    assert any(e.message == "IV uses the peer's system title" for e in p.d.expert)
    ev = pipe.stage("decrypt").events[-1]
    assert ev["peer_title"] is True


def test_dedicated_key_learned_and_used():
    ek, ak, dk = bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48))
    keys = load_keys(None, [f"ek={ek.hex()}", f"ak={ak.hex()}"])
    ct, sv = b"CLIENT01", b"SERVER01"
    init = bytes.fromhex("0101") + bytes([16]) + dk + bytes.fromhex("0000065F1F0400007E1F04B0")
    g_init = b"\x21" + bytes([len(dc.protect(0x30, 1, ct, ek, ak, init))]) + dc.protect(0x30, 1, ct, ek, ak, init)
    from _dlms_frames import aarq
    plain = bytes.fromhex("C001C1000F0000280000FF0200")
    frames = [c2s(aarq(ct, context=3, user_info=g_init)), s2c(aare(sv, context=3)),
              c2s(glo(0xD0, dc.protect(0x30, 2, ct, dk, ak, plain)))]
    pkts, pipe = run(frames, keys)
    assert pkts[0].fields["dlms.sec.status"] == ["decrypted"]
    assert pkts[2].fields["dlms.sec.status"] == ["decrypted"]
    assert pkts[2].fields["dlms.sec.key"] == ["dedicated"]
    assert _plain(pkts[2]) == plain
    # without the AARQ the dedicated key is unknown
    pkts, _ = run(frames[1:], keys)
    assert pkts[1].fields["dlms.sec.status"] == ["no-key"]


def test_broadcast_and_compression_bits():
    ek, ak, bk = bytes(range(16)), bytes(range(16, 32)), bytes(range(48, 64))
    keys = load_keys(None, [f"ek={ek.hex()}", f"ak={ak.hex()}", f"bk={bk.hex()}"])
    sv = b"SERVER01"
    dn = bytes.fromhex("0F00000001000600000001")
    body = dc.protect(0x70, 9, sv, bk, ak, dn)
    gg = b"\xDB\x08" + sv + bytes([len(body)]) + body
    comp = dc.protect(0xB0, 10, sv, ek, ak, dn)
    gc = b"\xDB\x08" + sv + bytes([len(comp)]) + comp
    pkts, _ = run([s2c(gg), s2c(gc)], keys)
    assert pkts[0].fields["dlms.sec.status"] == ["decrypted"]
    assert pkts[0].fields["dlms.sec.key"] == ["global-broadcast"]
    assert _plain(pkts[0]) == dn
    assert pkts[1].fields["dlms.sec.status"] == ["unsupported"]
    assert any("compressed" in e.message for e in pkts[1].d.expert)


def test_general_ciphering_wrapped_key():
    ek, ak, kek = bytes(range(16)), bytes(range(16, 32)), bytes(range(64, 80))
    session = bytes(range(100, 116))
    keys = load_keys(None, [f"ak={ak.hex()}", f"kek={kek.hex()}", f"ek={ek.hex()}"])
    sv, ct = b"SERVER01", b"CLIENT01"
    dn = bytes.fromhex("0F00000001000600000001")
    body = dc.protect(0x30, 3, sv, session, ak, dn)
    wrapped = dc.key_wrap(kek, session)

    def os_(b):
        return bytes([len(b)]) + b
    apdu = (b"\xDD" + os_(b"\x00\x00\x00\x00\x00\x00\x00\x01") + os_(sv) + os_(ct) + os_(b"") + os_(b"")
            + b"\x01\x01\x00" + os_(wrapped) + os_(body))
    pkts, _ = run([s2c(apdu)], keys)
    assert pkts[0].fields["dlms.sec.status"] == ["decrypted"]
    assert pkts[0].fields["dlms.sec.key"] == ["wrapped"]
    assert _plain(pkts[0]) == dn
    pkts, _ = run([s2c(apdu)], load_keys(None, [f"ak={ak.hex()}", f"kek={'11' * 16}", f"ek={ek.hex()}"]))
    assert pkts[0].fields["dlms.sec.status"] == ["auth-failed"]


def test_redissect_rebuilds_decrypted_tree(vectors):
    pkts, pipe = run(_greenbook_flow(vectors), load_keys(None, GB))
    d = pipe.redissect(pkts[4])
    assert [s[0] for s in d.sources] == ["Frame", "Decrypted xDLMS"]
    assert d.sources[1][1] == _plain(pkts[4])
    assert d.fields["dlms.sec.status"] == ["decrypted"]
    assert d.fields["dlms.obis"] == ["0.0.1.0.0.255"]
    texts = [n.text for n in d.root.walk()]
    assert any("Decryption: decrypted" in t for t in texts)
    assert any(t.startswith("[DLMS association 1]") for t in texts)


@given(st.binary(min_size=0, max_size=80), st.sampled_from([0xC8, 0xCC, 0xD0, 0xDB, 0x21, 0x00]),
       st.sampled_from([0x10, 0x20, 0x30, 0x31, 0x42, 0x90, 0x00]))
def test_fuzz_ciphered_apdus_never_crash(body, tag, sc):
    keys = load_keys(None, GB)
    if tag == 0xDB:
        inner = bytes([sc]) + body
        apdu = b"\xDB\x08" + ST_GB + bytes([min(len(inner), 0x7F)]) + inner[:0x7F]
    else:
        inner = (bytes([sc]) + body)[:0x7F]
        apdu = bytes([tag, len(inner)]) + inner
    pkts, _ = run([c2s(apdu)], keys)
    p = pkts[0]
    assert not any("stage failed" in e.message for e in p.d.expert)
    for s in p.fields.get("dlms.sec.status", []):
        assert s in STATUSES


def test_osgp_aes_128_psk_adaptation_pdu():
    """A protected 62056-8-8 adaptation PDU (layout from the default profile, inferred) over
    raw LonTalk: AES-128-CCM with the node's PSK; wrong PSK -> auth-failed."""
    from analyzer import osgpcrypto as oc
    from analyzer.decrypt import adp_nonce
    from analyzer.packet import Record
    from analyzer.pipeline import Pipeline
    from dissectors.adaptation import build_pdu
    from dissectors.lon import build_frame
    psk = bytes(range(16))
    apdu = bytes.fromhex("C001C1000F0000280000FF0200")
    dom = b"\x0a"
    hdr = build_pdu(b"", protected=True, key_id=1, counter=7, mac=b"")
    sender = dom + bytes([1, 5]) + b"\xff" * 3
    nonce = adp_nonce({"counter": 7, "key_id": 1, "code_offset": 0}, hdr, sender)
    assert len(nonce) == 13
    fr = build_frame(pdu="spdu", spdu_type=0, src_subnet=1, src_node=5, dst_subnet=1, dst_node=9,
                     domain=dom, apdu=hdr + oc.ccm_encrypt(psk, nonce, apdu, hdr, 8))
    for extra, status in ((["lon.psk=" + psk.hex(), "lon.address=1/5", "lon.name=meter-5"], "decrypted"),
                          (["lon.psk=" + "11" * 16, "lon.address=1/5"], "auth-failed"),
                          ([], "no-key")):
        pk = Pipeline(keys=load_keys(None, extra)).feed(Record(1, fr, 147, len(fr)))
        assert pk.fields["dlms.sec.status"] == [status]
        assert "adp" in pk.protocols
        if status == "decrypted":
            assert pk.fields["dlms.sec.keyset"] == ["meter-5"]
            assert pk.fields["dlms.obis"] == ["0.0.40.0.0.255"]
            assert pk.fields["dlms.assoc_id"] == [1]


def test_general_ciphering_agreed_key_one_pass_ecdh(tmp_path):
    """general-ciphering with key-info agreed-key (one-pass DH C(1e,1s)): the recipient's
    private key from the ring gives the ECDH secret and the SP 800-56A KDF the AES key.
    No public vector exists (the AlgorithmID is unverified): the sender side is built with
    the `cryptography` primitives directly, not with lonscope's ECDH helper."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
    recipient = ec.generate_private_key(ec.SECP256R1())
    eph = ec.generate_private_key(ec.SECP256R1())
    z = eph.exchange(ec.ECDH(), recipient.public_key())
    orig, recip = b"SERVER01", b"CLIENT01"
    key = ConcatKDFHash(hashes.SHA256(), 16, bytes.fromhex("60857405080300") + orig + recip).derive(z)
    pem = tmp_path / "client-key.pem"
    pem.write_bytes(recipient.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    ring = tmp_path / "r.toml"
    ring.write_text(f'[[dlms]]\nname="ecc"\nak="{bytes(range(16, 32)).hex()}"\nprivate_key="{pem}"\n')
    ring.chmod(0o600)
    ak = bytes(range(16, 32))
    dn = bytes.fromhex("0F00000001000600000001")
    body = dc.protect(0x31, 4, orig, key, ak, dn)
    pub = eph.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]

    def os_(b):
        return (bytes([len(b)]) if len(b) < 0x80 else b"\x81" + bytes([len(b)])) + b
    apdu = (b"\xDD" + os_(b"\x00" * 7 + b"\x01") + os_(orig) + os_(recip) + os_(b"") + os_(b"")
            + b"\x01\x02" + os_(b"\x01") + os_(pub + b"\x00" * 64) + os_(body))
    pkts, _ = run([s2c(apdu)], load_keys(ring))
    assert pkts[0].fields["dlms.sec.status"] == ["decrypted"]
    assert pkts[0].fields["dlms.sec.key"] == ["agreed"]
    assert _plain(pkts[0]) == dn
    # without the private key: no-key
    pkts, _ = run([s2c(apdu)], load_keys(None, [f"ak={ak.hex()}"]))
    assert pkts[0].fields["dlms.sec.status"] == ["no-key"]


_MUTATION_SEEDS = None


def _seeds():
    """Ciphered wrapper PDUs of the published vectors (read once; skipped without ../shared)."""
    global _MUTATION_SEEDS
    if _MUTATION_SEEDS is None:
        import json
        from conftest import SHARED
        p = SHARED / "vectors" / "public-vectors.json"
        vs = json.loads(p.read_text()) if p.exists() else []
        _MUTATION_SEEDS = [bytes.fromhex(v["hex"])[8:] for v in vs
                           if v["transport"] == "wrapper-tcp" and v.get("keys", {}).get("EK")]
    return _MUTATION_SEEDS


@settings(max_examples=min(settings.default.max_examples, 500))   # a pipeline per example
@given(st.data())
def test_fuzz_mutated_ciphered_vectors(data):
    seeds = _seeds()
    need_or_skip(bool(seeds), "../shared vectors (ciphered wrapper PDUs) not available")
    apdu = bytearray(data.draw(st.sampled_from(seeds)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(apdu) - 1))
        apdu[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        apdu = apdu[:data.draw(st.integers(1, len(apdu)))]
    keys = load_keys(None, GB)
    first = bytes.fromhex(V(_all_vectors(), "pcap_gurux_hls5_gmac_1")["hex"])[8:]
    pkts, _ = run([c2s(first), c2s(bytes(apdu)), s2c(bytes(apdu))], keys)
    for p in pkts:
        assert not any("stage failed" in e.message for e in p.d.expert), [e.message for e in p.d.expert]
        for s in p.fields.get("dlms.sec.status", []):
            assert s in STATUSES


def _all_vectors():
    import json
    from conftest import SHARED
    return json.loads((SHARED / "vectors" / "public-vectors.json").read_text())


def test_decrypted_lontalk_info_keeps_the_lontalk_prefix(tmp_path):
    """glo-* data APDUs over LonTalk: the Info of the decrypted APDU keeps the LonTalk
    "REQUEST [tid n]" / "RESPONSE [tid n]" prefix, as the plaintext path does.  The prefix
    is checked against the LonTalk layer's own fields and the undecrypted Info."""
    import analyzer
    from analyzer.simulate import out_paths, simulate

    out = tmp_path / "x.pcapng"
    simulate("replay", out, seed=3)
    keyfile = out_paths(out)[2]
    plain = {p.number: p.info for p in analyzer.open_capture([str(out)])}
    dec = [p for p in analyzer.open_capture([str(out)], keys=load_keys(keyfile))
           if p.fields.get("dlms.sec.status") == ["decrypted"] and p.fields["dlms.apdu"][0].startswith("glo-")
           and not any(a in ("aarq", "aare") for a in p.fields["dlms.apdu"])]
    assert len(dec) >= 6
    for p in dec:
        prefix = {0: "REQUEST", 2: "RESPONSE"}[p.fields["lon.spdu_type"][0]]   # 14908-1 SPDU types
        tid = p.fields["lon.trans_no"][0]
        assert plain[p.number].startswith(f"{prefix} [tid {tid}] glo-"), plain[p.number]
        plaintext_apdu = p.fields["dlms.apdu"][1]          # the decrypted APDU's name
        assert p.info.startswith(f"{prefix} [tid {tid}] {plaintext_apdu} "), p.info
        assert p.info.endswith("[decrypted: fleet]")


def test_general_signing_uses_the_dissector_header(tmp_path):
    """general-signing: the decryption stage checks the ECDSA signature over the header
    fields and content the xDLMS dissector located.  The signature is made with the
    `cryptography` primitives directly (not lonscope's signer); a flipped signature bit
    fails; without the signer's public key: no-key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from _dlms_frames import a_xdr_octets as os_, public_key_ring

    signer = ec.generate_private_key(ec.SECP256R1())
    ring = public_key_ring(tmp_path, signer.public_key(), "certificate", "signed",
                           f'ak="{bytes(range(16)).hex()}"\n')
    orig, recip = b"SERVER01", b"CLIENT01"
    content = bytes.fromhex("0F00000001000600000001")                 # data-notification
    signed = os_(b"\x00" * 7 + b"\x02") + os_(orig) + os_(recip) + os_(b"") + os_(b"") + os_(content)
    r, s = decode_dss_signature(signer.sign(signed, ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    apdu = b"\xDF" + signed + os_(sig)
    pkts, _ = run([s2c(apdu)], load_keys(ring))
    assert pkts[0].fields["dlms.sec.signature_status"] == ["verified"]
    assert "data-notification" in pkts[0].fields["dlms.apdu"]
    bad = apdu[:-1] + bytes([apdu[-1] ^ 1])
    pkts, _ = run([s2c(bad)], load_keys(ring))
    assert pkts[0].fields["dlms.sec.signature_status"] == ["failed"]
    pkts, _ = run([s2c(apdu)], load_keys(None, [f"ak={bytes(range(16)).hex()}"]))
    assert pkts[0].fields["dlms.sec.signature_status"] == ["no-key"]
