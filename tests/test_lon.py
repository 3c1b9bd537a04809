"""ISO/IEC 14908-1 dissector: hand-assembled frames (bytes written from the wire-format
tables, not by our builder), NM/ND arguments, responses decoded in context by the
transaction tracker, CRC, versions 0/2, AuthPDU OMA, M_Lists."""
from __future__ import annotations

import random

import pytest

from dissectors import dissect_frame, load_all
from dissectors.core import Dissection
from dissectors.lon import build_frame, crc16, crc16_slow, dissect_frame as lon_frame

load_all()

# Request from 1/5 to 1/9, domain 0x42 (1 byte), SPDU REQUEST tid 5:
#   PPDU 00 | NPDU 19 (v0, SPDU, fmt 2, dom 1) | src 01 85 | dst 01 89 | dom 42 | SPDU 05
REQ = "00 19 01 85 01 89 42 05"
# The response from 1/9 back to 1/5: SPDU RESPONSE tid 5 (0x25)
RESP = "00 19 01 89 01 85 42 25"


def dec(hexstr: str, tree: bool = False, crc=None) -> Dissection:
    b = bytes.fromhex(hexstr.replace(" ", ""))
    d = Dissection(b, tree)
    lon_frame(b, 0, len(b), d, d.root, crc)
    return d


def f(d, name):
    return d.fields.get(name)


# --------------------------------------------------------------------------- CRC

def test_crc_check_value():
    assert crc16(b"123456789") == 0xD64E
    rng = random.Random(3)
    for _ in range(200):
        b = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        assert crc16(b) == crc16_slow(b)


def test_crc_status_good_bad_absent():
    body = bytes.fromhex("0009018502830112 0a05".replace(" ", ""))
    c = crc16_slow(body)
    good = body + bytes([c >> 8, c & 0xFF])
    d = Dissection(good)
    lon_frame(good, 0, len(good), d, None, None)
    assert f(d, "lon.crc.status") == ["good"] and f(d, "lon.crc") == [c]
    assert f(d, "data.data") == [b"\x05"]          # CRC not part of the APDU
    bad = good[:-1] + bytes([good[-1] ^ 1])
    d = Dissection(bad, True)
    lon_frame(bad, 0, len(bad), d, d.root, True)
    assert f(d, "lon.crc.status") == ["bad"]
    assert any(e.group == "checksum" for e in d.expert)
    assert f(d, "lon.code") == [0x0A] and f(d, "data.data") == [b"\x05"]   # still decoded
    d = Dissection(bad)
    lon_frame(bad, 0, len(bad), d, None, None)
    assert f(d, "lon.crc.status") == ["absent"]     # CRC optional: no match -> absent
    assert f(d, "data.data") == [bad[9:]]


# --------------------------------------------------------------------------- addresses

@pytest.mark.parametrize("hexstr,exp,src,dst", [
    ("00 01 01 85 07 03 00 2a",        {"lon.dstnet": [7], "lon.domain": [b"\x03"]}, "1/5", "bcast 7"),
    ("00 05 01 85 09 42 00 2a",        {"lon.dstgrp": [9]}, "1/5", "grp 9"),
    ("00 0a 01 85 02 83 aa bb cc 00 2a", {"lon.dstnet": [2], "lon.dstnode": [3], "lon.domain": [b"\xaa\xbb\xcc"]}, "1/5", "2/3"),
    ("00 0b 01 05 02 83 07 04 010203040506 20", {"lon.dstnet": [2], "lon.dstnode": [3], "lon.grp": [7],
                                               "lon.grpmem": [4], "lon.domain": [bytes(range(1, 7))]}, "1/5", "2/3"),
    ("00 0c 01 85 00 112233445566 00 2a", {"lon.dstnet": [0], "lon.uid": [bytes.fromhex("112233445566")],
                                        "lon.domain": [b""]}, "1/5", "112233445566"),
])
def test_address_formats(hexstr, exp, src, dst):
    d = dec(hexstr)
    for k, v in exp.items():
        assert f(d, k) == v, k
    assert d.src == src and d.dst == dst
    assert "lon.dstgrp" not in d.fields or hexstr.startswith("00 05")


