"""IEC 62056-47 wrapper over TCP/UDP: the htanwar922 captures (with DNS noise) against an
independent count of wrapper headers in tshark's per-direction TCP payloads; the pcap_*
vectors; UDP detection; fuzzing."""
from __future__ import annotations

import struct
import subprocess

import pytest
from hypothesis import given, strategies as st

import analyzer
from analyzer.packet import Record
from analyzer.pipeline import Pipeline
from dissectors import load_all, wrapper
from dissectors.core import Dissection

load_all()
HT = "htanwar922-wireshark-dlms"


def _tshark_tcp(tshark, path):
    out = subprocess.run([tshark, "-r", str(path), "-Y", "tcp.len > 0", "-T", "fields", "-e", "frame.number",
                          "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.payload"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = []
    for line in out.splitlines():
        num, stream, sport, pay = line.split("\t")
        rows.append((int(num), int(stream), int(sport), bytes.fromhex(pay)))
    return rows


def _independent_wrapper_pdus(rows):
    """Per TCP direction: concatenate payloads, read header version/wports/length, step by
    8 + length.  Returns {frame number completing a PDU: [(src, dst, length), ...]}."""
    bufs: dict = {}
    out: dict = {}
    for num, stream, sport, pay in rows:
        key = (stream, sport)
        b = bufs.get(key, b"") + pay
        while len(b) >= 8:
            ver, src, dst, length = struct.unpack(">HHHH", b[:8])
            assert ver == 1
            if len(b) < 8 + length:
                break
            out.setdefault(num, []).append((src, dst, length))
            b = b[8 + length:]
        bufs[key] = b
    return out


@pytest.mark.parametrize("name", ["Output-Ciphered.pcap", "Output-EPRI.pcap", "Output.pcap",
                                  "Output-Ciphered-HLS-AuthEnc.pcap", "Output-Ciphered-Director.pcap"])
def test_wrapper_pdus_match_independent_count(pcaps, tshark, name):
    path = pcaps / HT / name
    expected = _independent_wrapper_pdus(_tshark_tcp(tshark, path))
    ours = {}
    for p in analyzer.open_capture(path):
        f = p.fields
        if "wrapper" in f:
            ours[p.number] = list(zip(f["wrapper.srcport"], f["wrapper.dstport"], f["wrapper.length"]))
            assert len(f["wrapper"]) == len(ours[p.number])
            assert len(f.get("dlms", [])) >= 1
    assert ours == expected
    assert sum(len(v) for v in ours.values()) >= (3 if "Director" in name else 20)


def test_dns_noise_not_dlms(pcaps, tshark):
    path = pcaps / HT / "Output-Ciphered.pcap"
    out = subprocess.run([tshark, "-r", str(path), "-Y", "dns or icmp", "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    noise = {int(x) for x in out.split()}
    assert len(noise) >= 20
    seen = 0
    for p in analyzer.open_capture(path):
        if p.number in noise:
            seen += 1
            assert "wrapper" not in p.fields and "dlms" not in p.fields and "hdlc" not in p.fields
    assert seen == len(noise)


def test_vector_epri_aarq(vectors):
    v = next(v for v in vectors if v["name"] == "pcap_epri_plain_1")
    b = bytes.fromhex(v["hex"])
    d = Dissection(b, True)
    wrapper.dissect_pdus(b, 0, len(b), d, d.root)
    w = v["expected"]["wrapper"]
    assert d.fields["wrapper.version"] == [w["version"]]
    assert d.fields["wrapper.srcport"] == [w["source_wport"]]
    assert d.fields["wrapper.dstport"] == [w["destination_wport"]]
    assert d.fields["wrapper.length"] == [w["length"]]
    assert d.fields["dlms.apdu"][0] == "aarq"


def _udp(payload, sport=50000, dport=4059):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    pkt = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=sport, dport=dport) / payload)
    return Record(0, pkt, 1, len(pkt))


def test_udp_wrapper_and_non_wrapper(vectors):
    v = next(v for v in vectors if v["name"] == "pcap_gurux_plain_3")
    pdu = bytes.fromhex(v["hex"])
    pipe = Pipeline()
    f = pipe.feed(_udp(pdu)).fields
    assert f["wrapper.length"] == [13] and f["dlms.obis"] == ["0.0.40.0.0.255"]
    # two PDUs in one datagram
    f = pipe.feed(_udp(pdu + wrapper.build(1, 16, bytes.fromhex("C401C1000600000001")))).fields
    assert f["wrapper.srcport"] == [1, 1] and f["dlms.apdu"] == ["get-request", "get-response"]
    # a DNS query sent to port 4061 is not misread
    dns = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")
    f = pipe.feed(_udp(dns, sport=53, dport=4061)).fields
    assert "wrapper" not in f and "dlms" not in f and "data" in f
    # version 1 but wrong length: not claimed
    bad = pdu[:6] + b"\x00\x30" + pdu[8:]
    f = pipe.feed(_udp(bad)).fields
    assert "wrapper" not in f


def test_tcp_pdu_split_and_merged():
    """One PDU over three segments, then three PDUs in one segment."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    apdu = bytes.fromhex("C001C1000F0000280000FF0200")
    one = wrapper.build(16, 1, apdu)
    pipe = Pipeline()
    seq = 1000
    pkts = []

    def seg(payload, flags="PA"):
        nonlocal seq
        b = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=4059, seq=seq, flags=flags) / payload)
        seq += len(payload) + (1 if "S" in flags else 0)
        pkts.append(pipe.feed(Record(len(pkts), b, 1, len(b))))

    seg(b"", "S")
    seg(one[:9])
    seg(one[9:14])
    seg(one[14:])
    seg(one * 3)
    assert "dlms" not in pkts[1].fields and "dlms" not in pkts[2].fields
    assert pkts[3].fields["wrapper.length"] == [len(apdu)] and pkts[3].fields["dlms.apdu"] == ["get-request"]
    assert pkts[4].fields["wrapper.length"] == [len(apdu)] * 3
    assert pkts[4].info.startswith("[3 wrapper PDUs]")


@given(st.binary(max_size=200))
def test_fuzz_random(data):
    for tree in (False, True):
        d = Dissection(data, tree)
        wrapper.dissect_udp(data, 0, len(data), d, d.root)
        d = Dissection(data, tree)
        wrapper.dissect_pdus(data, 0, len(data), d, d.root)
        wrapper.stream_detect(data)
        wrapper.stream_pdu_len(data, 0)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=60), st.integers(-3, 3),
       st.integers(0, 80))
def test_fuzz_header_lengths(src, dst, apdu, delta, cut):
    b = wrapper.build(src, dst, apdu)
    ln = max(0, min(0xFFFF, len(apdu) + delta))
    b = (b[:6] + ln.to_bytes(2, "big") + b[8:])[:cut]
    d = Dissection(b, True)
    wrapper.dissect_udp(b, 0, len(b), d, d.root)
    if delta == 0 and cut >= len(b) and len(apdu):
        pass
    if "wrapper" in d.fields:
        assert d.fields["wrapper.length"][0] == ln
