"""LonTalk over CN/IP decode throughput: `lonscope decode -T fields -e <lon fields>` against
`tshark -T fields` with the same fields on the same capture (1M packets; quick: 100k), in one
process (`-j 1`) and as `decode` runs by default (parallel workers on a big capture with more
than one CPU), plus the in-process dissection rate of the lon/cnip stack alone.

The capture is random valid LonTalk frames (every address format, PDU kind, domain length,
versions 0/2) from `tests/longen.py`, in Ethernet/IPv4/UDP 1628/CN-IP data packets.
Both CPU time (user + system of the process and its workers) and wall time are reported:
tshark is single-threaded, so on a 2-CPU machine the parallel decode wins on wall time while
using about as much CPU as one process.  The programs run interleaved, best of `REPEAT` runs
each, because the host may be shared.  lonscope runs with its bytecode cached, as an
installed package does (`PYTHONPYCACHEPREFIX` under bench/out).  The requested fields are all per-frame LonTalk fields,
so `decode` uses the CN/IP fast feed (`analyzer.fastfields.fast_feed`: lower layers' fields
and stages skipped, only the requested fields recorded, identical values; tests/test_fastpath.py)."""
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


def _env() -> dict:
    """lonscope as installed: compiled bytecode cached (outside the source tree, under
    bench/out) even when the environment sets PYTHONDONTWRITEBYTECODE."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("LONSCOPE_FULL_DECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", os.path.join(OUT, "pycache"))
    return env


def _run(argv: list[str]) -> tuple[float, float]:
    """(CPU seconds of the child and its workers, wall seconds)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
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


REPEAT = 2


def run(quick: bool = False) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"lon_cnip_{n}.pcap")
    if not os.path.exists(path):
        make_capture(path, n)
    ef = []
    for f in FIELDS:
        ef += ["-e", f]
    tsh = shutil.which("tshark")
    cmds = {"one": _lonscope() + ["decode", path, "-T", "fields", "-j", "1"] + ef,
            "auto": _lonscope() + ["decode", path, "-T", "fields"] + ef}
    if tsh:
        cmds["tshark"] = [tsh, "-n", "-r", path, "-T", "fields"] + ef
    best: dict = {}
    subprocess.run(_lonscope() + ["decode", path, "-c", "1"] + ef, capture_output=True, env=_env())  # bytecode
    for _ in range(1 if quick else REPEAT):
        for k, argv in cmds.items():
            cpu, wall = _run(argv)
            old = best.get(k)
            best[k] = (min(cpu, old[0]), min(wall, old[1])) if old else (cpu, wall)
    cpu, wall = best["one"]
    acpu, awall = best["auto"]
    tcpu, twall = best.get("tshark", (None, None))
    from analyzer.cmd_decode import AUTO_MIN_BYTES, usable_cpus
    workers = min(usable_cpus(), 8) if os.path.getsize(path) >= AUTO_MIN_BYTES and usable_cpus() > 1 else 1
    runs = f"best of {1 if quick else REPEAT} interleaved runs"
    tnote = f"tshark CPU {tcpu:.2f} s, wall {twall:.2f} s" if tsh else "tshark not installed"

    def row(name, value, unit, theirs, note):
        return {"benchmark": name, "value": round(value), "unit": unit,
                "tshark": round(theirs) if theirs else None,
                "ratio": round(value / theirs, 3) if theirs else None, "note": note}

    rows = [
        row(f"lon decode -T fields -j 1 ({n} CN/IP pkts), CPU", n / cpu, "pkt/s (CPU)",
            n / tcpu if tsh else None,
            f"one process; lonscope CPU {cpu:.2f} s, wall {wall:.2f} s; {tnote}; {runs}; "
            f"fields {' '.join(FIELDS)}"),
        row(f"lon decode -T fields -j 1 ({n} CN/IP pkts), wall", n / wall, "pkt/s (wall)",
            n / twall if tsh else None, f"same runs, elapsed time; {runs}"),
        row(f"lon decode -T fields, default ({workers} worker processes, {os.cpu_count()} CPUs), wall",
            n / awall, "pkt/s (wall)", n / twall if tsh else None,
            f"lonscope wall {awall:.2f} s, CPU {acpu:.2f} s (all processes); {tnote}; {runs}; "
            "wall time gains need idle CPUs"),
        row(f"lon decode -T fields, default ({workers} worker processes), CPU", n / acpu, "pkt/s (CPU)",
            n / tcpu if tsh else None,
            "CPU seconds of all processes (the price of parallel decoding: record walk, "
            "process start-up, text passed back)"),
        {"benchmark": "lon stateless dissection (eth..lon, fast pass, in process)",
         "value": round(dissect_rate(path)), "unit": "pkt/s (CPU)", "tshark": None,
         "ratio": None, "note": "100k packets, full Dissection (all fields, Info/addresses), no stages, no output"},
    ]
    return rows


if __name__ == "__main__":
    import json
    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