def test_ctx_lon_filled():
    d = dec("00 0b 01 05 02 83 07 04 010203040506 20")
    lon = d.ctx["lon"]
    assert lon["dst_type"] == "groupack" and lon["group"] == 7 and lon["member"] == 4
    assert lon["pdu"] == "tpdu" and lon["type"] == "ACK" and lon["tid"] == 0
    assert lon["domain"] == bytes(range(1, 7)) and lon["src_subnet"] == 1 and lon["src_node"] == 5


# --------------------------------------------------------------------------- versions

def test_version0_and_version2_tid():
    d = dec("00 09 01 85 02 83 42 03 81 23 00 ca")       # v0 ACKD tid 3, NV 0x123
    assert f(d, "lon.trans_no") == [3] and "lon.tid12" not in d.fields
    assert d.info == "ACKD NV update sel 0x123 [tid 3]"
    d = dec("00 89 01 85 02 83 42 0a bc 81 23 00 ca")    # v2: tid 0xabc = 0x0a + low byte 0xbc
    assert f(d, "lon.vers") == [2] and f(d, "lon.trans_no") == [0xA] and f(d, "lon.tid12") == [0xABC]
    assert f(d, "lon.nv.selector") == [0x123] and f(d, "lon.nv.value") == [b"\x00\xca"]
    assert d.info == "ACKD NV update sel 0x123 [tid 2748]"


def test_nv_poll_and_direction():
    d = dec(REQ[:-2] + "05 c1 23")                       # REQUEST, NV, dir=1, no data: poll
    assert f(d, "lon.nv.dir") == [1] and f(d, "lon.nv.poll") == [True]
    assert d.info == "REQUEST NV poll sel 0x123 [tid 5]"


# --------------------------------------------------------------------------- AuthPDU

def test_authpdu_oma_with_group_byte():
    # fmt 1 (multicast to group 9): AuthPDU byte = fmt 1 << 6 | CHALLENGE_OMA 1 << 4 | tid 3
    d = dec("00 25 01 85 09 42 53 0102030405060708 09")
    assert f(d, "lon.authpdu_addrfmt") == [1] and f(d, "lon.authpdu_type") == [1]
    assert f(d, "lon.trans_no") == [3] and f(d, "lon.authpdu_group") == [9]
    assert f(d, "lon.authpdu_value") == [bytes(range(1, 9))]
    assert d.info == "CHALLENGE_OMA [tid 3]" and not d.expert
    d = dec("00 29 01 05 02 83 07 04 42 b3 1122334455667788")   # REPLY_OMA over 2b, fmt 2
    assert f(d, "lon.authpdu_type") == [3] and f(d, "lon.authpdu_addrfmt") == [2]
    assert "lon.authpdu_group" not in d.fields and not d.expert


# --------------------------------------------------------------------------- M_List

def test_rem_msg_member_list():
    # SPDU REM/MSG tid 1 (0x51), M_List length 2: 05 81 -> members 0, 2, 8, 15; APDU code 0x12
    d = dec("00 19 01 85 09 83 42 51 02 05 81 12 34")
    assert f(d, "lon.spdu_type") == [5] and f(d, "lon.spdu.mlen") == [2]
    assert f(d, "lon.spdu.mlist") == [5, 0x81] and f(d, "lon.spdu.member") == [0, 2, 8, 15]
    assert f(d, "lon.application") == [0x12]
    d = dec("00 09 01 85 09 83 42 41 01 10")              # TPDU REMINDER: member 4
    assert f(d, "lon.tpdu_type") == [4] and f(d, "lon.spdu.member") == [4]
    assert d.info == "REMINDER [tid 1]"


# --------------------------------------------------------------------------- NM / ND requests

