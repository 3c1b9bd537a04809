"""IEC 62056-46 HDLC: nDPI capture (HDLC in TCP 4060 / UDP 4059) against tshark's payloads
split by an independent test-side walker and parsed by Gurux's translator; the nDPI
vectors; segmentation reassembly; fuzzing."""
from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings, strategies as st

import analyzer
from analyzer.packet import Record
from analyzer.pipeline import Pipeline
from dissectors import hdlc, load_all
from dissectors.core import Dissection

load_all()

LLC_CMD = b"\xe6\xe6\x00"
LLC_RSP = b"\xe6\xe7\x00"


def _crc_x25_bitwise(data: bytes) -> int:
    """Catalogue definition, bit by bit (independent of the module's table)."""
    crc = 0xFFFF
    for b in data:
        for i in range(8):
            bit = (b >> i) & 1
            top = crc & 1
            crc >>= 1
            if top ^ bit:
                crc ^= 0x8408
    return crc ^ 0xFFFF


def test_crc_catalogue_check_value():
    assert hdlc.crc16_x25(b"123456789") == 0x906E
    assert _crc_x25_bitwise(b"123456789") == 0x906E
    for data in (b"", b"\x00", bytes(range(200))):
        assert hdlc.crc16_x25(data) == _crc_x25_bitwise(data)


def _dissect(hexstr: str, tree: bool = True) -> Dissection:
    b = bytes.fromhex(hexstr)
    d = Dissection(b, tree)
    hdlc.dissect_frames(b, 0, len(b), d, d.root)
    return d


def _vec(vectors, name):
    return next(v for v in vectors if v["name"] == name)


def test_ndpi_vector_aarq_bad_fcs(vectors):
    v = _vec(vectors, "ndpi_hdlc_udp_aarq_lls_bad_fcs")
    d = _dissect(v["hex"])
    f = d.fields
    # expected: "A044 (type 3, no segmentation, length 68)", dst/src 0x03, control 0x10 I P=1
    assert f["hdlc.format"] == [0xA044] and f["hdlc.length"] == [68]
    assert f["hdlc.segmented"] == [False]
    assert f["hdlc.dst"] == [0x03] and f["hdlc.src"] == [0x03]
    assert f["hdlc.server.upper"] == [1] and f["hdlc.client"] == [1]
    assert f["hdlc.control"] == [0x10] and f["hdlc.frame_type"] == ["I"]
    assert f["hdlc.ns"] == [0] and f["hdlc.nr"] == [0] and f["hdlc.pf"] == [True]
    assert f["hdlc.hcs"] == [0x9465] and f["hdlc.hcs.status"] == ["good"]     # bytes 65 94
    assert f["hdlc.fcs"] == [0xDB0B] and f["hdlc.fcs.status"] == ["bad"]      # bytes 0B DB
    assert any("Bad HDLC FCS" in e.message and "0xe999" in e.message for e in d.expert)  # computed 99 E9
    assert f["hdlc.llc"] == [LLC_CMD]
    # the frame is still decoded: the LLS password reaches the ACSE layer
    assert f["dlms.apdu"][0] == "aarq"
    assert f["dlms.acse.password"] == ["01234567"]
    assert f["cosem.mechanism_name"] == ["2.16.756.5.8.2.1"]
    assert f["dlms.client_max_receive_pdu_size"] == [128]


def test_ndpi_vector_aare(vectors):
    v = _vec(vectors, "ndpi_hdlc_udp_aare")
    f = _dissect(v["hex"]).fields
    assert f["hdlc.length"] == [55] and f["hdlc.control"] == [0x30]
    assert f["hdlc.hcs"] == [0xCAEF] and f["hdlc.hcs.status"] == ["good"]
    assert f["hdlc.fcs"] == [0xB351] and f["hdlc.fcs.status"] == ["good"]
    assert f["hdlc.llc"] == [LLC_RSP]
    assert f["dlms.apdu"][0] == "aare" and f["dlms.acse.result"] == ["accepted"]
    assert f["dlms.server_max_receive_pdu_size"] == [125] and f["dlms.vaa_name"] == [7]


# --------------------------------------------------------------------------- whole capture

def _tshark_payloads(tshark, path):
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "ip.src",
                          "-e", "tcp.srcport", "-e", "udp.srcport", "-e", "tcp.payload", "-e", "udp.payload"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = []
    for line in out.splitlines():
        num, ip, tsp, usp, tpay, upay = (line.split("\t") + [""] * 6)[:6]
        rows.append((int(num), ip, tsp or usp, "tcp" if tsp else "udp", bytes.fromhex(tpay or upay)))
    return rows


