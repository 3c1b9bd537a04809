"""LON/IP (LS/UDP, UDP 2541): compressed NPDU, addresses taken from the IP header."""
from __future__ import annotations

from dissectors import dissect_frame, load_all

from longen import wrap_udp_eth

load_all()


def dec(payload, src, dst):
    return dissect_frame(wrap_udp_eth(payload, 2541, 2541, src, dst), 1)


def test_unicast_one_byte_domain():
    # udpver 0, no arbitrary source; addrfmt 1 (subnet/node), TPDU; ACKD tid 3, NV 0x123 = 00 ca
    d = dec(bytes.fromhex("0010 03 812300ca"), (10, 1, 2, 3), (10, 1, 4, 5))
    assert "lonip" in d.protocols and "lon" in d.protocols
    f = d.fields
    assert f["lonip.addrfmt"] == [1] and f["lonip.pdufmt"] == [0]
    assert f["lon.srcnet"] == [2] and f["lon.srcnode"] == [3]
    assert f["lon.dstnet"] == [4] and f["lon.dstnode"] == [5]
    assert f["lon.domain"] == [b"\x01"]
    assert f["lon.tpdu_type"] == [0] and f["lon.trans_no"] == [3] and f["lon.nv.selector"] == [0x123]
    assert (d.src, d.dst) == ("2/3", "4/5")
    assert d.info == "ACKD NV update sel 0x123 [tid 3]"
    assert d.ctx["lon"]["dst_type"] == "unicast"


def test_no_domain_and_three_byte_domain():
    d = dec(bytes.fromhex("0010 03 812300ca"), (192, 168, 7, 8), (192, 168, 7, 9))
    assert d.fields["lon.domain"] == [b""] and d.fields["lon.srcnet"] == [7]
    d = dec(bytes.fromhex("0010 03 812300ca"), (33, 44, 7, 8), (33, 44, 7, 9))
    assert d.fields["lon.domain"] == [bytes([33, 44, 0])]


def test_group_multicast_and_backlog():
    # addrfmt 4 (group 9), MCR (backlog byte 0x05), priority, SPDU REQUEST tid 2, NM query ID
    d = dec(bytes.fromhex("004d 05 09 02 6101"), (10, 1, 2, 3), (239, 192, 1, 9))
    f = d.fields
    assert f["lonip.mcr"] == [1] and f["lonip.backlog"] == [5] and f["lonip.prio"] == [1]
    assert f["lon.dstgrp"] == [9] and d.dst == "grp 9"
    assert f["lon.spdu_type"] == [0] and f["lon.nm"] == [0x61] and f["lon.nm.selector"] == [1]
    assert d.info == "REQUEST NM query ID selected [tid 2]"


def test_arbitrary_source_and_enhanced_tid():
    # udpver 1 (enhanced), arbitrary source: subnet 9, node 5 with domain flag, domain code 1 -> 33
    d = dec(bytes.fromhex("1110 09 85 01 33 0a bc 812300ca"), (10, 1, 2, 3), (10, 1, 4, 5))
    f = d.fields
    assert f["lonip.udpver"] == [1] and f["lonip.arb_src"] == [True]
    assert f["lon.srcnet"] == [9] and f["lon.srcnode"] == [5] and f["lon.domain"] == [b"\x33"]
    assert f["lon.tid12"] == [0xABC] and f["lon.nv.selector"] == [0x123]


def test_neuron_id_format_and_truncation():
    d = dec(bytes.fromhex("0000 112233445566 03 812300ca"), (10, 1, 2, 3), (10, 1, 4, 5))
    assert d.fields["lon.uid"] == [bytes.fromhex("112233445566")] and d.dst == "112233445566"
    d = dec(bytes.fromhex("0000 1122"), (10, 1, 2, 3), (10, 1, 4, 5))
    assert any(e.layer == "lonip" and e.group == "malformed" and e.offset == 44 for e in d.expert)
    assert d.fields["lonip.addrfmt"] == [0]
