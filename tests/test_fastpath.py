"""`decode -T fields` fast paths give exactly the lines of the full decode.

The fast paths (the CN/IP + LonTalk fast feed in `analyzer.fastfields.fast_feed`, the
lower-layers-only mode and `-j N` worker processes of `cmd_decode`) are compared with the
full decode (`LONSCOPE_FULL_DECODE=1`, `-j 1`: every layer, every stage) on the seeded
2,000-frame oracle corpus of `tests/longen.py`, on a capture of awkward lower layers (VLAN
tags, IPv4 fragments and options, wrong UDP lengths, truncated datagrams, other ports,
several CN/IP packets per datagram, MD5 digests, TCP) mixed with NM/ND requests and their
responses (whose `lon.nm.*`/`lon.nd.*` fields come from the transaction stage), and on the
shared captures.  The full decode itself is checked against tshark in
`tests/test_tshark_oracle.py`; here the reference is that full decode.
"""
from __future__ import annotations

import bisect
import os
import random
import struct
import subprocess

import pytest

from dissectors import load_all
from dissectors.cnip import build_cnip
from dissectors.core import REGISTRY
from dissectors.lon import build_frame

from _corpus import N, write_corpus
from longen import coverage_corpus, wrap_cnip_eth, wrap_udp_eth, write_pcap

HEADER_FIELDS = ["lon.srcnet", "lon.srcnode", "lon.dstnode", "lon.domain", "lon.pdufmt", "lon.code",
                 "lon.addrfmt", "lon.trans_no"]


def _frame_only_fields() -> list[str]:
    load_all()
    from analyzer.fastfields import frame_only_field
    frame_only_field("lon.srcnet")     # loads the stage modules' fields first
    return sorted(n for n in list(REGISTRY) if frame_only_field(n))


def _decode(cmd, path, fields, *extra, full=False, jobs=1):
    env = dict(os.environ)
    env.pop("LONSCOPE_FULL_DECODE", None)
    if full:
        env["LONSCOPE_FULL_DECODE"] = "1"
    argv = list(cmd) + ["decode", str(path), "-T", "fields", "-j", str(jobs)]
    for f in fields:
        argv += ["-e", f]
    p = subprocess.run(argv + list(extra), capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-500:]
    return p.stdout.splitlines()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("fast"))[0]


