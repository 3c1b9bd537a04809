"""`lonscope decode` / `lonscope fields` through the real console script; tshark is the
independent source for the Ethernet/IP/TCP values of the shared captures."""
from __future__ import annotations

import json
import subprocess

import pytest

HT = "htanwar922-wireshark-dlms"


def run(cmd, *args, check=True, **kw):
    p = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=120, **kw)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def tshark_fields(tshark, path, fields, flt=None, extra=()):
    args = [tshark, "-r", str(path), "-T", "fields", *extra]
    for f in fields:
        args += ["-e", f]
    if flt:
        args += ["-Y", flt]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("name", ["Output.pcap", "Output-Ciphered-HLS-AuthEnc.pcap", "Output-Ciphered.pcap"])
def test_fields_match_tshark(lonscope_cmd, tshark, pcaps, name):
    path = pcaps / HT / name
    ours = run(lonscope_cmd, "decode", path, "-T", "fields", "-e", "frame.number", "-e", "ip.src",
               "-e", "ip.dst", "-e", "ip.ttl", "-e", "tcp.srcport", "-e", "tcp.dstport",
               "-e", "tcp.seq", "-e", "tcp.len", "-e", "frame.len", "-Y", "tcp").stdout
    theirs = tshark_fields(tshark, path, ["frame.number", "ip.src", "ip.dst", "ip.ttl", "tcp.srcport",
                                         "tcp.dstport", "tcp.seq_raw", "tcp.len", "frame.len"], "tcp && !icmp")
    assert ours.count("\n") > 200
    assert ours == theirs


_DECODED: dict = {}


def _decoded(path):
    if path not in _DECODED:
        import analyzer
        _DECODED[path] = list(analyzer.open_capture(path))
    return _DECODED[path]


@pytest.mark.parametrize("name,flt", [
    ("Output-Ciphered.pcap", "tcp.srcport == 4064"),
    ("Output-Ciphered.pcap", "tcp.port == 4064 and ip.ttl == 64"),
    ("Output-Ciphered.pcap", "udp.port == 53"),
    ("Output-Ciphered.pcap", "ip.addr == 127.0.0.53 and udp"),
    ("Output.pcap", "tcp.len > 100 and tcp.flags.push"),
    ("Output.pcap", "ip.ttl in {60..70} && !(tcp.dstport eq 4063)"),
    ("Output-Ciphered.pcap", "tcp.flags & 0x02"),
    ("Output-Ciphered.pcap", "tcp.flags & 0x12 == 0x12"),
    ("Output.pcap", "tcp.len >= 1000 || frame.len < 70"),
    ("Output.pcap", "tcp.port in {4063, 9999} and frame.number <= 10"),
    ("Output-EPRI.pcap", "tcp.srcport != 4059"),
])
def test_display_filter_matches_tshark(tshark, pcaps, name, flt):
    """The filter on really decoded packets (in-process: one decode per capture; the -Y
    option itself is exercised through the console script in other tests)."""
    from analyzer.filters import compile_filter
    from analyzer.output import with_virtual
    packets = _decoded(pcaps / HT / name)
    match = compile_filter(flt)
    t0 = packets[0].ts_ns
    ours = "".join(f"{p.number}\n" for p in packets if match(with_virtual(p, t0)))
    path = pcaps / HT / name
    # ICMP errors quote an inner IP/TCP/UDP header that tshark decodes and we do not
    theirs = tshark_fields(tshark, path, ["frame.number"], f"({flt}) && !icmp")
    assert ours == theirs
    assert ours.strip()


