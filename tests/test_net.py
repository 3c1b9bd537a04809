"""Link, IP, UDP and TCP dissectors compared field by field with tshark on the same files."""
from __future__ import annotations

import struct
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from analyzer.capture import read_capture
from analyzer.packet import Record
from analyzer.pcapwriter import PcapngWriter
from dissectors import dissect_frame
from dissectors.core import table

FIELDS = ["eth.src", "eth.dst", "eth.type", "vlan.id", "ieee8021ad.id", "ip.src", "ip.dst", "ip.proto", "ip.ttl",
          "ip.len", "ip.id", "ip.checksum", "ipv6.src", "ipv6.dst", "ipv6.nxt", "ipv6.plen",
          "udp.srcport", "udp.dstport", "udp.length", "tcp.srcport", "tcp.dstport", "tcp.seq",
          "tcp.ack", "tcp.len", "tcp.flags", "null.family", "sll.pkttype", "sll.hatype",
          "sll.etype", "sll.ifindex", "frame.len", "frame.cap_len", "ip.addr", "ipv6.addr",
          "udp.port", "tcp.port", "eth.addr"]


def tshark_fields(tshark, path, names=FIELDS):
    cmd = [tshark, "-r", str(path), "-o", "tcp.relative_sequence_numbers:FALSE",
           "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
    for n in names:
        cmd += ["-e", n]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


def as_text(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def tnum(s: str) -> int:
    return int(s, 16) if s.startswith("0x") else int(s)


def compare(tshark, path, skip_frame=lambda row: False, names=FIELDS) -> int:
    """Compare every field of every frame; returns the number of values compared."""
    rows = tshark_fields(tshark, path, names)
    recs = list(read_capture(path))
    assert len(rows) == len(recs)
    n = 0
    for i, (row, rec) in enumerate(zip(rows, recs)):
        if skip_frame(row):
            continue
        d = dissect_frame(rec.data, rec.linktype)
        for name, val in zip(names, row):
            ours = d.fields.get(name, [])
            if name.startswith("frame."):
                ours = [len(rec.data)] if name == "frame.cap_len" or rec.orig_len == len(rec.data) else ours
            if not val:
                assert not ours, (path.name, i + 1, name, ours)
                continue
            theirs = val.split(",")
            if isinstance(ours[0], int) and not isinstance(ours[0], bool):
                assert [tnum(x) for x in theirs] == ours, (path.name, i + 1, name, theirs, ours)
            else:
                assert theirs == [as_text(x) for x in ours], (path.name, i + 1, name, theirs, ours)
            n += len(ours)
    return n


def test_shared_pcaps_fields_match_tshark(pcaps, tshark):
    total = 0
    for f in sorted(pcaps.glob("*/*.pcap")):
        # ICMP errors quote an IP header that tshark decodes again (we stop at ICMP)
        names = FIELDS + ["icmp.type"]
        total += compare(tshark, f, skip_frame=lambda row: row[-1] != "", names=names)
    assert total > 10000


def _scapy_frames():
    from scapy.all import (IP, TCP, UDP, Dot1AD, Dot1Q, Ether, IPv6, IPv6ExtHdrDestOpt,
                           IPv6ExtHdrHopByHop, Raw)
    e = Ether(src="00:11:22:33:44:55", dst="66:77:88:99:aa:bb")
    ip4 = IP(src="192.168.1.10", dst="192.168.1.20", ttl=33, id=0x4242)
    ip6 = IPv6(src="2001:db8::1", dst="fe80::abcd:1", hlim=7)
    udp = UDP(sport=1628, dport=40000) / Raw(b"\x00\x10\x01\x01" + b"\0" * 12)
    tcp = TCP(sport=4059, dport=50000, seq=0xFFFFFF00, ack=77, flags="PA") / Raw(b"\x00\x01\x00\x01\x00\x10\x00\x02\xc0\x01")
    return {
        "eth_udp": bytes(e / ip4 / udp),
        "vlan": bytes(e / Dot1Q(vlan=100, prio=5) / ip4 / udp),
        "qinq": bytes(e / Dot1AD(vlan=20) / Dot1Q(vlan=300) / ip4 / tcp),
        "ip6_ext": bytes(e / ip6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / udp),
        "ip6_tcp": bytes(e / ip6 / tcp),
        "raw4": bytes(ip4 / tcp),
        "raw6": bytes(ip6 / udp),
        "padded": bytes(e / IP(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=9, dport=10) / b"ab") + b"\0" * 20,
    }


def test_link_types_match_tshark(tshark, tmp_path):
    f = _scapy_frames()
    sll_hdr = struct.pack("!HHH8sH", 4, 1, 6, bytes.fromhex("0011223344550000"), 0x0800)
    sll2_hdr = struct.pack("!HHIHBB8s", 0x86DD, 0, 3, 1, 0, 6, bytes.fromhex("0011223344550000"))
    frames = [
        (1, f["eth_udp"]), (1, f["vlan"]), (1, f["qinq"]), (1, f["ip6_ext"]), (1, f["ip6_tcp"]),
        (1, f["padded"]),
        (101, f["raw4"]), (101, f["raw6"]), (228, f["raw4"]), (229, f["raw6"]),
        (0, struct.pack("<I", 2) + f["raw4"]), (0, struct.pack(">I", 2) + f["raw4"]),
        (0, struct.pack("<I", 30) + f["raw6"]), (0, struct.pack(">I", 24) + f["raw6"]),
        (0, struct.pack("<I", 28) + f["raw6"]),
        (108, struct.pack(">I", 2) + f["raw4"]), (108, struct.pack(">I", 24) + f["raw6"]),
        (113, sll_hdr + f["raw4"]), (276, sll2_hdr + f["raw6"]),
    ]
    path = tmp_path / "links.pcapng"
    with PcapngWriter(path) as w:
        for i, (lt, data) in enumerate(frames):
            w.write((1_700_000_000 * 10**9 + i, data, lt))
    assert compare(tshark, path) > 200
    recs = list(read_capture(path))
    d = dissect_frame(recs[1].data, 1)
    assert d.fields["vlan.id"] == [100] and d.protocols[:4] == ["eth", "vlan", "ip", "udp"]
    d = dissect_frame(recs[2].data, 1)
    assert d.fields["ieee8021ad.id"] == [20] and d.fields["vlan.id"] == [300]
    assert d.src == "192.168.1.10" and d.dst == "192.168.1.20"
    assert d.ctx["tcp"]["flow"] == ("192.168.1.10", 4059, "192.168.1.20", 50000)
    assert d.ctx["tcp"]["seq"] == 0xFFFFFF00 and d.ctx["tcp"]["payload_len"] == 10
    d = dissect_frame(recs[5].data, 1)               # Ethernet padding is not UDP payload
    assert d.fields["data.data"] == [b"ab"]


def test_udp_dispatch_lower_port_first():
    seen = []
    t = table("udp.port")

    def mk(tag):
        def fn(buf, off, end, d, parent):
            seen.append((tag, bytes(buf[off:end])))
            d.layer(tag, tag, off, end - off)
        return fn
    from scapy.all import IP, UDP
    saved = {k: t.entries.get(k) for k in (61001, 61002)}
    try:
        t.register(61002, "hi", mk("hi"))
        d = dissect_frame(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=61002, dport=61001) / b"xy"), 101)
        assert seen == [("hi", b"xy")]
        t.register(61001, "lo", mk("lo"))
        d = dissect_frame(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=61002, dport=61001) / b"xy"), 101)
        assert seen[-1] == ("lo", b"xy") and d.protocols == ["ip", "udp", "lo"]
        assert d.ctx["udp.srcport"] == 61002 and d.ctx["udp.dstport"] == 61001
    finally:
        for k, v in saved.items():
            if v is None:
                t.entries.pop(k, None)
            else:
                t.entries[k] = v


