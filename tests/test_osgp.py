"""OSGP table services: the MEP guide's example messages (doc §8.3 vectors) decoded field by
field; digests cross-checked with the OMA digest of the MEP vectors; LonTalk carriage in
SPDU REQUEST/RESPONSE; error codes; fuzzing."""
from __future__ import annotations

from hypothesis import given, strategies as st

from analyzer.packet import Record
from analyzer.pipeline import Pipeline
from dissectors import load_all, lon, osgp
from dissectors.core import Dissection

load_all()

MEP_KEY = bytes([0x01] * 16)
# MEP guide App. A: request, digest; response continuing the state; second request
MEP_REQ = bytes.fromhex("3F00170000 00002C01020304".replace(" ", ""))
MEP_REQ_DIGEST = bytes.fromhex("74861F6D7658DD56")
MEP_RSP = bytes.fromhex("0C77635B90")
MEP_RSP_DIGEST = bytes.fromhex("35863C1DF5B91482")
MEP_REQ2 = bytes.fromhex("3F001700000000 2C77635B91".replace(" ", ""))
MEP_REQ2_DIGEST = bytes.fromhex("13DB85A135A0575E")


def _req(b: bytes, tree=True) -> Dissection:
    d = Dissection(b, tree)
    osgp.dissect_request(b, 0, len(b), d, d.root)
    return d


def _rsp(b: bytes, tree=True) -> Dissection:
    d = Dissection(b, tree)
    osgp.dissect_response(b, 0, len(b), d, d.root)
    return d


def test_mep_digest_vectors_are_the_trailer():
    """The 8 bytes after code..sequence are the OMA digest of exactly those bytes (MEP
    vectors, computed by the independent primitive), so the trailer split is right."""
    from analyzer.osgpcrypto import oma_digest
    assert oma_digest(MEP_KEY, MEP_REQ) == MEP_REQ_DIGEST
    assert oma_digest(MEP_KEY, MEP_REQ2) == MEP_REQ2_DIGEST


def test_mep_partial_read_request():
    f = _req(MEP_REQ + MEP_REQ_DIGEST).fields
    assert f["osgp.direction"] == ["request"]
    assert f["osgp.code"] == [0x3F] and f["osgp.service"] == ["partial-read"]
    assert f["osgp.table"] == [0x0017] and f["osgp.table.name"] == ["BT23 Current Register Data"]
    assert f["osgp.offset"] == [0] and f["osgp.count"] == [0x2C]
    assert f["osgp.seq"] == [0x01020304]
    assert f["osgp.digest"] == [MEP_REQ_DIGEST]
    assert "_ws.malformed" not in f
    # the digest input alone (code .. sequence number) also decodes
    f = _req(MEP_REQ).fields
    assert f["osgp.seq"] == [0x01020304] and "osgp.digest" not in f
    f = _req(MEP_REQ2 + MEP_REQ2_DIGEST).fields
    assert f["osgp.seq"] == [0x77635B91] and f["osgp.digest"] == [MEP_REQ2_DIGEST]


def test_mep_invalid_sequence_response():
    d = _rsp(MEP_RSP + MEP_RSP_DIGEST)
    f = d.fields
    assert f["osgp.response.code"] == [0x0C] and f["osgp.response"] == ["invalid-sequence-number"]
    assert f["osgp.expected_seq"] == [0x77635B90]
    assert f["osgp.digest"] == [MEP_RSP_DIGEST]
    assert f["osgp.error"] == [True]
    # the device asks for 0x77635B90; the client's retry uses the next number (MEP guide)
    assert _req(MEP_REQ2).fields["osgp.seq"] == [f["osgp.expected_seq"][0] + 1]