NM_CASES = [
    ("61 01", {"lon.nm": [0x61], "lon.nm.selector": [1]}, "NM query ID selected"),
    ("61 01 01 00 20 02 aa bb", {"lon.nm.selector": [1], "lon.nm.mem_mode": [1], "lon.nm.mem_offset": [0x20],
                                 "lon.nm.mem_count": [2], "lon.nm.mem_data": [b"\xaa\xbb"]}, "NM query ID selected"),
    ("62 01", {"lon.nm.respond": [1]}, "NM respond to query on"),
    ("63 00 112233445566 07 85 06 a1a2a3a4a5a6",
     {"lon.nm.domain_index": [0], "lon.nm.domain_id": [bytes.fromhex("112233445566")],
      "lon.nm.subnet": [7], "lon.nm.node": [5], "lon.nm.domain_len": [6],
      "lon.nm.key": [bytes.fromhex("a1a2a3a4a5a6")]}, "NM update domain domain 112233445566 7/5"),
    ("64 01", {"lon.nm.domain_index": [1]}, "NM leave domain index 1"),
    ("65 00 010203040506", {"lon.nm.domain_index": [0], "lon.nm.key": [bytes(range(1, 7))]},
     "NM update key index 0"),
    ("66 03 01 81 33 02 07",
     {"lon.nm.addr_index": [3], "lon.nm.addr_type": [1], "lon.nm.domain_index": [1],
      "lon.nm.node": [1], "lon.nm.rpt_timer": [3], "lon.nm.retry": [3], "lon.nm.tx_timer": [2],
      "lon.nm.subnet": [7]}, "NM update address index 3 7/1"),
    ("66 02 84 03 45 67 09",
     {"lon.nm.addr_type": [0x80], "lon.nm.group_size": [4], "lon.nm.member": [3],
      "lon.nm.rpt_timer": [4], "lon.nm.retry": [5], "lon.nm.rcv_timer": [6], "lon.nm.tx_timer": [7],
      "lon.nm.group": [9]}, "NM update address index 2 group 9 member 3"),
    ("67 03", {"lon.nm.addr_index": [3]}, "NM query address index 3"),
    ("68 05", {"lon.nm.nv_index": [5]}, "NM query NV config index 5"),
    ("68 ff 01 02", {"lon.nm.nv_index": [0x102]}, "NM query NV config index 258"),
    ("6b 05 81 23 5a",
     {"lon.nm.nv_index": [5], "lon.nm.nv_priority": [1], "lon.nm.nv_dir": [0],
      "lon.nm.nv_selector": [0x123], "lon.nm.nv_turnaround": [0], "lon.nm.nv_service": [2],
      "lon.nm.nv_auth": [1], "lon.nm.nv_addr_index": [0xA]}, "NM update NV config index 5 sel 0x123 addr 10"),
    ("6c 01", {"lon.nm.node_mode": [1]}, "NM set node mode application online"),
    ("6c 03 04", {"lon.nm.node_mode": [3], "lon.nm.node_state": [4]},
     "NM set node mode change state configured"),
    ("6d 01 00 20 04", {"lon.nm.mem_mode": [1], "lon.nm.mem_offset": [0x20], "lon.nm.mem_count": [4]},
     "NM read memory read-only relative 0x0020 count 4"),
    ("6e 02 00 10 02 01 aa bb",
     {"lon.nm.mem_mode": [2], "lon.nm.mem_offset": [0x10], "lon.nm.mem_count": [2],
      "lon.nm.mem_form": [1], "lon.nm.mem_data": [b"\xaa\xbb"]}, "NM write memory config relative 0x0010 count 2"),
    ("6f 01", {"lon.nm.cksum": [1]}, "NM checksum recalculate recalculate both checksums"),
    ("60 01", {"lon.nm.sub": [1]}, "NM expanded query version"),
    ("70", {"lon.nm": [0x70]}, "NM wink"),
    ("7f 010203040506 5052494f47524d31",
     {"lon.nm.nid": [bytes(range(1, 7))], "lon.nm.program_id": [b"PRIOGRM1"]}, "NM service pin nid 010203040506"),
    ("51", {"lon.nd": [0x51], "lon.code": [0x51]}, "ND query status"),
    ("52 01", {"lon.nd.proxy_cmd": [1]}, "ND proxy query status"),
    ("54", {"lon.nd": [0x54]}, "ND query transceiver status"),
]


