"""Association tracking: lifecycle, transport keying, titles, request/response matching,
records for exports/TUI, parsing helpers against the published vectors."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from analyzer import associations as A

from _dlms_frames import aare, aarq, c2s, run, s2c

CT, SV = b"CLIENT01", b"SERVER01"
GET = bytes.fromhex("C001C1000F0000280000FF0200")
RSP = bytes.fromhex("C401C1000600001391")
GET2 = bytes.fromhex("C001C2000800000100FF0200")
RSP2 = bytes.fromhex("C401C20101")           # data-access-result 1: an error
C2 = ("10.0.0.3", 40001, 16)


def V(vectors, name):
    return next(v for v in vectors if v["name"] == name)


def test_lifecycle_and_matching():
    frames = [(0.0, c2s(aarq(CT))), (0.1, s2c(aare(SV))),
              (1.0, c2s(GET)), (1.0, c2s(GET2)), (1.25, s2c(RSP2)), (1.5, s2c(RSP)),
              (2.0, c2s(bytes.fromhex("6203800100"))), (2.1, s2c(bytes.fromhex("6303800100")))]
    pkts, pipe = run(frames)
    ast = pipe.stage("associations")
    (a,) = ast.records
    assert (a.client_title, a.server_title, a.state, a.mechanism, a.context) == (CT, SV, "released", None, 1)
    assert (a.requests, a.responses, a.errors) == (2, 2, 1)
    # matched by invoke id, not by order: GET2 (id 2) is answered first
    assert pkts[4].fields["dlms.response_to"] == [4] and pkts[5].fields["dlms.response_to"] == [3]
    assert pkts[4].fields["dlms.time"] == [pytest.approx(0.25)]
    assert pkts[5].fields["dlms.time"] == [pytest.approx(0.5)]
    assert pkts[2].fields["dlms.response_in"] == [6]
    assert [p.fields["dlms.assoc_id"] for p in pkts] == [[1]] * 8
    rec = ast.list()[0]
    assert rec["client"] == "10.0.0.2:40000/w16" and rec["server"] == "10.0.0.1:4059/w1"
    assert rec["transport"] == "UDP" and rec["first_frame"] == 1 and rec["last_frame"] == 8
    assert rec["mean_response_time"] == pytest.approx(0.375) and rec["errors"] == 1
    assert "dedicated_key" in rec and rec["dedicated_key"] is False
    assert pkts[0].fields["dlms.assoc_state"] == ["requested"]
    assert pkts[7].fields["dlms.assoc_state"] == ["released"]


def test_concurrent_associations_on_different_transports():
    frames = [c2s(aarq(CT)), c2s(aarq(b"CLIENT02"), client=C2), s2c(aare(SV), client=C2), s2c(aare(SV)),
              c2s(GET, client=C2), c2s(GET), s2c(RSP), s2c(RSP, client=C2)]
    pkts, pipe = run(frames)
    ids = [p.fields["dlms.assoc_id"][0] for p in pkts]
    assert ids == [1, 2, 2, 1, 2, 1, 1, 2]
    a1, a2 = pipe.stage("associations").records
    assert a1.client_title == CT and a2.client_title == b"CLIENT02"
    assert a1.responses == a2.responses == 1


def test_new_aarq_replaces_and_data_without_aarq():
    pkts, pipe = run([c2s(GET), s2c(RSP), c2s(aarq(CT)), s2c(aare(SV)), c2s(aarq(CT))])
    recs = pipe.stage("associations").records
    assert [r.state for r in recs] == ["replaced", "replaced", "requested"]
    assert recs[0].client == "10.0.0.2:40000/w16"       # the request's sender is the client
    # a response seen first: the client is the destination
    _, pipe = run([s2c(RSP)])
    assert pipe.stage("associations").records[0].client == "10.0.0.2:40000/w16"


def test_idle_timeout_starts_a_new_association():
    pkts, pipe = run([(0.0, c2s(aarq(CT))), (0.1, s2c(aare(SV))), (0.2, c2s(GET)), (5000.0, c2s(GET))])
    recs = pipe.stage("associations").records
    assert [r.state for r in recs] == ["timeout", "pre-established"]
    assert pkts[3].fields["dlms.assoc_id"] == [2]


def test_rejected_association():
    _, pipe = run([c2s(aarq(CT)), s2c(aare(SV, result=1, diag=13))])
    a = pipe.stage("associations").records[0]
    assert a.state == "rejected" and a.result == 1 and a.diagnostic == 13


def _recorded(apdu: bytes, tree: bool = False):
    """Dissect one APDU through the "dlms" table as the pipeline does (with the association
    stage's APDU recorder installed): (Dissection, records)."""
    import dissectors
    from dissectors.core import Dissection, table

    dissectors.load_all()
    A._install_recorder()   # what the association stage installs
    d = Dissection(apdu, want_tree=tree)
    table("dlms").dispatch("apdu", apdu, 0, len(apdu), d, d.root)
    return d, d.ctx["dlms.apdus"]


class _Pkt:
    number = 7


def test_initiate_from_the_dissector_against_vectors(vectors):
    """The association learns the InitiateRequest/-Response parameters (and the dedicated
    key) from what the xDLMS dissector decoded; the key is never a field or tree text."""
    from analyzer.keyring import Secret

    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    pt = bytes.fromhex(V(vectors, "greenbook_aarq_ciphered_lls")["expected"]["user_information"]["plaintext"])
    d, recs = _recorded(pt, tree=True)
    a = A.Association(1, ("udp",), "UDP", "c", "s", 1, 0)
    A.Associations.initiate(None, _Pkt(), a, recs)
    assert a.dedicated_key == key and isinstance(a.dedicated_key, Secret) and a.dedicated_key_frame == 7
    assert (a.conformance, a.client_max_pdu, a.policy_dedicated) == (0x007E1F, 1200, True)
    assert "dlms.dedicated_key" not in d.ctx
    assert all(key not in (v if isinstance(v, bytes) else str(v).encode()) and key.hex() not in str(v).lower()
               for vs in d.fields.values() for v in vs)
    assert all(key.hex() not in (n.text or "").lower() for n in _walk(d.root))
    pt = bytes.fromhex(V(vectors, "greenbook_rlre_glo_initiate_response")["expected"]["user_information"]["plaintext"])
    _, recs = _recorded(pt)
    A.Associations.initiate(None, _Pkt(), a, recs)
    assert (a.conformance, a.server_max_pdu) == (0x007C1F, 1024)
    b = A.Association(2, ("udp",), "UDP", "c", "s", 1, 0)
    _, recs = _recorded(bytes.fromhex(V(vectors, "dlmscosem_aarq_no_security")["hex"]))
    A.Associations.initiate(None, _Pkt(), b, recs[:1] and [dict(recs[0], ops=[])])
    assert b.dedicated_key is None and b.client_max_pdu is None


def test_hls_value_extraction(vectors):
    v = bytes.fromhex(V(vectors, "dlmscosem_action_request_hls_reply")["hex"])
    which, val = A.hls_from_ops(_recorded(v)[1][0]["ops"])
    assert which == "pass3" and val == bytes.fromhex("1000001A90E6D2221FA2FD85EED61ACC22")
    v = bytes.fromhex(V(vectors, "jdlms_kaifa_hls_gmac_action_response")["hex"])
    assert A.hls_from_ops(_recorded(v)[1][0]["ops"]) == ("pass4", bytes.fromhex("101A9190BC0A587217BCD2BCD4FDDB7143"))
    assert A.hls_from_ops(_recorded(GET)[1][0]["ops"]) is None
    # SN: 0xFA58 written / read with a parameter; a successful ReadResponse's octet-string
    w = bytes.fromhex("060102FA58010905") + b"12345"
    assert A.hls_from_ops(_recorded(w)[1][0]["ops"]) == ("pass3", b"12345")
    r = bytes.fromhex("050104FA58010905") + b"12345"
    assert A.hls_from_ops(_recorded(r)[1][0]["ops"]) == ("pass3", b"12345")
    assert A.sn_read_response_value(_recorded(bytes.fromhex("0C01000903414243"))[1][0]["ops"]) == b"ABC"
    assert A.sn_read_response_value(_recorded(bytes.fromhex("0C010103"))[1][0]["ops"]) is None


def test_assoc_repr_hides_dedicated_key():
    a = A.Association(1, ("udp",), "UDP", "c", "s", 1, 0)
    a.dedicated_key = b"\x11" * 16
    assert "1111" not in repr(a) and "1111" not in str(a.to_dict())


@given(st.binary(max_size=40))
def test_helpers_never_raise(b):
    for head in (b"\x01", b"\x08", b"\xC3\x01", b"\xC7\x01", b"\x0C\x01"):
        d, recs = _recorded(head + b)
        A.hls_from_ops(recs[0]["ops"])
        A.sn_read_response_value(recs[0]["ops"])
        A.Associations.initiate(None, _Pkt(), A.Association(1, ("u",), "U", "c", "s", 1, 0), recs)
    A.invoke_id(b"\xC0" + b)
    A.is_error_response(b"\xC5\x01" + b)


def _lon(apdu, src, dst, tid=1, typ=0):
    from dissectors.lon import build_frame
    return (None, build_frame(pdu="spdu", spdu_type=typ, src_subnet=src[0], src_node=src[1],
                              dst_subnet=dst[0], dst_node=dst[1], domain=b"\x0a", tid=tid, apdu=apdu), 147)


def test_association_through_a_repeater_and_routed_copies():
    """Client 1/1 reaches meter 1/13 through repeater 1/10 (LonTalk proxy): the proxy hop,
    the agent's hop and the relayed response are one association; a retransmitted frame
    (same TID, same bytes) is neither a new association nor counted twice."""
    from dissectors.adaptation import build_pdu
    from dissectors.proxy import build_proxy
    C, R, M = (1, 1), (1, 10), (1, 13)
    req = build_pdu(aarq(CT))
    rsp = build_pdu(aare(SV))
    get, got = build_pdu(GET), build_pdu(RSP)
    frames = [_lon(build_proxy([], M, req), C, R, 1), _lon(req, R, M, 2), _lon(rsp, M, R, 2, 2), _lon(rsp, R, C, 1, 2),
              _lon(build_proxy([], M, get), C, R, 3), _lon(get, R, M, 4), _lon(got, M, R, 4, 2), _lon(got, R, C, 3, 2),
              _lon(get, C, M, 5), _lon(get, C, M, 5), _lon(got, M, C, 5, 2)]
    pkts, pipe = run(frames)
    recs = pipe.stage("associations").records
    assert [p.fields.get("dlms.assoc_id") for p in pkts] == [[1]] * 11, [p.fields.get("dlms.assoc_id") for p in pkts]
    (a,) = recs
    assert {a.client, a.server} == {"1/1", "1/13"} and a.client == "1/1"
    assert (a.client_title, a.server_title) == (CT, SV)
    assert (a.requests, a.responses) == (2, 2)
    fs = pipe.stage("audit").findings()
    assert {f["rule"] for f in fs} == {"plaintext-public"}


def test_association_through_two_repeaters():
    from dissectors.adaptation import build_pdu
    from dissectors.proxy import build_proxy
    C, R1, R2, M = (1, 1), (1, 11), (1, 12), (1, 16)
    req, rsp = build_pdu(aarq(CT)), build_pdu(aare(SV))
    get, got = build_pdu(GET), build_pdu(RSP)
    frames = []
    for tid, (q, r) in enumerate(((req, rsp), (get, got)), start=1):
        frames += [_lon(build_proxy([R2], M, q), C, R1, tid), _lon(build_proxy([], M, q), R1, R2, tid + 5),
                   _lon(q, R2, M, tid + 7), _lon(r, M, R2, tid + 7, 2), _lon(r, R2, R1, tid + 5, 2),
                   _lon(r, R1, C, tid, 2)]
    pkts, pipe = run(frames)
    assert [p.fields.get("dlms.assoc_id") for p in pkts] == [[1]] * 12
    (a,) = pipe.stage("associations").records
    assert (a.client, a.server, a.client_title, a.server_title) == ("1/1", "1/16", CT, SV)
    assert (a.requests, a.responses, a.state) == (1, 1, "associated")


def test_ndpi_hdlc_over_udp_pairs_by_hdlc_addresses(pcaps, tshark):
    """nDPI's dlms.pcap sends every HDLC-in-UDP frame with the same IP header (10.1.1.1:0 ->
    10.2.2.2:4059); only the HDLC addresses tell the get-request (client 0x21 -> server 0x03)
    from its get-response (0x03 -> 0x21).  Independent source: tshark's IP fields and UDP
    payload bytes (flag, format 2 bytes, destination, source, control, HCS 2 bytes, LLC 3 bytes, APDU)."""
    import subprocess

    import analyzer

    path = pcaps / "ndpi" / "dlms.pcap"
    out = subprocess.run([tshark, "-r", str(path), "-Y", "frame.number == 23 || frame.number == 24", "-T", "fields",
                          "-e", "frame.number", "-e", "ip.src", "-e", "udp.srcport", "-e", "udp.payload"],
                         capture_output=True, text=True, check=True).stdout
    rows = {int(r.split("\t")[0]): r.split("\t")[1:] for r in out.strip().splitlines()}
    req, rsp = bytes.fromhex(rows[23][2]), bytes.fromhex(rows[24][2])
    assert rows[23][:2] == rows[24][:2]                       # same IP source and port
    assert (req[3], req[4]) == (rsp[4], rsp[3]) == (0x03, 0x21)  # HDLC dst/src swapped
    assert req[11] == 0xC0 and rsp[11] == 0xC4                # after control, HCS, LLC: get-request / -response
    pkts = {p.number: p for p in analyzer.open_capture([str(path)])}
    f23, f24 = pkts[23].fields, pkts[24].fields
    assert f23["hdlc.src"] == [req[4]] and f24["hdlc.src"] == [rsp[4]]
    assert f23["dlms.assoc_id"] == f24["dlms.assoc_id"]
    assert f24["dlms.response_to"] == [23]
    # the client-1 association (AARQ 21, AARE 22, get 25) stays apart from client 0x21's
    assert pkts[21].fields["dlms.assoc_id"] == pkts[25].fields["dlms.assoc_id"] != f23["dlms.assoc_id"]


def test_response_in_on_redissected_requests(pcaps, tshark):
    """`dlms.response_in` is known once the response is seen: the request's re-dissection
    (full tree) carries it; the flat first-pass fields of the response carry
    `dlms.response_to` (and `dlms.request_in` for GET).  Independent source: tshark's TCP
    payloads (wrapper header 8 bytes, then tag, choice, invoke-id-and-priority)."""
    import subprocess

    import analyzer

    path = pcaps / "htanwar922-wireshark-dlms" / "Output-EPRI.pcap"
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "tcp.payload"],
                         capture_output=True, text=True, check=True).stdout
    pay = {int(n): bytes.fromhex(h) for n, h in (r.split("\t") for r in out.strip().splitlines()) if h}
    # get-request / get-response pairs by invoke id, in order, from the raw bytes
    pairs, pending = [], {}
    for n in sorted(pay):
        b = pay[n]
        if len(b) > 10 and b[8] == 0xC0:
            pending[b[10]] = n
        elif len(b) > 10 and b[8] == 0xC4 and b[10] in pending:
            pairs.append((pending.pop(b[10]), n))
    assert pairs[:3] == [(3, 4), (7, 8), (9, 10)]
    cap = analyzer.open_capture([str(path)])
    pkts = {p.number: p for p in cap}
    for req, rsp in pairs:
        assert pkts[rsp].fields["dlms.response_to"] == [req]
        assert pkts[rsp].fields["dlms.request_in"] == [req]
        d = cap.pipeline.redissect(pkts[req])
        assert d.fields["dlms.response_in"] == [rsp]
        assert any(n.field == "dlms.response_in" for n in _walk(d.root))
        assert "dlms.response_in" not in cap.pipeline.redissect(pkts[rsp]).fields


def _walk(node):
    yield node
    for c in node.children:
        yield from _walk(c)