def test_read_response_write_and_errors():
    data = bytes(range(0x2C))
    f = _rsp(osgp.build_response(0, data=data, digest=b"\xaa" * 8)).fields
    assert f["osgp.response"] == ["ok"] and f["osgp.count"] == [0x2C] and f["osgp.data"] == [data]
    assert f["osgp.digest"] == [b"\xaa" * 8] and f["osgp.error"] == [False]
    d = _rsp(bytes([0x0B]) + b"\x11" * 8)
    assert d.fields["osgp.response"] == ["authentication-failure"]
    assert any(e.group == "security" for e in d.expert)
    for code, name in ((1, "error"), (2, "service-not-supported"), (3, "insufficient-security"),
                       (4, "operation-not-possible"), (5, "inappropriate-action-requested")):
        assert _rsp(bytes([code])).fields["osgp.response"] == [name]
    # writes
    w = osgp.build_request("full-write", 2048 + 51, data=b"\x01\x02\x03", seq=7, digest=b"\x00" * 8)
    f = _req(w).fields
    assert f["osgp.service"] == ["full-write"] and f["osgp.table"] == [0x0833]
    assert f["osgp.table.name"] == ["ET51"] and f["osgp.count"] == [3] and f["osgp.data"] == [b"\x01\x02\x03"]
    assert f["osgp.seq"] == [7]
    pw = bytes.fromhex("4F0007000010000205 0A".replace(" ", "")) + (9).to_bytes(4, "big") + b"\x55" * 8
    f = _req(pw).fields
    assert f["osgp.service"] == ["partial-write"] and f["osgp.table.name"] == ["BT07 Procedure Initiate"]
    assert f["osgp.offset"] == [0x10]
    assert f["osgp.count"] == [2] and f["osgp.data"] == [b"\x05\x0a"] and f["osgp.seq"] == [9]
    f = _req(bytes.fromhex("300008")).fields
    assert f["osgp.service"] == ["full-read"] and f["osgp.table.name"] == ["BT08 Procedure Response"]


def test_truncated_and_count_overflow_are_malformed():
    d = _req(bytes.fromhex("3F0017000000"))
    assert "_ws.malformed" in d.fields and d.fields["osgp.service"] == ["partial-read"]
    d = _req(bytes.fromhex("40000100FF0102"))
    assert "_ws.malformed" in d.fields and d.fields["osgp.data"] == [b"\x01\x02"]


def _lon_record(apdu: bytes, spdu_type: int, src=(1, 5), dst=(1, 20), tid=3) -> Record:
    fr = lon.build_frame(pdu="spdu", spdu_type=spdu_type, src_subnet=src[0], src_node=src[1],
                         dst_subnet=dst[0], dst_node=dst[1], domain=b"\x01", tid=tid, apdu=apdu)
    return Record(0, fr, 147, len(fr))


def test_over_lontalk_request_and_response():
    pipe = Pipeline()
    p = pipe.feed(_lon_record(MEP_REQ + MEP_REQ_DIGEST, 0))
    assert p.protocols == "lon:osgp"
    assert p.fields["osgp.table"] == [0x17] and p.fields["osgp.seq"] == [0x01020304]
    p = pipe.feed(_lon_record(MEP_RSP + MEP_RSP_DIGEST, 2, src=(1, 20), dst=(1, 5)))
    assert p.protocols == "lon:osgp"
    assert p.fields["osgp.expected_seq"] == [0x77635B90]
    # the same status byte outside a RESPONSE is not taken for OSGP
    p = pipe.feed(_lon_record(MEP_RSP + MEP_RSP_DIGEST, 0, tid=4))
    assert "osgp" not in p.fields


@given(st.binary(min_size=1, max_size=80), st.sampled_from([0x30, 0x3F, 0x40, 0x4F]))
def test_fuzz_requests(data, code):
    b = bytes([code]) + data
    for tree in (False, True):
        d = _req(b, tree)
        assert d.fields["osgp.code"] == [code]


@given(st.binary(min_size=1, max_size=80))
def test_fuzz_responses(b):
    for tree in (False, True):
        d = _rsp(b, tree)
        assert d.fields["osgp.response.code"] == [b[0]]


def test_nm_failure_response_is_not_osgp():
    """0x01 answering an NM query-ID request is an NM failure, not an OSGP status."""
    pipe = Pipeline()
    req = pipe.feed(_lon_record(bytes([0x61, 0x00]), 0, tid=9))
    assert "osgp" not in req.fields
    p = pipe.feed(_lon_record(bytes([0x01]), 2, src=(1, 20), dst=(1, 5), tid=9))
    assert "osgp" not in p.fields and "osgp" not in p.protocols.split(":")
    assert p.fields["lon.nm.status"] == ["failure"]
    # the same byte answering an OSGP read stays OSGP
    pipe.feed(_lon_record(MEP_REQ + MEP_REQ_DIGEST, 0, tid=10))
    p = pipe.feed(_lon_record(bytes([0x01]) + b"\x00" * 8, 2, src=(1, 20), dst=(1, 5), tid=10))
    assert p.fields["osgp.response"] == ["error"]
