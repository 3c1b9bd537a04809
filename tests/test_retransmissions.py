"""14908 retransmissions and copies of one APDU on several hops: the transaction stage flags
retransmissions (`lon.retransmission`), the association stage attributes every copy to the
end-to-end association without counting it twice, and block transfers reassemble per hop.
Frame numbers expected here follow from how each capture is built; values of reassembled
block transfers are checked against gurux_dlms' translator."""
from __future__ import annotations

import pytest

from analyzer.simulate.wire import ether_udp
from dissectors import axdr, xdlms
from dissectors.adaptation import build_pdu
from dissectors.cnip import build_cnip
from dissectors.lon import build_frame
from dissectors.proxy import build_proxy

from _dlms_frames import aare, aarq, run

D = b"\x0a"
C, R, M = (1, 1), (1, 10), (1, 13)
GET = bytes.fromhex("C001C1000F0000280000FF0200")
RSP = bytes.fromhex("C401C1000600001391")
GET2 = bytes.fromhex("C001C2000800000100FF0200")
RSP2 = bytes.fromhex("C401C2000600001392")


def lon(apdu: bytes, src, dst, tid: int, typ: int = 0, crc: bool = True) -> bytes:
    return build_frame(pdu="spdu", spdu_type=typ, src_subnet=src[0], src_node=src[1], dst_subnet=dst[0],
                       dst_node=dst[1], domain=D, tid=tid, apdu=apdu, crc=crc)


def pl(frame: bytes, ts=None):
    """A raw power-line frame (LINKTYPE_USER0: CRC present)."""
    return (ts, frame, 147)


def cnip(frame: bytes, seq: int, ts=None):
    """The same LonTalk frame (without CRC) on the CN/IP backhaul."""
    pay = build_cnip(frame, type=1, seqno=seq)
    return (ts, ether_udp(b"\2" * 6, b"\4" * 6, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 1628, 1628, pay, seq), 1)


def damaged(frame: bytes, pos: int) -> bytes:
    return frame[:pos] + bytes([frame[pos] ^ 0x10]) + frame[pos + 1:]


def retx(pkts):
    return [(p.fields.get("lon.retransmission") or [None])[0] for p in pkts]


def test_retransmissions_name_their_first_copy():
    req, rsp = build_pdu(GET), build_pdu(RSP)
    req2, rsp2 = build_pdu(GET2), build_pdu(RSP2)
    ok2 = lon(rsp2, M, C, 2, 2)
    frames = [pl(lon(req, C, M, 1)), pl(lon(rsp, M, C, 1, 2)),
              pl(lon(req, C, M, 1)), pl(lon(rsp, M, C, 1, 2)),      # response lost: request and answer again
              pl(lon(req2, C, M, 2)), pl(damaged(ok2, 5)), pl(ok2),  # a CRC error, then the retry
              cnip(lon(req, C, M, 3, crc=False), 1), pl(lon(req, C, M, 3)),   # routed: IP, then power line
              pl(lon(req, C, M, 4)),                                  # same data, a new transaction
              pl(lon(req, C, M, 1))]                                  # an old TID again, after others
    pkts, pipe = run(frames)
    assert retx(pkts) == [None, None, 1, 2, None, None, 6, None, None, None, None]
    assert [p.fields["lon.crc.status"] for p in pkts[4:7]] == [["good"], ["bad"], ["good"]]
    assert any("retransmission of frame 1 " in e.message for e in pkts[2].d.expert)
    assert any("whose CRC failed" in e.message for e in pkts[6].d.expert)
    # only an intact earlier copy makes the frame a copy for the later stages
    assert pkts[2].d.ctx["lon.retransmission"] == 1 and "lon.retransmission" not in pkts[6].d.ctx
    assert pkts[8].d.ctx.get("dlms.hop_copy") and not pkts[7].d.ctx.get("dlms.hop_copy")
    # one association; copies are attributed but not counted; the retry after the CRC
    # error is the response that answers the request
    (a,) = pipe.stage("associations").records
    assert [p.fields.get("dlms.assoc_id") for p in pkts if p.fields["lon.crc.status"] != ["bad"]] == [[1]] * 10
    assert "dlms.assoc_id" not in pkts[5].fields
    assert (a.requests, a.responses) == (5, 2)
    assert pkts[1].fields["dlms.response_to"] == [1] and pkts[6].fields["dlms.response_to"] == [5]
    assert "dlms.response_to" not in pkts[3].fields
    # re-dissection rebuilds the field and the note from what the first pass kept
    d = pipe.redissect(pkts[3])
    assert d.fields["lon.retransmission"] == [2] and d.ctx["lon.retransmission"] == 2
    assert any(n.field == "lon.retransmission" and n.value == 2 for n in _walk(d.root))


