"""Capture readers and writers, checked against tshark reading the same files."""
from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from analyzer.capture import (CaptureError, CaptureReader, index_capture, open_reader, read_capture,
                              read_record_at)
from analyzer.packet import Record
from analyzer.pcapwriter import PcapngWriter, PcapWriter

EPRI = "htanwar922-wireshark-dlms/Output-EPRI.pcap"
DIRECTOR = "htanwar922-wireshark-dlms/Output-Ciphered-Director.pcap"   # DLT_NULL


def tshark_frames(tshark: str, path, extra=()) -> list[tuple]:
    """(time_epoch in ns, frame.len, frame.cap_len, *extra) per frame, as tshark reads it."""
    cmd = [tshark, "-r", str(path), "-T", "fields", "-E", "separator=|",
           "-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len"]
    for e in extra:
        cmd += ["-e", e]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        ts = int(Decimal(parts[0]) * 1_000_000_000) if parts[0] else None   # None: no time stamp
        rows.append((ts, int(parts[1]), int(parts[2]), *parts[3:]))
    return rows


def ours(path) -> list[tuple]:
    return [(r.ts_ns, r.orig_len, len(r.data)) for r in read_capture(path)]


def test_shared_pcaps_match_tshark(pcaps, tshark):
    files = sorted(pcaps.glob("*/*.pcap"))
    assert len(files) == 8
    for f in files:
        reader = open_reader(f)
        recs = list(reader)
        assert reader.error is None
        assert [(r.ts_ns, r.orig_len, len(r.data)) for r in recs] == tshark_frames(tshark, f), f.name
    # link types per the pcaps README
    assert next(read_capture(pcaps / DIRECTOR)).linktype == 0
    assert next(read_capture(pcaps / EPRI)).linktype == 1


def test_pcapng_comments_and_two_interfaces(pcaps, tshark, tmp_path):
    a, b = pcaps / EPRI, pcaps / DIRECTOR
    merged = tmp_path / "m.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(merged), str(a), str(b)], check=True,
                   capture_output=True)
    com = tmp_path / "c.pcapng"
    subprocess.run(["editcap", "-a", "2:hello", "-a", "5:phase=3 ssi=0x1234", str(merged), str(com)],
                   check=True, capture_output=True)
    recs = list(read_capture(com))
    want = tshark_frames(tshark, com, extra=["frame.comment", "frame.interface_id"])
    assert len(recs) == len(want) == 55
    for r, w in zip(recs, want):
        assert (r.ts_ns, r.orig_len, len(r.data)) == w[:3]
        assert ",".join(r.comments) == w[3]
        assert r.iface == int(w[4])
    assert {r.linktype for r in recs} == {0, 1}
    assert recs[1].comments == ("hello",)
    # raw bytes identical to the source file's records
    src = {r.ts_ns: r.data for r in list(read_capture(a)) + list(read_capture(b))}
    assert all(src[r.ts_ns] == r.data for r in recs)


def test_nanosecond_pcap_and_gzip(pcaps, tshark, tmp_path):
    nano = tmp_path / "n.pcap"
    subprocess.run(["editcap", "-F", "nsecpcap", str(pcaps / EPRI), str(nano)], check=True,
                   capture_output=True)
    assert struct.unpack("<I", nano.read_bytes()[:4])[0] == 0xA1B23C4D
    assert ours(nano) == tshark_frames(tshark, nano)
    gz = tmp_path / "n.pcap.gz"
    gz.write_bytes(gzip.compress(nano.read_bytes()))
    assert ours(gz) == tshark_frames(tshark, gz)
    # gzip recognised by magic, not by name
    gz2 = tmp_path / "noext"
    shutil.copy(gz, gz2)
    assert ours(gz2) == ours(nano)


def _swap_pcap(data: bytes) -> bytes:
    """Rewrite a little-endian classic pcap in big-endian byte order."""
    out = bytearray()
    magic, vmaj, vmin, tz, sig, snap, lt = struct.unpack_from("<IHHiIII", data)
    out += struct.pack(">IHHiIII", magic, vmaj, vmin, tz, sig, snap, lt)
    off = 24
    while off < len(data):
        s, u, incl, orig = struct.unpack_from("<IIII", data, off)
        out += struct.pack(">IIII", s, u, incl, orig) + data[off + 16:off + 16 + incl]
        off += 16 + incl
    return bytes(out)