@pytest.mark.parametrize("apdu,exp,what", NM_CASES)
def test_nm_nd_request_arguments(apdu, exp, what):
    d = dec(REQ + apdu, tree=True)
    for k, v in exp.items():
        assert f(d, k) == v, k
    assert d.info == f"REQUEST {what} [tid 5]"
    assert not [e for e in d.expert if e.severity in ("warn", "error")]
    # the tree carries the same values with byte ranges inside the frame
    for k in exp:
        n = d.root.find(k)
        assert n is not None and n.offset + n.length <= len(bytes.fromhex((REQ + apdu).replace(" ", "")))


def test_truncated_nm_arguments_are_malformed_not_exceptions():
    d = dec(REQ + "63 00 1122")
    assert f(d, "lon.nm") == [0x63]
    assert any(e.group == "malformed" and e.layer == "lon" and e.offset == 10 for e in d.expert)


# --------------------------------------------------------------------------- responses in context

def _pipeline(pairs, tmp_path):
    from analyzer import open_capture
    from longen import write_pcap
    frames = []
    t = 1_700_000_000_000_000_000
    for i, h in enumerate(pairs):
        frames.append((t + i * 250_000_000, bytes.fromhex(h.replace(" ", ""))))
    p = tmp_path / "pairs.pcap"
    write_pcap(p, frames, linktype=149)    # USER2: raw frames without CRC
    return list(open_capture(str(p)))


RESP_CASES = [
    ("61 01", "21 010203040506 5052494f47524d31",
     {"lon.nm.status": ["success"], "lon.nm.nid": [bytes(range(1, 7))], "lon.nm.program_id": [b"PRIOGRM1"]},
     "NM query ID success nid 010203040506"),
    ("66 03 01 81 33 02 07", "26", {"lon.nm.status": ["success"], "lon.nm.response": [0x26]},
     "NM update address success"),
    ("66 03 01 81 33 02 07", "06", {"lon.nm.status": ["failure"], "lon.nm.response": [0x06]},
     "NM update address failure"),
    ("67 03", "27 01 81 33 02 07", {"lon.nm.addr_type": [1], "lon.nm.subnet": [7], "lon.nm.node": [1]},
     "NM query address success 7/1"),
    ("68 05", "28 81 23 5a", {"lon.nm.nv_selector": [0x123], "lon.nm.nv_service": [2]},
     "NM query NV config success sel 0x123 addr 10"),
    ("6d 01 00 20 04", "2d deadbeef", {"lon.nm.mem_data": [bytes.fromhex("deadbeef")]},
     "NM read memory success 4 bytes"),
    ("6a 00", "2a 112233445566 07 85 01 000000000000",
     {"lon.nm.domain_id": [bytes.fromhex("112233445566")], "lon.nm.domain_len": [1]},
     "NM query domain success domain 11 7/5"),
    ("51", "31 0001 0002 0003 0004 0005 02 04 0c 00 08",
     {"lon.nd.status": ["success"], "lon.nd.xmit_errors": [1], "lon.nd.tx_timeouts": [2],
      "lon.nd.rcv_tx_full": [3], "lon.nd.lost_msgs": [4], "lon.nd.missed_msgs": [5],
      "lon.nd.reset_cause": [2], "lon.nd.node_state": [4], "lon.nd.version": [12],
      "lon.nd.error_log": [0], "lon.nd.model": [8]}, "ND query status success state configured"),
    ("54", "34 01020304050607", {"lon.nd.xcvr_regs": [bytes(range(1, 8))]},
     "ND query transceiver status success"),
    ("53", "13", {"lon.nd.status": ["failure"]}, "ND clear status failure"),
    ("52 01", "32 0001 0002 0003 0004 0005 02 04 0c 00 08",
     {"lon.nd.status": ["success"], "lon.nd.lost_msgs": [4], "lon.nd.node_state": [4]},
     "ND proxy success state configured"),
    ("52 00", "32 010203040506 5052494f47524d31", {"lon.nm.nid": [bytes(range(1, 7))]},
     "ND proxy success nid 010203040506"),
    ("52 02", "32 01020304050607", {"lon.nd.xcvr_regs": [bytes(range(1, 8))]}, "ND proxy success"),
    ("59", "39 04 00 10 02 07 1f", {"lon.nd.fw_version": [4], "lon.nd.minor_version": [2],
                                   "lon.nd.build_number": [7], "lon.nd.fw_code": [0x1F]},
     "ND get full version success 4.2.7"),
]