def test_user0_and_sicb_handoffs():
    calls = []
    lonf, eth = table("lon.frame"), table("ethertype")
    saved = (lonf.entries.get("l2-crc"), lonf.entries.get("l2-nocrc"), eth.entries.get(0x8950))
    try:
        # USER0 = a frame as the NI delivers it (CRC always present), USER2 = no CRC
        lonf.register("l2-crc", "lon", lambda b, o, e, d, p: calls.append(("lon-crc", bytes(b[o:e]))))
        lonf.register("l2-nocrc", "lon", lambda b, o, e, d, p: calls.append(("lon-nocrc", bytes(b[o:e]))))
        eth.register(0x8950, "ni", lambda b, o, e, d, p: calls.append(("ni", bytes(b[o:e]))))
        frame = bytes.fromhex("00090101a901aa0123")
        d = dissect_frame(frame, 147)
        assert calls == [("lon-crc", frame)] and d.fields["frame.linktype"] == [147]
        d = dissect_frame(frame, 149)
        assert calls[1] == ("lon-nocrc", frame) and d.fields["frame.linktype"] == [149]
        del calls[1]
        sicb = bytes.fromhex("1a09") + frame
        dissect_frame(struct.pack("!HHH8sH", 0, 0x950, 0, b"\0" * 8, 0x8950) + sicb, 113)
        dissect_frame(sicb, 0x950)
        assert calls[1:] == [("ni", sicb), ("ni", sicb)]
    finally:
        for t, k, v in ((lonf, "l2-crc", saved[0]), (lonf, "l2-nocrc", saved[1]), (eth, 0x8950, saved[2])):
            if v is None:
                t.entries.pop(k, None)
            else:
                t.entries[k] = v


