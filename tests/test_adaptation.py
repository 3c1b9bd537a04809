"""IEC 62056-8-8 adaptation layer: the default (inferred) profile, protected-PDU descriptors
usable for AES-CCM, segmentation reassembly, the heuristic locator, corrected profiles
(module API, Pipeline(profile=...)), bad profiles, fuzzing.  The xDLMS APDUs inside are
checked against Gurux's translation of the same bytes."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from analyzer.packet import Record
from analyzer.pipeline import Pipeline
from dissectors import adaptation, load_all, lon
from dissectors.core import Dissection, table

load_all()

GET = bytes.fromhex("C001C100080000010000FF0200")
GET_RESPONSE = bytes.fromhex("C401C100090C07E30B150408000000FF800000")


@pytest.fixture(autouse=True)
def default_profile():
    adaptation.use_profile(None)
    yield
    adaptation.use_profile(None)


def _gurux_descriptor(apdu: bytes):
    from gurux_dlms import GXByteBuffer, GXDLMSTranslator
    from gurux_dlms.enums import TranslatorOutputType
    xml = GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML).pduToXml(GXByteBuffer(apdu))
    cls = int(re.search(r'<ClassId Value="([0-9A-F]+)"', xml).group(1), 16)
    inst = bytes.fromhex(re.search(r'<InstanceId Value="([0-9A-F]+)"', xml).group(1))
    attr = int(re.search(r'<AttributeId Value="([0-9A-F]+)"', xml).group(1), 16)
    return cls, ".".join(str(b) for b in inst), attr


def _adp(pdu: bytes, lonctx=None, tree=True) -> Dissection:
    d = Dissection(pdu, tree)
    d.ctx["lon"] = lonctx or {"src_subnet": 1, "src_node": 5, "dst_subnet": 1, "dst_node": 20,
                              "dst_type": "unicast", "type": "ACKD"}
    table("lon.apdu").dispatch(pdu[0], pdu, 0, len(pdu), d, d.root)
    return d


def _lon(apdu: bytes, src=(1, 5), dst=(1, 20), tid=1, spdu_type=None) -> Record:
    kw = dict(pdu="spdu", spdu_type=spdu_type) if spdu_type is not None else dict(pdu="tpdu", tpdu_type=0)
    fr = lon.build_frame(src_subnet=src[0], src_node=src[1], dst_subnet=dst[0], dst_node=dst[1],
                         domain=b"\x01", tid=tid, apdu=apdu, **kw)
    return Record(tid, fr, 147, len(fr))


def test_default_profile_is_inferred_and_documented():
    p = adaptation.active_profile()
    assert p.inferred is True
    assert p.codes["adp"] == [0x41]
    assert p.codes["osgp_requests"] == [0x30, 0x3F, 0x40, 0x4F]
    assert p.codes["proxy"] == [0x4C, 0x4D]
    assert [f.name for f in p.header] == ["control", "sap.client", "sap.server", "segment"]
    assert p.protected["suite"] == "OSGP-AES-128-PSK" and p.mac_length == 8
    text = open(adaptation.DEFAULT_PROFILE_PATH, encoding="utf-8").read()
    assert text.count("Reasoning") >= 4          # the inference is argued next to the layout


def test_unprotected_pdu_and_gurux():
    pdu = adaptation.build_pdu(GET, client_sap=0x10, server_sap=0x01)
    assert pdu == bytes([0x41, 0x00, 0x10, 0x01]) + GET
    d = _adp(pdu)
    f = d.fields
    assert f["adp.inferred"] == [True] and "adp.heuristic" not in f
    assert f["adp.code"] == [0x41] and f["adp.control"] == [0]
    assert f["adp.sap.client"] == [16] and f["adp.sap.server"] == [1]
    assert f["adp.protected"] == [False] and f["adp.segmented"] == [False]
    adp_node = next(n for n in d.root.children if n.field == "adp")
    assert "[inferred layout]" in adp_node.text
    cls, obis, attr = _gurux_descriptor(GET)
    assert f["dlms.class_id"] == [cls] and f["dlms.obis"] == [obis] and f["dlms.attribute_id"] == [attr]


def test_protected_descriptor_usable_for_ccm():
    """The descriptor's offsets are exactly what a decryption stage needs: rebuild the
    profile's nonce and AAD from them and AES-CCM-decrypt the ciphertext."""
    from analyzer.osgpcrypto import ccm_decrypt, ccm_encrypt
    key = bytes(range(16))
    prof = adaptation.active_profile()
    sender = bytes.fromhex("010105ffffff")         # domain 01, subnet 1, node 5, 0xFF padding
    head = adaptation.build_pdu(b"", protected=True, key_id=2, counter=0x01020304, mac=b"")
    nonce = sender + (0x01020304).to_bytes(4, "big") + bytes([2, head[0], head[1]])
    assert len(nonce) == 13
    ct_tag = ccm_encrypt(key, nonce, GET, aad=head, tag_len=prof.mac_length)
    pdu = head + ct_tag
    d = _adp(pdu)
    f = d.fields
    assert f["adp.protected"] == [True] and f["adp.key_id"] == [2] and f["adp.counter"] == [0x01020304]
    assert f["adp.ciphertext"] == [ct_tag[:-8]] and f["adp.mac"] == [ct_tag[-8:]]
    assert "dlms" not in f
    (desc,) = d.ctx["adp.protected"]
    assert desc["suite"] == "OSGP-AES-128-PSK" and desc["inferred"] is True
    assert desc["key_id"] == 2 and desc["counter"] == 0x01020304
    buf = d.sources[desc["source"]][1]
    hdr = buf[desc["header_offset"]:desc["header_offset"] + desc["header_length"]]
    ct = buf[desc["ciphertext_offset"]:desc["ciphertext_offset"] + desc["ciphertext_length"]]
    mac = buf[desc["mac_offset"]:desc["mac_offset"] + desc["mac_length"]]
    assert hdr == head
    built_nonce = sender + buf[desc["counter_offset"]:desc["counter_offset"] + 4] + \
        bytes([buf[desc["key_id_offset"]], buf[desc["code_offset"]], buf[desc["code_offset"] + 1]])
    assert ccm_decrypt(key, built_nonce, ct + mac, aad=hdr, tag_len=desc["mac_length"]) == GET
    assert desc["nonce"] == ["sender_id:6", "counter:4", "key_id:1", "code:1", "control:1"]
    # the decryption stage reads the same descriptor: with the PSK it decrypts, and the
    # plaintext goes through the xDLMS dissector
    from analyzer.keyring import load_keys
    pipe = Pipeline(keys=load_keys(extra=[f"lon.psk={key.hex()}", "lon.address=1/5"]))
    p = pipe.feed(_lon(pdu))
    assert p.fields["adp.protected"] == [True]
    assert p.fields["dlms.apdu"] == ["get-request"] and p.fields["dlms.obis"] == ["0.0.1.0.0.255"]
    wrong = Pipeline(keys=load_keys(extra=[f"lon.psk={bytes(16).hex()}", "lon.address=1/5"]))
    assert "dlms" not in wrong.feed(_lon(pdu)).fields
    # truncated: shorter than the MAC
    d = _adp(head + b"\x01\x02")
    assert "_ws.malformed" in d.fields and "adp.protected" in d.fields