@pytest.mark.parametrize("req,resp,exp,what", RESP_CASES)
def test_responses_decoded_in_context(req, resp, exp, what, tmp_path):
    pkts = _pipeline([REQ + req, RESP + resp], tmp_path)
    r = pkts[1]
    assert r.fields["lon.response_to"] == [1]
    assert r.fields["lon.response_time"] == [0.25]
    for k, v in exp.items():
        assert r.fields.get(k) == v, k
    assert r.info == f"RESPONSE {what} [tid 5]"
    # rebuilt with a tree from pkt.aux only
    d = pkts[1].d
    from analyzer.pipeline import Pipeline
    full = Pipeline().redissect(r)
    for k, v in exp.items():
        assert full.fields.get(k) == v, k
    assert full.root.find("lon.response_to").value == 1
    assert d.info == full.info


def test_ack_matched_and_unrelated_not(tmp_path):
    ackd = "00 09 01 85 01 89 42 07 81 23 00 ca"        # ACKD tid 7 from 1/5 to 1/9
    ack = "00 09 01 89 01 85 42 27"                      # ACK tid 7 from 1/9 to 1/5
    other = "00 09 01 89 01 86 42 27"                    # ACK to 1/6: no request
    pkts = _pipeline([ackd, ack, other], tmp_path)
    assert pkts[1].fields["lon.response_to"] == [1]
    assert "lon.response_to" not in pkts[2].fields
    assert pkts[1].info == "ACK [tid 7]"
    from analyzer.pipeline import Pipeline
    assert Pipeline().redissect(pkts[0]).fields["lon.response_in"] == [2]


# --------------------------------------------------------------------------- builder round trip

def test_build_frame_matches_hand_assembled():
    """The builder produces the bytes written by hand from the tables above."""
    b = build_frame(pdu="spdu", spdu_type=0, addr="2a", src_subnet=1, src_node=5, dst_subnet=1,
                    dst_node=9, domain=b"\x42", tid=5, apdu=bytes.fromhex("6603018133 0207".replace(" ", "")),
                    crc=False)
    assert b == bytes.fromhex((REQ + "66 03 01 81 33 02 07").replace(" ", ""))
    b = build_frame(pdu="auth", addr="1", src_subnet=1, src_node=5, group=9, domain=b"\x42",
                    auth_type=1, tid=3, auth_value=bytes(range(1, 9)), crc=False)
    assert b == bytes.fromhex("0025018509425301020304050607080 9".replace(" ", ""))
    b = build_frame(pdu="tpdu", tpdu_type=0, vers=2, tid=0xABC, addr="2a", src_subnet=1, src_node=5,
                    dst_subnet=2, dst_node=3, domain=b"\x42", apdu=bytes.fromhex("812300ca"), crc=True)
    assert b[:-2] == bytes.fromhex("00 89 01 85 02 83 42 0a bc 81 23 00 ca".replace(" ", ""))
    assert b[-2:] == crc16_slow(b[:-2]).to_bytes(2, "big")


def test_user0_link_type_dispatch():
    raw = bytes.fromhex("00090185028342038123 00ca".replace(" ", ""))
    c = crc16_slow(raw)
    d = dissect_frame(raw + c.to_bytes(2, "big"), 147)
    assert d.fields["lon.crc.status"] == ["good"] and d.fields["lon.nv.selector"] == [0x123]