def test_fields_options(lonscope_cmd, pcaps):
    path = pcaps / HT / "Output.pcap"
    out = run(lonscope_cmd, "decode", path, "-c", "2", "-e", "frame.number", "-e", "ip.src",
              "-e", "tcp.dstport", "-e", "frame.time_relative", "-E", "header=y",
              "-E", "separator=,", "-E", "quote=d").stdout.splitlines()
    assert out[0] == "frame.number,ip.src,tcp.dstport,frame.time_relative"
    assert out[1] == '"1","127.0.0.1","4063","0.000000000"'
    assert out[2] == '"2","127.0.0.1","38966","0.006898000"'
    assert len(out) == 3
    # several occurrences: ip.addr holds source and destination
    out = run(lonscope_cmd, "decode", path, "-c", "1", "-T", "fields", "-e", "tcp.port",
              "-E", "occurrence=a").stdout
    assert out == "38966,4063\n"
    out = run(lonscope_cmd, "decode", path, "-c", "1", "-T", "fields", "-e", "tcp.port",
              "-E", "occurrence=l", "-E", "separator=/s").stdout
    assert out == "4063\n"
    out = run(lonscope_cmd, "decode", path, "-c", "1", "-T", "fields", "-e", "tcp.port",
              "-E", "aggregator=/s").stdout
    assert out == "38966 4063\n"


def test_text_summary_and_count(lonscope_cmd, pcaps):
    path = pcaps / HT / "Output.pcap"
    lines = run(lonscope_cmd, "decode", path, "-c", "3").stdout.splitlines()
    assert len(lines) == 3
    cols = lines[1].split()
    assert cols[0] == "2" and cols[1] == "0.006898"
    assert cols[2] == "127.0.0.1" and cols[4] == "127.0.0.1"
    assert "117" in cols     # frame length


def test_verbose_tree_and_hexdump_match_tshark(lonscope_cmd, tshark, pcaps):
    path = pcaps / HT / "Output.pcap"
    out = run(lonscope_cmd, "decode", path, "-c", "1", "-V", "-x").stdout
    assert out.startswith("Frame 1:")
    assert "Transmission Control Protocol" in out
    assert "    Source Port: 38966" in out
    ours_hex = [l for l in out.splitlines() if l[:4].isalnum() and l[4:6] == "  "]
    p = subprocess.run([tshark, "-r", str(path), "-c", "1", "-x"], capture_output=True, text=True)
    theirs_hex = [l for l in p.stdout.splitlines() if l.strip()]
    assert ours_hex == theirs_hex


def test_jsonl_and_json(lonscope_cmd, tshark, pcaps):
    path = pcaps / HT / "Output-EPRI.pcap"
    lines = run(lonscope_cmd, "decode", path, "-T", "jsonl").stdout.splitlines()
    objs = [json.loads(l) for l in lines]
    theirs = tshark_fields(tshark, path, ["frame.number", "tcp.srcport", "ip.ttl", "frame.time_epoch"]).splitlines()
    assert len(objs) == len(theirs) == 52
    for o, t in zip(objs, theirs):
        num, sport, ttl, epoch = t.split("\t")
        assert set(o) == {"number", "time", "protocols", "source", "destination", "info", "fields", "expert"}
        assert o["number"] == int(num)
        assert o["fields"]["tcp.srcport"] == int(sport)          # numbers stay numbers
        assert o["fields"]["ip.ttl"] == int(ttl)
        assert abs(o["time"] - float(epoch)) < 1e-6
        assert o["protocols"].startswith("eth:ip:tcp")
    arr = json.loads(run(lonscope_cmd, "decode", path, "-T", "json", "-V", "-c", "2").stdout)
    assert [o["number"] for o in arr] == [1, 2]
    tcp = [n for n in arr[0]["tree"] if n["field"] == "tcp"][0]
    assert any(c.get("field") == "tcp.srcport" and c["value"] == arr[0]["fields"]["tcp.srcport"]
               for c in tcp["children"])
    assert json.loads(run(lonscope_cmd, "decode", path, "-T", "json", "-Y", "tcp.port == 1").stdout) == []


def test_multiple_files_numbering(lonscope_cmd, pcaps):
    a = pcaps / HT / "Output-Ciphered-Director.pcap"
    out = run(lonscope_cmd, "decode", a, a, "-e", "frame.number", "-e", "tcp.dstport").stdout.splitlines()
    assert [l.split("\t")[0] for l in out] == ["1", "2", "3", "4", "5", "6"]
    assert out[0].split("\t")[1] == out[3].split("\t")[1] == "4059"


