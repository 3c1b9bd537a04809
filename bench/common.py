"""Helpers shared by the `bench/bench_*.py` modules.

- `corpus(kind, packets)`: benchmark captures generated with the simulator's fast `bench`
  scenario (cached in `bench/out/`, regenerated only when missing): `kind` is "plain" (the
  fleet mix: every security configuration, repeaters, CN/IP backhaul) or "ciphered" (only
  ciphered associations).  `corpus(..., wrapped=True)` gives the same frames with every raw
  LonTalk frame wrapped in Ethernet/IPv4/UDP/CN-IP, which is how tshark can read them.
- `sizes(quick)`: the corpus sizes of a run (1M and 10M packets; quick: 100k and 1M).
- `timed(fn)`, `best_of(fn, n)`: wall-clock seconds; `peak_rss_mb()`: this process' peak RSS.
- `run_cmd(argv)`: (seconds, peak RSS MB of the child) for a command line.
- `tshark()`, `run_tshark(args)`: the tshark binary (None when absent) and a timed run.
- `row(...)`: one result row in the format `python -m bench` aggregates.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CORPUS_VERSION = 1


def sizes(quick: bool) -> dict[str, int]:
    return {"small": 100_000, "large": 1_000_000} if quick else {"small": 1_000_000, "large": 10_000_000}


# --------------------------------------------------------------------------- timing / memory

def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def best_of(fn: Callable[[], object], n: int = 3) -> float:
    return min(timed(fn) for _ in range(n))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def run_cmd(argv: list[str], timeout: float = 3600, stdout=subprocess.DEVNULL, env: dict | None = None,
            check: bool = True) -> tuple[float, float]:
    """Run a command; returns (wall seconds, the child's peak RSS in MB)."""
    wall, _, rss = run_cmd_cpu(argv, timeout, stdout, env, check)
    return wall, rss


def run_cmd_cpu(argv: list[str], timeout: float = 3600, stdout=subprocess.DEVNULL, env: dict | None = None,
                check: bool = True) -> tuple[float, float, float]:
    """Run a command; returns (wall seconds, CPU seconds user+sys, peak RSS MB) of the child.
    CPU time is the fairer figure on a shared machine."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, env=env)
    try:
        _, status, ru = os.wait4(p.pid, 0)
    except ChildProcessError:  # pragma: no cover
        p.wait(timeout)
        status, ru = p.returncode, None
    dt = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status) if isinstance(status, int) else status
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if check and p.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {p.returncode}: {err.strip()[-300:]}")
    cpu = (ru.ru_utime + ru.ru_stime) if ru else dt
    return dt, cpu, (ru.ru_maxrss / 1024.0 if ru else 0.0)


def run_cmd_sampled(argv: list[str], interval: float = 1.0, timeout: float = 4 * 3600, stdout=subprocess.DEVNULL,
                    env: dict | None = None, check: bool = True, log: str | None = None) -> dict:
    """Run a command, sampling its resident memory every `interval` seconds.  Returns
    {"wall", "cpu", "peak_rss" (MB, from the kernel), "samples": [(seconds, rss MB)],
    "anon": [(seconds, anonymous rss MB)]}; with `log`, every sample is also appended to that
    file as it is taken ("seconds rss_mb anon_mb")."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, env=env)
    samples: list[tuple[float, float]] = []
    anon: list[tuple[float, float]] = []     # RssAnon: the process' own memory, no mapped files
    status_path = f"/proc/{p.pid}/status"
    logf = open(log, "a") if log else None
    try:
        while True:
            try:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            except ChildProcessError:  # pragma: no cover
                pid, status, ru = p.pid, 0, None
            if pid:
                break
            try:
                with open(status_path) as f:
                    vals = {}
                    for line in f:
                        if line.startswith(("VmRSS:", "RssAnon:")):
                            vals[line[:line.index(":")]] = int(line.split()[1]) / 1024.0
                if "VmRSS" in vals:
                    s = (round(time.perf_counter() - t, 2), vals["VmRSS"])
                    samples.append(s)
                    anon.append((s[0], vals.get("RssAnon", s[1])))
                    if logf:
                        logf.write(f"{s[0]} {s[1]:.1f} {anon[-1][1]:.1f}\n")
                        logf.flush()
            except OSError:
                pass
            if time.perf_counter() - t > timeout:
                p.kill()
            time.sleep(interval)
    finally:
        if logf:
            logf.close()
    dt = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status) if ru is not None else 0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if check and p.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {p.returncode}: {err.strip()[-300:]}")
    return {"wall": dt, "cpu": (ru.ru_utime + ru.ru_stime) if ru else dt,
            "peak_rss": (ru.ru_maxrss / 1024.0 if ru else max((m for _, m in samples), default=0.0)),
            "samples": samples, "anon": anon, "stderr": err}


def rss_growth(samples: list[tuple[float, float]], packets: int, wall: float) -> float | None:
    """Resident-memory growth in MB per million packets between 30% and 85% of a run (the
    start holds start-up and warm-up, the end the final write of the spooled chunks),
    assuming packets are read at an even rate."""
    half = [(t, m) for t, m in samples if 0.3 * wall <= t <= 0.85 * wall]
    if len(half) < 4 or packets <= 0:
        return None
    n = len(half)
    mt = sum(t for t, _ in half) / n
    mm = sum(m for _, m in half) / n
    var = sum((t - mt) ** 2 for t, _ in half)
    if not var:
        return None
    slope = sum((t - mt) * (m - mm) for t, m in half) / var      # MB per second
    return slope * wall / packets * 1e6