def test_application_handoff_table_and_info_prefix():
    """Application/foreign APDUs go to table("lon.apdu") keyed by code, from the code byte
    on; the payload layer's summary follows the LonTalk prefix in Info."""
    from dissectors.core import table
    tbl = table("lon.apdu")
    seen = []

    def fake(buf, off, end, d, parent):
        seen.append((buf[off], bytes(buf[off:end]), dict(d.ctx["lon"])))
        d.info = "fake payload summary"

    old = tbl.entries.get(0x3E)
    tbl.register(0x3E, "fake", fake)
    try:
        d = dec("00 09 01 85 02 83 42 03 3e 01 02")
    finally:
        if old is None:
            del tbl.entries[0x3E]
        else:
            tbl.entries[0x3E] = old
    assert seen and seen[0][0] == 0x3E and seen[0][1] == b"\x3e\x01\x02"
    assert seen[0][2]["type"] == "ACKD" and seen[0][2]["dst_node"] == 3 and seen[0][2]["tid"] == 3
    assert d.info == "ACKD [tid 3] fake payload summary"
    assert "data.data" not in d.fields


def test_unexpected_tpdu_spdu_types():
    d = dec("00 09 01 85 02 83 42 33 01")                 # TPDU type 3
    assert f(d, "lon.tpdu_type") == [3] and f(d, "lon.tpdu_type.unknown") == [None]
    assert f(d, "data.data") == [b"\x01"] and any("Unexpected TPDU type 3" in e.message for e in d.expert)
    d = dec("00 19 01 85 02 83 42 13")                    # SPDU type 1
    assert f(d, "lon.spdu_type.unknown") == [None]


def test_multicast_request_several_responders(tmp_path):
    req = "00 15 01 85 07 42 02 61 00"                   # SPDU REQUEST tid 2 from 1/5 to group 7: query ID
    r1 = "00 19 01 09 01 85 07 01 42 22 21 0a0b0c0d0e0f 3132333435363738"   # 2b from 1/9, member 1
    r2 = "00 19 01 0a 01 85 07 02 42 22 21 1a1b1c1d1e1f 3132333435363738"   # 2b from 1/10, member 2
    pkts = _pipeline([req, r1, r2], tmp_path)
    for p, nid in ((pkts[1], "0a0b0c0d0e0f"), (pkts[2], "1a1b1c1d1e1f")):
        assert p.fields["lon.response_to"] == [1]
        assert p.fields["lon.nm.nid"] == [bytes.fromhex(nid)]
        assert p.fields["lon.grp"] == [7]
    assert pkts[1].source == "1/9" and pkts[1].destination == "1/5"


def test_recorders_keep_only_requested_fields():
    """`keep_fields`: the generated recorders record only the kept names (the -T fields
    fast feed), a plain dict gets every name, and repeated layers append in both."""
    from dissectors.core import Dissection
    from dissectors.lon import dissect_frame, keep_fields, make_recorder
    rec = make_recorder(("t.a", "t.b", "t.c"))
    plain = {}
    rec(plain, 1, 2, 3)
    rec(plain, 4, 5, 6)
    assert plain == {"t.a": [1, 4], "t.b": [2, 5], "t.c": [3, 6]}
    kept = keep_fields({"t.b", "lon.srcnode", "lon.trans_no", "lon.domain"})()
    rec(kept, 1, 2, 3)
    rec(kept, 4, 5, 6)
    assert dict(kept) == {"t.b": [2, 5]}
    none = keep_fields(set())()
    rec(none, 1, 2, 3)
    assert dict(none) == {}
    frame = build_frame(pdu="spdu", spdu_type=4, addr="2a", src_subnet=3, src_node=9, dst_subnet=4,
                        dst_node=2, domain=b"\x2a", tid=5, mlist=b"\x05")
    full = Dissection(frame)
    dissect_frame(frame, 0, len(frame), full, None)
    d = Dissection(frame)
    d.fields = keep_fields({"lon.srcnode", "lon.trans_no", "lon.domain", "lon.spdu.member"})()
    dissect_frame(frame, 0, len(frame), d, None)
    assert full.fields["lon.srcnode"] == [9] and full.fields["lon.spdu.member"] == [0, 2]
    for name in ("lon.srcnode", "lon.trans_no", "lon.domain", "lon.spdu.member"):
        assert d.fields[name] == full.fields[name], name
    assert "lon.srcnet" not in d.fields and "lon.spdu.mlist" not in d.fields and "lon.srcnet" in full.fields