def test_segmentation_reassembled_through_pipeline():
    value = bytes(range(150))
    apdu = bytes.fromhex("C401C100") + b"\x09\x81\x96" + value
    segs = adaptation.segment_apdu(apdu, 60)
    assert len(segs) == 3
    pipe = Pipeline()
    pkts = [pipe.feed(_lon(s, src=(1, 20), dst=(1, 5), tid=i + 1)) for i, s in enumerate(segs)]
    assert [p.fields["adp.segment_number"] for p in pkts] == [[0], [1], [2]]
    assert [p.fields["adp.last"] for p in pkts] == [[False], [False], [True]]
    assert "dlms" not in pkts[0].fields and "dlms" not in pkts[1].fields
    f = pkts[2].fields
    assert f["adp.reassembled.segments"] == [3] and f["adp.reassembled.length"] == [len(apdu)]
    assert f["dlms.apdu"] == ["get-response"]
    assert value in [v for v in f.get("dlms.data.value", []) if isinstance(v, bytes)]
    d = pipe.redissect(pkts[2])
    assert d.fields["dlms.apdu"] == ["get-response"]
    # a missing middle segment is reported, nothing is invented
    pipe = Pipeline()
    p0 = pipe.feed(_lon(segs[0], tid=1))
    p2 = pipe.feed(_lon(segs[2], tid=3))
    assert "dlms" not in p2.fields and any("missing" in e.message for e in p2.d.expert)


def test_heuristic_locator():
    # unknown application code 0x22 with a 2-byte header before a GET
    d = _adp(bytes([0x22, 0x7A, 0x01]) + GET)
    f = d.fields
    assert f["adp.heuristic"] == [True] and f["adp.header"] == [b"\x7a\x01"]
    assert f["dlms.obis"] == ["0.0.1.0.0.255"]
    assert any("heuristic" in e.message for e in d.expert)
    # AARQ (BER length must match) found in a foreign frame 0x44
    aarq = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400001E5DFFFF")
    f = _adp(bytes([0x44, 0x00]) + aarq).fields
    assert f["adp.heuristic"] == [True] and f["dlms.apdu"][0] == "aarq"
    # ordinary application data is not taken for DLMS
    for junk in (b"\x22hello world", bytes([0x05, 0xC0, 0x01]), bytes([0x12, 0x60, 0x10, 0xA1])):
        assert "dlms" not in _adp(junk).fields