def _swap_pcapng(data: bytes) -> bytes:
    """Rewrite a little-endian pcapng (SHB/IDB/EPB with options) in big-endian order."""
    out = bytearray()
    off = 0

    def opts(o, end):
        res = bytearray()
        while o + 4 <= end:
            code, ln = struct.unpack_from("<HH", data, o)
            val = data[o + 4:o + 4 + ln]
            if code == 14 and ln == 8:
                val = struct.pack(">q", struct.unpack("<q", val)[0])
            res += struct.pack(">HH", code, ln) + val + b"\0" * ((-ln) % 4)
            o += 4 + ln + ((-ln) % 4)
            if code == 0:
                break
        return bytes(res)

    while off < len(data):
        bt, bl = struct.unpack_from("<II", data, off)
        end = off + bl - 4
        if bt == 0x0A0D0D0A:
            bom, vmaj, vmin, slen = struct.unpack_from("<IHHq", data, off + 8)
            body = struct.pack(">IHHq", bom, vmaj, vmin, slen) + opts(off + 24, end)
        elif bt == 1:
            lt, res, snap = struct.unpack_from("<HHI", data, off + 8)
            body = struct.pack(">HHI", lt, res, snap) + opts(off + 16, end)
        elif bt == 6:
            i, hi, lo, cap, orig = struct.unpack_from("<IIIII", data, off + 8)
            pad = (-cap) % 4
            body = (struct.pack(">IIIII", i, hi, lo, cap, orig) + data[off + 28:off + 28 + cap + pad]
                    + opts(off + 28 + cap + pad, end))
        else:
            body = data[off + 8:end]
        out += struct.pack(">II", bt, 12 + len(body)) + body + struct.pack(">I", 12 + len(body))
        off += bl
    return bytes(out)


def test_big_endian_files(pcaps, tshark, tmp_path):
    be = tmp_path / "be.pcap"
    be.write_bytes(_swap_pcap((pcaps / EPRI).read_bytes()))
    assert be.read_bytes()[:4] == b"\xa1\xb2\xc3\xd4"
    assert ours(be) == tshark_frames(tshark, be) == ours(pcaps / EPRI)
    ng = tmp_path / "le.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", "-a", "1:first", str(pcaps / EPRI), str(ng)],
                   check=True, capture_output=True)
    bng = tmp_path / "be.pcapng"
    bng.write_bytes(_swap_pcapng(ng.read_bytes()))
    assert bng.read_bytes()[8:12] == b"\x1a\x2b\x3c\x4d"
    want = tshark_frames(tshark, bng, extra=["frame.comment"])
    got = list(read_capture(bng))
    assert [(r.ts_ns, r.orig_len, len(r.data), ",".join(r.comments)) for r in got] == want
    assert got[0].comments == ("first",)