def _independent_frames(rows):
    """Walk each direction's bytes: 7E, 2-byte format (length in the low 11 bits), body,
    closing 7E.  Returns [(frame number completing it, frame bytes)]."""
    bufs: dict = {}
    frames = []
    for num, ip, port, proto, pay in rows:
        key = (proto, ip, port)
        b = bufs.get(key, b"") + pay
        while len(b) >= 3 and b[0] == 0x7E:
            n = ((b[1] << 8 | b[2]) & 0x7FF) + 2
            if len(b) < n:
                break
            assert b[n - 1] == 0x7E
            frames.append((num, b[:n]))
            b = b[n:]
        bufs[key] = b
    return frames


def _gurux_frame(frame: bytes):
    from gurux_dlms import GXByteBuffer, GXDLMSTranslator
    from gurux_dlms.enums import TranslatorOutputType
    t = GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML)
    try:
        xml = t.messageToXml(GXByteBuffer(frame))
    except Exception:
        return None
    import re
    vals = dict(re.findall(r'<(TargetAddress|SourceAddress|FrameType) Value="([0-9A-Fa-f]+)"', xml))
    return int(vals["TargetAddress"], 16), int(vals["SourceAddress"], 16), int(vals["FrameType"], 16)


def test_ndpi_capture_every_frame(pcaps, tshark):
    path = pcaps / "ndpi" / "dlms.pcap"
    expected = _independent_frames(_tshark_payloads(tshark, path))
    assert len(expected) > 100
    ours = []
    by_num = {}
    for p in analyzer.open_capture(path):
        f = p.fields
        n = len(f.get("hdlc", []))
        by_num[p.number] = p
        for i in range(n):
            ours.append((p.number, f["hdlc.dst"][i], f["hdlc.src"][i], f["hdlc.control"][i],
                         f["hdlc.fcs.status"][i]))
    assert len(ours) == len(expected)
    bad = 0
    for (num, dst, src, ctrl, fcs), (enum, frame) in zip(ours, expected):
        assert num == enum
        assert (dst, src, ctrl) == (frame[3], frame[4], frame[5])
        g = _gurux_frame(frame)
        if fcs == "bad":
            bad += 1
            assert g is None          # Gurux rejects a wrong CRC
        else:
            assert g == (dst >> 1, src >> 1, ctrl)
    assert bad == 2                   # the two edited AARQ frames: flagged, not dropped
    # both AARQ frames still reach the ACSE layer; the UDP one carries LLS "01234567"
    aarqs = [p for p in by_num.values() if "aarq" in p.fields.get("dlms.apdu", [])]
    assert len(aarqs) == 2
    assert any(p.fields.get("dlms.acse.password") == ["01234567"] for p in aarqs)
    # frame 13 ends with a partial frame completed by frame 15 (TCP reassembly)
    assert by_num[15].fields["dlms.apdu"] == ["set-request"]
    assert by_num[15].fields["dlms.obis"] == ["1.1.0.0.2.255"]
    # frame 26 is a segmented I-frame: flagged as segment, no APDU decoded from it
    assert by_num[26].fields["hdlc.segmented"] == [True]
    assert "dlms" not in by_num[26].fields
    # UA parameter negotiation (Gurux: MaxInfoTX/RX 128, window 1)
    ua = by_num[6].fields
    assert ua["hdlc.frame_type"] == ["UA"]
    assert ua["hdlc.param.max_info_tx"] == [128] and ua["hdlc.param.max_info_rx"] == [128]
    assert ua["hdlc.param.window_tx"] == [1] and ua["hdlc.param.window_rx"] == [1]


# --------------------------------------------------------------------------- builder / segmentation

def test_builder_accepted_by_gurux():
    apdu = bytes.fromhex("C001C1000F0000280000FF0200")
    fr = hdlc.build_frame(1, 16, 0x32, apdu, llc=LLC_CMD)
    assert _gurux_frame(fr) == (1, 16, 0x32)
    two = hdlc.build_frame(1, 16, 0x10, apdu, llc=LLC_CMD, dst_size=2, dst_lower=0x11)
    f = _dissect(two.hex()).fields
    assert f["hdlc.server.upper"] == [1] and f["hdlc.server.lower"] == [0x11]
    assert f["hdlc.dst.size"] == [2]
    four = hdlc.build_frame(0x1234, 16, 0x10, apdu, llc=LLC_CMD, dst_size=4, dst_lower=0x2345)
    f = _dissect(four.hex()).fields
    assert f["hdlc.server.upper"] == [0x1234] and f["hdlc.server.lower"] == [0x2345]
    assert f["hdlc.fcs.status"] == ["good"] and f["dlms.apdu"] == ["get-request"]


def _udp_record(payload: bytes, sport=40000, dport=4059, ts=0) -> Record:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    pkt = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=sport, dport=dport) / payload)
    return Record(ts, pkt, 1, len(pkt))


