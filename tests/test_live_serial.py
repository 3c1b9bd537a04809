"""Serial NI capture (U50/U61 framings) against an interface emulator on a pty; the written
pcapng is read back by tshark."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from analyzer.capture import read_capture
from analyzer.live import LiveError, RingWriter, capture, open_source
from analyzer.live.emulator import NiEmulator
from analyzer.live.serial_ni import (NI_MODE_L2, NI_MODE_L5, Decoder, SerialNiError, SerialNiSource,
                                     checksum, encode, encode_message, frame_record, u50_code_packet)


def frames(n: int, seed: int = 1) -> list[tuple[bytes, int | None, int | None]]:
    """(frame with CRC, phase, ssi): a mix of 0x1A, 0x1B and 0x1C deliveries; some frames
    contain 0x7E bytes (doubled on the wire)."""
    import random
    from dissectors.lon import build_frame
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        f = build_frame(src_subnet=1 + i % 200, src_node=1 + i % 127, dst_subnet=2, dst_node=3,
                        domain=bytes([0x7E]) if i % 7 == 0 else b"\x01", pdu="apdu",
                        apdu=bytes([0x7E, i & 0xFF, (i >> 8) & 0xFF]) + bytes(rnd.randrange(4)))
        kind = i % 3
        out.append((f, None if kind == 0 else i % 4, 0x1234 + i if kind == 2 else None))
    return out


def comment_for(phase, ssi) -> tuple:
    if ssi is not None:
        return (f"phase={phase} ssi=0x{ssi:04x}",)
    if phase is not None:
        return (f"phase={phase}",)
    return ()


# --------------------------------------------------------------------------- framing

def test_checksum_escape_and_code_packets():
    body = bytes([3, 0x1A, 0x7E, 0x01])
    assert checksum(body) == (-(3 + 0x1A + 0x7E + 1)) & 0xFF
    wire = encode_message(0x1A, b"\x7e\x01")
    assert wire == bytes([3, 0x1A, 0x7E, 0x7E, 0x01, checksum(body)])
    cp = u50_code_packet(2, 0, seq=5)
    assert cp[:3] == bytes([0x7E, 0xA2, 0x00]) and sum(cp) & 0xFF == 0
    assert encode("u61", 0x1A, b"\x01")[:2] == b"\x7e\x00"
    assert encode("u50", 0x1A, b"\x01", seq=1)[:4] == u50_code_packet(2, 0, 1)


@pytest.mark.parametrize("framing", ["u50", "u61"])
def test_decoder_recovers_from_damage(framing):
    dec = Decoder(framing)
    good = encode(framing, 0x1A, b"\x00\x7e\x7e\x01")
    bad = bytearray(encode(framing, 0x1A, b"\x01\x02"))
    bad[-1] ^= 0xFF                                           # wrong checksum
    cut = encode(framing, 0x1B, b"\x02\x03\x04\x05")[:-3]      # cut short, then a new frame
    ev = dec.feed(b"\x00\x11" + good + bytes(bad) + cut + good)
    msgs = [e for e in ev if e[0] == "msg"]
    assert msgs == [("msg", 0x1A, b"\x00\x7e\x7e\x01")] * 2
    assert dec.bad_checksums == 1 and dec.errors >= 2


@settings(max_examples=min(settings.default.max_examples, 800))  # heavy: cap the CI profile
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=8), st.sampled_from(["u50", "u61"]),
       st.binary(max_size=30))
def test_fuzz_decoder(payloads, framing, noise):
    dec = Decoder(framing)
    wire = noise + b"".join(encode(framing, 0x1A, p) for p in payloads)
    got = []
    for i in range(0, len(wire), 7):                          # arbitrary read boundaries
        got += [e for e in dec.feed(wire[i:i + 7]) if e[0] == "msg"]
    # noise may swallow at most the first message; every later one is decoded exactly
    tail = [("msg", 0x1A, p) for p in payloads]
    assert got[-len(tail[1:]):] == tail[1:] if len(tail) > 1 else len(got) <= 1 + len(noise)


def test_frame_record_phase_and_ssi():
    f = bytes.fromhex("00090101a901aa0123")
    assert frame_record(0x1A, f, 5) == (5, f, 147, len(f), 0, ())
    assert frame_record(0x1B, b"\x04" + f, 5).comments == ("phase=3",)
    r = frame_record(0x1C, b"\x01" + f + b"\x12\x34", 5)
    assert r.data == f and r.comments == ("phase=0 ssi=0x1234",)
    assert frame_record(0x31, b"", 5) is None


# --------------------------------------------------------------------------- emulator

@pytest.mark.parametrize("framing,n", [("u61", 10_000), ("u50", 3_000)])
def test_emulator_frames_written_in_order(framing, n, tmp_path, tshark):
    items = frames(n)
    with NiEmulator(framing) as emu:
        src = SerialNiSource(emu.path, framing=framing)
        assert emu.modes == [NI_MODE_L2]
        out = tmp_path / "live.pcapng"
        w = RingWriter(out)
        sender = threading.Thread(target=emu.send_many, args=(items,))
        sender.start()
        emu_err = threading.Thread(target=lambda: [emu.send_error(0x31) for _ in range(3)])
        got = capture(src, w, count=n, duration=60)
        sender.join()
        emu_err.start()
        emu_err.join()
        deadline = time.monotonic() + 5
        while src.stats["rx_errors"] < 3 and time.monotonic() < deadline:
            src.poll()
        src.close()
        w.close()
        time.sleep(0.05)
        assert emu.modes == [NI_MODE_L2, NI_MODE_L5]
    assert got == n
    assert src.stats["rx_errors"] == 3 and src.stats["rx_error_kinds"] == {"CRC": 3}
    assert src.stats["framing_errors"] == 0
    recs = list(read_capture(out))
    assert [(r.data, r.comments) for r in recs] == [(f, comment_for(p, s)) for f, p, s in items]
    assert all(r.linktype == 147 for r in recs)
    if framing == "u50":
        assert emu.acks >= n - 10            # every message acknowledged
    # the file as tshark reads it
    rows = subprocess.run([tshark, "-r", str(out), "-T", "fields", "-E", "separator=|",
                           "-e", "frame.len", "-e", "frame.comment"], capture_output=True, text=True).stdout.splitlines()
    assert len(rows) == n
    assert rows[2] == f"{len(items[2][0])}|{comment_for(items[2][1], items[2][2])[0]}"


def test_no_answer_missing_device_and_permission(tmp_path, monkeypatch):
    with NiEmulator("u61", answer=False) as emu:
        t0 = time.monotonic()
        with pytest.raises(SerialNiError, match=r"no answer to the layer-2 mode switch \(NI command 0xD1\) within 0.5 s"):
            SerialNiSource(emu.path, framing="u61", answer_timeout=0.5)
        assert time.monotonic() - t0 < 3
    with pytest.raises(LiveError, match="serial:/dev/ttyNOPE9: no such device"):
        open_source("serial:/dev/ttyNOPE9")
    import serial
    dev = tmp_path / "ttyFAKE"
    dev.write_bytes(b"")

    def deny(*a, **k):
        raise serial.SerialException(errno.EACCES, f"could not open port {dev}: [Errno 13] Permission denied")
    monkeypatch.setattr(serial, "Serial", deny)
    with pytest.raises(SerialNiError) as ei:
        SerialNiSource(str(dev))
    assert "permission denied" in str(ei.value) and "group" in str(ei.value) and "'root'" in str(ei.value)


def start_sniff(lonscope_cmd, emu, *args) -> subprocess.Popen:
    """`lonscope sniff serial:<emulator> ARGS`, returned once it has switched the NI to layer 2."""
    proc = subprocess.Popen(lonscope_cmd + ["sniff", f"serial:{emu.path}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not emu.modes and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def test_sniff_cli_with_ring_buffer(tmp_path, lonscope_cmd):
    items = frames(600, seed=3)
    with NiEmulator("u61") as emu:
        out = tmp_path / "ring.pcapng"
        proc = start_sniff(lonscope_cmd, emu, "-w", str(out), "-c", "600", "-b", "filesize:8", "-b", "files:3", "-q")
        emu.send_many(items)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "600 packets captured" in err
        time.sleep(0.05)
        assert emu.modes == [NI_MODE_L2, NI_MODE_L5]
    files = sorted(tmp_path.glob("ring_*.pcapng"))
    assert len(files) == 3                                     # older files rotated away
    recs = [r for f in files for r in read_capture(f)]
    assert [r.data for r in recs] == [f for f, _, _ in items[-len(recs):]]
    assert all(os.path.getsize(f) < 8000 + 200 for f in files)


def test_sniff_cli_errors(lonscope_cmd):
    r = subprocess.run(lonscope_cmd + ["sniff", "serial:/dev/ttyNOPE9", "-w", "x.pcapng"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Error: serial:/dev/ttyNOPE9: no such device" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run(lonscope_cmd + ["sniff", "bogus", "-c", "1"], capture_output=True, text=True)
    assert r.returncode == 1 and "expected KIND:TARGET" in r.stderr


def test_sniff_file_source_for_wireshark(tmp_path, lonscope_cmd, tshark):
    log = tmp_path / "sniffer.log"
    log.write_text("1.0 RX 00 09 01 a9 01 aa 01 23\n2.0 TX 00 09 01 aa 01 a9 01 23\n")
    out = tmp_path / "ws.pcapng"
    r = subprocess.run(lonscope_cmd + ["sniff", f"file:{log}", "-w", str(out), "--for-wireshark"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 2                         # packet list printed
    rows = subprocess.run([tshark, "-r", str(out), "-T", "fields", "-e", "lon.srcnode", "-e", "lon.dstnode",
                           "-e", "frame.comment"], capture_output=True, text=True).stdout.splitlines()
    assert rows == ["0x29\t0x2a\tdir=rx", "0x2a\t0x29\tdir=tx"]


def test_sniff_flushes_the_file_while_capturing(tmp_path, lonscope_cmd):
    """Another program following the pcapng sees the packets within about a second."""
    items = frames(5, seed=9)
    with NiEmulator("u61") as emu:
        out = tmp_path / "follow.pcapng"
        proc = start_sniff(lonscope_cmd, emu, "-w", str(out), "-q")
        try:
            emu.send_many([(f, 2, None) for f, _, _ in items])
            time.sleep(1.5)
            assert proc.poll() is None                      # still capturing
            recs = list(read_capture(out))
            assert [r.data for r in recs] == [f for f, _, _ in items]
            assert all(r.comments == ("phase=2",) for r in recs)
        finally:
            proc.send_signal(__import__("signal").SIGINT)  # Ctrl-C: clean stop
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "5 packets captured" in err
        time.sleep(0.05)
        assert emu.modes == [NI_MODE_L2, NI_MODE_L5]


def test_sniff_capture_filter_by_lon_address_and_domain(tmp_path, lonscope_cmd):
    """`lonscope sniff -f EXPR` keeps only the frames whose LonTalk layer matches; the
    expected set comes from the parameters the frames were built with."""
    from dissectors.lon import build_frame
    params = []
    for i in range(300):
        params.append(dict(src_subnet=1 + i % 3, src_node=1 + i % 11, dst_subnet=1, dst_node=1 + i % 13,
                           domain=bytes([0x4C if i % 5 == 0 else 0x07])))
    items = [(build_frame(pdu="apdu", apdu=bytes([0x10, i & 0xFF]), **p), 1, None) for i, p in enumerate(params)]
    want = [f for (f, _, _), p in zip(items, params)
            if (p["src_subnet"] == 1 and p["src_node"] == 5) or p["dst_node"] == 10 or p["domain"] == b"\x4c"]
    assert 0 < len(want) < len(items)
    expr = "lon.srcnet == 1 && lon.srcnode == 5 || lon.dstnode == 10 || lon.domain == 4c"
    with NiEmulator("u61") as emu:
        out = tmp_path / "filtered.pcapng"
        proc = start_sniff(lonscope_cmd, emu, "-w", str(out), "-c", str(len(want)), "-f", expr, "-q")
        emu.send_many(items)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # -c counts kept frames; everything sent before the last kept one was filtered out
    last = max(i for i, (f, _, _) in enumerate(items) if f == want[-1])
    assert f"{len(want)} packets captured, {last + 1 - len(want)} filtered out by -f" in err
    recs = list(read_capture(out))
    assert [r.data for r in recs] == want and all(r.comments == ("phase=1",) for r in recs)


def test_sniff_capture_filter_errors(lonscope_cmd, tmp_path):
    log = tmp_path / "x.log"
    log.write_text("1.0 00 09 01 a9 01 aa 01 23\n")
    r = subprocess.run(lonscope_cmd + ["sniff", f"file:{log}", "-f", "ip.src == 1.2.3.4 || lon.srcnode == 1"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "only lon.* fields can be used in a capture filter (not ip.src)" in r.stderr
    r = subprocess.run(lonscope_cmd + ["sniff", f"file:{log}", "-f", "lon.srcnode =="], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("Error: capture filter 'lon.srcnode ==': ")
    assert "Traceback" not in r.stderr
    # a log without CRC (USER2): the filter sees its LonTalk addresses (src 0x29 = 1/41)
    r = subprocess.run(lonscope_cmd + ["sniff", f"file:{log}", "-f", "lon.srcnode == 41", "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "1 packets captured, 0 filtered out by -f" in r.stderr, r.stderr