def test_errors_are_one_line(lonscope_cmd, pcaps, tmp_path):
    path = pcaps / HT / "Output.pcap"
    p = run(lonscope_cmd, "decode", path, "-Y", "tcp.port ==", check=False)
    assert p.returncode == 2
    assert p.stderr == "lonscope: filter error at column 12: expected a value after '=='\n"
    assert p.stdout == ""
    p = run(lonscope_cmd, "decode", path, "-Y", "nosuch.thing", check=False)
    assert p.returncode == 2 and "'nosuch.thing' is not a valid field" in p.stderr
    p = run(lonscope_cmd, "decode", tmp_path / "missing.pcap", check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("lonscope: ")
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all\n" * 4)
    p = run(lonscope_cmd, "decode", junk, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = run(lonscope_cmd, "decode", path, "-e", "no.such.field", check=False)
    assert p.returncode == 2 and "no.such.field" in p.stderr
    p = run(lonscope_cmd, "decode", path, "-T", "fields", check=False)
    assert p.returncode == 2 and "-e" in p.stderr
    p = run(lonscope_cmd, "decode", path, "-E", "occurrence=x", "-e", "ip.src", check=False)
    assert p.returncode == 2 and "occurrence" in p.stderr


def test_truncated_capture(lonscope_cmd, tshark, pcaps, tmp_path):
    src = (pcaps / HT / "Output-EPRI.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(src[:len(src) * 2 // 3])
    p = run(lonscope_cmd, "decode", cut, "-e", "frame.number", "-e", "tcp.srcport", check=False)
    assert p.returncode == 0
    theirs = tshark_fields(tshark, pcaps / HT / "Output-EPRI.pcap", ["frame.number", "tcp.srcport"])
    n = p.stdout.count("\n")
    assert 20 < n < 52
    assert p.stdout == "".join(theirs.splitlines(True)[:n])
    assert p.stderr.startswith(f"lonscope: ") and "truncated" in p.stderr and p.stderr.count("\n") == 1
    head = tmp_path / "head.pcap"
    head.write_bytes(src[:30])       # a header and a broken first record: nothing readable
    p = run(lonscope_cmd, "decode", head, check=False)
    assert p.returncode != 0 and p.stdout == "" and p.stderr.startswith("lonscope: ")


def test_broken_pipe_is_quiet(lonscope_cmd, pcaps, tmp_path):
    src = (pcaps / HT / "Output.pcap").read_bytes()
    big = tmp_path / "big.pcap"
    big.write_bytes(src[:24] + src[24:] * 40)
    p = subprocess.Popen([*lonscope_cmd, "decode", str(big)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    rc = p.wait(timeout=60)
    assert first.split()[0] == b"1"
    assert rc == 0, err
    assert err == b""


def test_keys_options(lonscope_cmd, pcaps, tmp_path):
    path = pcaps / HT / "Output-EPRI.pcap"
    p = run(lonscope_cmd, "decode", path, "--keys", tmp_path / "nokeys.toml", check=False)
    assert p.returncode == 2 and p.stderr.startswith("lonscope: ") and p.stderr.count("\n") == 1
    p = run(lonscope_cmd, "decode", path, "-c", "1", "--key", "ek=000102030405060708090A0B0C0D0E0F",
            "-e", "tcp.dstport")
    assert p.stdout == "4059\n"
    p = run(lonscope_cmd, "decode", path, "--key", "ek=zz", check=False)
    assert p.returncode == 2 and "zz" not in p.stderr.replace("ek=zz", "") or p.returncode == 2


def test_fields_command(lonscope_cmd):
    out = run(lonscope_cmd, "fields").stdout.splitlines()
    rows = [l.split("\t") for l in out]
    assert all(len(r) == 3 for r in rows)
    names = [r[0] for r in rows]
    assert names == sorted(names)
    assert ["tcp.srcport", "uint", "Source Port"] in rows
    assert ["frame.number", "uint", "Frame number"] in rows
    pre = run(lonscope_cmd, "fields", "--prefix", "ip.").stdout.splitlines()
    assert pre and all(l.startswith("ip.") for l in pre)
    assert "ip.src\t" in "\n".join(pre)


# --------------------------------------------------------------------------- CN/IP LonTalk

def _ether_udp(payload: bytes, sport: int, dport: int, ident: int) -> bytes:
    import struct
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    csum = 0
    for i in range(0, 20, 2):
        csum += (ip[i] << 8) | ip[i + 1]
    while csum >> 16:
        csum = (csum & 0xFFFF) + (csum >> 16)
    ip = ip[:10] + struct.pack(">H", ~csum & 0xFFFF) + ip[12:]
    return bytes.fromhex("020000000002020000000001" "0800") + ip + udp


@pytest.fixture(scope="module")
def cnip_capture(tmp_path_factory):
    """CN/IP (UDP 1628) datagrams each carrying one LonTalk frame with varying addresses."""
    from analyzer.packet import Record
    from analyzer.pcapwriter import PcapWriter
    from dissectors.cnip import build_cnip
    from dissectors.lon import build_frame
    path = tmp_path_factory.mktemp("cnip") / "lon.pcap"
    w = PcapWriter(str(path), linktype=1)
    for i in range(1200):
        frame = build_frame(pdu="spdu", spdu_type=0 if i % 2 == 0 else 2, addr="2a",
                            src_subnet=1 + i % 3, src_node=1 + i % 7, dst_subnet=1 + (i + 1) % 3,
                            dst_node=1 + (i * 5) % 11, tid=i % 16, domain=b"\x4d",
                            apdu=bytes([0x30 | (i % 16), i & 0xFF, 1, 2]), crc=False)
        data = _ether_udp(build_cnip(frame, seqno=i + 1), 1628, 1628, i)
        w.write(Record(1_700_000_000_000_000_000 + i * 1_000_000, data, 1, len(data)))
    w.close()
    return path


LON_FIELDS = ["frame.number", "cnip.seqno", "lon.srcnet", "lon.srcnode", "lon.dstnet", "lon.dstnode",
              "lon.trans_no", "lon.domain"]


def _norm(text: str) -> list[list[str]]:
    """tshark prints hex-based fields as 0x..; compare numbers as numbers."""
    rows = []
    for line in text.splitlines():
        row = []
        for c in line.split("\t"):
            row.append(str(int(c, 0)) if c.startswith("0x") else c)
        rows.append(row)
    return rows


def test_lon_fields_match_tshark_and_parallel(lonscope_cmd, tshark, cnip_capture):
    args = []
    for f in LON_FIELDS:
        args += ["-e", f]
    ours = run(lonscope_cmd, "decode", cnip_capture, "-T", "fields", *args).stdout
    theirs = tshark_fields(tshark, cnip_capture, LON_FIELDS)
    assert len(ours.splitlines()) == 1200
    assert _norm(ours) == _norm(theirs)
    par = run(lonscope_cmd, "decode", cnip_capture, "-T", "fields", "-j", "2", *args).stdout
    assert par == ours
    import os        # the lower-layers-only fast path must equal a full decode
    full = run(lonscope_cmd, "decode", cnip_capture, "-T", "fields", *args,
               env=dict(os.environ, LONSCOPE_FULL_DECODE="1")).stdout
    assert full == ours
    flt = "lon.srcnode == 3 && lon.dstnet in {2, 3}"
    ours = run(lonscope_cmd, "decode", cnip_capture, "-Y", flt, "-j", "2", "-e", "frame.number").stdout
    assert ours == tshark_fields(tshark, cnip_capture, ["frame.number"], flt)
    ours = run(lonscope_cmd, "decode", cnip_capture, "-Y", flt, "-j", "2", "-c", "7", "-e", "frame.number").stdout
    assert ours.splitlines() == tshark_fields(tshark, cnip_capture, ["frame.number"], flt).splitlines()[:7]


def test_parallel_falls_back_for_stateful_fields(lonscope_cmd, pcaps, cnip_capture):
    import os
    env = dict(os.environ, LONSCOPE_DEBUG_PARALLEL="1")
    path = pcaps / HT / "Output.pcap"
    p = run(lonscope_cmd, "decode", cnip_capture, "-e", "lon.srcnode", "-e", "frame.time_relative",
            "-Y", "cnip.seqno > 10", "-j", "2", env=env)
    assert "decoding with 2 worker processes" in p.stderr
    assert p.stdout.splitlines()[0] == "4\t0.010000000"   # i = 10: src node 1 + 10 % 7
    for fields in (["tcp.stream"], ["dlms.invoke_id"], ["_ws.col.Info"]):   # stage / upper-layer fields
        args = [a for f in fields for a in ("-e", f)]
        one = run(lonscope_cmd, "decode", path, *args, "-e", "frame.number").stdout
        two = run(lonscope_cmd, "decode", path, *args, "-e", "frame.number", "-j", "2", env=env)
        assert "worker processes" not in two.stderr
        assert one == two.stdout
    assert one.splitlines()[0].endswith("\t1")
    first = run(lonscope_cmd, "decode", path, "-e", "tcp.stream", "-c", "1").stdout
    assert first == "0\n"


GB_KEYS = ["--key", "ek=000102030405060708090A0B0C0D0E0F", "--key", "ak=D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"]


def test_keys_decrypt_shared_capture(lonscope_cmd, pcaps):
    """Output-Ciphered-Director.pcap: glo-initiate AARQ/AARE, then one general-glo-ciphering
    access-request with 6 gets of class 7, 0.0.94.91.10.255 (../shared/pcaps/README.md)."""
    path = pcaps / HT / "Output-Ciphered-Director.pcap"
    out = run(lonscope_cmd, "decode", path, *GB_KEYS, "-T", "fields", "-e", "frame.number",
              "-e", "lonscope.status", "-e", "dlms.obis", "-e", "dlms.class_id").stdout.splitlines()
    assert [l.split("\t")[1] for l in out] == ["decrypted"] * 3
    num, status, obis, cls = out[2].split("\t")
    assert obis.split(",") == ["0.0.94.91.10.255"] * 6 and cls.split(",") == ["7"] * 6
    plain = run(lonscope_cmd, "decode", path, "-Y", "dlms.obis == 0.0.94.91.10.255").stdout
    assert plain == ""                      # without keys the gets stay hidden
    out = run(lonscope_cmd, "decode", path, *GB_KEYS, "-Y", 'lonscope.status == "decrypted" && dlms.class_id == 7',
              "-e", "frame.number").stdout
    assert out == "3\n"
    # -x dumps every data source: the frame and the decrypted access-request (tag d9) whose
    # first get is class 7 (00 07), OBIS 0.0.94.91.10.255 (00 00 5e 5b 0a ff)
    dump = run(lonscope_cmd, "decode", path, *GB_KEYS, "-x", "-Y", "frame.number == 3").stdout
    assert "Frame (154 bytes):" in dump
    dec = dump[dump.index("Decrypted xDLMS ("):]
    hexbytes = " ".join(l[6:53] for l in dec.splitlines()[1:] if l[:4].isalnum() and l[4:6] == "  ")
    assert hexbytes.split()[0] == "d9"
    assert "00 07 00 00 5e 5b 0a ff" in " ".join(hexbytes.split())
    wrong = run(lonscope_cmd, "decode", path, "--key", "ek=" + "11" * 16, "--key", "ak=" + "22" * 16,
                "-e", "lonscope.status").stdout.split()
    assert "decrypted" not in wrong and len(wrong) == 3


def test_profile_option(lonscope_cmd, tmp_path):
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    demo = root / "captures" / "demo.pcapng"
    prof = root / "dissectors" / "profiles" / "iec62056-8-8.toml"
    if not demo.exists() or not prof.exists():
        pytest.skip("demo capture or default profile not in this checkout")
    a = run(lonscope_cmd, "decode", demo, "-c", "20", "-e", "frame.number", "-e", "dlms.apdu").stdout
    b = run(lonscope_cmd, "decode", demo, "-c", "20", "--profile", prof, "-e", "frame.number",
            "-e", "dlms.apdu").stdout
    assert a == b and a.splitlines()[0] == "1\taarq,initiate-request"
    bad = tmp_path / "bad.toml"
    bad.write_text("garbage [[\n")
    p = run(lonscope_cmd, "decode", demo, "--profile", bad, check=False)
    assert p.returncode == 2 and p.stderr.startswith("lonscope: ") and p.stderr.count("\n") == 1
