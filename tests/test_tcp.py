"""TCP stream reassembly, the TCP PDU stage and IPv4 defragmentation.

Ground truth: the PDUs we generate (split into segments in every way hypothesis finds,
reordered, duplicated), and tshark's own IPv4 reassembly on the same pcap."""
from __future__ import annotations

import random
import struct
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from analyzer.packet import Record
from analyzer.pcapwriter import PcapWriter
from analyzer.pipeline import Pipeline
from analyzer.tcp import TcpStream
from analyzer.tcpstage import register_stream_protocol
from dissectors.core import FT_BYTES, FT_UINT, field, need

field("toy", "none", "Toy length-prefixed protocol (tests)")
field("toy.len", FT_UINT, "Length")
field("toy.payload", FT_BYTES, "Payload")
TOY_MAGIC = 0xA5


def toy_detect(buf: bytes) -> bool:
    return len(buf) >= 1 and buf[0] == TOY_MAGIC


def toy_pdu_len(buf: bytes, off: int):
    if len(buf) - off < 3:
        return None
    if buf[off] != TOY_MAGIC:
        return 0
    return 3 + struct.unpack_from("!H", buf, off + 1)[0]


def toy_dissect(buf, off, end, d, parent):
    need(end, off, 3, "toy")
    node = d.layer("toy", "Toy", off, end - off)
    ln = struct.unpack_from("!H", buf, off + 1)[0]
    d.add(node, "toy.len", ln, off + 1, 2)
    d.add(node, "toy.payload", bytes(buf[off + 3:end]), off + 3, end - off - 3)


register_stream_protocol("toy", toy_detect, toy_pdu_len, toy_dissect, ports={7777})


def toy(payload: bytes) -> bytes:
    return bytes([TOY_MAGIC]) + struct.pack("!H", len(payload)) + payload


