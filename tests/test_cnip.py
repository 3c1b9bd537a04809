"""CN/IP (ISO/IEC 14908-4): the public sample datagrams, every packet type, extended
header, several packets per datagram, MD5 trailer verified by the tracking stage."""
from __future__ import annotations

import hashlib
import struct

import pytest

from dissectors import load_all
from dissectors.cnip import PACKET_TYPES, build_cnip, dissect_cnip
from dissectors.core import Dissection

load_all()


def dec(b: bytes, tree=False) -> Dissection:
    d = Dissection(b, tree)
    dissect_cnip(b, 0, len(b), d, d.root)
    return d


def hdr(length, ptype, pf=0, exth=0, vendor=0, sess=0x6B8B4567, seq=0, ts=0, ver=1):
    """A CN/IP header written from the wire-format table (not with our builder)."""
    return struct.pack(">HBBBBHIII", length, ver, ptype, exth, pf, vendor, sess, seq, ts)


def _vec(vectors, name):
    for v in vectors:
        if v["name"] == name:
            return v
    raise KeyError(name)


def test_public_vector_ackd_nv(vectors):
    v = _vec(vectors, "cnip_lon_tpdu_ackd_nv")
    d = dec(bytes.fromhex(v["hex"]))
    e = v["expected"]["cnip"]
    assert d.fields["cnip.len"] == [e["packet_length"]] == [32]
    assert d.fields["cnip.ver"] == [e["version"]]
    assert d.fields["cnip.type"] == [0x01]
    assert d.fields["cnip.exth"] == [e["ext_header_size_words"]]
    assert d.fields["cnip.pf"] == [e["protocol_flags"]]
    assert d.fields["cnip.vendorcode"] == [e["vendor_code"]]
    assert d.fields["cnip.sessid"] == [int(e["session_id"], 16)]
    assert d.fields["cnip.seqno"] == [e["sequence"]]
    assert d.fields["cnip.tstamp"] == [e["timestamp"]]
    # "0109 01AA 01A9 0103 810D00CA (12 bytes)": no CRC, 2a from 1/42 to 1/41, domain 01,
    # TPDU ACKD tid 3, NV selector 0x10D, value 00 CA
    assert d.protocols == ["cnip", "lon"]
    assert d.fields["lon.crc.status"] == ["absent"]
    assert d.fields["lon.delta_bl"] == [1]
    assert d.fields["lon.srcnet"] == [1] and d.fields["lon.srcnode"] == [0x2A]
    assert d.fields["lon.dstnet"] == [1] and d.fields["lon.dstnode"] == [0x29]
    assert d.fields["lon.domain"] == [b"\x01"]
    assert d.fields["lon.tpdu_type"] == [0] and d.fields["lon.trans_no"] == [3]
    assert d.fields["lon.nv.selector"] == [0x10D] and d.fields["lon.nv.value"] == [b"\x00\xca"]
    assert d.info == "ACKD NV update sel 0x10d [tid 3]"
    assert (d.src, d.dst) == ("1/42", "1/41")
    assert not d.expert


def test_public_vector_ack(vectors):
    v = _vec(vectors, "cnip_lon_tpdu_ack")
    d = dec(bytes.fromhex(v["hex"]))
    e = v["expected"]["cnip"]
    assert d.fields["cnip.len"] == [e["packet_length"]] == [28]
    assert d.fields["cnip.sessid"] == [int(e["session_id"], 16)]
    assert d.fields["cnip.seqno"] == [e["sequence"]] == [1]
    # "0009 01A9 01AA 0123": ACK tid 3 from 1/41 back to 1/42
    assert d.fields["lon.tpdu_type"] == [2] and d.fields["lon.trans_no"] == [3]
    assert (d.src, d.dst) == ("1/41", "1/42")
    assert d.info == "ACK [tid 3]"


def test_public_vectors_pair_in_pipeline(vectors, tmp_path):
    """The ACK answers the ACKD of the other sample datagram (same tid, reversed addresses)."""
    from analyzer import open_capture
    from longen import wrap_udp_eth, write_pcap
    a = bytes.fromhex(_vec(vectors, "cnip_lon_tpdu_ackd_nv")["hex"])
    b = bytes.fromhex(_vec(vectors, "cnip_lon_tpdu_ack")["hex"])
    p = tmp_path / "pair.pcap"
    write_pcap(p, [wrap_udp_eth(a), wrap_udp_eth(b)])
    pk = list(open_capture(str(p)))
    assert pk[1].fields["lon.response_to"] == [1]
    assert pk[0].protocol == "LON"


@pytest.mark.parametrize("ptype", sorted(PACKET_TYPES))
def test_every_packet_type_named(ptype):
    body = b"\x00\x01\x02\x03"
    b = hdr(20 + len(body), ptype) + body
    d = dec(b)
    assert d.fields["cnip.type"] == [ptype]
    if ptype == 1:
        assert "lon" in d.protocols
    else:
        assert d.fields["cnip.type_name"] == [PACKET_TYPES[ptype]]
        assert d.fields["cnip.payload"] == [body]
        assert d.info == f"CN/IP {PACKET_TYPES[ptype]} seq 0"