def test_fragment_and_malformed():
    from scapy.all import IP, TCP, UDP
    frag = bytes(IP(src="1.1.1.1", dst="2.2.2.2", flags="MF", id=9) / UDP(sport=1, dport=2) / (b"a" * 40))
    d = dissect_frame(frag, 101)
    assert d.ctx["ipfrag"]["more"] and d.ctx["ipfrag"]["payload_len"] == 48 and "udp" not in d.protocols
    # truncated TCP header keeps the IP layer and reports malformed
    pkt = bytes(IP(src="1.1.1.1", dst="2.2.2.2") / TCP())[:30]
    d = dissect_frame(pkt, 101)
    assert d.fields["ip.src"] == ["1.1.1.1"] and d.fields.get("_ws.malformed")
    # bad header checksum is noted, values kept
    bad = bytearray(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=5, dport=6)))
    bad[10] ^= 0xFF
    d = dissect_frame(bytes(bad), 101, want_tree=True)
    assert d.fields["ip.checksum.status"] == [0] and d.fields["udp.srcport"] == [5]
    assert any("checksum" in e.message for e in d.expert)


def test_ip4_checksum_against_scapy():
    """The one IPv4 header checksum (dissectors.net.ip4_checksum) equals scapy's."""
    from scapy.all import IP, UDP
    from dissectors.net import ip4_checksum
    for i in range(20):
        raw = bytes(IP(src=f"10.0.{i}.1", dst="192.168.1.9", id=i * 977, ttl=1 + i, options=b"\x01" * (i % 3 * 4))
                    / UDP(sport=1628, dport=1628) / bytes(i))
        hl = (raw[0] & 15) * 4
        zeroed = raw[:10] + b"\0\0" + raw[12:hl]
        assert ip4_checksum(zeroed) == int.from_bytes(raw[10:12], "big"), i


@given(st.sampled_from([0, 1, 101, 108, 113, 147, 149, 228, 229, 276, 0x950]), st.binary(max_size=120),
       st.booleans())
def test_fuzz_random_frames(linktype, data, tree):
    d = dissect_frame(data, linktype, want_tree=tree)
    assert d.fields["frame.cap_len"] == [len(data)]
    for e in d.expert:
        assert e.message and isinstance(e.offset, int)


_SEEDS = list(_scapy_frames().items())


@settings(max_examples=min(settings.default.max_examples, 800))  # heavy: cap the CI profile
@given(st.sampled_from(_SEEDS), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
       st.integers(0, 200))
def test_fuzz_mutated_frames(seed, flips, cut):
    name, frame = seed
    lt = 101 if name.startswith("raw") else 1
    buf = bytearray(frame)
    for pos, val in flips:
        if pos < len(buf):
            buf[pos] = val
    buf = bytes(buf[:max(cut, 0) or len(buf)])
    d = dissect_frame(buf, lt, want_tree=True)
    # a mutated frame keeps the layers before the damage
    if lt == 1 and len(buf) >= 14:
        assert d.protocols[0] == "eth" and d.fields["eth.src"][0] == buf[6:12].hex(":")
    if d.root is not None:
        for n in d.root.walk():
            assert n.offset >= 0 and n.length >= 0