CORRECTED = """
[profile]
name = "corrected test profile"
inferred = false
[codes]
adp = [0x42]
proxy = [0x4D]
[[header]]
name = "control"
size = 1
[[header]]
name = "sap.server"
size = 2
[[control]]
name = "protected"
mask = 0x01
role = "protected"
[[control]]
name = "priority"
mask = 0x06
[protected]
suite = "test"
mac_length = 4
[[protected.header]]
name = "counter"
size = 2
role = "counter"
[heuristic]
enabled = false
"""


def test_corrected_profile(tmp_path):
    path = tmp_path / "corr.toml"
    path.write_text(CORRECTED)
    prof = adaptation.load_profile(str(path))
    adaptation.use_profile(prof)
    assert table("lon.apdu").get(0x41) is None and table("lon.apdu").get(0x30) is None
    pdu = bytes([0x42, 0x04, 0x00, 0x11]) + GET
    d = _adp(pdu)
    f = d.fields
    assert f["adp.inferred"] == [False] and f["adp.sap.server"] == [0x11] and f["adp.priority"] == [2]
    assert "[inferred layout]" not in next(n for n in d.root.children if n.field == "adp").text
    assert f["dlms.obis"] == ["0.0.1.0.0.255"]
    # protected with the corrected trailer
    f = _adp(bytes([0x42, 0x01, 0x00, 0x11, 0x00, 0x07]) + b"\xee" * 5 + b"\x99" * 4).fields
    assert f["adp.counter"] == [7] and f["adp.mac"] == [b"\x99" * 4] and f["adp.ciphertext"] == [b"\xee" * 5]
    # heuristic disabled: nothing found in 0x22 messages
    assert "dlms" not in _adp(bytes([0x22, 0x00]) + GET).fields
    # the pipeline applies a profile given by path
    adaptation.use_profile(None)
    pipe = Pipeline(profile=str(path))
    p = pipe.feed(_lon(pdu))
    assert p.fields["adp.sap.server"] == [0x11] and p.fields["dlms.apdu"] == ["get-request"]
    # a later pipeline without a profile is back on the default one
    p = Pipeline().feed(_lon(adaptation.build_pdu(GET)))
    assert adaptation.active_profile().codes["adp"] == [0x41]
    assert p.fields["adp.sap.client"] == [0x10] and p.fields["adp.inferred"] == [True]


@pytest.mark.parametrize("text,msg", [
    ("[codes]\nadp = [0x41]\nosgp_requests = [0x41]\n", "listed for both"),
    ("[codes]\nadp = [0x90]\n", "not an application/foreign code"),
    ("[codes]\nfoo = [1]\n", "unknown role"),
    ("[profile]\n", "[codes] table missing"),
    ("[codes]\nadp = [0x41]\n[[header]]\nname = 'control'\n[[control]]\nname='x'\nmask=0x100\n", "within one byte"),
    ("[codes]\nadp = [0x41\n", "profile"),
])
def test_bad_profiles(tmp_path, text, msg):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(adaptation.ProfileError) as e:
        adaptation.load_profile(str(path))
    assert msg in str(e.value)
    with pytest.raises(adaptation.ProfileError):
        adaptation.load_profile(str(tmp_path / "missing.toml"))


@given(st.binary(max_size=80), st.integers(0, 0x4F))
def test_fuzz_adp_and_heuristic(data, code):
    b = bytes([code]) + data
    for tree in (False, True):
        d = Dissection(b, tree)
        adaptation.dissect_adp(b, 0, len(b), d, d.root)
        d = Dissection(b, tree)
        adaptation.heuristic_locate(b, 0, len(b), d, d.root)


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40), st.integers(0, 30))
def test_fuzz_header_bits(control, client, server, body, cut):
    b = bytes([0x41, control, client, server]) + body
    b = b[:max(1, len(b) - cut)]
    d = _adp(b)
    assert d.fields["adp.code"] == [0x41]
    if len(b) >= 2:
        assert d.fields["adp.control"] == [control]


def test_plausible_apdu_lengths_use_the_axdr_reader():
    """The heuristic's BER lengths come from dissectors.axdr.read_length: short and long
    forms agree, a length past the end or a reserved form is not plausible."""
    from dissectors.adaptation import plausible_apdu

    body = bytes([0x30]) + (5).to_bytes(4, "big") + bytes(140)      # SC, IC, ciphertext+tag
    for hdr in (bytes([0x81, len(body)]), bytes([0x82, 0, len(body)]), bytes([0x84, 0, 0, 0, len(body)])):
        apdu = b"\xC8" + hdr + body                                 # glo-get-request
        assert plausible_apdu(apdu, 0, len(apdu))
    short = b"\xC8" + bytes([0x30]) + (5).to_bytes(4, "big") + bytes(43)
    assert plausible_apdu(short, 0, len(short)) is False             # 0x30 is not its length
    assert plausible_apdu(b"\xC8\x82\x00", 0, 3) is False             # length bytes missing
    assert plausible_apdu(b"\xC8\x80" + body, 0, 2 + len(body)) is False   # indefinite form