def test_unknown_type_and_bad_length():
    d = dec(hdr(20, 0x55))
    assert d.fields["cnip.type.unknown"] == [None]
    d = dec(hdr(40, 0x01) + b"\x00\x09")
    assert any(e.layer == "cnip" and e.group == "malformed" and e.offset == 0 for e in d.expert)
    assert d.fields["cnip.seqno"] == [0]          # header kept


def test_extended_header_and_several_packets():
    lon1 = bytes.fromhex("000901A901AA0123")
    ext = bytes([192, 168, 1, 2, 10, 0, 0, 1, 0x06, 0x5C, 0, 0])
    p1 = hdr(20 + 12 + len(lon1), 1, exth=3, seq=7) + ext + lon1
    p2 = hdr(20 + 4, 0x07, seq=8) + b"\x00\x00\x00\x07"
    d = dec(p1 + p2, tree=True)
    assert d.protocols == ["cnip", "lon", "cnip"]
    assert d.fields["cnip.seqno"] == [7, 8]
    assert d.fields["cnip.ext.local_ip"] == [bytes([192, 168, 1, 2])]
    assert d.fields["cnip.ext.nat_ip"] == [bytes([10, 0, 0, 1])]
    assert d.fields["cnip.ext.port"] == [1628]
    assert d.fields["lon.tpdu_type"] == [2]
    assert d.fields["cnip.type"] == [1, 7]
    assert d.root.find("cnip.ext.local_ip").text == "Local IP: 192.168.1.2"


def _md5_packet(secret: bytes, seq=1):
    lon = bytes.fromhex("000901A901AA0123")
    pkt = hdr(20 + len(lon), 1, pf=0x20, seq=seq) + lon
    return pkt + hashlib.md5(pkt + bytes(16) + secret).digest()


def test_md5_trailer_shown_and_builder_agrees():
    b = _md5_packet(b"secret")
    d = dec(b + _md5_packet(b"secret", 2))
    assert d.fields["cnip.sec"] == [1, 1]
    assert d.fields["cnip.md5"][0] == b[-16:]
    assert d.fields["cnip.md5.status"] == ["unverified", "unverified"]
    assert d.fields["cnip.seqno"] == [1, 2]
    assert build_cnip(bytes.fromhex("000901A901AA0123"), seqno=1, session=0x6B8B4567,
                      secret=b"secret") == b


def test_md5_verified_by_stage(tmp_path):
    from analyzer import open_capture
    from analyzer.keyring import KeyRing
    from longen import wrap_udp_eth, write_pcap
    p = tmp_path / "md5.pcap"
    write_pcap(p, [wrap_udp_eth(_md5_packet(b"right")), wrap_udp_eth(_md5_packet(b"wrong"))])
    ring = KeyRing()
    ring.add_cnip_secret(b"right")
    pk = list(open_capture(str(p), keys=ring))
    assert pk[0].fields["cnip.md5.status"] == ["good"]
    assert pk[1].fields["cnip.md5.status"] == ["bad"]
    assert any(e.group == "security" for e in pk[1].d.expert)
    # without keys: shown, not verified
    pk = list(open_capture(str(p)))
    assert pk[0].fields["cnip.md5.status"] == ["unverified"]


def test_cnip_against_tshark(tshark, tmp_path, vectors):
    """tshark's cnip dissector agrees on the header fields of both public datagrams."""
    import subprocess
    from analyzer import open_capture
    from longen import wrap_udp_eth, write_pcap
    frames = [bytes.fromhex(_vec(vectors, n)["hex"]) for n in ("cnip_lon_tpdu_ackd_nv", "cnip_lon_tpdu_ack")]
    p = tmp_path / "v.pcap"
    write_pcap(p, [wrap_udp_eth(f) for f in frames])
    names = ["cnip.len", "cnip.ver", "cnip.type", "cnip.exth", "cnip.pf", "cnip.sec", "cnip.protocol",
             "cnip.vendorcode", "cnip.sessid", "cnip.seqno", "cnip.tstamp"]
    cmd = [tshark, "-r", str(p), "-T", "fields"]
    for n in names:
        cmd += ["-e", n]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    for line, pkt in zip(out, open_capture(str(p))):
        for n, t in zip(names, line.split("\t")):
            assert pkt.fields[n] == [int(t, 0)], n


def test_two_lon_frames_in_one_datagram_keep_all_values():
    """Fields shared by several layouts (lon.code, lon.auth, lon.trans_no) accumulate."""
    f1 = bytes.fromhex("0019018501894205" "6101")           # SPDU REQUEST tid 5: NM query ID
    f2 = bytes.fromhex("000901850189428a" "1234")           # TPDU ACKD auth tid 10: app 0x12
    b = hdr(20 + len(f1), 1, seq=1) + f1 + hdr(20 + len(f2), 1, seq=2) + f2
    d = dec(b)
    assert d.fields["lon.code"] == [0x61, 0x12]
    assert d.fields["lon.trans_no"] == [5, 10] and d.fields["lon.auth"] == [0, 1]
    assert d.fields["lon.spdu"] == [0x05] and d.fields["lon.tpdu"] == [0x8A]
    assert d.fields["lon.srcnode"] == [5, 5] and d.fields["cnip.seqno"] == [1, 2]
