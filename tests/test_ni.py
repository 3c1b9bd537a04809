"""NI host messages (SICB) in layer-2 mode: 0x1A, 0x1B phase, 0x1C phase + SSI, 0x3x errors,
extended length; reached through ethertype 0x8950."""
from __future__ import annotations

from dissectors import dissect_frame, load_all
from dissectors.core import Dissection
from dissectors.lon import crc16_slow
from dissectors.ni import build_sicb, dissect_sicb

load_all()

# ACKD tid 3 NV 0x123 = 00 ca from 1/5 to 2/3, domain 42, followed by its CRC
FRAME = bytes.fromhex("0009018502834203812300ca")
FRAME_CRC = FRAME + crc16_slow(FRAME).to_bytes(2, "big")


def dec(b, tree=False):
    d = Dissection(b, tree)
    dissect_sicb(b, 0, len(b), d, d.root)
    return d


def test_l2_uplink_with_crc():
    d = dec(bytes([0x1A, len(FRAME_CRC)]) + FRAME_CRC)
    assert d.protocols == ["ni", "lon"]
    assert d.fields["ni.cmd"] == [0x1A] and d.fields["ni.len"] == [14]
    assert d.fields["lon.crc.status"] == ["good"]
    assert d.fields["lon.nv.selector"] == [0x123] and d.fields["lon.nv.value"] == [b"\x00\xca"]
    assert d.info == "ACKD NV update sel 0x123 [tid 3]"


def test_l2_uplink_bad_crc_still_decoded():
    bad = FRAME_CRC[:-1] + bytes([FRAME_CRC[-1] ^ 0xFF])
    d = dec(bytes([0x1A, len(bad)]) + bad)
    assert d.fields["lon.crc.status"] == ["bad"]
    assert d.fields["lon.nv.selector"] == [0x123]
    assert any(e.group == "checksum" and e.offset == 2 + len(FRAME) for e in d.expert)


def test_mode1_phase_and_mode2_ssi():
    d = dec(bytes([0x1B, 1 + len(FRAME_CRC), 0x03]) + FRAME_CRC)
    assert d.fields["ni.phase"] == [3] and d.fields["lon.crc.status"] == ["good"]
    d = dec(bytes([0x1C, 3 + len(FRAME_CRC), 0x02]) + FRAME_CRC + b"\x12\x34")
    assert d.fields["ni.phase"] == [2] and d.fields["ni.ssi"] == [0x1234]
    assert d.fields["lon.crc.status"] == ["good"] and d.fields["lon.srcnode"] == [5]


def test_receive_errors():
    for code in range(0x30, 0x36):
        d = dec(bytes([code, 0]))
        assert d.fields["ni.rx_error"] == [code - 0x30]
        assert d.expert and d.expert[0].layer == "ni"


def test_extended_length_and_builder():
    payload = bytes(300)
    b = build_sicb(0x12, payload)
    assert b[:4] == bytes([0x12, 0xFF, 0x01, 0x2C])
    d = dec(b)
    assert d.fields["ni.len"] == [300] and d.fields["lon.crc.status"] == ["absent"]


def test_truncated_sicb():
    d = dec(bytes([0x1A, 20]) + FRAME_CRC)
    assert d.fields["ni.cmd"] == [0x1A]
    assert any(e.layer == "ni" and e.group == "malformed" and e.offset == 2 for e in d.expert)


def test_ethertype_8950():
    sicb = bytes([0x1A, len(FRAME_CRC)]) + FRAME_CRC
    eth = b"\xff" * 6 + b"\x02" * 6 + b"\x89\x50" + sicb
    d = dissect_frame(eth, 1)
    assert "ni" in d.protocols and "lon" in d.protocols
    assert d.fields["lon.nv.selector"] == [0x123]


def test_lon_netdev_link_type():
    """The lon netdev (ARPHRD 0x950) link type carries one SICB message per packet."""
    b = bytes([0x1C, 3 + len(FRAME_CRC), 0x01]) + FRAME_CRC + b"\x00\x20"
    d = dissect_frame(b, 0x950)
    assert d.protocols == ["ni", "lon"]
    assert d.fields["ni.ssi"] == [0x20] and d.fields["ni.phase"] == [1]
    assert d.info == "ACKD NV update sel 0x123 [tid 3]"