def eth_ip_tcp(src, sport, dst, dport, seq, payload, flags="PA", ack=1):
    """Ethernet/IPv4/TCP frame built by hand (fast enough for thousands of examples;
    the layout is checked against scapy in test_builder_matches_scapy)."""
    import socket
    fl = sum({"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}[c] for c in flags)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, fl, 8192, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    s = sum(struct.unpack("!10H", ip))
    s = (s & 0xFFFF) + (s >> 16)
    ip = ip[:10] + struct.pack("!H", ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF) + ip[12:]
    return bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + tcp


def test_builder_matches_scapy():
    from scapy.all import IP, TCP, Ether
    ours = eth_ip_tcp("10.0.0.1", 40000, "10.0.0.2", 7777, 123, b"xyz", flags="PA", ack=9)
    ref = Ether(ours)
    assert ref[IP].src == "10.0.0.1" and ref[IP].dst == "10.0.0.2" and ref[IP].len == len(ours) - 14
    assert ref[TCP].sport == 40000 and ref[TCP].dport == 7777 and ref[TCP].seq == 123 and ref[TCP].ack == 9
    assert str(ref[TCP].flags) == "PA" and bytes(ref[TCP].payload) == b"xyz"
    ref[IP].chksum = None
    assert bytes(Ether(bytes(ref)))[14:34] == ours[14:34]       # scapy recomputes the same checksum


# --------------------------------------------------------------------------- TcpStream

def test_stream_in_order_out_of_order_and_retransmission():
    s = TcpStream()
    assert s.add(1000, b"", syn=True) == b""
    assert s.add(1001, b"abc") == b"abc"
    assert s.add(1007, b"ghi") == b"" and s.last_was_out_of_order
    assert s.add(1001, b"abc") == b"" and s.last_was_retransmission
    assert s.add(1002, b"bcdef") == b"defghi"         # overlap trimmed, then the buffer drains
    assert s.delivered == 9 and s.last_direct == 3
    assert s.add(1004, b"defghi") == b"" and s.last_was_retransmission
    assert s.add(1004, b"defghijk") == b"jk"


def test_stream_wraps_and_reports_gaps():
    s = TcpStream(max_buffer=10)
    seq = 0xFFFFFFFE
    assert s.add(seq, b"1234") == b"1234"             # wraps through 0
    assert s.next_seq == 2
    assert s.add(10, b"x" * 6) == b""                 # hole of 8 bytes
    out = s.add(16, b"y" * 6)                         # buffer > 10: skip the hole
    assert out == b"x" * 6 + b"y" * 6 and s.gaps == [(4, 8)]


@settings(max_examples=min(settings.default.max_examples, 600))  # heavy: cap the CI profile
@given(st.lists(st.binary(min_size=0, max_size=30), min_size=1, max_size=12), st.randoms(),
       st.integers(0, 0xFFFFFFFF))
def test_stream_any_order_delivers_the_stream(chunks, rnd, isn):
    data = b"".join(chunks)
    segs, pos = [], 0
    for c in chunks:
        segs.append(((isn + 1 + pos) & 0xFFFFFFFF, c))
        pos += len(c)
    order = segs + [rnd.choice(segs) for _ in range(3)]      # with duplicates
    rnd.shuffle(order)
    s = TcpStream()
    s.add(isn, b"", syn=True)
    out = b"".join(s.add(q, c) for q, c in order)
    assert out == data and not s.gaps


# --------------------------------------------------------------------------- stage

def _run(frames, ts0=1_700_000_000 * 10**9):
    pipe = Pipeline()
    return [pipe.feed(Record(ts0 + i * 1000, f, 1, len(f))) for i, f in enumerate(frames)]


def _run_stage_only(frames):
    """Dissect + the TCP stage alone (the hypothesis tests run thousands of streams)."""
    from analyzer.packet import Packet
    from analyzer.tcpstage import TcpStage
    from dissectors import dissect_frame
    from dissectors.core import Dissection
    stage = TcpStage(None)
    out = []
    for i, f in enumerate(frames):
        pkt = Packet(i + 1, Record(i, f, 1, len(f)))
        d = Dissection(f)
        d.ctx["packet"] = pkt
        dissect_frame(f, 1, d=d)
        stage.process(pkt, d, True)
        pkt.d = d
        out.append(pkt)
    return out


def toy_payloads(pkts):
    """(frame number, data source name, payload) of every toy PDU."""
    out = []
    for p in pkts:
        for v in p.fields.get("toy.payload", []):
            out.append((p.number, v))
    return out


def test_stage_several_pdus_per_segment_and_one_pdu_over_segments():
    pdus = [toy(b"A" * 5), toy(b"B" * 3), toy(b"C" * 40), toy(b""), toy(b"D" * 7)]
    stream = b"".join(pdus)
    cut = [0, len(pdus[0]) + len(pdus[1]), len(pdus[0]) + len(pdus[1]) + 10,
           len(pdus[0]) + len(pdus[1]) + 30, len(stream)]
    frames = [eth_ip_tcp("10.0.0.1", 40000, "10.0.0.2", 7777, 100, b"", flags="S")]
    for a, b in zip(cut, cut[1:]):
        frames.append(eth_ip_tcp("10.0.0.1", 40000, "10.0.0.2", 7777, 101 + a, stream[a:b]))
    pkts = _run(frames)
    assert toy_payloads(pkts) == [(2, b"A" * 5), (2, b"B" * 3), (5, b"C" * 40), (5, b""), (5, b"D" * 7)]
    # PDUs inside one segment are dissected in the frame; the split one in a new source
    d5 = pkts[4].d
    assert [name for name, _ in d5.sources] == ["Frame", "Reassembled TCP"]
    assert d5.sources[1][1] == pdus[2]
    assert pkts[2].aux["tcp.reassembled_in"] == 5 and pkts[3].aux["tcp.reassembled_in"] == 5
    assert "[TCP segment of a reassembled PDU]" in pkts[2].info
    assert pkts[1].fields["tcp.stream"] == [0]
    # re-dissection with a full tree from pkt.aux only
    pipe = Pipeline(want_tree=True)
    d = pipe.redissect(pkts[4])
    assert d.fields["toy.payload"] == [b"C" * 40, b"", b"D" * 7]
    node = d.root.find("toy.payload")
    assert node.source == 1 and node.offset == 3 and node.length == 40
    d1 = pipe.redissect(pkts[1])
    n1 = [n for n in d1.root.walk() if n.field == "toy.payload"]
    # first PDU's payload bytes sit in the frame right after Ether(14)+IP(20)+TCP(20)+3
    assert n1[0].source == 0 and n1[0].offset == 14 + 20 + 20 + 3


@settings(max_examples=min(settings.default.max_examples, 400))  # heavy: cap the CI profile
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8), st.randoms())
def test_stage_random_segmentation_reorder_and_retransmit(payloads, rnd):
    stream = b"".join(toy(p) for p in payloads)
    cuts = sorted(set([0, len(stream)] + [rnd.randrange(len(stream) + 1) for _ in range(rnd.randrange(6))]))
    segs = [(a, stream[a:b]) for a, b in zip(cuts, cuts[1:]) if b > a]
    frames_in = [(a, s) for a, s in segs]
    if len(frames_in) > 2 and rnd.random() < 0.5:             # swap two segments
        i = rnd.randrange(len(frames_in) - 1)
        frames_in[i], frames_in[i + 1] = frames_in[i + 1], frames_in[i]
    if frames_in and rnd.random() < 0.5:                       # a retransmission
        frames_in.insert(rnd.randrange(len(frames_in) + 1), rnd.choice(segs))
    isn = rnd.randrange(1 << 32)
    frames = [eth_ip_tcp("10.0.0.1", 40000, "10.0.0.2", 7777, isn, b"", flags="S")]
    frames += [eth_ip_tcp("10.0.0.1", 40000, "10.0.0.2", 7777, (isn + 1 + a) & 0xFFFFFFFF, s)
               for a, s in frames_in]
    pkts = _run_stage_only(frames)
    assert [v for _, v in toy_payloads(pkts)] == payloads