def test_segmented_iframes_reassembled():
    # a get-response with a long octet-string, split over three I-frames
    value = bytes(range(200))
    apdu = bytes.fromhex("C401C100") + b"\x09\x81\xc8" + value
    info = LLC_RSP + apdu
    parts = [info[:80], info[80:160], info[160:]]
    frames = [hdlc.build_frame(16, 1, 0x10 | (i << 1), part, segmented=i < 2) for i, part in enumerate(parts)]
    pipe = Pipeline()
    pkts = [pipe.feed(_udp_record(fr, sport=4059, dport=40000, ts=i)) for i, fr in enumerate(frames)]
    assert [p.fields["hdlc.segmented"] for p in pkts] == [[True], [True], [False]]
    assert "dlms" not in pkts[0].fields and "dlms" not in pkts[1].fields
    last = pkts[2].fields
    assert last["hdlc.reassembled.frames"] == [3]
    assert last["hdlc.reassembled.length"] == [len(info)]
    assert last["dlms.apdu"] == ["get-response"]
    assert value in [v for v in last.get("dlms.data.value", []) if isinstance(v, bytes)]
    # re-dissection with a full tree uses only pkt.aux
    d = pipe.redissect(pkts[2])
    assert d.fields["dlms.apdu"] == ["get-response"]
    assert any(name == "Reassembled HDLC" for name, _ in d.sources)


def test_snrm_parameters_and_shared_flags():
    snrm = hdlc.build_frame(1, 16, 0x93, bytes.fromhex("818012050180060180070400000001080400000001"))
    rr = hdlc.build_frame(1, 16, 0x31)
    shared = snrm + rr[1:]            # the closing flag of the first frame opens the second
    f = _dissect(shared.hex()).fields
    assert f["hdlc.frame_type"] == ["SNRM", "RR"]
    assert f["hdlc.nr"] == [1] and f["hdlc.param.window_rx"] == [1]
    assert f["hdlc.fcs.status"] == ["good", "good"]


# --------------------------------------------------------------------------- fuzz

VALID = [hdlc.build_frame(1, 16, 0x10, LLC_CMD + bytes.fromhex("C001C1000F0000280000FF0200")),
         hdlc.build_frame(16, 1, 0x73, bytes.fromhex("818012050180060180070400000001080400000001")),
         hdlc.build_frame(1, 16, 0x10, b"\x01\x02", segmented=True)]


@given(st.binary(max_size=300))
def test_fuzz_random(data):
    for tree in (False, True):
        d = Dissection(data, tree)
        hdlc.dissect_frames(data, 0, len(data), d, d.root)
        hdlc.stream_pdu_len(data, 0) if len(data) else None
        hdlc.stream_detect(data)


@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
       st.integers(0, 400))
def test_fuzz_mutated(frame, muts, cut):
    b = bytearray(frame)
    for pos, val in muts:
        if b:
            b[pos % len(b)] = val
    b = bytes(b[:cut])
    for tree in (False, True):
        d = Dissection(b, tree)
        hdlc.dissect_frames(b, 0, len(b), d, d.root)
        d2 = Dissection(b, tree)
        hdlc.stream_dissect(b, 0, len(b), d2, d2.root)


def test_serial_linktype_records(vectors):
    """LINKTYPE_USER1 (148): raw HDLC bytes from a serial line, one record per read."""
    aarq = bytes.fromhex(_vec(vectors, "ndpi_hdlc_udp_aarq_lls_bad_fcs")["hex"])
    aare = bytes.fromhex(_vec(vectors, "ndpi_hdlc_udp_aare")["hex"])
    pipe = Pipeline()
    p1 = pipe.feed(Record(0, aarq + aare, hdlc.LINKTYPE_DLMS_HDLC, len(aarq + aare)))
    assert p1.protocols.startswith("hdlc:dlms") and p1.fields["frame.len"] == [len(aarq + aare)]
    assert [a for a in p1.fields["dlms.apdu"] if a in ("aarq", "aare")] == ["aarq", "aare"]
    assert p1.fields["hdlc.fcs.status"] == ["bad", "good"]
    assert p1.info.startswith("[2 HDLC frames]")
    assert (p1.source, p1.destination) == ("server 1", "client 1")     # the last frame (AARE)


@settings(max_examples=min(settings.default.max_examples, 300))   # a whole pipeline per example
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.binary(max_size=30), st.integers(0, 2)), max_size=8))
def test_fuzz_segment_sequences(frames):
    """Random sequences of segmented / final I-frames through the reassembly stage."""
    pipe = Pipeline()
    for seg, llc, info, who in frames:
        src, dst = ((16, 1), (1, 16), (17, 1))[who]
        fr = hdlc.build_frame(dst, src, 0x10, info, segmented=seg, llc=LLC_RSP if llc else None)
        p = pipe.feed(Record(0, fr, hdlc.LINKTYPE_DLMS_HDLC, len(fr)))
        assert not any("stage failed" in e.message for e in p.d.expert)
        pipe.redissect(p)
