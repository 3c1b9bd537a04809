"""Sustained live-capture rate: the serial NI emulator (analyzer.live.emulator, U61 framing
on a pty) delivers 5,000 layer-2 frames per second for 60 s (quick: 10 s) into the real
`lonscope sniff serial:PTY -w OUT.pcapng -q` process; the written file is then read back
and every frame checked (a sequence number in each APDU): lost, reordered and damaged
frames are counted.

The emulator paces itself in 10 ms ticks (50 frames per tick).  A pty has no baud rate, so
a capture that cannot keep up does not lose frames here but slows the sender down (the
pty buffer fills): the achieved send rate is therefore reported next to the target, and
the run only counts as sustained when it reached the target with 0 lost.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from binascii import crc_hqx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from analyzer.capture import read_capture  # noqa: E402
from analyzer.live.emulator import NiEmulator  # noqa: E402

RATE = 5000
TICK = 0.01

# unicast APDU frame 1/5 -> 1/10, domain 0x4c, APDU 0x10 + 3-byte sequence number
_HEAD = bytes.fromhex("00" "39" "0185" "010a" "4c" "10")


def frame(i: int) -> bytes:
    body = _HEAD + i.to_bytes(3, "big")
    return body + (crc_hqx(body, 0xFFFF) ^ 0xFFFF).to_bytes(2, "big")


def seq_of(data: bytes) -> int | None:
    if len(data) != len(_HEAD) + 5 or not data.startswith(_HEAD):
        return None
    return int.from_bytes(data[len(_HEAD):len(_HEAD) + 3], "big")


def sustained(seconds: float, rate: int = RATE) -> dict:
    n = int(seconds * rate)
    per_tick = int(rate * TICK)
    tmp = tempfile.mkdtemp(prefix="bench_live_")
    out = os.path.join(tmp, "live.pcapng")
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with NiEmulator("u61") as emu:
        # the wire bytes of each tick, prepared before the clock starts
        ticks = []
        for t in range(0, n, per_tick):
            ticks.append(b"".join(emu.frame_bytes(frame(i), (i % 3), 0x0100 + (i & 0xFF) if i % 2 else None)
                                  for i in range(t, min(n, t + per_tick))))
        proc = subprocess.Popen([sys.executable, "-m", "analyzer", "sniff", f"serial:{emu.path}", "-w", out,
                                 "-q", "-c", str(n)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not emu.modes and time.monotonic() < deadline:
            time.sleep(0.01)
        if not emu.modes:
            proc.kill()
            raise RuntimeError("lonscope sniff did not switch the emulated NI to layer 2: "
                               + proc.communicate()[1].strip()[-300:])
        time.sleep(0.2)
        late_ticks = 0
        t0 = time.monotonic()
        for k, chunk in enumerate(ticks):
            due = t0 + k * TICK
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            elif now - due > TICK:
                late_ticks += 1
            emu.send_raw(chunk)
        t_sent = time.monotonic()
        try:
            _, err = proc.communicate(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            proc.send_signal(2)
            _, err = proc.communicate(timeout=30)
        t_done = time.monotonic()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    recs = list(read_capture(out))
    seqs = [seq_of(r.data) for r in recs]
    damaged = sum(1 for s in seqs if s is None)
    good = [s for s in seqs if s is not None]
    reordered = sum(1 for a, b in zip(good, good[1:]) if b <= a)
    lost = n - len(set(good))
    comments_ok = all(r.comments and r.comments[0].startswith(f"phase={s % 3}") for r, s in zip(recs, seqs)
                      if s is not None)
    for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"frames": n, "seconds": seconds, "send_s": t_sent - t0, "drain_s": t_done - t_sent,
            "late_ticks": late_ticks, "received": len(recs), "lost": lost, "reordered": reordered,
            "damaged": damaged, "comments_ok": comments_ok, "sniff_cpu_s": cpu,
            "rc": proc.returncode, "stderr": err.strip().splitlines()[-1] if err.strip() else ""}


def run(quick: bool = False) -> list[dict]:
    seconds = 10 if quick else 60
    r = sustained(seconds)
    achieved = r["frames"] / r["send_s"]
    ok = r["lost"] == 0 and r["reordered"] == 0 and r["damaged"] == 0 and achieved >= RATE * 0.98
    note = (f"{r['frames']} frames offered at {RATE}/s for {seconds} s by the pty NI emulator (U61) into "
            f"`lonscope sniff serial:` -w; received {r['received']}, lost {r['lost']}, reordered "
            f"{r['reordered']}, damaged {r['damaged']}, phase/SSI comments {'ok' if r['comments_ok'] else 'WRONG'}; "
            f"{r['late_ticks']} late 10-ms ticks; last frame written {r['drain_s']:.2f} s after the last send; "
            f"{'sustained' if ok else 'NOT sustained'}")
    return [
        {"benchmark": "live.sustained_rate", "value": achieved, "unit": "frames/s", "tshark": None,
         "ratio": None, "note": note},
        {"benchmark": "live.lost", "value": float(r["lost"]), "unit": "frames", "tshark": None, "ratio": None,
         "note": f"of {r['frames']} (target 0); sniff exit code {r['rc']}: {r['stderr']}"},
        {"benchmark": "live.sniff_cpu", "value": r["sniff_cpu_s"] / r["frames"] * 1e6, "unit": "us CPU/frame",
         "tshark": None, "ratio": None,
         "note": f"CPU of the sniff process (user+system) per frame; {r['sniff_cpu_s']:.1f} s in all "
                 f"= {r['sniff_cpu_s'] / seconds * 100:.0f}% of one core at {RATE}/s"},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
