"""`python -m bench [--quick] [--only NAME ...] [--list]`

Generates the benchmark corpora into bench/out/ (gitignored), runs every
`bench/bench_*.py` module's `run(quick)`, prints one table (benchmark, value, unit,
tshark, ratio, note) and writes bench/out/results.json with the machine it ran on."""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

FIELDS = ("benchmark", "value", "unit", "tshark", "ratio", "note")


def modules() -> list[str]:
    return sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "os": platform.platform(),
            "python": platform.python_version(), "tshark": common.tshark_version()}


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def table(rows: list[dict]) -> str:
    cols = [[str(h) for h in FIELDS]]
    for r in rows:
        cols.append([str(r.get("benchmark", "")), fmt(r.get("value")), str(r.get("unit", "")),
                     fmt(r.get("tshark")), (fmt(r["ratio"]) + "×") if r.get("ratio") else "–",
                     str(r.get("note", ""))])
    widths = [max(len(c[i]) for c in cols) for i in range(len(FIELDS))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(FIELDS))) + " |" for c in cols]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def corpus_benchmarks(quick: bool) -> list[dict]:
    """End to end on the simulator corpora: `lonscope decode -T fields` (fast pass, all
    stages) on the plain and the ciphered mix (with the demo keys), beside tshark's lon/cnip
    dissection of the same frames wrapped in CN/IP (tshark cannot go further: no DLMS in
    4.0, no decryption).  CPU seconds of the child processes (shared machine)."""
    n = 20_000 if quick else common.sizes(False)["small"]
    rows = []
    ts_rate = None
    wrapped = common.corpus("plain", n, wrapped=True)
    if common.tshark():
        _, cpu, rss = common.run_cmd_cpu([common.tshark(), "-r", str(wrapped), "-T", "fields",
                                          "-e", "lon.srcnode", "-e", "lon.code"])
        ts_rate = n / cpu
        ts_rss = rss
    for kind in ("plain", "ciphered"):
        cap = common.corpus(kind, n)
        argv = common.lonscope_cmd() + ["decode", str(cap), "-T", "fields", "-e", "lon.srcnode",
                                        "-e", "dlms.apdu", "-e", "dlms.obis", "--keys", str(common.keys_file())]
        _, cpu, rss = common.run_cmd_cpu(argv)
        rows.append(common.row(f"e2e.decode_fields.{kind}", n / cpu, "packets/s", ts_rate,
                               f"{n} packets of the {kind} mix, all stages + decryption, CPU time; "
                               f"tshark: lon/cnip only (wrapped copy)"))
        rows.append(common.row(f"e2e.decode_fields.{kind}.rss", rss, "MB peak", ts_rss if ts_rate else None,
                               "peak RSS of the decode process", higher_is_better=False))
    return rows


def header(doc: dict) -> str:
    mc = doc["machine"]
    return (f"lonscope benchmarks ({doc['mode']} mode, {doc['date']}; {mc['cpu']}, {mc['cores']} cores, "
            f"{mc['memory_gib']} GiB, Python {mc['python']}, {mc['tshark'] or 'no tshark'})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small corpora (100k / 1M packets), fewer repeats")
    ap.add_argument("--only", nargs="*", default=None, help="module names (e.g. bench_lon) or substrings")
    ap.add_argument("--list", action="store_true", help="list the benchmark modules and exit")
    ap.add_argument("--no-corpora", action="store_true", help="do not pre-generate the shared corpora")
    ap.add_argument("-o", "--output", default=str(common.OUT / "results.json"))
    ap.add_argument("--table", metavar="RESULTS_JSON", help="print the table of an earlier run and exit")
    a = ap.parse_args(argv)
    if a.table:
        doc = json.loads(Path(a.table).read_text())
        print(header(doc))
        print(table(doc["rows"]))
        return 0
    mods = modules()
    if a.list:
        print("\n".join(["e2e (built in: lonscope decode on the simulator corpora)"] + mods))
        return 0
    if a.only:
        mods = [m for m in mods if any(o == m or o in m for o in a.only)]
    common.OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    started = time.perf_counter()
    if not a.no_corpora:
        sz = common.sizes(a.quick)
        for kind, n in (("plain", sz["small"]), ("ciphered", sz["small"]), ("plain", sz["large"])):
            t = common.timed(lambda: common.corpus(kind, n))
            p = common.corpus(kind, n)
            rows.append(common.row(f"corpus.{kind}-{common._count_name(n)}", p.stat().st_size / 2**20, "MB",
                                   note=f"{n} packets, generated or cached in {t:.1f} s ({p.name})"))
    failures = []
    if not a.only or "e2e" in a.only:
        print("[bench] e2e on the corpora ...", file=sys.stderr, flush=True)
        try:
            rows.extend(corpus_benchmarks(a.quick))
        except Exception as exc:
            failures.append("e2e")
            rows.append({"benchmark": "e2e", "value": None, "unit": "", "tshark": None, "ratio": None,
                         "note": f"FAILED: {type(exc).__name__}: {str(exc)[:120]}"})
    for m in mods:
        print(f"[bench] {m} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"bench.{m}")
            got = mod.run(quick=a.quick) or []
            for r in got:
                rows.append({k: r.get(k) for k in FIELDS})
        except Exception as exc:     # one broken benchmark must not lose the others' numbers
            failures.append(m)
            rows.append({"benchmark": f"{m}", "value": None, "unit": "", "tshark": None, "ratio": None,
                         "note": f"FAILED: {type(exc).__name__}: {str(exc)[:120]}"})
            traceback.print_exc()
        print(f"[bench] {m} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    doc = {"mode": "quick" if a.quick else "full",
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
           "machine": machine(), "seconds": round(time.perf_counter() - started, 1),
           "modules": mods, "failed": failures, "rows": rows}
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(doc, indent=1))
    print(header(doc))
    print(table(rows))
    print(f"results: {a.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
