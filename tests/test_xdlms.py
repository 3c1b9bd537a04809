"""xDLMS APDUs: every choice variant (hand-assembled from the Green Book layouts in
docs/xdlms-and-security.md §2.3-2.5), the vectors' published expectations, the docs §7
traps, ops/ciphered/blocks hand-offs, and hypothesis fuzzing.

Where gurux_dlms decodes a variant correctly its decoding is the oracle; where it does not
the defect is asserted (so the README's defect list stays true) and the expected values
come from the published layout."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dissectors.core import Dissection
from dissectors import xdlms, axdr

import test_xdlms_helpers as H


def dis(h: str | bytes, tree: bool = False) -> Dissection:
    a = bytes.fromhex(h.replace(" ", "")) if isinstance(h, str) else h
    d = Dissection(a, tree)
    xdlms.dissect_apdu(a, 0, len(a), d, d.root)
    return d


def F(d, name):
    return d.fields.get(name, [])


def no_errors(d):
    return [e.message for e in d.expert if e.severity == "error" or e.group == "malformed"]


# (name, hex, expected fields, gurux verdict: "agree" or a defect description)
VARIANTS = [
    ("get-request-normal-selective", "C001C1 0007 0100630100FF 02 01 01 0204 020412000809060000010000FF0F02120000"
     "090C07E7040D04000000FFFEB600 090C07E7040D04161E13FFFEB600 0100",
     {"dlms.get_request_type": ["normal"], "dlms.class_id": [7], "dlms.obis": ["1.0.99.1.0.255"],
      "dlms.access_selector": [1], "dlms.data.datetime": ["2023-04-13T00:00:00+05:30", "2023-04-13T22:30:19+05:30"]},
     "agree"),
    ("get-request-next", "C002C1 00000001", {"dlms.get_request_type": ["next"], "dlms.block_number": [1]}, "agree"),
    ("get-request-with-list", "C003C1 02 0001 0000800000FF 02 00 0003 0100010800FF 02 00",
     {"dlms.get_request_type": ["with-list"], "dlms.obis": ["0.0.128.0.0.255", "1.0.1.8.0.255"],
      "dlms.obis_name": ["Active energy import (+A) total"], "dlms.list_count": [2]}, "agree"),
    ("get-response-normal", "C401C1 00 0600001391", {"dlms.data.value": [5009], "dlms.data.type": ["double-long-unsigned"]}, "agree"),
    ("get-response-normal-dar", "C401C1 01 03", {"dlms.data_access_result": [3], "dlms.result": ["read-write-denied"]},
     "agree"),
    ("get-response-with-datablock", "C402C1 00 00000001 00 07 82010000000000",
     {"dlms.get_response_type": ["with-datablock"], "dlms.last_block": [False], "dlms.block_number": [1],
      "dlms.raw_data": [bytes.fromhex("82010000000000")]}, "agree"),
    ("get-response-with-datablock-dar", "C402C1 01 00000002 01 0E",
     {"dlms.last_block": [True], "dlms.data_access_result": [14]}, "agree"),
    ("get-response-with-list", "C403C1 02 00 0600000005 01 0B",
     {"dlms.get_response_type": ["with-list"], "dlms.data.value": [5], "dlms.data_access_result": [11]}, "agree"),
    ("set-request-normal", "C101C1 0008 0000010000FF 02 00 090C07E50118FF0E303950FFC400",
     {"dlms.set_request_type": ["normal"], "dlms.data.datetime": ["2021-01-24T14:48:57.80+01:00"],
      "dlms.data.deviation": [-60]}, "agree"),
    ("set-request-with-first-datablock", "C102C1 0001 00002B0100FF 02 00 00 00000001 05 0901020304",
     {"dlms.set_request_type": ["with-first-datablock"], "dlms.class_id": [1], "dlms.block_number": [1],
      "dlms.last_block": [False], "dlms.raw_data": [bytes.fromhex("0901020304")]}, "agree"),
    ("set-request-with-datablock", "C103C1 01 00000002 04 05060708",
     {"dlms.set_request_type": ["with-datablock"], "dlms.last_block": [True], "dlms.block_number": [2]}, "agree"),
    ("set-request-with-list", "C104C1 02 0001 0000800000FF 02 00 0001 0000800100FF 02 00 02 1105 0A03303030",
     {"dlms.set_request_type": ["with-list"], "dlms.data.value": [5, "000"]}, "agree"),
    ("set-request-with-list-and-first-datablock", "C105C1 02 0001 0000800000FF 02 00 0001 0000800100FF 02 00"
     " 00 00000001 03 010203",
     {"dlms.set_request_type": ["with-list-and-first-datablock"], "dlms.obis": ["0.0.128.0.0.255", "0.0.128.1.0.255"],
      "dlms.block_number": [1]}, "Gurux raises TypeError on set-request-with-list-and-first-datablock"),
    ("set-response-normal", "C501C1 00", {"dlms.set_response_type": ["normal"], "dlms.result": ["success"]}, "agree"),
    ("set-response-datablock", "C502C1 00000001", {"dlms.set_response_type": ["datablock"], "dlms.block_number": [1]},
     "agree"),
    ("set-response-last-datablock", "C503C1 00 00000002",
     {"dlms.set_response_type": ["last-datablock"], "dlms.block_number": [2], "dlms.result": ["success"]}, "agree"),
    ("set-response-last-datablock-with-list", "C504C1 02 00 03 00000003",
     {"dlms.set_response_type": ["last-datablock-with-list"], "dlms.result": ["success", "read-write-denied"],
      "dlms.block_number": [3]}, "Gurux raises TypeError on set-response-last-datablock-with-list"),
    ("set-response-with-list", "C505C1 02 00 00", {"dlms.result": ["success", "success"]}, "agree"),
    ("action-request-normal", "C301C1 000F 0000280000FF 01 01 0911 1000001A90E6D2221FA2FD85EED61ACC22",
     {"dlms.method_id": [1], "dlms.method_name": ["reply_to_HLS_authentication"], "dlms.class_name": ["Association LN"]},
     "agree"),
    ("action-request-next-pblock", "C302C1 00000001", {"dlms.action_request_type": ["next-pblock"], "dlms.block_number": [1]},
     "Gurux raises ValueError on action-request-next-pblock"),
    ("action-request-with-list", "C303C1 02 000F 0000280000FF 01 0046 0000600301FF 01 02 09020102 1100",
     {"dlms.action_request_type": ["with-list"], "dlms.method_id": [1, 1], "dlms.data.value": [b"\x01\x02", 0]},
     "Gurux raises ValueError (reads the class id as an object type) on action-request-with-list"),
    ("action-request-with-first-pblock", "C304C1 0012 00002C0000FF 02 00 00000001 03 0901AB",
     {"dlms.action_request_type": ["with-first-pblock"], "dlms.class_id": [18], "dlms.method_id": [2],
      "dlms.method_name": ["image_block_transfer"], "dlms.block_number": [1]},
     "Gurux prints an empty <ActionRequest> for action-request-with-first-pblock"),
    ("action-request-with-list-and-first-pblock", "C305C1 01 0012 00002C0000FF 02 00 00000001 02 0A0B",
     {"dlms.action_request_type": ["with-list-and-first-pblock"], "dlms.block_number": [1]},
     "Gurux raises ValueError on action-request-with-list-and-first-pblock"),
    ("action-request-with-pblock", "C306C1 01 00000002 02 CCDD",
     {"dlms.action_request_type": ["with-pblock"], "dlms.last_block": [True], "dlms.block_number": [2]},
     "Gurux raises ValueError on action-request-with-pblock"),
    ("action-response-normal", "C701C1 00 01 00 0A03414243",
     {"dlms.action_result": [0], "dlms.data.value": ["ABC"]}, "agree"),
    ("action-response-with-pblock", "C702C1 01 00000001 03 112233",
     {"dlms.action_response_type": ["with-pblock"], "dlms.block_number": [1]},
     "Gurux raises TypeError on action-response-with-pblock"),
    ("action-response-with-list", "C703C1 02 00 01 00 1105 03 00",
     {"dlms.action_response_type": ["with-list"], "dlms.result": ["success", "read-write-denied"],
      "dlms.data.value": [5]}, "Gurux raises ValueError on action-response-with-list"),
    ("action-response-next-pblock", "C704C1 00000003", {"dlms.action_response_type": ["next-pblock"],
                                                        "dlms.block_number": [3]}, "agree"),
    ("event-notification", "C201 0C 07E7040D04000000FFFEB600 0001 00005E1F00FF 02 1105",
     {"dlms.apdu": ["event-notification-request"], "dlms.obis": ["0.0.94.31.0.255"], "dlms.data.value": [5]}, "agree"),
    ("data-notification-with-time", "0F 00000001 0C 07E7040D04000000FFFEB600 0202 1100 12FFFF",
     {"dlms.long_invoke_id": [1], "dlms.data.value": [0, 65535],
      "dlms.data.datetime": ["2023-04-13T00:00:00+05:30"]}, "agree"),
    ("exception-response", "D8 01 02", {"dlms.state_error": [1], "dlms.service_error": [2]}, "agree"),
    ("exception-response-ic", "D8 01 06 00000005", {"dlms.service_error": [6], "dlms.expected_ic": [5]},
     "Gurux raises ValueError on service-error 6 (invocation-counter-error + expected IC)"),
    ("confirmed-service-error", "0E 05 06 01", {"dlms.cse.service": [5], "dlms.cse.error_type": [6],
                                                 "dlms.cse.error_name": ["dlms-version-too-low"]}, "agree"),
    ("access-request-set-action", "D9 40000002 00 02 02 0001 0000800000FF 02 03 000F 0000280000FF 01 02 1105 00",
     {"dlms.access.spec": ["set", "action"], "dlms.attribute_id": [2], "dlms.method_id": [1]},
     "Gurux labels the method id of an access-request action as AttributeId"),
    ("read-request", "05 02 02 FA08 04 FA10 01 0204 0600000000 0600000005 1200 00 1200 00",
     {"dlms.sn.variable_name": [0xFA08, 0xFA10], "dlms.sn.access": ["variable-name", "parameterized-access"],
      "dlms.access_selector": [1]}, "agree"),
    ("read-response", "0C 02 00 1100 01 03", {"dlms.sn.result": ["data", "data-access-error"],
                                               "dlms.result": ["success", "read-write-denied"][1:]}, "agree"),
    ("read-response-block", "0C 01 02 00 0001 04 01020304",
     {"dlms.sn.result": ["data-block-result"], "dlms.block_number": [1], "dlms.last_block": [False]},
     "Gurux raises AttributeError on a read-response data-block-result"),
    ("write-request", "06 01 02 FA58 01 09 02 AABB", {"dlms.sn.variable_name": [0xFA58],
                                                      "dlms.data.value": [b"\xaa\xbb"]}, "agree"),
    ("write-response", "0D 03 00 01 03 02 0005",
     {"dlms.sn.result": ["success", "data-access-error", "block-number"], "dlms.block_number": [5]},
     "Gurux prints the block-number choice of a write-response as DataAccessError Success"),
    ("unconfirmed-write", "16 01 02 0100 01 1105", {"dlms.apdu": ["unconfirmed-write-request"],
                                                   "dlms.sn.variable_name": [0x100], "dlms.data.value": [5]},
     "Gurux does not decode unconfirmed-write-request (prints <Data=…/>)"),
    ("information-report", "18 00 01 02 0100 01 120102", {"dlms.sn.variable_name": [0x100], "dlms.data.value": [258]},
     "agree"),
    ("gbt", "E0 81 0001 0000 09 C401C1000600000005",
     {"dlms.gbt.last_block": [True], "dlms.gbt.window": [1], "dlms.gbt.block_number": [1],
      "dlms.gbt.block_data_len": [9]}, "Gurux pduToXml does not accept a bare general-block-transfer"),
    ("compact-array", "C401C100 13 0202 1112 06 01000A 02000B",
     {"dlms.data.type_description": ["structure{unsigned, long-unsigned}"], "dlms.data.value": [1, 10, 2, 11]},
     "Gurux prints an empty ContentsDescription and wrong ArrayContents for compact-array"),
    ("bit-string", "C401C100 04 04 A0", {"dlms.data.value": ["1010"], "dlms.data.bits": [4]}, "agree"),
    ("scalar-types", "C401C100 0209 0301 05FFFFFFFF 0600000002 0F80 10FF7F 1400000000000000FF 1500000000000000FF 1607"
     " 18 4059000000000000",
     {"dlms.data.value": [True, -1, 2, -128, -129, 255, 255, 7, 100.0]}, "agree"),
    ("date-time-25", "C401C100 19 07E7040D04000000FFFEB600", {"dlms.data.value": ["2023-04-13T00:00:00+05:30"],
                                                             "dlms.data.deviation": [-330]}, "agree"),
    ("date-time-types", "C401C100 0203 1A07E7040D04 1B0C1E00FF 0D12",
     {"dlms.data.value": ["2023-04-13", "12:30:00", 0x12]}, "Gurux raises AttributeError on date (26)/time (27)"),
    ("utf8", "C401C100 0C03E282AC", {"dlms.data.value": ["€"], "dlms.data.string": ["€"]}, "agree"),
    ("dont-care", "C401C100 FF", {"dlms.data.type": ["dont-care"]}, "Gurux prints no element for dont-care (255)"),
    ("ded-get-request", "D0 12 20 00000005 411312FF935A47566827C467BC", {"dlms.sec.sc": [0x20], "dlms.sec.ic": [5]},
     "agree"),
    ("general-ded-ciphering", "DC 08 4142434445464748 12 20 00000005 411312FF935A47566827C467BC",
     {"dlms.apdu": ["general-ded-ciphering"], "dlms.sec.system_title": [b"ABCDEFGH"]},
     "Gurux names general-ded-ciphering (0xDC) GeneralGloCiphering"),
    ("general-ciphering", "DD 08 0102030405060708 08 4142434445464748 08 4D4D4D0000BC614E 00 00 01 00 00"
     " 14 30 00000001 AABBCC 112233445566778899AABBCC",
     {"dlms.sec.key_info": ["identified-key"], "dlms.sec.key_id": [0], "dlms.sec.ic": [1],
      "dlms.sec.originator": [b"ABCDEFGH"], "dlms.sec.tag": [bytes.fromhex("112233445566778899AABBCC")]},
     "Gurux raises AttributeError (AesGcmParameter.setSystemTitle) on general-ciphering"),
    ("general-signing", "DF 08 0102030405060708 08 4142434445464748 08 4D4D4D0000BC614E 00 00 06 C401C1001105"
     " 04 01020304",
     {"dlms.apdu": ["general-signing", "get-response"], "dlms.sec.signature": [b"\x01\x02\x03\x04"],
      "dlms.data.value": [5]}, "Gurux has no general-signing (0xDF)"),
]


@pytest.mark.parametrize("name,hexs,expected,verdict", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant(name, hexs, expected, verdict):
    a = bytes.fromhex(hexs.replace(" ", ""))
    for tree in (False, True):
        d = dis(a, tree)
        assert no_errors(d) == [], (name, [e.message for e in d.expert])
        assert not any("trailing" in e.message for e in d.expert), name
        for k, v in expected.items():
            got = F(d, k)
            assert got[:len(v)] == v if k == "dlms.apdu" else got == v, (name, k, got, v)
    pytest.importorskip("gurux_dlms")
    try:
        diffs = H.compare(a)
    except Exception as exc:   # a Gurux crash
        diffs = [f"gurux raised {type(exc).__name__}"]
    if verdict == "agree":
        assert diffs == [], diffs
    else:
        assert diffs, f"documented Gurux defect no longer reproduces: {verdict}"


def test_fast_and_tree_passes_record_the_same_fields(vectors):
    apdus = [bytes.fromhex(v[1].replace(" ", "")) for v in VARIANTS]
    for e in vectors:
        if e["transport"].startswith("raw-apdu"):
            apdus.append(bytes.fromhex(e["hex"]))
        elif e["transport"].startswith("wrapper"):
            apdus.append(bytes.fromhex(e["hex"])[8:])
    for a in apdus:
        assert dis(a, False).fields == dis(a, True).fields, a.hex()


def test_info_and_ops_for_get_pair():
    d = dis("C001C1 0008 0000010000FF 02 00")
    assert d.info == "get-request normal [invoke 1] 0.0.1.0.0.255 Clock attr 2"
    op = d.ctx["dlms.ops"][0]
    assert op["service"] == "get" and op["dir"] == "request" and op["invoke_id"] == 1
    assert (op["class_id"], op["obis"], op["attribute_id"]) == (8, "0.0.1.0.0.255", 2)
    d = dis("C401C1 00 090C07E50118FF0E303950FFC400")
    assert d.info == "get-response normal [invoke 1] 2021-01-24T14:48:57.80+01:00"
    op = d.ctx["dlms.ops"][0]
    assert op["dir"] == "response" and op["value"] == bytes.fromhex("07E50118FF0E303950FFC400")
    assert op["result"] == "success"


def test_tree_has_byte_ranges_and_names():
    a = bytes.fromhex("C001C10008 0000010000FF 0200".replace(" ", ""))
    d = dis(a, True)
    n = d.root.find("dlms.obis")
    assert n.offset == 5 and n.length == 6 and "Clock" in n.text
    n = d.root.find("dlms.attribute_id")
    assert n.offset == 11 and "time" in n.text
    assert d.root.children[0].text.startswith("DLMS/COSEM get-request normal")


# --------------------------------------------------------------------------- vectors

def _vec(vectors, name):
    return {e["name"]: e for e in vectors}[name]


def _apdu(e):
    h = bytes.fromhex(e["hex"])
    return h[8:] if e["transport"].startswith("wrapper") else h


def test_greenbook_glo_get_request_descriptors(vectors):
    for sc in ("10", "20", "30"):
        e = _vec(vectors, f"greenbook_glo_get_request_sc{sc}")
        a = _apdu(e)
        d = dis(a)
        desc = d.ctx["dlms.ciphered"][0]
        assert desc["kind"] == "glo" and desc["tag"] == 0xC8
        assert desc["sc"] == int(e["expected"]["security_control"], 16)
        assert desc["ic"] == int(e["expected"]["invocation_counter"], 16)
        assert desc["offset"] == 2 and desc["length"] == e["expected"]["length"] == len(a) - 2
        assert desc["source"] == 0
        if "auth_tag" in e["expected"]:
            assert F(d, "dlms.sec.tag") == [bytes.fromhex(e["expected"]["auth_tag"])]
        # the plaintext decodes to the published descriptor
        pd = dis(e["expected"]["plaintext"])
        dec = e["expected"]["decoded"]
        assert F(pd, "dlms.class_id") == [dec["class_id"]] and F(pd, "dlms.obis") == [dec["obis"]]
        assert F(pd, "dlms.attribute_id") == [dec["attribute_id"]]


def test_general_glo_vectors_no_outer_length(vectors):
    """Trap 1: DB has no outer length: DB 08 <ST> <len> SC IC ...; trap 2: long-form 82 0109."""
    e = _vec(vectors, "tirol_kaifa_mbus_general_glo_ciphering_suite1_enc_only")
    a = _apdu(e)
    d = dis(a)
    desc = d.ctx["dlms.ciphered"][0]
    assert desc["kind"] == "general-glo" and desc["system_title"] == bytes.fromhex("4B464D1010000023")
    assert desc["length"] == 265 and desc["offset"] == 1 + 1 + 8 + 3
    assert desc["sc"] == 0x21 and desc["ic"] == 0x00295B9A
    assert F(d, "dlms.sec.suite") == [1] and F(d, "dlms.sec.auth") == [False]
    assert F(d, "dlms.sec.tag") == []      # E-only: no tag
    e = _vec(vectors, "dlmscosem_udp_general_glo_ciphering_data_notification")
    d = dis(_apdu(e))
    assert d.ctx["dlms.ciphered"][0]["system_title"] == bytes.fromhex("2F19229199164103")
    assert d.ctx["dlms.ciphered"][0]["ic"] == 0x1E5


def test_long_form_length_in_capture_vector(vectors):
    """Trap 2: 82 03FB in the encryption-only capture."""
    e = _vec(vectors, "pcap_gurux_enc_only_4")
    a = _apdu(e)
    assert a[1:4] == bytes.fromhex("8203EF")
    d = dis(a)
    desc = d.ctx["dlms.ciphered"][0]
    assert desc["offset"] == 4 and desc["length"] == 0x3EF and desc["sc"] == 0x20


def test_director_general_glo_title(vectors):
    """Trap 3: the IV title of DB comes from the APDU itself."""
    d = dis(_apdu(_vec(vectors, "pcap_gurux_director_access_request_3")))
    assert d.ctx["dlms.ciphered"][0]["system_title"] == b"CPS-LT10"


def test_hls_gmac_inner_ic_differs(vectors):
    """Trap 5: a pass-3 f(StoC) is SC||IC||T, a 17-byte octet string with its own IC."""
    d = dis(_apdu(_vec(vectors, "jdlms_kaifa_hls_gmac_action_request")))
    v = d.ctx["dlms.ops"][0]["value"]
    assert len(v) == 17 and v[0] == 0x10 and int.from_bytes(v[1:5], "big") == 0x01234567


def test_sn_hls_reply_both_forms():
    """Trap 10: SN HLS reply as WriteRequest and as ReadRequest parameterized-access on 0xFA58."""
    d = dis("06 01 02 FA58 01 09 11 10000000011A52FE7DD3E72748973C1E28")
    assert F(d, "dlms.sn.variable_name") == [0xFA58] and len(d.ctx["dlms.ops"][0]["value"]) == 17
    d = dis("05 01 04 FA58 00 09 11 10000000011A52FE7DD3E72748973C1E28")
    assert F(d, "dlms.sn.access") == ["parameterized-access"] and F(d, "dlms.sn.variable_name") == [0xFA58]
    assert d.ctx["dlms.ops"][0]["access_parameters"][:1] == b"\x10"


def test_conformance_bit_order():
    """Trap 11: ASN.1 bit 0 is the MSB: 007E1F = {9..14, 19..23}."""
    d = dis("01 00 00 00 06 5F1F0400007E1F 04B0")
    names = F(d, "dlms.conformance_name")[0].split(",")
    bits = sorted(i for i, n in xdlms.CONFORMANCE_BITS.items() if n in names)
    assert bits == [9, 10, 11, 12, 13, 14, 19, 20, 21, 22, 23]
    assert F(d, "dlms.conformance.get") == [True] and F(d, "dlms.conformance.read") == []
    assert F(d, "dlms.client_max_receive_pdu_size") == [1200]


def test_deviation_sign_tirol():
    """Trap 12: deviation FF88 = -120 is UTC-local in Austrian summer (UTC+2), status 0x80 DST."""
    b = bytes.fromhex("07E8070F010C000000FF8880")
    assert axdr.datetime_iso(b) == "2024-07-15T12:00:00.00+02:00"
    d = dis(b"\xC4\x01\xC1\x00\x09\x0C" + b)
    assert F(d, "dlms.data.deviation") == [-120] and F(d, "dlms.data.clock_status") == [0x80]
    assert "daylight-saving-active" in axdr.datetime_text(b)


def test_dedicated_key_is_not_a_field(vectors):
    e = _vec(vectors, "greenbook_aarq_ciphered_lls")
    plain = e["expected"]["user_information"]["plaintext"]
    d = dis(plain, True)
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    assert d.ctx["dlms.dedicated_key"] == key
    assert F(d, "dlms.dedicated_key_present") == [True]
    assert all(key not in (v if isinstance(v, bytes) else b"") for vs in d.fields.values() for v in vs)
    assert all(key.hex() not in n.text for n in d.root.walk())


def test_blocks_handoff():
    d = dis("C402C1 00 00000001 00 07 82010000000000")
    b = d.ctx["dlms.blocks"][0]
    assert (b["service"], b["dir"], b["invoke_id"], b["block_number"], b["last"]) == ("get", "response", 1, 1, False)
    assert b["data"] == bytes.fromhex("82010000000000") and b["offset"] == 10 and b["length"] == 7
    d = dis("E0 C2 0003 0002 03 AABBCC")
    b = d.ctx["dlms.blocks"][0]
    assert (b["service"], b["block_number"], b["ack"], b["streaming"], b["window"], b["last"]) == \
        ("gbt", 3, 2, True, 2, True)


def test_truncated_and_hand_copied_hex():
    """Trap 9: lossy hand-copied bytes give a malformed item, never an exception, and keep
    what decoded before the damage."""
    d = dis("C001C10008 0000010000")          # descriptor cut short
    assert F(d, "dlms.apdu") == ["get-request"] and F(d, "dlms.invoke_id") == [1]
    assert any("Malformed" in e.message for e in d.expert)
    d = dis("C401C1 00 0105 1100")               # array of 5 with one element
    assert any("array of 5" in e.message for e in d.expert)


# --------------------------------------------------------------------------- fuzz

SEEDS = [bytes.fromhex(v[1].replace(" ", "")) for v in VARIANTS]


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    for tree in (False, True):
        d = Dissection(data, tree)
        xdlms.dissect_apdu(data, 0, len(data), d, d.root)
        assert isinstance(d.info, str)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(SEEDS), st.integers(0, 400), st.integers(0, 255), st.integers(0, 3))
def test_fuzz_mutated_valid(seed, pos, val, mode):
    b = bytearray(seed)
    if mode == 0 and b:
        b[pos % len(b)] = val
    elif mode == 1:
        b = b[:pos % (len(b) + 1)]
    elif mode == 2:
        b.insert(pos % (len(b) + 1), val)
    else:
        b += bytes([val]) * (pos % 8)
    data = bytes(b)
    d = Dissection(data, True)
    xdlms.dissect_apdu(data, 0, len(data), d, d.root)
    assert d.fields["dlms"] == [True]


def test_deep_nesting_and_huge_counts_are_bounded():
    deep = b"\xC4\x01\xC1\x00" + b"\x02\x01" * 5000 + b"\x00"
    d = dis(deep)
    assert any("nesting deeper" in e.message for e in d.expert)
    huge = b"\xC4\x01\xC1\x00\x01\x84\xFF\xFF\xFF\xFF\x00"
    d = dis(huge)
    assert any("array of 4294967295" in e.message for e in d.expert)
    huge = b"\xC4\x01\xC1\x00\x09\x84\x7F\xFF\xFF\xFF"
    d = dis(huge)
    assert any("octet-string" in e.message for e in d.expert)