def _walk(node):
    for c in node.children:
        yield c
        yield from _walk(c)


def test_unacknowledged_repeats_and_acks():
    """UNACKD_RPT repeats (same TID) and the ACK of a duplicated ACKD are retransmissions; an
    ACK with the same TID in a later transaction is not."""
    nv = bytes.fromhex("8010" + "0102")

    def tp(apdu, src, dst, tid, typ, **kw):
        return pl(build_frame(pdu="tpdu", tpdu_type=typ, src_subnet=src[0], src_node=src[1], dst_subnet=dst[0],
                              dst_node=dst[1], domain=D, tid=tid, apdu=apdu, crc=True, **kw))
    frames = [tp(nv, M, (1, 0), 5, 1, addr="1", group=1)] * 3 + [
        tp(nv, C, M, 6, 0), tp(b"", M, C, 6, 2), tp(nv, C, M, 6, 0), tp(b"", M, C, 6, 2),
        tp(nv + b"\x00", C, M, 7, 0), tp(b"", M, C, 7, 2)]
    pkts, _ = run(frames)
    assert retx(pkts) == [None, 1, 1, None, None, 4, 5, None, None]


def test_retransmitted_aarq_is_one_association():
    """A lost AARE makes the client repeat its AARQ (same TID): still one association, and
    its challenge is not "seen in another association"."""
    q = build_pdu(aarq(b"CLIENT01", mechanism=3, auth_value=b"CtoS-challenge-1"))
    r = build_pdu(aare(b"SERVER01", mechanism=3, stoc=b"StoC-challenge-1"))
    frames = [pl(lon(q, C, M, 1)), pl(lon(r, M, C, 1, 2)), pl(lon(q, C, M, 1)), pl(lon(r, M, C, 1, 2))]
    pkts, pipe = run(frames)
    (a,) = pipe.stage("associations").records
    assert a.state == "hls-pending" and (a.aarq_frame, a.aare_frame) == (1, 2)
    assert [p.fields["dlms.assoc_state"] for p in pkts] == [["requested"]] + [["hls-pending"]] * 3
    assert "hls-challenge-relay" not in {f["rule"] for f in pipe.stage("audit").findings()}


def _gx(raw: bytes):
    gurux = pytest.importorskip("gurux_dlms")
    import xml.etree.ElementTree as ET
    from test_simulate import _gx_value
    return _gx_value(ET.fromstring(gurux.GXDLMSTranslator().dataToXml(gurux.GXByteBuffer(raw))))


def test_datablocks_reassemble_on_each_repeater_hop():
    """A get-response-with-datablock run through a repeater: the target's hop and the relayed
    hop each carry every block, and each reassembles the whole value."""
    raw = axdr.encode(("array", [("double-long-unsigned", 1000 + i) for i in range(30)]))
    parts = [raw[:70], raw[70:]]
    get = xdlms.build_get_request(7, "1.0.99.1.0.255", 2, invoke_id=1)
    nxt = bytes([0xC0, 0x02, 0xC1]) + (1).to_bytes(4, "big")
    b1 = xdlms.build_get_response_block(parts[0], 1, False, invoke_id=1)
    b2 = xdlms.build_get_response_block(parts[1], 2, True, invoke_id=1)
    frames = []
    for k, (q, b) in enumerate(((get, b1), (nxt, b2))):
        q, b = build_pdu(q), build_pdu(b)
        t = 1 + 2 * k
        frames += [pl(lon(build_proxy([], M, q), C, R, t)), pl(lon(q, R, M, t + 1)),
                   pl(lon(b, M, R, t + 1, 2)), pl(lon(b, R, C, t, 2))]
    pkts, pipe = run(frames)
    assert [p.fields.get("dlms.assoc_id") for p in pkts] == [[1]] * 8
    want = _gx(raw)
    for last, parts_at in ((pkts[6], [3, 7]), (pkts[7], [4, 8])):
        assert last.fields["dlms.reassembled_length"] == [len(raw)]
        assert last.fields["dlms.fragment"] == parts_at
        op = [o for o in last.d.ctx["dlms.ops"] if o.get("reassembled")][0]
        assert op["value"] == want and op["obis"] == "1.0.99.1.0.255"
    assert not any(e.group == "sequence" and e.layer == "dlms" for p in pkts for e in p.d.expert)
    (a,) = pipe.stage("associations").records
    assert (a.requests, a.responses) == (2, 2)


