"""Export benchmarks.

1. Packets to Parquet (`lonscope export`) against `lonscope decode -T fields -j 1` printing the
   same summary columns (number, time, source, destination, protocols, length, info,
   status): both run the full decode (every layer and stage), so the ratio is the cost of
   building and writing the table.  CPU seconds (user+sys of the process), the fairer figure
   on a shared machine; wall time in the note.
2. Memory of those exports: peak RSS (kernel) and the RSS sampled over the run; "growth" is
   the slope of RSS between 30% and 85% of the run in MB per million packets (flat memory:
   close to 0, and the same peak at 1M and 10M), for the whole RSS and for the anonymous
   part (the process' own memory, without mapped files and libraries).  Quick: 20k/100k packets; full: 100k, 1M
   and 10M packets (the 10M export alone takes about 35 minutes at ~5k packets/s).
3. The Dask engine on 8 capture files (quick: 8 x 10k packets, full: 8 x 100k), 1 worker
   against 2 (LocalCluster, one single-threaded worker process each): timed from job
   submission to the merged Parquet file being closed, with the cluster already started
   and the workers' imports warmed; cluster start and warm-up are reported in the note, and
   so is the speed-up of the whole CLI-equivalent run (start + job).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

SUMMARY_FIELDS = ["frame.number", "frame.time_epoch", "_ws.col.Source", "_ws.col.Destination", "frame.protocols",
                  "frame.len", "_ws.col.Info", "lonscope.status"]


def _load() -> str:
    try:
        return "load average %.2f" % os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return "load average unknown"


def _dask_run(paths, workers: int, out: str) -> dict:
    """One Dask export; returns the phases' seconds."""
    from analyzer.dask_engine import dask_export, make_client, warm
    t0 = time.perf_counter()
    client, cluster = make_client(None, workers)
    try:
        t1 = time.perf_counter()
        client.run(warm)
        t2 = time.perf_counter()
        tm: dict = {}
        n = dask_export("packets", paths, out, client=client, timings=tm)
        t3 = time.perf_counter()
        return {"start": t1 - t0, "warm": t2 - t1, "job": t3 - t2, "rows": n, "compute": tm["compute"],
                "merge": tm["merge"], "task_sum": sum(t["seconds"] for t in tm["tasks"]),
                "task_cpu": sum(t["cpu"] for t in tm["tasks"])}
    finally:
        client.close()
        cluster.close()


def export_rows(n: int, tmp: str, decode: bool = True, interval: float = 1.0, log: str | None = None,
                dataset: bool = False) -> list[dict]:
    """Export n packets to one Parquet file (or, `dataset`, to a directory of 1M-row parts)."""
    import shutil
    cmd = common.lonscope_cmd()
    path = str(common.corpus("plain", n))
    out = os.path.join(tmp, f"p{n}-dataset/" if dataset else f"p{n}.parquet")
    ex = common.run_cmd_sampled([*cmd, "export", path, "-o", out], interval=interval, log=log)
    growth = common.rss_growth(ex["samples"], n, ex["wall"])
    agrowth = common.rss_growth(ex["anon"], n, ex["wall"])
    anon_peak = max((m for _, m in ex["anon"]), default=0.0)
    if dataset:
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / 2**20
        shutil.rmtree(out)
    else:
        size = os.path.getsize(out) / 2**20
        os.unlink(out)
    what = f"export {n} packets to a Parquet dataset" if dataset else f"export {n} packets to Parquet"
    rows = []
    g = (f"{growth:+.1f} MB per 1M packets from 30% to 85% of the run (anonymous memory {agrowth:+.1f} MB/1M, "
         f"max {anon_peak:.0f} MB)" if growth is not None and agrowth is not None else "too short to fit")
    if decode:
        argv = [*cmd, "decode", path, "-T", "fields", "-j", "1"]
        for f in SUMMARY_FIELDS:
            argv += ["-e", f]
        de = common.run_cmd_sampled(argv, interval=interval)
        rows.append(common.row(what, round(n / ex["cpu"], 1), "packets/s (CPU)", None,
                               f"decode -T fields of the same summary columns: {n / de['cpu']:,.0f}/s; "
                               f"export/decode CPU {ex['cpu'] / de['cpu']:.2f}x (wall {ex['wall'] / de['wall']:.2f}x); "
                               f"export wall {n / ex['wall']:,.0f}/s; {size:.1f} MB file; {_load()}"))
        dg = common.rss_growth(de["samples"], n, de["wall"])
        dnote = f"; decode -T fields peak {de['peak_rss']:.0f} MB" + (f", growth {dg:+.1f} MB/1M" if dg is not None else "")
    else:
        rows.append(common.row(what, round(n / ex["cpu"], 1), "packets/s (CPU)", None,
                               f"export wall {n / ex['wall']:,.0f}/s; {size:.1f} MB file; {_load()}"))
        dnote = ""
    rows.append(common.row(f"{what} peak RSS".replace(" to Parquet", ""), round(ex["peak_rss"], 1), "MB", None,
                           f"RSS growth {g}; sampled every {interval:g} s ({len(ex['samples'])} samples){dnote}",
                           higher_is_better=False))
    return rows


