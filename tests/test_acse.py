"""ACSE (AARQ/AARE/RLRQ/RLRE): the vectors' published values, OID naming (including the
Wireshark .1.4 label trap), LLS password, HLS challenges, the ciphered initiate hand-off
with the AP title, and fuzzing."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dissectors import acse, xdlms
from dissectors.core import Dissection


def dis(a: bytes, tree: bool = False) -> Dissection:
    d = Dissection(a, tree)
    xdlms.dissect_apdu(a, 0, len(a), d, d.root)
    return d


def vec(vectors, name) -> bytes:
    e = {v["name"]: v for v in vectors}[name]
    h = bytes.fromhex(e["hex"])
    return h[8:] if e["transport"].startswith("wrapper") else h


def test_aarq_ciphered_lls(vectors):
    a = vec(vectors, "greenbook_aarq_ciphered_lls")
    d = dis(a, True)
    f = d.fields
    assert f["cosem.application_context_name"] == ["2.16.756.5.8.1.3"]
    assert f["dlms.acse.context"] == ["LN-ciphered"]
    assert f["cosem.calling_AP_title"] == [bytes.fromhex("4D4D4D0000BC614E")]
    assert f["cosem.sender_acse_requirements"] == [1] and f["dlms.acse.authentication"] == [True]
    assert f["cosem.mechanism_name"] == ["2.16.756.5.8.2.1"] and f["dlms.acse.mechanism"] == ["LLS"]
    assert f["dlms.acse.password"] == ["12345678"]
    assert f["dlms.apdu"] == ["aarq", "glo-initiate-request"]
    desc = d.ctx["dlms.ciphered"][0]
    assert desc["kind"] == "glo" and desc["tag"] == 0x21 and desc["in_acse"] == "aarq"
    assert desc["system_title"] == bytes.fromhex("4D4D4D0000BC614E")      # IV title from the AARQ
    assert desc["sc"] == 0x30 and desc["ic"] == 0x01234567
    assert a[desc["offset"]] == 0x30 and desc["offset"] + desc["length"] == len(a)
    ac = d.ctx["dlms.acse"]
    assert ac["apdu"] == "aarq" and ac["mechanism"] == 1 and ac["password"] == "12345678"
    assert "password '12345678'" in d.info
    assert any("12345678" in n.text for n in d.root.walk())     # the LLS password is shown


def test_aarq_plain_initiate(vectors):
    d = dis(vec(vectors, "dlmscosem_aarq_no_security"))
    f = d.fields
    assert f["dlms.apdu"] == ["aarq", "initiate-request"]
    assert f["dlms.dlms_version"] == [6] and f["dlms.conformance"] == [0x007E1F]
    assert f["dlms.client_max_receive_pdu_size"] == [1200] and f["dlms.response_allowed"] == [True]
    assert "cosem.mechanism_name" not in f


def test_aarq_hls_gmac_ctos(vectors):
    d = dis(vec(vectors, "dlmscosem_aarq_hls_gmac_plain"))
    assert d.fields["dlms.acse.mechanism"] == ["HLS-GMAC"]
    assert d.fields["dlms.acse.ctos"] == [b"K56iVagY"]
    assert "dlms.acse.password" not in d.fields


@pytest.mark.parametrize("name,result,diag,dname", [
    ("dlmscosem_aare_accepted_no_security", 0, 0, "null"),
    ("dlmscosem_aare_rejected_app_context", 1, 2, "application-context-name-not-supported"),
    ("dlmscosem_aare_confirmed_service_error", 1, 1, "no-reason-given"),
    ("dlmscosem_aare_hls_gmac_auth_required", 0, 14, "authentication-required"),
])
def test_aare_results(vectors, name, result, diag, dname):
    d = dis(vec(vectors, name))
    f = d.fields
    assert f["cosem.result"] == [result] and f["cosem.acse_service_user"] == [diag]
    assert f["dlms.acse.diagnostic"] == [dname]
    assert f["dlms.acse.result"] == [acse.RESULTS[result]]


def test_aare_hls_stoc_and_cse(vectors):
    d = dis(vec(vectors, "dlmscosem_aare_hls_gmac_auth_required"))
    f = d.fields
    assert f["cosem.responder_acse_requirements"] == [1] and f["dlms.acse.mechanism_id"] == [5]
    assert f["cosem.responding_authentication_value"] == [b"P6wRJ21F"] and f["dlms.acse.stoc"] == [b"P6wRJ21F"]
    assert f["dlms.server_max_receive_pdu_size"] == [500] and f["dlms.vaa_name"] == [7]
    d = dis(vec(vectors, "dlmscosem_aare_confirmed_service_error"))
    assert d.fields["dlms.apdu"] == ["aare", "confirmed-service-error"]
    assert d.fields["dlms.cse.error_name"] == ["dlms-version-too-low"]


def test_aare_responding_title_to_ciphered_initiate(vectors):
    d = dis(vec(vectors, "pcap_gurux_hls5_gmac_2"))
    assert d.fields["cosem.responding_AP_title"] == [b"ABCDEFGH"]
    desc = d.ctx["dlms.ciphered"][0]
    assert desc["tag"] == 0x28 and desc["system_title"] == b"ABCDEFGH" and desc["in_acse"] == "aare"


def test_release_reasons_and_title_not_repeated(vectors):
    assert dis(vec(vectors, "dlmscosem_rlrq_normal")).fields["dlms.acse.reason"] == ["normal"]
    assert dis(vec(vectors, "dlmscosem_rlre_normal")).fields["cosem.reason"] == [0]
    d = dis(vec(vectors, "greenbook_rlre_glo_initiate_response"))
    desc = d.ctx["dlms.ciphered"][0]
    # trap 3: RLRE does not repeat the title: the decryption stage takes it from the association
    assert desc["tag"] == 0x28 and desc["system_title"] is None and desc["ic"] == 0x01234567
    d = dis(bytes.fromhex("6203800101"))
    assert d.fields["dlms.acse.reason"] == ["urgent"]
    d = dis(bytes.fromhex("6303800101"))
    assert d.fields["dlms.acse.reason"] == ["not-finished"]


def test_ndpi_hdlc_aarq_password(vectors):
    e = {v["name"]: v for v in vectors}["ndpi_hdlc_udp_aarq_lls_bad_fcs"]
    frame = bytes.fromhex(e["hex"])
    apdu = frame[11:-3]           # 7E, format 2, addresses 2, control, HCS 2, LLC 3 ... FCS 2, 7E
    d = dis(apdu)
    assert d.fields["dlms.acse.password"] == ["01234567"]
    assert d.fields["dlms.client_max_receive_pdu_size"] == [128]


def test_oid_names_all_contexts_and_mechanisms():
    """Trap 8: 2.16.756.5.8.1.4 is Short Name referencing *with* ciphering."""
    for ctx_id, name in acse.APP_CONTEXTS.items():
        for mech, mname in acse.MECHANISMS.items():
            a = xdlms.build_aarq(context=ctx_id, mechanism=mech, auth_value=b"secret12")
            d = dis(a, True)
            assert d.fields["dlms.acse.context"] == [name]
            assert d.fields["dlms.acse.mechanism"] == [mname]
    d = dis(xdlms.build_aarq(context=4), True)
    n = d.root.find("cosem.application_context_name")
    assert "Short Name Referencing, with ciphering" in n.text
    assert acse.oid_str(acse.decode_oid(bytes.fromhex("60857405080204"))) == "2.16.756.5.8.2.4"


def test_unknown_context_and_elements_are_reported():
    a = bytes.fromhex("600EA1090607608574050809098F0100")
    d = dis(a)
    assert d.fields["cosem.application_context_name"] == ["2.16.756.5.8.9.9"]
    assert "dlms.acse.context" not in d.fields
    assert any("unknown element 0x8f" in e.message for e in d.expert)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from([0x60, 0x61, 0x62, 0x63]), st.binary(max_size=120))
def test_fuzz_acse(tag, body):
    a = bytes([tag, len(body) & 0xFF]) + body
    for tree in (False, True):
        d = dis(a, tree)
        assert d.fields["dlms.apdu"][0] in ("aarq", "aare", "rlrq", "rlre")


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.integers(0, 200), st.integers(0, 255))
def test_fuzz_mutated_aarq(pos, val):
    a = bytearray(bytes.fromhex(
        "6066A109060760857405080103A60A04084D4D4D0000BC614E8A0207808B0760857405080201AC0A80083132333435363738"
        "BE34043221303001234567801302FF8A7874133D414CED25B42534D28DB0047720606B175BD52211BE6841DB204D39EE6FDB8E356855"))
    a[pos % len(a)] = val
    d = dis(bytes(a), True)
    assert d.fields["dlms"] == [True]