def test_gbt_on_cnip_and_power_line_reassemble_separately():
    """General-block-transfer blocks routed between CN/IP and the power line: each medium's
    copy of every block is reassembled on its own medium (no duplicate, no mix)."""
    value = bytes(range(200)) * 2
    inner = xdlms.build_get_response(("octet-string", value), invoke_id=5)
    parts = [inner[i:i + 150] for i in range(0, len(inner), 150)]
    frames = []
    seq = 0
    q = build_pdu(xdlms.build_get_request(1, "0.0.96.1.0.255", 2, invoke_id=5))
    seq += 1
    frames += [cnip(lon(q, C, M, 1, crc=False), seq), pl(lon(q, C, M, 1))]
    for i, part in enumerate(parts):
        g = build_pdu(xdlms.build_gbt(part, i + 1, ack=0, last=i == len(parts) - 1, streaming=False, window=1))
        seq += 1
        frames += [pl(lon(g, M, C, 1 + i, 2)), cnip(lon(g, M, C, 1 + i, 2, crc=False), seq)]
    pkts, _ = run(frames)
    n = len(parts)
    pl_last, ip_last = pkts[-2], pkts[-1]
    assert pl_last.fields["dlms.fragment"] == [3 + 2 * i for i in range(n)]
    assert ip_last.fields["dlms.fragment"] == [4 + 2 * i for i in range(n)]
    for p in (pl_last, ip_last):
        assert p.fields["dlms.reassembled_length"] == [len(inner)]
        assert value in p.fields["dlms.data.value"] or value.hex() in p.fields["dlms.data.value"]
    assert not any(e.group == "sequence" and e.layer == "dlms" for p in pkts for e in p.d.expert)


def test_stage_state_stays_bounded():
    """Many closed associations and copies: per-association pending requests are dropped at
    release, and the copy/hop tables forget what can no longer match."""
    from analyzer import associations as A
    frames = []
    tid = 0
    t = 0.0
    for k in range(300):
        node = (2, 10 + k % 100)
        for apdu, src, dst, typ in ((aarq(b"CLIENT01"), C, node, 0), (aare(b"SERVER01"), node, C, 2),
                                    (GET, C, node, 0), (GET2, C, node, 0),
                                    (bytes.fromhex("6203800100"), C, node, 0),
                                    (bytes.fromhex("6303800100"), node, C, 2)):
            tid = tid % 15 + 1 if typ == 0 else tid
            f = lon(build_pdu(apdu), src, dst, tid, typ)
            frames.append(pl(f, 1_700_000_000 + t))
            frames.append(cnip(lon(build_pdu(apdu), src, dst, tid, typ, crc=False), len(frames), 1_700_000_000 + t + 0.005))
            t += 0.5
    pkts, pipe = run(frames)
    ast = pipe.stage("associations")
    assert len(ast.records) == 300 and all(a.state == "released" for a in ast.records)
    assert all(not a.pending and not a.pending_sn for a in ast.records)
    assert all(a.requests == 2 for a in ast.records)          # the CN/IP copies are not counted
    assert len(ast.routed) <= 4096 and len(ast.events) <= A.MAX_EVENTS
    assert len(pipe.stage("lontrack").txns) <= 2 * 100 + 1


