"""LonTalk over CN/IP decode throughput: `lonscope decode -T fields -e <lon fields>` against
`tshark -T fields` with the same fields on the same capture (1M packets; quick: 100k),
plus the in-process dissection rate of the lon/cnip stack alone.

The capture is random valid LonTalk frames (every address format, PDU kind, domain length,
versions 0/2) from `tests/longen.py`, in Ethernet/IPv4/UDP 1628/CN-IP data packets.
Times are CPU seconds of the child process (user + system): the host is shared, so wall time
mostly measures the neighbours; wall-time rates and ratios are reported in their own rows.
The requested fields are all per-frame LonTalk fields, so `decode` uses the CN/IP fast feed
(`analyzer.fastfields.fast_feed`: lower layers' fields and stages skipped, identical values;
tests/test_fastpath.py)."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from longen import gen_frame, wrap_cnip_eth  # noqa: E402

FIELDS = ["lon.srcnet", "lon.srcnode", "lon.dstnode", "lon.domain", "lon.pdufmt", "lon.code",
          "lon.addrfmt", "lon.trans_no"]
OUT = os.path.join(ROOT, "bench", "out")


def make_capture(path: str, n: int, distinct: int = 5000, seed: int = 2541) -> None:
    """n CN/IP packets cycling over `distinct` random frames (sequence numbers all differ)."""
    import struct
    rng = random.Random(seed)
    frames = [gen_frame(rng)[0] for _ in range(distinct)]
    rec = struct.Struct("<IIII")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        chunk = []
        for i in range(n):
            b = wrap_cnip_eth(frames[i % distinct], seqno=i + 1)
            chunk.append(rec.pack(1_700_000_000 + i // 1000, (i % 1000) * 1000, len(b), len(b)))
            chunk.append(b)
            if len(chunk) >= 40000:
                f.write(b"".join(chunk))
                chunk = []
        f.write(b"".join(chunk))


def _run(argv: list[str]) -> tuple[float, float]:
    """(CPU seconds of the child, wall seconds)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[0]} failed: {p.stderr.read().decode(errors='replace')[-300:]}")
    return ru.ru_utime + ru.ru_stime, wall


def _lonscope() -> list[str]:
    exe = shutil.which("lonscope", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return [exe] if exe else [sys.executable, "-m", "analyzer"]


def dissect_rate(path: str, limit: int = 100_000) -> float:
    """Packets/s of the stateless dissection alone (Ethernet up to lon, fast pass)."""
    from analyzer.capture import read_capture
    from dissectors import dissect_frame, load_all
    load_all()
    recs = []
    for r in read_capture(path):
        recs.append(r)
        if len(recs) >= limit:
            break
    t = time.process_time()
    for r in recs:
        dissect_frame(r.data, r.linktype)
    return len(recs) / (time.process_time() - t)


def run(quick: bool = False) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"lon_cnip_{n}.pcap")
    if not os.path.exists(path):
        make_capture(path, n)
    ef = []
    for f in FIELDS:
        ef += ["-e", f]
    rows = []
    cpu, wall = _run(_lonscope() + ["decode", path, "-T", "fields"] + ef)
    ours = n / cpu
    ts_rate = None
    twall = None
    ts_note = "tshark not installed"
    tsh = shutil.which("tshark")
    if tsh:
        tcpu, twall = _run([tsh, "-n", "-r", path, "-T", "fields"] + ef)
        ts_rate = n / tcpu
        ts_note = f"tshark CPU {tcpu:.1f} s, wall {twall:.1f} s"
    rows.append({"benchmark": f"lon decode -T fields ({n} CN/IP pkts)", "value": round(ours),
                 "unit": "pkt/s (CPU)", "tshark": round(ts_rate) if ts_rate else None,
                 "ratio": round(ours / ts_rate, 3) if ts_rate else None,
                 "note": f"one process (CN/IP fast feed); lonscope CPU {cpu:.1f} s, wall {wall:.1f} s; "
                         f"{ts_note}; fields {' '.join(FIELDS)}"})
    rows.append({"benchmark": f"lon decode -T fields ({n} CN/IP pkts), wall", "value": round(n / wall),
                 "unit": "pkt/s (wall)", "tshark": round(n / twall) if twall else None,
                 "ratio": round(twall / wall, 3) if twall else None,
                 "note": "same runs as above, elapsed time; on a shared host wall time mostly measures the "
                         "neighbours (both programs get the same share)"})
    help_text = subprocess.run(_lonscope() + ["decode", "--help"], capture_output=True, text=True).stdout
    if "--jobs" in help_text:
        jcpu, jwall = _run(_lonscope() + ["decode", path, "-T", "fields", "-j", "0"] + ef)
        rate = n / jwall
        tw = n / twall if tsh else None
        rows.append({"benchmark": f"lon decode -T fields -j 0 ({n} CN/IP pkts, {os.cpu_count()} CPUs)",
                     "value": round(rate), "unit": "pkt/s (wall)", "tshark": round(tw) if tw else None,
                     "ratio": round(rate / tw, 3) if tw else None,
                     "note": f"worker processes (one per CPU); CPU {jcpu:.1f} s (all processes), wall "
                         f"{jwall:.1f} s; gains only when the CPUs are otherwise idle"})
    rows.append({"benchmark": "lon stateless dissection (eth..lon, fast pass, in process)",
                 "value": round(dissect_rate(path)), "unit": "pkt/s (CPU)", "tshark": None,
                 "ratio": None, "note": "100k packets, no pipeline stages, no output"})
    return rows


if __name__ == "__main__":
    import json
    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