def test_writers_read_back_by_tshark(tshark, tmp_path):
    recs = [Record(1_700_000_000_123_456_789 + i * 1_000_001, bytes([i]) * (10 + i), 147, 10 + i, 0,
                   (f"phase={i % 4} ssi=0x{i:04x}",) if i % 3 == 0 else ()) for i in range(20)]
    ng = tmp_path / "w.pcapng"
    with PcapngWriter(ng) as w:
        for r in recs:
            w.write(r)
        w.write((1_700_000_001_000_000_000, b"\x45" + b"\0" * 19, 101))
    rows = tshark_frames(tshark, ng, extra=["frame.comment", "frame.encap_type", "data.data"])
    assert len(rows) == 21
    for r, row in zip(recs, rows):
        assert row[0] == r.ts_ns and row[1] == r.orig_len and row[3] == ",".join(r.comments)
    assert list(read_capture(ng))[:20] == recs
    assert list(read_capture(ng))[20].linktype == 101
    us = tmp_path / "w.pcap"
    with PcapWriter(us) as w:
        w.write_all(recs)
    assert [row[0] for row in tshark_frames(tshark, us)] == [r.ts_ns // 1000 * 1000 for r in recs]
    ns = tmp_path / "wn.pcap"
    with open(ns, "wb") as fh, PcapWriter(fh, nano=True) as w:
        w.write_all(recs)
    assert [row[0] for row in tshark_frames(tshark, ns)] == [r.ts_ns for r in recs]
    with pytest.raises(ValueError):
        PcapWriter(tmp_path / "x.pcap", linktype=1).write(recs[0])


def test_if_tsresol_and_tsoffset(tshark, tmp_path):
    """Interfaces with their own resolution (10^-3, 2^-10) and a time offset."""
    def block(bt, body):
        return struct.pack("<II", bt, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    def opt(code, val):
        return struct.pack("<HH", code, len(val)) + val + b"\0" * ((-len(val)) % 4)
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb0 = block(1, struct.pack("<HHI", 147, 0, 0) + opt(9, b"\x03") + opt(0, b""))
    idb1 = block(1, struct.pack("<HHI", 1, 0, 0) + opt(9, b"\x8a") + opt(14, struct.pack("<q", 100)) + opt(0, b""))
    unknown = block(0x0BAD, b"\x01\x02\x03\x04")
    t0 = 1_700_000_000_123
    epb0 = block(6, struct.pack("<IIIII", 0, t0 >> 32, t0 & 0xFFFFFFFF, 9, 9) + b"A" * 9 + b"\0" * 3)
    t1 = 1_700_000_000 * 1024 + 512
    epb1 = block(6, struct.pack("<IIIII", 1, t1 >> 32, t1 & 0xFFFFFFFF, 14, 60) + b"B" * 14 + b"\0" * 2)
    spb = block(3, struct.pack("<I", 5) + b"CCCCC" + b"\0" * 3)
    f = tmp_path / "res.pcapng"
    epb2 = block(6, struct.pack("<IIIII", 0, t1 >> 32, t1 & 0xFFFFFFFF, 14, 60) + b"B" * 14 + b"\0" * 2)
    f.write_bytes(shb + idb0 + idb1 + unknown + epb0 + epb1 + spb + shb + idb1 + epb2)
    got = list(read_capture(f))
    # tshark 4.0 lists the unknown block as an empty record: drop it
    rows = [r for r in tshark_frames(tshark, f, extra=["frame.encap_type"]) if r[1]]
    assert len(got) == len(rows) == 4
    assert [(r.orig_len, len(r.data)) for r in got] == [(w[1], w[2]) for w in rows]
    assert got[0].ts_ns == t0 * 1_000_000 == rows[0][0]
    assert got[1].ts_ns == (1_700_000_100 * 10**9 + 500_000_000) == rows[1][0]
    assert got[2].data == b"CCCCC" and got[2].linktype == 147
    assert [r.iface for r in got] == [0, 1, 0, 2]
    assert got[3].ts_ns == got[1].ts_ns == rows[3][0] and got[3].linktype == 1


def test_truncated_and_corrupt_files(pcaps, tshark, tmp_path):
    data = (pcaps / EPRI).read_bytes()
    full = ours(pcaps / EPRI)
    t = tmp_path / "capture.pcap"
    t.write_bytes(data[:3000])
    r = open_reader(t)
    got = [(x.ts_ns, x.orig_len, len(x.data)) for x in r]
    want = tshark_frames(tshark, t)
    assert got == want == full[:len(got)] and len(got) > 5
    assert r.error.startswith("capture.pcap: truncated record at offset ")
    assert f"(packet {len(got) + 1}); read {len(got)} packets" in r.error
    # cut inside a record header
    t.write_bytes(data[:24 + 16 + full[0][2] + 7])
    r = open_reader(t)
    assert len(list(r)) == 1 and "truncated record header" in r.error
    # absurd record length = corruption
    bad = bytearray(data)
    off = 24 + 16 + full[0][2]
    struct.pack_into("<I", bad, off + 8, 0x7FFFFFFF)
    t.write_bytes(bad)
    r = open_reader(t)
    assert len(list(r)) == 1 and "corrupt record header" in r.error
    # pcapng cut in the middle of a block
    ng = tmp_path / "t.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(pcaps / EPRI), str(ng)], check=True, capture_output=True)
    raw = ng.read_bytes()
    ng.write_bytes(raw[:len(raw) // 2])
    r = open_reader(ng)
    got = [(x.ts_ns, x.orig_len, len(x.data)) for x in r]
    assert got == tshark_frames(tshark, ng) == full[:len(got)]
    assert "truncated block" in r.error and f"read {len(got)} packets" in r.error
    # truncated gzip keeps what decompressed
    gz = tmp_path / "t.pcap.gz"
    gz.write_bytes(gzip.compress(data)[:-200])
    r = open_reader(gz)
    n = len(list(r))
    assert 0 < n < len(full) and "gzip stream truncated" in r.error


def test_not_a_capture(tmp_path):
    for name, content in [("empty.pcap", b""), ("text.pcap", b"\x00\x01\x02 hello world\xff" * 3)]:
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(CaptureError) as ei:
            open_reader(p)
        assert name in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(CaptureError, match="no such file"):
        read_capture(tmp_path / "missing.pcap")


def test_index_and_random_access(pcaps, tmp_path):
    for f in (pcaps / EPRI, pcaps / DIRECTOR):
        recs = list(read_capture(f))
        offsets, idx = index_capture(f)
        assert len(offsets) == len(recs) and idx.error is None
        assert list(idx.ts_ns) == [r.ts_ns for r in recs]
        for i in (0, len(recs) // 2, len(recs) - 1):
            assert read_record_at(idx.buf, int(offsets[i]), idx) == recs[i]
            assert idx.record(i) == recs[i]
    ng = tmp_path / "m.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(ng), str(pcaps / EPRI), str(pcaps / DIRECTOR)],
                   check=True, capture_output=True)
    recs = list(read_capture(ng))
    offsets, idx = index_capture(ng)
    assert [idx.record(i) for i in range(len(recs))] == recs
    assert read_record_at(ng, int(offsets[3]), idx) == recs[3]


def test_incremental_scanner_matches_tshark_on_a_growing_file(tshark, pcaps, tmp_path):
    """RecordScanner in chunks of 7 records over a file that grows in uneven steps (cut
    inside records): waits at a partial record, resumes, and ends with tshark's frames."""
    from analyzer.capture import RecordScanner
    ng = tmp_path / "m.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(ng), str(pcaps / EPRI), str(pcaps / DIRECTOR)],
                   check=True, capture_output=True)
    for f in (pcaps / EPRI, ng):
        full = f.read_bytes()
        want = tshark_frames(tshark, f)
        sc = RecordScanner(f.name)
        ts, origs, caps, offs = [], [], [], []
        for size in list(range(10, len(full), 997)) + [len(full)]:
            while True:
                t, o, c, g, _lt, nxt = sc.scan(full[:size], None, 7)
                assert sc.error is None and nxt == sc.pos
                ts += t
                offs += o
                caps += c
                origs += g
                if sc.at_end or not t:
                    break
        assert sc.truncated is None and sc.pos == len(full)
        assert [(a, b, c) for a, b, c in zip(ts, origs, caps)] == [w[:3] for w in want]
        rec = sc.record_at(full, offs[-1])
        assert len(rec.data) == caps[-1] and rec.ts_ns == ts[-1] and rec.orig_len == origs[-1]


def _good_pcapng() -> bytes:
    import io
    buf = io.BytesIO()
    with PcapngWriter(buf, linktype=147) as w:
        for i in range(5):
            w.write((i * 1000, bytes(range(i + 3)), 147, ("c",) if i % 2 else ()))
    return buf.getvalue()


_GOOD = _good_pcapng()
_GOOD_RECS = None


def _read_bytes(data: bytes, tmp: Path):
    if not data:
        raise CaptureError("f.bin: empty file, not a capture")
    r = CaptureReader("f.bin", buf=data)     # the same walker as on files, without disk I/O
    got = list(r)
    assert r.error is None or ("\n" not in r.error and "read" in r.error)
    return got, r.error


@given(st.binary(max_size=300), st.integers(0, len(_GOOD)))
def test_fuzz_reader_never_raises_on_damage(blob, cut):
    """Truncated and garbage-extended files: no exception, and the records read are a
    prefix of the intact file's records."""
    tmp = None
    full, err = _read_bytes(_GOOD, tmp)
    assert err is None and len(full) == 5
    # truncation: a prefix of the records, an error unless cut on a block boundary
    try:
        got, err = _read_bytes(_GOOD[:cut], tmp)
    except CaptureError as e:
        assert cut < 4 and ("empty" in str(e) or "not a pcap" in str(e))
    else:
        assert got == full[:len(got)]
        assert (err is None) == (cut in _block_ends())
    # garbage after the intact file: the 5 records are still read
    got, err = _read_bytes(_GOOD + blob, tmp)
    assert got[:5] == full
    # garbage after a classic header
    pcap_hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147)
    got, err = _read_bytes(pcap_hdr + blob, tmp)
    assert all(r.linktype == 147 for r in got)
    assert sum(16 + len(r.data) for r in got) <= len(blob)


def _block_ends() -> set:
    ends, off = set(), 0
    while off < len(_GOOD):
        off += struct.unpack_from("<I", _GOOD, off + 4)[0]
        ends.add(off)
    return ends


@settings(max_examples=min(settings.default.max_examples, 800))  # heavy: cap the CI profile
@given(st.lists(st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.booleans())
def test_fuzz_mutated_blocks(flips, classic):
    """Bytes flipped anywhere: no exception; every record wholly before the first flipped
    byte is read unchanged (pcapng, and the same records as classic pcap)."""
    import io
    if classic:
        buf = io.BytesIO()
        with PcapWriter(buf, linktype=147, nano=True) as w:
            for i in range(5):
                w.write((i * 1000, bytes(range(i + 3)), 147))
        good = buf.getvalue()
        ends, off = [], 24
        while off < len(good):
            off += 16 + struct.unpack_from("<I", good, off + 8)[0]
            ends.append(off)
    else:
        good = _GOOD
        ends = sorted(_block_ends())[2:]              # packet blocks (after the SHB and the IDB)
    full, _ = _read_bytes(good, None)
    data = bytearray(good)
    flips = [(p % len(good), v) for p, v in flips]
    for p, v in flips:
        data[p] = v
    first = min(p for p, v in flips if good[p] != v) if any(good[p] != v for p, v in flips) else len(good)
    try:
        got, err = _read_bytes(bytes(data), None)
    except CaptureError:
        assert first < 4            # the magic itself was hit
        return
    intact = sum(1 for e in ends if e <= first)
    header_end = 24 if classic else sorted(_block_ends())[1]
    if first >= header_end:             # header blocks intact
        assert got[:intact] == full[:intact]
    assert err is None or isinstance(err, str)


def _pcap_bytes(records, damage: bytes = b"") -> bytes:
    """A little-endian microsecond classic pcap (LINKTYPE_USER0) written here with struct:
    records (sec, usec, data, orig_len), then `damage` appended as is."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147)]
    for sec, usec, data, orig in records:
        out.append(struct.pack("<IIII", sec, usec, len(data), orig) + data)
    return b"".join(out) + damage


@pytest.mark.parametrize("damage, words", [
    (b"", None),
    (struct.pack("<IIII", 9, 0, 40, 40) + bytes(10), "truncated record at offset"),
    (bytes(9), "truncated record header at offset"),
    (struct.pack("<IIII", 9, 0, 0x7FFFFFFF, 40), "corrupt record header at offset"),
])
def test_one_classic_pcap_loop_for_iteration_index_and_ranges(tmp_path, damage, words):
    """Plain iteration, the chunked index (`RecordScanner.scan`), the byte-range walk and
    records of `decode -j` (`pcap_walk`, `pcap_range`) and the damage message of a range
    pass (`pcap_error`) read the same records and word the same damage."""
    from analyzer.capture import RecordScanner
    recs = [(1_700_000_000 + i, 1000 * i, bytes([i]) * (1 + i % 23), 1 + i % 23 + (i % 3)) for i in range(40)]
    offs, off = [], 24
    for _, _, data, _ in recs:
        offs.append(off)
        off += 16 + len(data)
    end = off
    p = tmp_path / "c.pcap"
    p.write_bytes(_pcap_bytes(recs, damage))
    want = [Record(s * 1_000_000_000 + u * 1000, d, 147, o) for s, u, d, o in recs]
    r = open_reader(p)
    assert list(r) == want and r.count == 40
    err = r.error
    if words is None:
        assert err is None
    else:
        assert err == f"c.pcap: {words} {end} (packet 41{', length 2147483647' if 'corrupt' in words else ''}); " \
                      f"read 40 packets"
    buf = r.buf
    # the index in chunks; a chunk that ends just before the damage does not report it yet
    for k in (7, 8, 40, 1000):
        sc = RecordScanner("c.pcap")
        got_ts, got_off, got_cap, got_orig = [], [], [], []
        calls = 0
        while True:
            ts, o, cap, orig, lts, nxt = sc.scan(buf, None, k)
            calls += 1
            got_ts += ts
            got_off += o
            got_cap += cap
            got_orig += orig
            assert lts == [147] * len(ts) and nxt == sc.pos
            if sc.error or sc.at_end or not ts:
                break
            assert sc.error is None and sc.truncated is None
        assert got_off == offs and got_ts == [w.ts_ns for w in want]
        assert got_cap == [len(w.data) for w in want] and got_orig == [w.orig_len for w in want]
        assert (sc.error or sc.truncated) == err and sc.count == 40
        assert calls == -(-40 // k) + (words is not None and 40 % k == 0)
    # byte ranges: every cut gives the records that start in it; the damage is seen at its end
    for a, b in ((24, 24), (24, offs[5]), (offs[5], offs[5] + 1), (offs[5] + 1, offs[30]), (offs[30], len(buf) + 5)):
        start = next((o for o in offs if o >= a), end)
        inside = [i for i, o in enumerate(offs) if start <= o < b]
        o, nxt, damaged = r.pcap_walk(start, b)
        assert o == [offs[i] for i in inside]
        assert list(r.pcap_range(start, b)) == [want[i] for i in inside]
        assert damaged == (b > end and words is not None)
        assert nxt == (end if b > end else (offs[inside[-1]] + 16 + len(want[inside[-1]].data) if inside else start))
    assert r.pcap_error(end, 40) == err
    # the ranges leave the reader's own iteration as it was
    assert list(r) == want and r.error == err


def _packet_block_ends(raw: bytes) -> list[int]:
    """End offsets of the packet blocks (types 2, 3, 6) of a little-endian pcapng, walked
    here with struct from the block lengths."""
    ends, off = [], 0
    while off + 8 <= len(raw):
        btype, blen = struct.unpack_from("<II", raw, off)
        off += blen
        if btype in (2, 3, 6):
            ends.append(off)
    return ends


def test_reader_position_and_page_release(pcaps, tmp_path):
    """`CaptureReader.position` is the real end of the record last yielded (pcap: header +
    data; pcapng: the whole block with its options, other blocks between counted), the
    offset `PageRelease` is fed with; the release moves in page steps of at least `step`
    and leaves bytes buffers and closed maps alone."""
    import mmap
    from analyzer.capture import PageRelease
    src = pcaps / EPRI
    ng = tmp_path / "m.pcapng"
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(ng), str(src), str(pcaps / DIRECTOR)],
                   check=True, capture_output=True)
    raw = src.read_bytes()
    ends, off = [], 24
    while off + 16 <= len(raw):
        off += 16 + struct.unpack_from("<I", raw, off + 8)[0]
        ends.append(off)
    for path, want in ((src, ends), (ng, _packet_block_ends(ng.read_bytes()))):
        r = open_reader(path)
        assert r.position in (0, 24)
        got = [r.position for _ in r]
        assert got == want and len(got) > 50 and r.position == want[-1]
        r.close()
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(40 * mmap.PAGESIZE))
    with open(big, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    rel = PageRelease(4 * mmap.PAGESIZE)
    rel.upto(mm, 4 * mmap.PAGESIZE - 1)
    assert rel.done == 0
    rel.upto(mm, 5 * mmap.PAGESIZE + 7)
    assert rel.done == 5 * mmap.PAGESIZE
    rel.upto(mm, 8 * mmap.PAGESIZE)
    assert rel.done == 5 * mmap.PAGESIZE
    rel.upto(mm, 30 * mmap.PAGESIZE + 1)
    assert rel.done == 30 * mmap.PAGESIZE and mm[-1] == 0 and mm[0] == 0    # pages read back
    other = PageRelease(mmap.PAGESIZE)
    other.upto(b"\x00" * (8 * mmap.PAGESIZE), 8 * mmap.PAGESIZE)
    assert other.done == 0
    mm.close()
    rel.upto(mm, 40 * mmap.PAGESIZE)
    assert rel.done == 30 * mmap.PAGESIZE and rel.disabled