def test_retransmitted_last_block_shows_the_reassembly_again():
    """The last block of a datablock run repeated by the 14908 transport (the client missed
    the response): the repeat shows the same reassembled value; it is no new run and no
    duplicate block."""
    raw = axdr.encode(("array", [("long-unsigned", 500 + i) for i in range(40)]))
    parts = [raw[:60], raw[60:]]
    q1 = build_pdu(xdlms.build_get_request(7, "1.0.99.1.0.255", 2, invoke_id=2))
    q2 = build_pdu(bytes([0xC0, 0x02, 0xC2]) + (1).to_bytes(4, "big"))
    b1 = build_pdu(xdlms.build_get_response_block(parts[0], 1, False, invoke_id=2))
    b2 = build_pdu(xdlms.build_get_response_block(parts[1], 2, True, invoke_id=2))
    frames = [pl(lon(q1, C, M, 1)), pl(lon(b1, M, C, 1, 2)), pl(lon(q2, C, M, 2)), pl(lon(b2, M, C, 2, 2)),
              pl(lon(q2, C, M, 2)), pl(lon(b2, M, C, 2, 2))]
    pkts, pipe = run(frames)
    assert retx(pkts) == [None] * 4 + [3, 4]
    want = _gx(raw)
    for p in pkts[3], pkts[5]:
        assert p.fields["dlms.reassembled_length"] == [len(raw)] and p.fields["dlms.fragment"] == [2, 4]
        assert [o["value"] for o in p.d.ctx["dlms.ops"] if o.get("reassembled")] == [want]
    assert not any(e.group == "sequence" and e.layer == "dlms" for p in pkts for e in p.d.expert)
    assert not pipe.stage("reassembly").incomplete()
    d = pipe.redissect(pkts[5])
    assert d.fields["dlms.reassembled_length"] == [len(raw)]


def test_adaptation_segments_per_medium_and_retransmitted():
    """Segmented adaptation PDUs routed between CN/IP and the power line reassemble once per
    medium; a retransmitted segment is taken once; a segment with a bad CRC is none."""
    from dissectors import adaptation
    value = bytes(range(150))
    apdu = bytes.fromhex("C401C100") + b"\x09\x81\x96" + value
    segs = adaptation.segment_apdu(apdu, 60)
    assert len(segs) == 3
    f1 = lon(segs[1], M, C, 2, 2)
    frames = [cnip(lon(segs[0], M, C, 1, 2, crc=False), 1), pl(lon(segs[0], M, C, 1, 2)),
              pl(damaged(f1, 6)), pl(f1), cnip(lon(segs[1], M, C, 2, 2, crc=False), 2), pl(f1),
              pl(lon(segs[2], M, C, 3, 2)), cnip(lon(segs[2], M, C, 3, 2, crc=False), 3)]
    pkts, pipe = run(frames)
    assert retx(pkts) == [None, None, None, 3, None, 3, None, None]
    for p, parts in ((pkts[6], "#2 #4 #7"), (pkts[7], "#1 #5 #8")):
        f = p.fields
        assert f["adp.reassembled.segments"] == [3] and f["adp.reassembled.length"] == [len(apdu)], f
        assert f["dlms.apdu"] == ["get-response"] and value in f["dlms.data.value"]
        texts = [n.text for n in _walk(pipe.redissect(p).root)]
        assert f"[3 adaptation segments ({len(apdu)} bytes): {parts}]" in texts
    assert not any("missing" in e.message or "restarted" in e.message for p in pkts for e in p.d.expert)


def test_a_repeater_polled_directly_has_its_own_association():
    """The repeater is a meter too: right after relaying for the target, the client's own
    exchange with it (requests and responses of another association) is not a relay."""
    q, r = build_pdu(aarq(b"CLIENT01")), build_pdu(aare(b"SERVER01"))
    q2, r2 = build_pdu(aarq(b"CLIENT01")), build_pdu(aare(b"REPEATER"))
    get, got = build_pdu(GET), build_pdu(RSP)
    frames = [pl(lon(build_proxy([], M, q), C, R, 1)), pl(lon(q, R, M, 2)), pl(lon(r, M, R, 2, 2)),
              pl(lon(r, R, C, 1, 2)),
              pl(lon(q2, C, R, 2)), pl(lon(r2, R, C, 2, 2)), pl(lon(get, C, R, 3)), pl(lon(got, R, C, 3, 2))]
    pkts, pipe = run(frames)
    assert [p.fields["dlms.assoc_id"] for p in pkts] == [[1]] * 4 + [[2]] * 4
    a, b = pipe.stage("associations").records
    assert (a.client, a.server, a.server_title) == ("1/1", "1/13", b"SERVER01")
    assert (b.client, b.server, b.server_title, b.requests, b.responses) == ("1/1", "1/10", b"REPEATER", 1, 1)