def dask_rows(per: int, tmp: str) -> list[dict]:
    path = str(common.corpus("plain", per))
    paths = [path] * 8
    load = _load()
    r1 = _dask_run(paths, 1, os.path.join(tmp, "d1.parquet"))
    r2 = _dask_run(paths, 2, os.path.join(tmp, "d2.parquet"))
    n = per * 8
    assert r1["rows"] == r2["rows"] == n
    speed = r1["job"] / r2["job"]
    total = (r1["start"] + r1["warm"] + r1["job"]) / (r2["start"] + r2["warm"] + r2["job"])
    rows = []
    for w, r in ((1, r1), (2, r2)):
        rows.append(common.row(f"dask export, {w} worker{'s' if w > 1 else ''}, 8 files", round(n / r["job"], 1),
                               "packets/s (wall)", None,
                               f"8 x {per:,} packets; job {r['job']:.1f} s (tasks {r['compute']:.1f} s, "
                               f"merge {r['merge']:.1f} s; tasks' wall sum {r['task_sum']:.1f} s, CPU "
                               f"{r['task_cpu']:.1f} s: the workers got {r['task_cpu'] / r['task_sum']:.0%} of a "
                               f"CPU each), cluster "
                               f"start {r['start']:.1f} s + warm-up {r['warm']:.1f} s not in the rate"))
    # what the same work would take if every worker had a whole CPU (the host is shared):
    # the tasks' CPU seconds spread over the workers, plus the client's merge
    ideal = (r1["task_cpu"] + r1["merge"]) / (r2["task_cpu"] / 2 + r2["merge"])
    rows.append(common.row("dask speed-up, 2 workers vs 1", round(speed, 2), "x", None,
                           f"job time (cluster started, imports warmed); with cluster start and warm-up "
                           f"{total:.2f}x; with a whole CPU per worker (tasks' CPU time / workers + merge) "
                           f"{ideal:.2f}x; {os.cpu_count()} CPUs; {load} before the runs"))
    return rows


def run(quick: bool = False) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="lonscope-bench-", dir=str(common.OUT)) as tmp:
        if quick:
            for n in (20_000, 100_000):
                rows += export_rows(n, tmp, interval=0.5)
            rows += dask_rows(10_000, tmp)
        else:
            rows += export_rows(100_000, tmp, interval=1.0)
            rows += export_rows(1_000_000, tmp, interval=2.0)
            rows += dask_rows(100_000, tmp)
            rows += export_rows(10_000_000, tmp, decode=False, interval=5.0)
            rows += export_rows(10_000_000, tmp, decode=False, interval=5.0, dataset=True)
    return rows


if __name__ == "__main__":
    import json
    quick = "--quick" in sys.argv
    for r in run(quick):
        print(json.dumps(r))
