"""TUI benchmark: `lonscope open` on large captures (headless Textual, 160x45).

Measured per corpus (the simulator's fleet mix, `bench.common.corpus`):
- time to first paint: from creating the app to the first packet row drawn (the file is
  indexed incrementally; rows not yet decoded come from a quick stateless dissection);
- time to index the whole file (offsets only);
- jump to the last packet and repaint: End pressed -> the selected last row drawn;
- RSS after opening + jump; while the background decoder runs (the highest value
  sampled every 0.25 s); and, in full mode on 1M, after the background decode has covered
  the whole capture (every packet through the full pipeline: associations, decryption,
  audit).  Quick mode decodes for a few seconds only and says so in the row name;
- sorting the 1M list by Source / Info / Time (descending) once decoded, until the
  selected row is drawn again (full mode; quick mode sorts the rows decoded so far);
- while the decoder still runs: the time each merge of newly decoded rows into the Info
  sort takes (the sort is kept incrementally, only the new rows are keyed).
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


async def _measure(path: Path, decode_for: float | None) -> dict:
    """decode_for: seconds of background decoding to wait for; None = until the whole
    capture is decoded."""
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
        out["jump_last_ms"], out["last_row_ok"] = await _jump_last(pilot, plist, s)
        out["rss_open_mb"] = _rss_mb()
        d0, t1, c1 = s.n_decoded, time.perf_counter(), time.process_time()
        rss_max = 0.0
        limit = 4 * 3600 if decode_for is None else decode_for
        while not s.done and time.perf_counter() - t1 < limit:
            await asyncio.sleep(0.25)
            rss_max = max(rss_max, _rss_mb())
        dt = time.perf_counter() - t1
        out["decode_cpu_s"] = time.process_time() - c1
        out["decode_cpu_rate"] = (s.n_decoded - d0) / max(out["decode_cpu_s"], 1e-9)
        out["decoded"] = s.n_decoded
        out["decoded_all"] = bool(s.done and s.n_decoded == s.store.n)
        out["decode_s"] = dt
        out["decode_rate"] = (s.n_decoded - d0) / dt if dt > 0 else 0.0
        out["rss_decoding_mb"] = rss_max or _rss_mb()
        out["rss_decoded_mb"] = _rss_mb()
        if out["decoded_all"]:
            st = s.store
            out["store_mb"] = (st.nbytes() + s.objects.nbytes + len(s.auxstore.mem)) / 2**20
            out["distinct_info"] = len(st.infos) + len(st._info_ends)
        # sorts of what is decoded (all of it in full mode on 1M)
        out["sorted_rows"] = s.n_decoded
        for col, desc in (("Source", False), ("Info", False), ("Time", True)):
            plist.cursor_paint = None
            t = time.perf_counter()
            app.sort_by(col, desc)
            while plist.cursor_paint is None and time.perf_counter() - t < 30:
                await asyncio.sleep(0.001)
            out[f"sort_{col}_ms"] = ((plist.cursor_paint or time.perf_counter()) - t) * 1000
        out["sorted_jump_last_ms"], _ = await _jump_last(pilot, plist, s, check=False)
        app.sort_by(None)
        out["rss_after_sorts_mb"] = _rss_mb()
        if not s.done:
            # sorted by Info while the decoder goes on: newly decoded rows merged in
            out["merge_ms"], out["merge_rows"] = await _merges(s, app, "Info", 3.0)
        out["peak_rss_mb"] = common.peak_rss_mb()
    s.stop()
    return out


async def _merges(s, app, col: str, seconds: float) -> tuple[list, list]:
    """Time each merge of newly decoded rows into the sort (the list's periodic refresh
    calls `update_sort`) for `seconds`."""
    merges, rows = [], []
    orig = s.update_sort

    def timed(force: bool = False) -> bool:
        k0, t = len(s.order) if s.order is not None else 0, time.perf_counter()
        changed = orig(force)
        if changed and k0:
            merges.append((time.perf_counter() - t) * 1000)
            rows.append(len(s.order) - k0)
        return changed

    app.sort_by(col)
    s.update_sort = timed
    await asyncio.sleep(seconds)
    s.update_sort = orig
    app.sort_by(None)
    return merges, rows


async def _jump_last(pilot, plist, s, check: bool = True) -> tuple[float, bool]:
    """End pressed -> the selected last row drawn (median of three)."""
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
    ok = not check or plist.selected_row() == s.store.n - 1
    return sorted(jumps)[1] * 1000, ok


def measure(path: Path, decode_for: float | None = 10.0) -> dict:
    return asyncio.run(_measure(path, decode_for))


def _child(path: str, decode_for: float | None) -> None:
    import json
    print(json.dumps(measure(Path(path), decode_for)))


def _in_child(path: Path, decode_for: float | None) -> dict:
    """Each size in a fresh process so RSS figures are not mixed up."""
    import json
    import subprocess
    r = subprocess.run([sys.executable, __file__, "--child", str(path), "all" if decode_for is None else str(decode_for)],
                       capture_output=True, text=True, timeout=7200, cwd=str(ROOT))
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[-400:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    rows = []
    # full mode: 1M decoded to the end (~4 min); 10M opened and decoded for 20 s only
    plan = [(1_000_000, 5.0)] if quick else [(1_000_000, None), (10_000_000, 20.0)]
    for n, decode_for in plan:
        path = common.corpus("plain", n)
        m = _in_child(path, decode_for)
        label = f"{n // 1_000_000}M"
        note = f"{m['packets']} packets, {path.name}"
        base = [
            (f"tui first paint ({label})", m["first_paint_s"], "s", "target <= 1 s"),
            (f"tui first rows with protocol columns ({label})", m["first_full_paint_s"], "s",
             "dissectors loaded after the first screen"),
            (f"tui index whole file ({label})", m["index_s"], "s", "offsets only, incremental"),
            (f"tui jump to last + repaint ({label})", m["jump_last_ms"], "ms",
             "target <= 50 ms" + ("" if m["last_row_ok"] else "; LAST ROW NOT SELECTED")),
            (f"tui RSS after open + jump ({label})", m["rss_open_mb"], "MB", "before background decoding"),
            (f"tui RSS while decoding, highest sample ({label})", m["rss_decoding_mb"], "MB",
             f"sampled every 0.25 s over {m['decode_s']:.0f} s; {m['decoded']} packets decoded"),
            (f"tui background decode rate ({label})", m["decode_rate"], "packets/s",
             "full pipeline (dissect, associations, decryption, audit); "
             f"{m['decode_cpu_rate']:.0f} packets per CPU second of the process "
             "(wall-clock rate depends on the machine's load)"),
        ]
        part = "" if m["decoded_all"] else f"; the {m['sorted_rows']} packets decoded so far"
        sorts = [
            (f"tui sort by Source + repaint ({label})", m["sort_Source_ms"], "ms", "natural address order" + part),
            (f"tui sort by Info + repaint ({label})", m["sort_Info_ms"], "ms", "interned ids ranked (texts past the interning limit: ranked over their bytes)" + part),
            (f"tui sort by Time descending + repaint ({label})", m["sort_Time_ms"], "ms", "every indexed packet"),
            (f"tui jump to last + repaint, sorted ({label})", m["sorted_jump_last_ms"], "ms", ""),
            (f"tui RSS after the sorts ({label})", m["rss_after_sorts_mb"], "MB", ""),
        ]
        if m.get("merge_ms"):
            ms, rs = sorted(m["merge_ms"]), m["merge_rows"]
            sorts.append((f"tui sorted by Info: merge of newly decoded rows ({label})", ms[len(ms) // 2], "ms",
                          f"median of {len(ms)} merges (max {ms[-1]:.1f} ms) of {min(rs)}..{max(rs)} new rows "
                          f"each into up to {m['sorted_rows'] + sum(rs)} sorted rows, while decoding"))
        if m["decoded_all"]:
            base += [
                (f"tui RSS after background decode of {label}", m["rss_decoded_mb"], "MB",
                 f"all {m['decoded']} packets decoded in {m['decode_s']:.0f} s; target <= 400 MB; "
                 f"TUI columns + Info texts + operations + in-memory pkt.aux: {m['store_mb']:.0f} MB "
                 f"({m['distinct_info']} distinct Info texts)"),
            ] + sorts
        else:
            base.append((f"tui RSS after {m['decode_s']:.0f} s of background decoding ({label})",
                         m["rss_decoded_mb"], "MB",
                         f"NOT the whole capture: {m['decoded']} of {m['packets']} packets decoded"
                         + (" (quick mode)" if quick else "")))
            base += sorts
        for name, value, unit, extra in base:
            rows.append({"benchmark": name, "value": round(float(value), 4), "unit": unit, "tshark": None,
                         "ratio": None, "note": f"{note}; {extra}" if extra else note})
    return rows


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], None if sys.argv[3] == "all" else float(sys.argv[3]))
        sys.exit(0)
    quick = "--quick" in sys.argv
    for r in run(quick):
        print(f"{r['benchmark']:<44} {r['value']:>12} {r['unit']:<10} {r['note']}")