def _fragments(payload: bytes, ident: int) -> list[bytes]:
    """An IPv4/UDP datagram cut in two IPv4 fragments (8-byte aligned)."""
    udp = struct.pack("!HHHH", 1628, 1628, 8 + len(payload), 0) + payload
    cut = 16
    out = []
    for off, chunk, more in ((0, udp[:cut], 1), (cut, udp[cut:], 0)):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), ident, (more << 13) | (off // 8),
                         64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
        out.append(b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + chunk)
    return out


def _odd_packets() -> list[bytes]:
    rng = random.Random(852)
    frames = [f for f, _ in coverage_corpus(rng, 400)]
    # NM/ND requests and their responses (same TID, addressed back): the stage decodes the
    # responses in context
    pairs = []
    for i, (code, data) in enumerate([(0x67, b"\x01"), (0x51, b""), (0x6A, b"\x00"), (0x52, b"\x01"),
                                      (0x61, b"\x00\x00\x00\x00")]):
        tid = i + 1
        req = build_frame(pdu="spdu", spdu_type=0, addr="2a", src_subnet=1, src_node=3, dst_subnet=2,
                          dst_node=9, tid=tid, apdu=bytes([code]) + data)
        ok = (0x20 | (code & 0x1F)) if code >= 0x60 else (0x30 | (code & 0x0F))
        resp = build_frame(pdu="spdu", spdu_type=2, addr="2a", src_subnet=2, src_node=9, dst_subnet=1,
                           dst_node=3, tid=tid, apdu=bytes([ok]) + bytes(range(1, 16)))
        pairs += [req, resp]
    out = []
    for i, f in enumerate(pairs + frames):
        b = wrap_cnip_eth(f, seqno=i + 1)
        k = i % 12
        if k == 1:      # VLAN tag
            b = b[:12] + b"\x81\x00\x00\x05" + b[12:]
        elif k == 2:    # IPv4 fragments
            out.extend(_fragments(build_cnip(f, seqno=i + 1), ident=i))
            continue
        elif k == 3:    # UDP length larger than the datagram
            b = b[:38] + struct.pack("!H", 4000) + b[40:]
        elif k == 4:    # UDP length below 8
            b = b[:38] + struct.pack("!H", 3) + b[40:]
        elif k == 5:    # truncated capture
            b = b[:len(b) - 3]
        elif k == 6:    # IP total length shorter than the frame (Ethernet padding)
            b = b + b"\0" * 7
        elif k == 7:    # other port for the same bytes, then port 1629
            b = wrap_udp_eth(build_cnip(f, seqno=i + 1), sport=5000, dport=5001)
            out.append(b)
            b = wrap_udp_eth(build_cnip(f, seqno=i + 1), sport=40000, dport=1629)
        elif k == 8:    # two CN/IP packets in one datagram, the second with an MD5 digest
            b = wrap_udp_eth(build_cnip(f, seqno=i + 1) + build_cnip(f, seqno=i + 2, secret=b"s" * 16))
        elif k == 9:    # IPv4 header with options (24 bytes)
            ip = bytearray(b[14:34])
            ip[0] = 0x46
            ip[2:4] = struct.pack("!H", struct.unpack("!H", ip[2:4])[0] + 4)
            b = b[:14] + bytes(ip) + b"\x01\x01\x01\x00" + b[34:]
        elif k == 10:   # bad IPv4 header checksum
            b = b[:24] + b"\xde\xad" + b[26:]
        elif k == 11:   # damaged CN/IP / LonTalk bytes
            b = b[:50] + bytes([b[50] ^ 0xFF]) + b[51:-2]
        out.append(b)
    out.append(b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00\x45\x00")   # short IPv4
    return out


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "odd.pcap"
    write_pcap(path, _odd_packets())
    return path


def test_fast_feed_is_chosen_only_for_frame_fields():
    from analyzer.fastfields import fast_feed, frame_only_field
    from analyzer.pipeline import Pipeline
    assert frame_only_field("lon.srcnet") and frame_only_field("cnip.seqno") and frame_only_field("lon")
    for n in ("lon.nm.subnet", "lon.nd.xmit_errors", "lon.response_to", "cnip.md5.status", "ip.src",
              "dlms.apdu", "lon.no_such_field"):
        assert not frame_only_field(n), n
    pipe = Pipeline()
    assert fast_feed(pipe, HEADER_FIELDS) is not None
    assert fast_feed(pipe, HEADER_FIELDS + ["frame.number", "frame.time_relative"]) is not None
    assert fast_feed(pipe, HEADER_FIELDS + ["frame.protocols"]) is None
    assert fast_feed(pipe, HEADER_FIELDS + ["lon.nm.status"]) is None
    assert fast_feed(pipe, HEADER_FIELDS + ["udp.srcport"]) is None
    assert fast_feed(pipe, HEADER_FIELDS, ["ip.src"]) is None
    assert fast_feed(pipe, ["frame.number"]) is None


def test_fast_feed_same_fields_in_process(corpus, odd):
    """Every frame-only lon/cnip field of every packet: fast feed == full pipeline."""
    from analyzer.capture import read_capture
    from analyzer.fastfields import fast_feed
    from analyzer.pipeline import Pipeline
    names = _frame_only_fields()
    assert len(names) > 60
    for path in (corpus, odd):
        full, fast = Pipeline(), Pipeline()
        feed = fast_feed(fast, names)
        assert feed is not None
        n = 0
        for rec in read_capture(str(path)):
            a = full.feed(rec).d.fields
            p = feed(rec)
            b = p.d.fields
            assert p.number == full.count
            for name in names:
                assert a.get(name) == b.get(name), (p.number, name)
            n += 1
        assert n > 400


def test_fast_feed_narrow_field_list_in_process(corpus, odd):
    """With tables above LonTalk pruned (lean dissections) and a few requested fields (only
    those recorded), the requested values equal the full pipeline's."""
    from analyzer.capture import read_capture
    from analyzer.cmd_decode import _prune_tables
    from analyzer.fastfields import LeanDissection, fast_feed
    from analyzer.pipeline import Pipeline
    from dissectors.core import TABLES
    saved = {n: (dict(t.entries), list(t.heuristics)) for n, t in TABLES.items()}
    names = HEADER_FIELDS + ["lon.spdu.member", "cnip.seqno", "lon"]
    try:
        for path in (corpus, odd):
            full = Pipeline()
            ref = [full.feed(rec).d.fields for rec in read_capture(str(path))]
            _prune_tables()
            fast = Pipeline()
            feed = fast_feed(fast, names)
            lean = 0
            for rec, a in zip(read_capture(str(path)), ref):
                p = feed(rec)
                lean += isinstance(p.d, LeanDissection)
                for name in names:
                    assert a.get(name) == p.d.fields.get(name), (p.number, name)
                if isinstance(p.d, LeanDissection):
                    assert "lon.ppdu" not in p.d.fields and "cnip.len" not in p.d.fields
            assert lean > 300
            fast2 = Pipeline()
            fields_of = fast_feed(fast2, names).fields_of
            got = [fields_of(rec) for rec in read_capture(str(path))]    # all kept, then compared
            assert fast2.count == len(ref)
            for a, b in zip(ref, got):
                for name in names:
                    assert a.get(name) == b.get(name), name
            for n, (entries, heur) in saved.items():
                TABLES[n].entries.clear()
                TABLES[n].entries.update(entries)
                TABLES[n].heuristics[:] = heur
    finally:
        for n, (entries, heur) in saved.items():
            TABLES[n].entries.clear()
            TABLES[n].entries.update(entries)
            TABLES[n].heuristics[:] = heur


def test_cli_header_fields_identical(corpus, odd, lonscope_cmd):
    for path in (corpus, odd):
        ref = _decode(lonscope_cmd, path, ["frame.number"] + HEADER_FIELDS, full=True)
        assert _decode(lonscope_cmd, path, ["frame.number"] + HEADER_FIELDS) == ref
        assert _decode(lonscope_cmd, path, ["frame.number"] + HEADER_FIELDS, jobs=2) == ref
    assert len(ref) > 400 and any(line.split("\t")[1] for line in ref)


def test_cli_all_lon_cnip_fields_identical(corpus, odd, lonscope_cmd):
    names = _frame_only_fields()
    for path in (corpus, odd):
        ref = _decode(lonscope_cmd, path, names, full=True)
        assert _decode(lonscope_cmd, path, names) == ref
        assert _decode(lonscope_cmd, path, names, jobs=2) == ref


def test_cli_stage_fields_and_filter(odd, lonscope_cmd):
    """Fields added by the transaction stage take the full decode; a display filter on
    LonTalk fields keeps the fast feed with the same lines."""
    names = ["frame.number", "lon.srcnet", "lon.nm.status", "lon.nd.status", "lon.nm.subnet", "lon.response_to"]
    ref = _decode(lonscope_cmd, odd, names, full=True)
    assert any(line.split("\t")[2] == "success" for line in ref)
    assert any(line.split("\t")[5] for line in ref)
    assert _decode(lonscope_cmd, odd, names) == ref
    assert _decode(lonscope_cmd, odd, names, jobs=2) == ref
    flt = ("-Y", "lon.pdufmt == 1 && cnip.seqno > 3")
    ref = _decode(lonscope_cmd, odd, HEADER_FIELDS, *flt, full=True)
    assert 10 < len(ref) < 400
    assert _decode(lonscope_cmd, odd, HEADER_FIELDS, *flt) == ref
    assert _decode(lonscope_cmd, odd, HEADER_FIELDS, *flt, jobs=2) == ref


def test_shared_captures_identical(pcaps, lonscope_cmd):
    names = ["frame.number"] + HEADER_FIELDS + ["cnip.seqno"]
    files = sorted(p for p in pcaps.rglob("*.pcap*"))
    assert files
    for path in files:
        ref = _decode(lonscope_cmd, path, names, full=True)
        assert _decode(lonscope_cmd, path, names) == ref
        assert _decode(lonscope_cmd, path, names, jobs=2) == ref


def test_compiled_fields_line_matches_generic():
    """The generated `-T fields` line (default options) formats like the generic one."""
    from analyzer import output as O
    names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
    fields = {"a": [5], "b": [b"\x01\xab"], "c": [True], "d": [1, 2, 3], "e": [], "f": ["x y"],
              "g": [0.25], "h": [False, 7, b"\0"], "i": [None]}
    for sep, agg in (("\t", ","), (";", "|")):
        fast = O.FieldsFormatter(names, sep, "a", agg)
        slow = O.FieldsFormatter(names, sep, "f", agg)
        assert fast.line is not slow.line
        generic = O.FieldsFormatter.line(fast, fields)
        assert fast.line(fields) == generic
        assert fast.line(fields) == sep.join(["5", "01ab", "1", agg.join("123"), "", "x y", "0.25",
                                              agg.join(["0", "7", "00"]), ""])
        assert fast.line({}, {"a": [9]}) == O.FieldsFormatter.line(fast, {}, {"a": [9]})


# --------------------------------------------------------------------------- byte ranges
#
# Classic pcap files are decoded in parallel by byte ranges whose workers find their own
# first record (analyzer/cmd_decode.py).  Tiny ranges (LONSCOPE_RANGE_BYTES) make every
# boundary case happen on small files: records cut by range boundaries, ranges without a
# record start, warm-up across ranges, damage in the middle and at the end.

def _decode_err(cmd, path, fields, jobs, env_extra=None):
    env = dict(os.environ)
    env.pop("LONSCOPE_FULL_DECODE", None)
    env.update(env_extra or {})
    argv = list(cmd) + ["decode", str(path), "-T", "fields", "-j", str(jobs)]
    for f in fields:
        argv += ["-e", f]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    return p.returncode, p.stdout, p.stderr


RANGE_FIELDS = ["frame.number", "frame.time_delta", "frame.time_relative", "frame.len"] + HEADER_FIELDS


def test_byte_ranges_identical(corpus, odd, lonscope_cmd):
    env = {"LONSCOPE_RANGE_BYTES": "1500"}      # ~100 ranges of ~15 records
    for path in (corpus, odd):
        ref = _decode_err(lonscope_cmd, path, RANGE_FIELDS, 1)
        assert ref[0] == 0 and len(ref[1].splitlines()) > 400
        assert _decode_err(lonscope_cmd, path, RANGE_FIELDS, 2, env) == ref


def test_byte_ranges_damaged_files(odd, lonscope_cmd, tmp_path):
    """A corrupt record header in the middle and a record cut at the end: the same lines
    before the damage and the same message as one process."""
    data = odd.read_bytes()
    offs = []
    off = 24
    while off < len(data):
        offs.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    mid = offs[len(offs) // 2]
    corrupt = tmp_path / "corrupt.pcap"
    corrupt.write_bytes(data[:mid + 8] + struct.pack("<I", 0x7FFFFFFF) + data[mid + 12:])
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:offs[-3] + 20])
    for path in (corrupt, cut):
        ref = _decode_err(lonscope_cmd, path, RANGE_FIELDS, 1)
        assert ref[2].strip() and len(ref[1].splitlines()) > 100
        assert _decode_err(lonscope_cmd, path, RANGE_FIELDS, 2, {"LONSCOPE_RANGE_BYTES": "2500"}) == ref


def test_byte_ranges_wrong_guess_is_walked_again(corpus, monkeypatch):
    """A wrong first-record guess of a range is caught by the walk of the range before it."""
    from analyzer import cmd_decode as C
    from analyzer.capture import open_reader

    class Pool:
        def map(self, fn, jobs, chunksize=1):
            return [fn(j) for j in jobs]

    reader = open_reader(str(corpus))
    monkeypatch.setitem(C._PAR, "reader", reader)
    monkeypatch.setenv("LONSCOPE_RANGE_BYTES", "3000")
    good = C._pcap_jobs(Pool(), reader, 2)
    real = reader.pcap_sync
    monkeypatch.setattr(reader, "pcap_sync", lambda pos, chain=16: real(pos) + 1 if pos % 2 else real(pos) + 16)
    assert C._pcap_jobs(Pool(), reader, 2) == good
    todo, n, damage = good
    assert damage is None and n == N and len(todo) > 20
    assert todo[0][0] == 24 and all(a[1] == b[0] for a, b in zip(todo, todo[1:]))
    offs, end, damaged = reader.pcap_walk(24, len(reader.buf))
    assert not damaged and end == len(reader.buf) and len(offs) == N
    for first, stop, warm, nwarm, base in todo:
        assert offs[base] == first if base < N else first == end
        assert warm <= first and bisect.bisect_left(offs, first) - bisect.bisect_left(offs, warm) == nwarm
        assert first - warm <= C.WARMUP_BYTES + 300
    assert sum(1 for t in todo if t[3]) > 10
    reader.close()
