"""TUI benchmark: `lonscope open` on large captures (headless Textual, 160x45).

Measured per corpus (the simulator's fleet mix, `bench.common.corpus`):
- time to first paint: from creating the app to the first packet row drawn (the file is
  indexed incrementally; rows not yet decoded come from a quick stateless dissection);
- time to index the whole file (offsets only);
- jump to the last packet and repaint: End pressed -> the selected last row drawn;
- RSS after opening + jump, and after decoding for a while in the background (with the
  decode rate): only compact per-packet columns and file offsets are kept in memory.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402


def _rss_mb() -> float:
    return common.current_rss_mb()


async def _measure(path: Path, decode_for: float) -> dict:
    from analyzer.tui.app import LonscopeApp
    from analyzer.tui.session import Session
    t0 = time.perf_counter()
    s = Session([str(path)])
    app = LonscopeApp(s, tick=0.1)
    out: dict = {}
    async with app.run_test(size=(160, 45)) as pilot:
        plist = app.q("list")
        while plist.first_paint is None and time.perf_counter() - t0 < 60:
            await asyncio.sleep(0.005)
        out["first_paint_s"] = (plist.first_paint or time.perf_counter()) - t0
        while plist.first_full_paint is None and time.perf_counter() - t0 < 60:
            await asyncio.sleep(0.005)
        out["first_full_paint_s"] = (plist.first_full_paint or time.perf_counter()) - t0
        while s.indexing and time.perf_counter() - t0 < 3600:
            await asyncio.sleep(0.02)
        out["index_s"] = time.perf_counter() - t0
        out["packets"] = s.store.n
        await pilot.pause(0.3)
        plist.refresh_count()
        await pilot.pause(0.1)
        # jump to the last packet: time until the selected last row has been drawn
        jumps = []
        for _ in range(3):
            plist.action_first()
            await pilot.pause(0.1)
            plist.cursor_paint = None
            t = time.perf_counter()
            plist.action_last()
            while plist.cursor_paint is None and time.perf_counter() - t < 10:
                await asyncio.sleep(0.001)
            jumps.append((plist.cursor_paint or time.perf_counter()) - t)
        out["jump_last_ms"] = sorted(jumps)[1] * 1000
        out["last_row_ok"] = plist.selected_row() == s.store.n - 1
        out["rss_open_mb"] = _rss_mb()
        d0, t1 = s.n_decoded, time.perf_counter()
        while not s.done and time.perf_counter() - t1 < decode_for:
            await asyncio.sleep(0.2)
        dt = time.perf_counter() - t1
        out["decoded"] = s.n_decoded
        out["decode_rate"] = (s.n_decoded - d0) / dt if dt > 0 else 0.0
        out["rss_decoding_mb"] = _rss_mb()
        out["peak_rss_mb"] = common.peak_rss_mb()
    s.stop()
    return out


def measure(path: Path, decode_for: float = 10.0) -> dict:
    return asyncio.run(_measure(path, decode_for))


def _child(path: str, decode_for: float) -> None:
    import json
    print(json.dumps(measure(Path(path), decode_for)))


def _in_child(path: Path, decode_for: float) -> dict:
    """Each size in a fresh process so RSS figures are not mixed up."""
    import json
    import subprocess
    r = subprocess.run([sys.executable, __file__, "--child", str(path), str(decode_for)],
                       capture_output=True, text=True, timeout=7200, cwd=str(ROOT))
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[-400:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    rows = []
    sizes = [1_000_000] if quick else [1_000_000, 10_000_000]
    for n in sizes:
        path = common.corpus("plain", n)
        m = _in_child(path, 5.0 if quick else 20.0)
        label = f"{n // 1_000_000}M"
        note = f"{m['packets']} packets, {path.name}"
        base = [
            (f"tui first paint ({label})", m["first_paint_s"], "s", "target <= 1 s"),
            (f"tui first rows with protocol columns ({label})", m["first_full_paint_s"], "s",
             "dissectors loaded after the first screen"),
            (f"tui index whole file ({label})", m["index_s"], "s", "offsets only, incremental"),
            (f"tui jump to last + repaint ({label})", m["jump_last_ms"], "ms",
             "target <= 50 ms" + ("" if m["last_row_ok"] else "; LAST ROW NOT SELECTED")),
            (f"tui RSS after open + jump ({label})", m["rss_open_mb"], "MB", "target <= 400 MB (1M)"),
            (f"tui RSS while decoding ({label})", m["rss_decoding_mb"], "MB",
             f"{m['decoded']} packets decoded so far"),
            (f"tui background decode rate ({label})", m["decode_rate"], "packets/s",
             "full pipeline (dissect, associations, decryption, audit)"),
        ]
        for name, value, unit, extra in base:
            rows.append({"benchmark": name, "value": round(float(value), 4), "unit": unit, "tshark": None,
                         "ratio": None, "note": f"{note}; {extra}"})
    return rows


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], float(sys.argv[3]))
        sys.exit(0)
    quick = "--quick" in sys.argv
    for r in run(quick):
        print(f"{r['benchmark']:<44} {r['value']:>12} {r['unit']:<10} {r['note']}")
