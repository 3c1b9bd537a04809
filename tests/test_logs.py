"""Sniffer logs (line logs, offset hex dumps, CSV) read as captures; text2pcap and tshark
read the same text as the independent source."""
from __future__ import annotations

import os
import shutil
import subprocess
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from analyzer.capture import CaptureError, open_reader, read_capture
from analyzer.logs import LogError, guess_linktype, parse_log, read_log


def need_text2pcap():
    """text2pcap ships with tshark (wireshark-common): skip locally, fail in strict CI."""
    path = shutil.which("text2pcap")
    if path is None:
        if os.environ.get("LONSCOPE_STRICT") == "1":
            pytest.fail("LONSCOPE_STRICT=1 but text2pcap is not installed")
        pytest.skip("text2pcap is not installed (apt-get install tshark)")
    return path


def tshark_rows(tshark, path, *fields):
    cmd = [tshark, "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


def ns(epoch: str) -> int:
    return int(Decimal(epoch) * 1_000_000_000)


DIRS = {"0x00000001": "rx", "0x00000002": "tx"}


def test_tshark_hex_dump_reads_back_as_the_capture(pcaps, tshark, tmp_path):
    src = pcaps / "ndpi" / "dlms.pcap"
    dump = tmp_path / "dlms.txt"
    dump.write_bytes(subprocess.run([tshark, "-r", str(src), "-x"], capture_output=True).stdout)
    got = list(read_capture(dump))
    want = list(read_capture(src))
    assert [r.data for r in got] == [r.data for r in want] and len(got) == 27
    assert {r.linktype for r in got} == {1}         # Ethernet recognised from the bytes


def test_offset_dump_matches_text2pcap(tshark, tmp_path):
    t2p = need_text2pcap()
    text = (
        "# LonTalk sniffer dump\n"
        "I 2024-01-02 10:00:00.123456\n"
        "0000  00 09 01 a9 01 aa 01 23   .......#\n"
        "0008  45 67                     Eg\n"
        "\n"
        "O 2024-01-02 10:00:01.5\n"
        "0000 aa bb cc dd ee ff 00 11 22 33 44 55 66 77 88 99\n"
        "0010 ab cd\n"
        "I 2024-01-02 10:00:02.000001\n"
        "000000 01 02 03 04 05 06 07 08  09 0a 0b 0c 0d 0e 0f 10  |................|\n"
        "000010 11 12 13                                          |...|\n"
    )
    log = tmp_path / "dump.txt"
    log.write_text(text)
    out = tmp_path / "dump.pcapng"
    subprocess.run([t2p, "-q", "-D", "-t", "%Y-%m-%d %H:%M:%S.%f", "-l", "147", str(log), str(out)],
                   check=True, env={**os.environ, "TZ": "UTC"}, capture_output=True)
    want = tshark_rows(tshark, out, "frame.time_epoch", "data.data", "frame.packet_flags_direction")
    reader = open_reader(log)
    got = list(reader)
    assert reader.format == "log" and reader.error is None
    assert [(r.ts_ns, r.data.hex(), r.comments) for r in got] == \
        [(ns(w[0]), w[1], (f"dir={DIRS[w[2]]}",)) for w in want]
    # none of these frames ends in its CRC-16: the file is read as raw LonTalk without CRC
    assert len(got) == 3 and all(r.linktype == 149 for r in got)


def test_line_log_matches_text2pcap_regex_mode(tshark, tmp_path):
    t2p = need_text2pcap()
    lines = ["> 10:00:00.123456 000901a901aa01234567", "< 10:00:01.5 aabbccdd",
             "> 11:00:00.25 ff", "< 23:59:59.999999999 0102"]
    log = tmp_path / "line.log"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "line.pcapng"
    subprocess.run([t2p, "-q", "-r", r"^(?<dir>[<>])\s(?<time>\d+:\d\d:\d\d(.\d+)?)\s(?<data>[0-9a-fA-F]+)$",
                    "-t", "%H:%M:%S.%f", "-l", "147", str(log), str(out)],
                   check=True, env={**os.environ, "TZ": "UTC"}, capture_output=True)
    want = tshark_rows(tshark, out, "frame.time_epoch", "data.data", "frame.packet_flags_direction")
    got = list(read_capture(log))
    day = 86400 * 10**9
    # text2pcap puts a bare time of day on today's date: compare the time of day
    assert len(got) == len(want) == 4
    for r, w in zip(got, want):
        assert r.data.hex() == w[1] and r.comments == (f"dir={DIRS[w[2]]}",)
        assert r.ts_ns % day == ns(w[0]) % day
    assert got[3].ts_ns % day == day - 1


def test_line_log_variants_and_errors(tmp_path):
    log = tmp_path / "capture.log"
    log.write_text(
        "2024-01-02 10:00:00.123 RX 01 23 45 67\n"
        "2024-01-02T10:00:00.5+01:00 TX 0a:0b:0c\n"
        "12.345 <- 0123\n"
        "[0.250] TX: 0a 0b 0c\n"
        "IN 1.5 dead beef\n"
        "// comment\n"
        "01 23 45 67\n"
        "this line is not a frame\n"
        "02 02\n")
    r = open_reader(log)
    got = list(r)
    assert [x.data.hex() for x in got] == ["01234567", "0a0b0c", "0123", "0a0b0c", "deadbeef", "01234567"]
    assert got[0].ts_ns == 1704189600_123_000_000
    assert got[1].ts_ns == 1704189600_500_000_000 - 3600 * 10**9
    assert got[2].ts_ns == 12_345_000_000 and got[3].ts_ns == 250_000_000 and got[4].ts_ns == 1_500_000_000
    assert got[5].ts_ns == got[4].ts_ns + 1_000_000        # no time stamp: 1 ms after the previous
    assert [x.comments for x in got[:5]] == [("dir=rx",), ("dir=tx",), ("dir=rx",), ("dir=tx",), ("dir=rx",)]
    assert r.error == "capture.log: line 8: cannot read a frame (time stamp, direction, hex bytes): " \
                      "'this line is not a frame'; read 6 frames"
    with pytest.raises(LogError, match="line 8"):
        read_log(log)
    bad = tmp_path / "bad.log"
    bad.write_text("hello there\nnot hex\n")
    with pytest.raises(CaptureError, match="bad.log: not a pcap, pcapng or sniffer log"):
        open_reader(bad)


def test_csv_logs(tmp_path):
    f = tmp_path / "export.csv"
    f.write_text("No.;Time;Direction;Data\n"
                 "1;2024-01-02 10:00:00.25;RX;00 09 01 a9\n"
                 "2;2024-01-02 10:00:01;TX;0a0b\n"
                 "3;;;ff\n")
    got = list(read_capture(f))
    assert [(r.ts_ns, r.data.hex(), r.comments) for r in got] == [
        (1704189600_250_000_000, "000901a9", ("dir=rx",)),
        (1704189601_000_000_000, "0a0b", ("dir=tx",)),
        (1704189601_001_000_000, "ff", ())]
    # configurable columns, no header
    g = tmp_path / "raw.csv"
    g.write_text("0102,5.5,x\n0304,6.25,y\n")
    recs = read_log(g, layout="csv", columns={"data": 0, "time": 1})
    assert [(r.ts_ns, r.data) for r in recs] == [(5_500_000_000, b"\x01\x02"), (6_250_000_000, b"\x03\x04")]
    h = tmp_path / "broken.csv"
    h.write_text("time,data\n1.0,0102\n2.0,zz\n")
    r = open_reader(h)
    assert len(list(r)) == 1 and r.error.startswith("broken.csv: line 3: data column is not hex bytes")


def test_linktype_guess():
    from scapy.all import IP, UDP, Ether
    eth = bytes(Ether() / IP() / UDP())
    assert guess_linktype(eth) == 1
    assert guess_linktype(bytes(IP() / UDP())) == 101
    assert guess_linktype(bytes.fromhex("1a0a") + bytes(10)) == 0x950      # SICB 0x1A, length 10
    assert guess_linktype(bytes.fromhex("000901a901aa0123")) == 147
    recs, err = parse_log(("1.0 " + eth.hex() + "\n2.0 000901a901aa0123\n").encode())
    assert [r.linktype for r in recs] == [1, 149] and err is None      # no CRC on the frame


def test_log_with_crcs_is_user0_and_shows_bad_crc():
    """A log whose frames end in their CRC-16 is read as LINKTYPE_USER0; a corrupted CRC in
    it shows as "bad" (the CRC is checked with binascii.crc_hqx, independent of the decoder)."""
    from binascii import crc_hqx
    from analyzer.pipeline import Pipeline
    npdus = [bytes.fromhex("0009010105020301") + bytes([i]) for i in range(5)]
    frames = [n + (crc_hqx(n, 0xFFFF) ^ 0xFFFF).to_bytes(2, "big") for n in npdus]
    frames[2] = frames[2][:-1] + bytes([frames[2][-1] ^ 0x55])          # one corrupted CRC
    text = "".join(f"{i}.0 RX {f.hex()}\n" for i, f in enumerate(frames)).encode()
    recs, err = parse_log(text, "crc.log")
    assert err is None and [r.linktype for r in recs] == [147] * 5
    pipe = Pipeline()
    status = [pipe.feed(r).fields["lon.crc.status"] for r in recs]
    assert status == [["good"], ["good"], ["bad"], ["good"], ["good"]]
    # the same NPDUs without CRC: USER2, CRC "absent", and the last NPDU byte stays payload
    recs2, _ = parse_log("".join(f"{i}.0 {n.hex()}\n" for i, n in enumerate(npdus)).encode(), "nocrc.log")
    assert [r.linktype for r in recs2] == [149] * 5
    pkts = [Pipeline().feed(r) for r in recs2]
    assert all(p.fields["lon.crc.status"] == ["absent"] for p in pkts)
    assert [p.fields["lon.srcnode"] for p in pkts] == [[1]] * 5


@settings(max_examples=min(settings.default.max_examples, 800))  # heavy: cap the CI profile
@given(st.lists(st.text(alphabet="0123456789abcdefABCDEF :.-<>RXTIO[]\t,;|zq", max_size=60), max_size=12))
def test_fuzz_log_text_never_raises_unexpectedly(lines):
    text = "\n".join(lines).encode()
    try:
        recs, err = parse_log(text, "fz")
    except LogError as e:
        assert "\n" not in str(e) and str(e).startswith("fz: ")
        return
    for r in recs:
        assert isinstance(r.data, bytes) and r.data and r.linktype in (1, 101, 147, 149, 0x950)
    assert err is None or err.startswith("fz: line ")
