"""Export benchmarks: packets to Parquet against plain decoding of the same file, the peak
memory of exports of growing captures (it should stay flat: exports stream in chunks), and
the Dask engine with 1 and 2 workers on 8 files."""
from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402


def _dask_run(paths, workers: int, out: str) -> float:
    from analyzer.dask_engine import dask_tables, make_client
    from analyzer.export import write_tables
    client, cluster = make_client(None, workers)
    try:
        client.run(lambda: __import__("analyzer.export"))     # warm the workers' imports
        t = time.perf_counter()
        write_tables(dask_tables("packets", paths, client=client), out)
        return time.perf_counter() - t
    finally:
        client.close()
        cluster.close()


def run(quick: bool = False) -> list[dict]:
    cmd = common.lonscope_cmd()
    rows = []
    small, large = (20_000, 100_000) if quick else (100_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="lonscope-bench-") as tmp:
        for n in (small, large):
            path = str(common.corpus("plain", n))
            out = os.path.join(tmp, f"p{n}.parquet")
            wall, cpu, rss = common.run_cmd_cpu([*cmd, "export", path, "-o", out])
            # the same full decode (every layer and stage) without the export: -e _ws.col.Info
            d_wall, d_cpu, d_rss = common.run_cmd_cpu([*cmd, "decode", path, "-T", "fields", "-e", "frame.number",
                                                       "-e", "_ws.col.Info"])
            rows.append(common.row(f"export {n} packets to Parquet", round(n / cpu, 1), "packets/s (CPU)", None,
                                   f"decode -T fields: {n / d_cpu:,.0f}/s (export/decode CPU {cpu / d_cpu:.2f}x); "
                                   f"wall {n / wall:,.0f}/s; {os.path.getsize(out) / 2**20:.1f} MB file"))
            rows.append(common.row(f"export {n} packets peak RSS", round(rss, 1), "MB", None,
                                   f"decode -T fields peak RSS {d_rss:.0f} MB (flat memory: compare sizes)",
                                   higher_is_better=False))
        per = 5_000 if quick else 100_000
        path = str(common.corpus("plain", per))
        paths = [path] * 8
        t1 = _dask_run(paths, 1, os.path.join(tmp, "d1.parquet"))
        t2 = _dask_run(paths, 2, os.path.join(tmp, "d2.parquet"))
        n = per * 8
        rows.append(common.row("dask export, 1 worker, 8 files", round(n / t1, 1), "packets/s (wall)", None,
                               f"8 x {per} packets, LocalCluster"))
        rows.append(common.row("dask export, 2 workers, 8 files", round(n / t2, 1), "packets/s (wall)", None,
                               f"speed-up {t1 / t2:.2f}x over 1 worker ({os.cpu_count()} CPUs, shared host)"))
    return rows


if __name__ == "__main__":
    import json
    quick = "--quick" in sys.argv
    for r in run(quick):
        print(json.dumps(r))