def test_stage_midstream_start_and_resync():
    """Capture starts inside a PDU: detection waits for a segment that starts one.  A
    lost segment makes the stage resynchronise on the next recognisable PDU."""
    a, b, c = toy(b"first" * 3), toy(b"second"), toy(b"third")
    frames = [eth_ip_tcp("10.0.0.1", 40001, "10.0.0.2", 7777, 500, a[4:]),        # tail of a
              eth_ip_tcp("10.0.0.1", 40001, "10.0.0.2", 7777, 500 + len(a) - 4, b),
              eth_ip_tcp("10.0.0.1", 40001, "10.0.0.2", 7777, 500 + len(a) - 4 + len(b) + 5000, c)]
    pkts = _run(frames)
    assert toy_payloads(pkts) == [(2, b"second")]
    assert pkts[0].fields["tcp.payload"] == [a[4:]]       # undetected bytes show as data


def test_stage_tcp_port_table_per_segment():
    """Without a stream protocol, a dissector registered in table("tcp.port") gets each
    segment's payload (lower port first)."""
    from dissectors.core import table
    seen = []
    t = table("tcp.port")
    t.register(5555, "seg", lambda b, o, e, d, p: (seen.append(bytes(b[o:e])), d.layer("seg", "seg", o, e - o)))
    try:
        pkts = _run([eth_ip_tcp("10.0.0.1", 40003, "10.0.0.2", 5555, 1, b"hello"),
                     eth_ip_tcp("10.0.0.2", 5555, "10.0.0.1", 40003, 1, b"world")])
    finally:
        t.entries.pop(5555, None)
    assert seen == [b"hello", b"world"]
    assert pkts[0].protocols == "eth:ip:tcp:seg" and pkts[1].fields["tcp.payload"] == [b"world"]


def test_stage_no_protocol_and_other_port():
    frames = [eth_ip_tcp("10.0.0.1", 40002, "10.0.0.2", 8888, 1, toy(b"x"))]     # not port 7777
    pkts = _run(frames)
    assert "toy" not in pkts[0].fields
    assert pkts[0].fields["data.data"] == [toy(b"x")]
    assert pkts[0].protocols == "eth:ip:tcp:data"


# --------------------------------------------------------------------------- IPv4 defragmentation

