"""`lonscope decode` throughput against tshark on CN/IP LonTalk captures, and the display
filter's evaluation rate.

Rows: decode -T fields (-j 1: one process, and -j 2; without -j a big capture is decoded
in parallel by default), -T jsonl, text lines — packets per second of
CPU time (the host may be shared; wall-clock rates are in the notes) — compared with
`tshark -T fields` / text on the same file and fields."""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

FIELDS = ["frame.number", "cnip.seqno", "lon.srcnet", "lon.srcnode", "lon.dstnet", "lon.dstnode",
          "lon.pdufmt", "lon.trans_no"]


def _e(fields):
    out = []
    for f in fields:
        out += ["-e", f]
    return out


def _rate_row(name, n, ours, theirs, note=""):
    wall, cpu, rss = ours
    value = n / cpu if cpu else 0.0
    t_rate = None
    if theirs is not None:
        t_wall, t_cpu, _ = theirs
        t_rate = n / t_cpu if t_cpu else None
        note = f"{note}; wall {n / wall:,.0f}/s vs tshark {n / t_wall:,.0f}/s".strip("; ")
    else:
        note = f"{note}; wall {n / wall:,.0f}/s".strip("; ")
    return common.row(name, round(value, 1), "packets/s (CPU)", round(t_rate, 1) if t_rate else None,
                      f"{note}; peak RSS {rss:.0f} MB")


def filter_rate(evals: int = 300_000) -> float:
    from analyzer.filters import compile_filter
    f = compile_filter("lon.srcnode == 5 && lon.dstnet in {1 2}")
    pkts = [{"lon.srcnode": [5], "lon.dstnet": [2]}, {"lon.srcnode": [3], "lon.dstnet": [1]},
            {"cnip.seqno": [1]}]
    data = pkts * (evals // 3)
    t = time.process_time()
    for p in data:
        f(p)
    dt = time.process_time() - t
    return len(data) / dt if dt else 0.0


def run(quick: bool = False) -> list[dict]:
    n = 20_000 if quick else 1_000_000
    path = str(common.corpus("plain", n, wrapped=True))
    cmd = common.lonscope_cmd()
    ts = common.tshark()
    rows = []
    t_fields = common.run_cmd_cpu([ts, "-r", path, "-T", "fields", *_e(FIELDS)]) if ts else None
    ours = common.run_cmd_cpu([*cmd, "decode", path, "-T", "fields", "-j", "1", *_e(FIELDS)])
    rows.append(_rate_row("decode -T fields -j 1 (lon/cnip fields)", n, ours, t_fields,
                          f"{n} CN/IP LonTalk packets, one process"))
    ours2 = common.run_cmd_cpu([*cmd, "decode", path, "-T", "fields", "-j", "2", *_e(FIELDS)])
    wall = ours2[0]
    r = _rate_row("decode -T fields -j 2", n, ours2, t_fields, "2 worker processes")
    r["value"] = round(n / wall, 1)
    r["unit"] = "packets/s (wall)"
    if t_fields:
        r["tshark"] = round(n / t_fields[0], 1)
        r["ratio"] = r["value"] / r["tshark"]
    rows.append(r)
    ours = common.run_cmd_cpu([*cmd, "decode", path, "-T", "jsonl"])
    t_json = common.run_cmd_cpu([ts, "-r", path, "-T", "ek"]) if ts else None
    rows.append(_rate_row("decode -T jsonl", n, ours, t_json, "tshark: -T ek (JSON lines)"))
    ours = common.run_cmd_cpu([*cmd, "decode", path])
    t_text = common.run_cmd_cpu([ts, "-r", path]) if ts else None
    rows.append(_rate_row("decode text lines", n, ours, t_text))
    rows.append(common.row("display filter evaluations", round(filter_rate(), 0), "evals/s (CPU)", None,
                           "lon.srcnode == 5 && lon.dstnet in {1 2} on flat field dicts"))
    return rows


if __name__ == "__main__":
    import json
    quick = "--quick" in sys.argv
    for r in run(quick):
        print(json.dumps(r))