def test_retransmitted_aarq_after_a_rejection_opens_nothing():
    """The client missed the AARE that rejected its AARQ and repeats the AARQ (same TID):
    the rejected association answers it again; no second association."""
    q = build_pdu(aarq(b"CLIENT01", mechanism=1, auth_value=b"wrong-pw"))
    r = build_pdu(aare(b"SERVER01", result=1, diag=13))
    pkts, pipe = run([pl(lon(q, C, M, 1)), pl(lon(r, M, C, 1, 2)), pl(lon(q, C, M, 1)), pl(lon(r, M, C, 1, 2))])
    (a,) = pipe.stage("associations").records
    assert a.state == "rejected" and a.result == 1
    assert [p.fields["dlms.assoc_id"] for p in pkts] == [[1]] * 4


def test_a_frame_resent_for_longer_than_the_transaction_window_is_no_retransmission():
    """The transaction window counts from the first frame: the same request resent every
    40 s is a retransmission only within 60 s of the first copy, so a replay repeated for
    minutes is not hidden as a transport retry."""
    req = build_pdu(GET)
    t0 = 1_700_000_000.0
    frames = [pl(lon(req, C, M, 1), t0 + 40 * i) for i in range(4)]
    pkts, _ = run(frames)
    assert retx(pkts) == [None, 1, None, 3]


def test_group_request_and_group_ack_share_one_hop():
    """A request to a group and a member's group-ack answer (address format 2b) travel on one
    hop, so reassembly and request/response matching pair them."""
    from analyzer.reassembly import hop_of
    grp_req = build_frame(pdu="spdu", spdu_type=0, addr="1", src_subnet=1, src_node=1, group=7,
                          domain=D, tid=1, apdu=build_pdu(GET))
    ack = build_frame(pdu="spdu", spdu_type=2, addr="2b", src_subnet=1, src_node=13, dst_subnet=1,
                      dst_node=1, group=7, member=2, domain=D, tid=1, apdu=build_pdu(RSP))
    pkts, _ = run([pl(grp_req), pl(ack)])
    assert pkts[0].fields["lon.addrfmt"] == [1] and pkts[1].fields.get("lon.grp") == [7]
    assert hop_of(pkts[0].d) == hop_of(pkts[1].d)


def test_one_transaction_key_for_every_stage():
    """The transaction stage publishes one key per frame (`ctx["lon.txn"]`): a retransmission
    has the first copy's key, a routed copy the same key on another medium, a new TID
    another key; the association stage's routed copy and the reassembly hop come from it."""
    from analyzer.associations import is_copy
    from analyzer.reassembly import hop_of
    req, rsp = build_pdu(GET), build_pdu(RSP)
    frames = [pl(lon(req, C, M, 1)), pl(lon(rsp, M, C, 1, 2)), pl(lon(req, C, M, 1)),
              cnip(lon(req, C, M, 3, crc=False), 1), pl(lon(req, C, M, 3)), pl(lon(req, C, M, 4))]
    pkts, _ = run(frames)
    k = [p.d.ctx["lon.txn"] for p in pkts]
    assert k[0].domain == D and k[0].src == C and k[0].dst[:3] == ("unicast",) + M and k[0].tid == 1
    assert k[1].src == M and k[1].dst[1:3] == C and k[1].tid == 1
    assert k[2] == k[0] and retx(pkts)[2] == 1
    assert k[3].medium[0] == "ip" and k[4].medium[0] == "l2" and k[3][1:] == k[4][1:]
    assert k[5].tid == 4 and k[5][:4] == k[4][:4] and k[5].digest == k[4].digest
    assert [is_copy(p.d) for p in pkts] == [False, False, True, False, True, False]
    assert hop_of(pkts[0].d) == hop_of(pkts[1].d) == hop_of(pkts[4].d) != hop_of(pkts[3].d)