def lonscope_cmd() -> list[str]:
    exe = shutil.which("lonscope", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return [exe] if exe else [sys.executable, "-m", "analyzer"]


# --------------------------------------------------------------------------- tshark

def tshark() -> str | None:
    return shutil.which("tshark")


def tshark_version() -> str | None:
    t = tshark()
    if not t:
        return None
    out = subprocess.run([t, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].split(" (Git")[0] if out else None


def run_tshark(args: list[str], timeout: float = 3600) -> tuple[float, float] | None:
    """`tshark ARGS` with stdout discarded: (seconds, peak RSS MB), or None without tshark."""
    t = tshark()
    if not t:
        return None
    return run_cmd([t] + args, timeout=timeout)


# --------------------------------------------------------------------------- corpora

def _template(kind: str, seed: int = 1):
    """One simulated fleet run: [(ts_ns, iface, data, linktype, comments)]."""
    from analyzer.simulate import run
    from analyzer.simulate.dlms import PROFILES
    from analyzer.simulate import scenarios as S
    if kind == "ciphered":
        profiles = [p for p, v in PROFILES.items() if v.protection and v.protection != "signing"]
        w = S.World(seed, n_meters=len(profiles) * 2, fast=True)
        S._fleet_run(w, profiles, big_every=2, headend=True)
    elif kind == "plain":
        w = run("bench", seed=seed)
    else:
        raise ValueError(f"unknown corpus kind {kind!r} (plain, ciphered)")
    return [f[:5] for f in w.net.rec.sorted()]


def _wrap(frames):
    """Every raw LonTalk frame in Ethernet/IPv4/UDP 1628/CN-IP (for tshark)."""
    from analyzer.simulate.wire import cnip, ether_udp
    out = []
    seq = 0
    for ts, iface, data, lt, comments in frames:
        if lt == 147:
            seq += 1
            pl = cnip(data[:-2], seq, 0x4C530002, (ts // 1_000_000) & 0xFFFFFFFF)
            data = ether_udp(bytes.fromhex("020000000003"), bytes.fromhex("020000000002"),
                             bytes([10, 0, 1, 3]), bytes([10, 0, 1, 2]), 1628, 1628, pl, seq)
            lt, iface, comments = 1, 1, ()
        out.append((ts, iface, data, lt, comments))
    return out


def corpus(kind: str = "plain", packets: int = 1_000_000, wrapped: bool = False, seed: int = 1) -> Path:
    """Path of a benchmark capture with `packets` packets (pcapng), generated once into
    bench/out/ by tiling one simulated fleet run (timestamps continue, bytes repeat)."""
    from analyzer.pcapwriter import PcapngWriter
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"{kind}-{_count_name(packets)}{'-cnip' if wrapped else ''}-s{seed}.pcapng"
    path = OUT / name
    meta = path.with_suffix(".json")
    want = {"version": CORPUS_VERSION, "kind": kind, "packets": packets, "wrapped": wrapped, "seed": seed}
    if path.exists() and meta.exists():
        try:
            if json.loads(meta.read_text()) == want:
                return path
        except ValueError:
            pass
    frames = _template(kind, seed)
    if wrapped:
        frames = _wrap(frames)
    span = frames[-1][0] - frames[0][0] + 1_000_000_000
    tmp = path.with_suffix(".tmp")
    n = 0
    with PcapngWriter(str(tmp)) as w:
        # interfaces in a fixed order: USER0 first when present
        tile = 0
        while n < packets:
            off = tile * span
            for ts, iface, data, lt, comments in frames:
                w.write((ts + off, data, lt, comments))
                n += 1
                if n >= packets:
                    break
            tile += 1
    os.replace(tmp, path)
    meta.write_text(json.dumps(want))
    return path


def _count_name(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def keys_file() -> Path:
    """The key ring that decrypts every corpus (the demo key ring)."""
    return ROOT / "keys" / "demo.toml"


# --------------------------------------------------------------------------- rows

def row(benchmark: str, value: float, unit: str, tshark: float | None = None, note: str = "",
        higher_is_better: bool = True) -> dict:
    """A result row.  ratio = ours / tshark for rates (higher is better) and tshark / ours
    for times and sizes (so a ratio above 1 always means lonscope is ahead)."""
    ratio = None
    if tshark:
        ratio = value / tshark if higher_is_better else (tshark / value if value else None)
    return {"benchmark": benchmark, "value": value, "unit": unit, "tshark": tshark, "ratio": ratio,
            "note": note}


__all__ = ["ROOT", "OUT", "sizes", "timed", "best_of", "peak_rss_mb", "current_rss_mb", "run_cmd", "run_cmd_cpu",
           "run_cmd_sampled", "rss_growth",
           "lonscope_cmd", "tshark", "tshark_version", "run_tshark", "corpus", "keys_file", "row"]