def test_ipv4_defrag_matches_tshark(tshark, tmp_path):
    from scapy.all import IP, UDP, Ether, fragment
    payload = bytes(range(256)) * 6
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.1.0.1", dst="10.1.0.2", id=0x1234) / \
        UDP(sport=5000, dport=6000) / payload
    frags = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / f)
             for f in fragment(pkt[IP], fragsize=400)]
    assert len(frags) == 4
    frags = [frags[1], frags[0], frags[3], frags[2]]       # out of order
    path = tmp_path / "frag.pcap"
    with PcapWriter(path, linktype=1) as w:
        for i, f in enumerate(frags):
            w.write((1_700_000_000 * 10**9 + i * 1000, f, 1))
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-E", "separator=|",
                          "-e", "frame.number", "-e", "udp.srcport", "-e", "udp.length", "-e", "data.data"],
                         capture_output=True, text=True).stdout.splitlines()
    want = {int(r.split("|")[0]): r.split("|")[1:] for r in out if r.split("|")[1]}
    from analyzer.capture import read_capture
    pipe = Pipeline()
    pkts = [pipe.feed(r) for r in read_capture(path)]
    got = {p.number: [str(p.fields["udp.srcport"][0]), str(p.fields["udp.length"][0]),
                      p.fields["data.data"][0].hex()] for p in pkts if "udp.srcport" in p.fields}
    assert got == want and list(got) == [4]
    assert pkts[3].d.sources[1][0] == "Reassembled IPv4"
    assert pkts[3].fields["ip.reassembled.length"] == [8 + len(payload)]
    assert pkts[0].aux["ip.reassembled_in"] == 4
    assert "Fragmented IP protocol" in pkts[0].info
    d = Pipeline(want_tree=True).redissect(pkts[3])
    assert d.fields["data.data"] == [payload]


def test_ipv4_defrag_timeout_and_bounds():
    from scapy.all import IP, UDP, Ether, fragment
    from analyzer import ipfrag
    pkt = IP(src="10.1.0.1", dst="10.1.0.2", id=7) / UDP(sport=1, dport=2) / (b"z" * 1000)
    f = [bytes(Ether() / x) for x in fragment(pkt, fragsize=400)]
    pipe = Pipeline()
    t0 = 10**18
    pipe.feed(Record(t0, f[0], 1, len(f[0])))
    stage = pipe.stage("ipdefrag")
    assert len(stage.pending) == 1
    # the rest arrives after the timeout: the first fragment is forgotten
    pkts = [pipe.feed(Record(t0 + ipfrag.TIMEOUT_NS + 1 + i, x, 1, len(x))) for i, x in enumerate(f[1:])]
    assert all("udp.srcport" not in p.fields for p in pkts) and stage.timed_out == 1
    for i in range(ipfrag.MAX_PENDING + 10):
        x = bytes(Ether() / IP(src="10.9.0.1", dst="10.9.0.2", id=i, flags="MF", proto=17) / (b"q" * 8))
        pipe.feed(Record(t0 + ipfrag.TIMEOUT_NS * 2, x, 1, len(x)))
    assert len(stage.pending) <= ipfrag.MAX_PENDING


def test_ipv6_defrag_matches_tshark(tshark, tmp_path):
    from scapy.all import UDP, Ether, IPv6, IPv6ExtHdrFragment, fragment6
    payload = bytes(range(200)) * 9
    pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="2001:db8::1", dst="2001:db8::2") /
           IPv6ExtHdrFragment(id=0xABCDEF) / UDP(sport=1628, dport=7000) / payload)
    frags = [bytes(f) for f in fragment6(pkt, 600)]
    assert len(frags) >= 3
    frags = frags[::-1]                                   # last fragment first
    path = tmp_path / "frag6.pcap"
    with PcapWriter(path, linktype=1) as w:
        for i, f in enumerate(frags):
            w.write((1_700_000_000 * 10**9 + i * 1000, f, 1))
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-E", "separator=|",
                          "-e", "frame.number", "-e", "udp.srcport", "-e", "udp.length"],
                         capture_output=True, text=True).stdout.splitlines()
    want = {int(r.split("|")[0]): r.split("|")[1:] for r in out if r.split("|")[1]}
    from analyzer.capture import read_capture
    pipe = Pipeline()
    pkts = [pipe.feed(r) for r in read_capture(path)]
    got = {p.number: [str(p.fields["udp.srcport"][0]), str(p.fields["udp.length"][0])]
           for p in pkts if "udp.srcport" in p.fields}
    assert got == want and list(got) == [len(frags)]
    last = pkts[-1]
    assert last.d.sources[1][0] == "Reassembled IPv6" and last.d.sources[1][1][8:] == payload
    assert "IPv6 fragment" in pkts[0].info and pkts[0].aux["ip.reassembled_in"] == len(frags)
