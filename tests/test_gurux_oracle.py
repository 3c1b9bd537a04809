"""gurux_dlms.GXDLMSTranslator as an independent oracle for the xDLMS/ACSE/A-XDR dissectors.

Every plain APDU of the shared vectors and of the Gurux/EPRI captures (Output.pcap,
Output-EPRI.pcap, Output-Ciphered-Simple-Key.pcap; APDUs extracted here with our own
minimal pcap/TCP/wrapper walk, independent of the product's capture code) is decoded by
both and compared: APDU type, invoke id, class, OBIS, attribute/method, results, every
A-XDR element's type and value, ACSE context/mechanism/titles/authentication values,
conformance bits, PDU sizes, block numbers and raw block data.  Agreement must be 100 %,
except the documented Gurux defects (test_xdlms_helpers.GURUX_DEFECTS, README)."""
from __future__ import annotations

import pytest

gurux = pytest.importorskip("gurux_dlms")

import test_xdlms_helpers as H  # noqa: E402

PCAPS = ("Output.pcap", "Output-EPRI.pcap", "Output-Ciphered-Simple-Key.pcap")


def _vector_apdus(vectors):
    out = []
    for e in vectors:
        h = bytes.fromhex(e["hex"])
        if e["transport"].startswith("wrapper"):
            h = h[8:]
        elif not e["transport"].startswith("raw-apdu"):
            continue
        out.append((e["name"], h))
    return out


def _run(apdus):
    agree, defects, disagree = 0, {}, []
    for name, a in apdus:
        diffs = H.compare(a)
        if not diffs:
            agree += 1
            continue
        why = H.defect_of(a, H.gurux_xml(a))
        if why is not None:
            defects.setdefault(why, []).append(name)
        else:
            disagree.append((name, diffs))
    return agree, defects, disagree


def test_vectors_agree_with_gurux(vectors):
    apdus = _vector_apdus(vectors)
    assert len(apdus) >= 70
    agree, defects, disagree = _run(apdus)
    assert disagree == [], disagree[:5]
    # the two tag-0x00 ciphered access APDUs are the only ones Gurux cannot render
    assert set(defects) <= {"tag0"}
    assert sorted(defects.get("tag0", [])) == ["pcap_gurux_hls2_10", "pcap_gurux_hls2_9"]
    assert agree == len(apdus) - 2


@pytest.mark.parametrize("name", PCAPS)
def test_capture_apdus_agree_with_gurux(pcaps, name):
    path = pcaps / "htanwar922-wireshark-dlms" / name
    apdus = [(f"{name}#{fr}", a) for fr, a in H.wrapper_apdus(path)]
    assert len(apdus) > 40
    agree, defects, disagree = _run(apdus)
    assert disagree == [], disagree[:5]
    assert agree == len(apdus)
    # the XML defect on RLRE happens, but the values still agree (token-stream reading)
    xml = [H.gurux_xml(a) for _n, a in apdus if a[:1] == b"\x63"]
    assert xml and all(H.defect_of(b"\x63", x) in (None, "rlre-conformance") for x in xml)


def test_gurux_tag0_defect_is_real_and_we_decode_it(vectors):
    """Trap 6: tag 0x00 with a glo body.  Gurux gives non-XML; we name it unknown and
    still hand it to decryption as a glo-ciphered descriptor."""
    v = {e["name"]: e for e in vectors}["pcap_gurux_hls2_9"]
    apdu = bytes.fromhex(v["hex"])[8:]
    xml = H.gurux_xml(apdu)
    assert xml.lstrip().startswith("<Data=")
    d = H.ours(apdu)
    assert d.fields["dlms.apdu"] == ["unknown-0x00"]
    desc = d.ctx["dlms.ciphered"][0]
    assert desc["kind"] == "glo" and desc["tag"] == 0 and desc["sc"] == 0x30 and desc["ic"] == 4
    assert desc["offset"] == 2 and desc["length"] == len(apdu) - 2


def test_rlre_length_defect_in_gurux_server(pcaps):
    """The Gurux server's RLRE declares lengths 2-4 bytes short; we decode the same values
    as the translator and say so in an expert item."""
    path = pcaps / "htanwar922-wireshark-dlms" / "Output.pcap"
    rlre = [a for _fr, a in H.wrapper_apdus(path) if a[0] == 0x63][0]
    assert rlre[1] == 0x11 and len(rlre) - 2 == 21
    d = H.ours(rlre)
    assert d.fields["dlms.server_max_receive_pdu_size"] == [1024]
    assert d.fields["dlms.vaa_name"] == [7]
    assert any("declares 17 bytes but 21 follow" in e.message for e in d.expert)
    g = H.gurux_facts(H.gurux_xml(rlre))
    assert g["NegotiatedMaxPduSize"] == ["0400"]


def test_reassembled_object_list_agrees_with_gurux(pcaps):
    """Block transfer in Output.pcap (get-response-with-datablock + get-next): our
    reassembled Data equals Gurux's decoding of the same bytes wrapped in a
    get-response-normal."""
    from analyzer import open_capture
    path = pcaps / "htanwar922-wireshark-dlms" / "Output.pcap"
    found = None
    for pkt in open_capture(path):
        if pkt.fields.get("dlms.reassembled_length"):
            found = pkt
            break
    assert found is not None and found.number == 6
    src = [s for s in found.d.sources if s[0] == "Reassembled xDLMS"]
    assert len(src) == 1 and len(src[0][1]) == 1601
    data = src[0][1]
    wrapped = b"\xC4\x01\x81\x00" + data
    assert H.compare(wrapped) == []
    op = [o for o in found.d.ctx["dlms.ops"] if o.get("reassembled")][0]
    assert op["obis"] == "0.0.40.0.0.255" and op["class_id"] == 15 and op["attribute_id"] == 2
    qty = [a["Qty"] for t, a in H.tokens(H.gurux_xml(wrapped)) if t == "Array"][0]
    assert len(op["value"]) == int(qty, 16) > 10
    # each object_list entry: {class_id, version, logical_name, access_rights}
    assert all(isinstance(x, list) and len(x) == 4 for x in op["value"])


CIPHERED = [("Output-Ciphered-HLS.pcap", "gb"), ("Output-Ciphered-HLS-AuthEnc.pcap", "gb"),
            ("Output-Ciphered.pcap", "gb"), ("Output-Ciphered-Simple-Key.pcap", "sk"),
            ("Output-Ciphered-Director.pcap", "gb")]
KEYS = {"gb": ["ek=000102030405060708090A0B0C0D0E0F", "ak=D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"],
        "sk": ["ek=" + "62" * 16, "ak=" + "62" * 16]}


@pytest.mark.parametrize("name,keyset", CIPHERED, ids=[c[0] for c in CIPHERED])
def test_decrypted_plaintexts_agree_with_gurux(pcaps, name, keyset):
    """Every plaintext the decryption stage produced (dissected by our xDLMS dissector in the
    "Decrypted xDLMS" source) decodes to the same values with Gurux."""
    pytest.importorskip("analyzer.decrypt")
    from analyzer import open_capture
    from analyzer.keyring import load_keys
    keys = load_keys(extra=KEYS[keyset])
    n = 0
    bad = []
    for pkt in open_capture(pcaps / "htanwar922-wireshark-dlms" / name, keys=keys):
        for src, data in pkt.d.sources:
            if src == "Decrypted xDLMS":
                n += 1
                diffs = H.compare(data)
                if diffs:
                    bad.append((pkt.number, diffs[:2]))
    assert n >= 3
    assert bad == []
