"""TUI packet list: column sorting (session and Pilot), mouse-dragged pane splitters, and
the compact per-packet stores (interned Info texts, pickled operations)."""
from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from tui_app import demo_frames, load_session, make_app, wait_loaded, write_pcap

from analyzer.tui import store as store_mod
from analyzer.tui.session import SORT_COLUMNS, ObjectLog, Session, natural_key

SIZE = (160, 45)
N = 60


@pytest.fixture(scope="module")
def demo_pcap(tmp_path_factory) -> Path:
    return write_pcap(tmp_path_factory.mktemp("tuisort") / "tuidemo.pcap", demo_frames(N))


# The expected columns of the demo capture, written from the frame layout of
# tests/tui_app.py (type, src, dst, seq, payload) — not read back from the store.
def expected_columns(frames) -> list[dict]:
    t0 = frames[0][0]
    out = []
    for i, (ts, data) in enumerate(frames):
        typ, src, dst, seq = struct.unpack_from(">BBBH", data)
        payload = data[5:]
        if typ == 2:
            text = bytes(b ^ 0x5A for b in payload).decode()
            info, proto = f"ciphered seq={seq} → {text}", "TUIPLAIN"
        else:
            info = {1: f"read seq={seq} {payload.decode()}", 3: f"bad-auth seq={seq}",
                    4: f"broken seq={seq}"}[typ]
            proto = "TUIDEMO"
        out.append({"No.": i + 1, "Time": ts - t0, "Source": f"1/{src}", "Destination": f"1/{dst}",
                    "Protocol": proto, "Length": len(data), "Info": info})
    return out


def expected_order(cols, column, desc=False, rows=None) -> list[int]:
    rows = list(range(len(cols))) if rows is None else rows
    key = (lambda r: natural_key(cols[r][column])) if column in ("Source", "Destination") else \
        (lambda r: cols[r][column])
    # descending keeps capture order among equal keys (like the ascending sort)
    if desc:
        groups: dict = {}
        for r in rows:
            groups.setdefault(repr(key(r)), []).append(r)
        ordered = sorted(groups.values(), key=lambda g: key(g[0]), reverse=True)
        return [r for g in ordered for r in g]
    return sorted(rows, key=key)


def shown(s: Session) -> list[int]:
    return [s.row_of(y) for y in range(s.visible_count())]


def test_natural_key_orders_addresses():
    assert sorted(["grp 3", "1/12", "1/5", "10/1", "1/100", "2/7"], key=natural_key) == \
        ["1/5", "1/12", "1/100", "2/7", "10/1", "grp 3"]


def test_sort_every_column_both_ways(demo_pcap):
    s = load_session(demo_pcap)
    cols = expected_columns(demo_frames(N))
    # the store holds what the expected columns say (so the sort sees the right keys)
    assert [s.summary(r)[3] for r in range(N)] == [c["Info"] for c in cols]
    for column in SORT_COLUMNS:
        for desc in (False, True):
            s.set_sort(column, desc)
            assert shown(s) == expected_order(cols, column, desc), (column, desc)
    # e.g. Source descending: every packet from 1/9 (odd numbers) first, in capture order
    s.set_sort("Source", True)
    assert shown(s)[:3] == [1, 3, 5] and shown(s)[30:33] == [0, 2, 4]
    s.set_sort(None)
    assert s.order is None and shown(s) == list(range(N))
    s.stop()


def test_sort_with_filter_and_filter_change(demo_pcap):
    s = load_session(demo_pcap, display_filter="tuidemo.type == 2 || tuidemo.type == 3")
    cols = expected_columns(demo_frames(N))
    matching = [i for i in range(N) if i % 8 in (2, 4, 5)]
    assert shown(s) == matching
    s.set_sort("Info", True)
    assert shown(s) == expected_order(cols, "Info", True, matching)
    assert s.line_of(4) == shown(s).index(4) and s.line_of(0) is None
    # a new filter: the sort applies to the new view as the filter fills it
    s.set_filter("tuidemo.src == 9")
    t = time.time()
    while s.view_upto < s.n_decoded and time.time() - t < 10:
        time.sleep(0.02)
    s.update_sort(force=True)
    assert shown(s) == expected_order(cols, "Info", True, list(range(1, N, 2)))
    s.stop()


def test_rows_arriving_later_are_merged_in_order(tmp_path):
    """Live file: sorted by Source, packets appended later take their sorted place."""
    frames = demo_frames(40)
    path = write_pcap(tmp_path / "live.pcap", frames[:12])
    s = Session([], live=f"file:{path}")
    s.start()
    t = time.time()
    while s.n_decoded < 12 and time.time() - t < 10:
        time.sleep(0.02)
    s.set_sort("Source")
    cols = expected_columns(frames)
    assert shown(s) == expected_order(cols, "Source", rows=list(range(12)))
    with open(path, "ab") as f:
        for ts, data in frames[12:]:
            sec, ns = divmod(ts, 1_000_000_000)
            f.write(struct.pack("<IIII", sec, ns // 1000, len(data), len(data)) + data)
    t = time.time()
    while s.n_decoded < 40 and time.time() - t < 10:
        time.sleep(0.05)
    assert s.update_sort(force=True)
    assert shown(s) == expected_order(cols, "Source")
    s.paused = True
    s.stop()


def test_undecoded_rows_follow_the_sorted_ones(demo_pcap):
    """Rows whose summary is not decoded yet are listed after the sorted ones, in capture
    order, and join the sort as the decoder reaches them."""
    s = load_session(demo_pcap)
    cols = expected_columns(demo_frames(N))
    real = s.n_decoded
    s.n_decoded = 20                 # as if the decoder had reached row 20 only
    s.set_sort("Destination", True)
    assert shown(s) == expected_order(cols, "Destination", True, list(range(20))) + list(range(20, N))
    s.n_decoded = real
    s.update_sort(force=True)
    assert shown(s) == expected_order(cols, "Destination", True)
    s.stop()


def test_sort_one_million_rows_is_fast():
    """The sort is numpy work on the columns: 1M rows by a string column (codes -> ranks)
    and by time, without Python objects per row."""
    n = 1_000_000
    s = Session([])
    st = s.store
    rng = np.random.default_rng(1)
    ts = np.sort(rng.integers(0, 10**12, n))
    st.append_index(ts, np.arange(n), np.full(n, 20), rng.integers(10, 300, n), np.full(n, 147), 0)
    names = [f"{a}/{b}" for a in range(1, 4) for b in range(1, 30)]
    codes = np.array([st.addrs.id(x) for x in names], dtype=np.int32)
    pick = rng.integers(0, len(names), n)
    for k in range((n >> store_mod.BLOCK_BITS) + 1):
        blk = st.src._block(k)
        lo = k << store_mod.BLOCK_BITS
        blk[:max(0, min(store_mod.BLOCK, n - lo))] = codes[pick[lo:lo + store_mod.BLOCK]]
    s.n_decoded = n
    t = time.perf_counter()
    s.set_sort("Source")
    dt_src = time.perf_counter() - t
    t = time.perf_counter()
    s.set_sort("Length", True)
    dt_len = time.perf_counter() - t
    assert dt_src < 2.0 and dt_len < 2.0, (dt_src, dt_len)
    lens = st.origlen[:n][s.order]
    assert np.all(np.diff(lens) <= 0)
    s.set_sort("Source")
    by_name = sorted(range(len(names)), key=lambda k: natural_key(names[k]))
    pos = np.empty(len(names), dtype=np.int64)
    pos[by_name] = np.arange(len(names))
    seq = pos[pick[s.order]]                 # each row's address rank, in the shown order
    assert np.all(np.diff(seq) >= 0) and len(s.order) == n
    same = s.order[seq == seq[0]]
    assert np.all(np.diff(same) > 0)         # ties in capture order
    assert names[pick[s.order[0]]] == "1/1" and names[pick[s.order[-1]]] == "3/29"


def test_info_interning_overflow(demo_pcap, monkeypatch):
    """Past INFO_INTERN_MAX distinct texts, Info goes to the byte arena; texts and the
    Info sort stay right."""
    monkeypatch.setattr(store_mod, "INFO_INTERN_MAX", 5)
    s = load_session(demo_pcap)
    cols = expected_columns(demo_frames(N))
    assert len(s.store.infos) == 5 and len(s.store._info_ends) > 40
    assert [s.store.info_at(r) for r in range(N)] == [c["Info"] for c in cols]
    s.set_sort("Info")
    assert shown(s) == expected_order(cols, "Info")
    s.stop()


def test_object_log_round_trip():
    log = ObjectLog()
    ops = [(3, {"service": "get", "obis": "1.0.1.8.0.255", "value": 12}),
           (7, {"service": "set", "value": b"\x01\x02"}), (9, {"service": "odd", "value": lambda: 0})]
    for item in ops:
        log.append(item)
    assert len(log) == 3
    got = list(log)
    assert got[:2] == ops[:2] and got[2][0] == 9 and got[2][1]["service"] == "odd"
    assert log[:2] == ops[:2] and log[1] == ops[1] and log[-1][0] == 9


# --------------------------------------------------------------------------- Pilot

async def test_header_click_sorts_keeps_selection(demo_pcap):
    app = make_app(demo_pcap)
    cols = expected_columns(demo_frames(N))
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        plist, header = app.q("list"), app.q("header")
        await pilot.press("ctrl+g")
        await pilot.pause()
        await pilot.press("8", "enter")        # packet 8 (row 7, from 1/9)
        await pilot.pause()
        assert plist.selected_row() == 7
        # the Source title starts after "  ", No. (8) and Time (16) columns
        x = 2 + 9 + 17 + 1
        assert header.column_at(x) == "Source"
        await pilot.click("#header", offset=(x, 0))
        await pilot.pause()
        s = app.session
        assert (s.sort_col, s.sort_desc) == ("Source", False)
        assert shown(s) == expected_order(cols, "Source")
        assert plist.selected_row() == 7 and plist.cursor == shown(s).index(7)
        assert app.detail_row == 7
        assert "Source ▲" in header.render().plain and "Sort: Source ▲" in app.status_text()
        await pilot.click("#header", offset=(x, 0))
        await pilot.pause()
        assert s.sort_desc and shown(s) == expected_order(cols, "Source", True)
        assert "Source ▼" in header.render().plain and plist.selected_row() == 7
        await pilot.click("#header", offset=(x, 0))
        await pilot.pause()
        assert s.sort_col is None and shown(s) == list(range(N)) and plist.cursor == 7
        assert "▲" not in header.render().plain and "Sort:" not in app.status_text()
        # clicking Length (right-aligned title) sorts by it
        xl = 2 + 9 + 17 + 19 + 19 + 10 + 2
        assert header.column_at(xl) == "Length"
        await pilot.click("#header", offset=(xl, 0))
        await pilot.pause()
        assert s.sort_col == "Length"


async def test_sort_keys_s_S_o_and_with_filter(demo_pcap):
    app = make_app(demo_pcap)
    cols = expected_columns(demo_frames(N))
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        s, plist = app.session, app.q("list")
        await pilot.press("slash", *"tuidemo.type == 1", "enter")
        await wait_loaded(pilot)
        matching = [i for i in range(N) if i % 8 in (0, 1, 3, 7)]
        assert shown(s) == matching
        await pilot.press("down", "down")                # row 3
        await pilot.pause()
        assert plist.selected_row() == 3
        seen = []
        for _ in SORT_COLUMNS:
            await pilot.press("s")
            await pilot.pause()
            seen.append(s.sort_col)
            assert shown(s) == expected_order(cols, s.sort_col, False, matching)
            assert plist.selected_row() == 3
        assert seen == list(SORT_COLUMNS)
        await pilot.press("S")                           # Info descending
        await pilot.pause()
        assert (s.sort_col, s.sort_desc) == ("Info", True)
        assert shown(s) == expected_order(cols, "Info", True, matching) and plist.selected_row() == 3
        await pilot.press("o")                           # capture order
        await pilot.pause()
        assert s.sort_col is None and shown(s) == matching and plist.selected_row() == 3
        await pilot.press("S")                           # no sort: newest first
        await pilot.pause()
        assert (s.sort_col, s.sort_desc) == ("No.", True) and shown(s) == matching[::-1]
        await pilot.press("s")                           # after No. comes Time
        await pilot.pause()
        assert s.sort_col == "Time"
        # go to a packet while sorted (descending by Protocol): the cursor lands on its line
        await pilot.press("s", "s", "s", "S")
        await pilot.pause()
        assert (s.sort_col, s.sort_desc) == ("Protocol", True)
        await pilot.press("ctrl+g")
        await pilot.pause()
        await pilot.press("4", "9", "enter")
        await pilot.pause()
        assert plist.selected_row() == 48 and plist.cursor == shown(s).index(48)
        assert app.detail_row == 48
        # the help screen lists the sort keys
        from analyzer.tui.screens import KEY_HELP
        keys = {k for _, items in KEY_HELP for k, _ in items}
        assert {"s", "S", "o", "click a column title", "drag a splitter"} <= keys


async def test_sort_pauses_follow_tail_and_a_restores_it(tmp_path):
    frames = demo_frames(40)
    path = write_pcap(tmp_path / "live.pcap", frames[:10])
    from analyzer.tui.app import LonscopeApp
    s = Session([], live=f"file:{path}")
    app = LonscopeApp(s, tick=0.05, live=True)
    cols = expected_columns(frames)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if s.n_decoded >= 10 and app.q("list").count >= 10:
                break
        plist = app.q("list")
        assert plist.follow and plist.cursor == 9
        await pilot.press("s", "s", "s")                 # Source
        await pilot.pause()
        assert s.sort_col == "Source" and not plist.follow
        assert plist.selected_row() == 9                 # the same (last) packet
        with open(path, "ab") as f:
            for ts, data in frames[10:24]:
                sec, ns = divmod(ts, 1_000_000_000)
                f.write(struct.pack("<IIII", sec, ns // 1000, len(data), len(data)) + data)
        for _ in range(100):
            await pilot.pause(0.05)
            if s.n_decoded >= 24 and len(s.order) >= 24:
                break
        # new packets merged into their sorted place; the selection did not move to them
        assert shown(s) == expected_order(cols, "Source", rows=list(range(24)))
        assert plist.selected_row() == 9 and plist.cursor == shown(s).index(9)
        await pilot.press("a")                           # auto-scroll: capture order again
        await pilot.pause()
        assert s.sort_col is None and plist.follow and plist.selected_row() == 23


async def test_drag_splitters_with_the_mouse(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        lower, details, hexv = app.q("lower"), app.q("details"), app.q("bytes")
        split_h, split_v = app.q("split-h"), app.q("split-v")
        h0, y0 = lower.size.height, split_h.region.y
        list_h0 = app.q("list").size.height
        # drag the list/details splitter 6 lines up: the lower panes grow by 6
        await pilot.mouse_down("#split-h", offset=(10, 0))
        assert split_h.dragging and app.mouse_captured is split_h
        await pilot.hover(None, offset=(10, y0 - 3))
        await pilot.hover(None, offset=(10, y0 - 6))
        await pilot.mouse_up(None, offset=(10, y0 - 6))
        await pilot.pause()
        assert not split_h.dragging and app.mouse_captured is None
        assert lower.size.height == h0 + 6 and split_h.region.y == y0 - 6
        assert app.q("list").size.height == list_h0 - 6
        # and down again, past the old position
        await pilot.mouse_down("#split-h", offset=(3, 0))
        await pilot.hover(None, offset=(3, y0 + 4))
        await pilot.mouse_up(None, offset=(3, y0 + 4))
        await pilot.pause()
        assert lower.size.height == h0 - 4 and split_h.region.y == y0 + 4
        # the details/bytes splitter: drag 12 columns left
        w0, x0, bw0 = details.size.width, split_v.region.x, hexv.size.width
        await pilot.mouse_down("#split-v", offset=(0, 2))
        await pilot.hover(None, offset=(x0 - 12, split_v.region.y + 2))
        await pilot.mouse_up(None, offset=(x0 - 12, split_v.region.y + 2))
        await pilot.pause()
        assert details.size.width == w0 - 12 and split_v.region.x == x0 - 12
        assert hexv.size.width == bw0 + 12
        # a drag never shrinks a pane to nothing
        await pilot.mouse_down("#split-v", offset=(0, 2))
        await pilot.hover(None, offset=(1, split_v.region.y + 2))
        await pilot.mouse_up(None, offset=(1, split_v.region.y + 2))
        await pilot.pause()
        assert details.size.width == 10
        # the keys still resize after a drag
        await pilot.press("greater_than_sign")
        await pilot.pause()
        assert details.size.width > 10
        # hiding the bytes pane hides the splitter between the two
        await pilot.press("f3")
        await pilot.pause()
        assert not split_v.display and details.size.width == app.q("panes").size.width


def test_captured_length_kept_only_for_truncated_rows(tmp_path):
    """A record captured shorter than on the wire keeps its own captured length (the
    column costs nothing for full-length rows)."""
    frames = demo_frames(6)
    path = tmp_path / "cut.pcap"
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 8, 65000))
        for k, (ts, data) in enumerate(frames):
            sec, ns = divmod(ts, 1_000_000_000)
            cap = data[:8] if k == 3 else data
            f.write(struct.pack("<IIII", sec, ns // 1000, len(cap), len(data)) + cap)
    s = load_session(path)
    st = s.store
    assert [int(st.caplen[i]) for i in range(6)] == [14, 14, 14, 8, 14, 14]
    assert [int(x) for x in st.origlen[:6]] == [14] * 6
    assert s.virtual_fields(3)["frame.cap_len"] == [8] and s.virtual_fields(2)["frame.cap_len"] == [14]
    assert len(st.caplen.short.blocks) == 1
    s.stop()


def test_offsets_narrowed_for_small_files_not_for_live(demo_pcap, tmp_path):
    s = load_session(demo_pcap)
    assert s.store.offset.dtype == np.uint32
    assert s.record(59).data == demo_frames(N)[59][1]
    s.stop()
    path = write_pcap(tmp_path / "live.pcap", demo_frames(4))
    s = Session([], live=f"file:{path}")
    s.start()
    t = time.time()
    while s.n_decoded < 4 and time.time() - t < 10:
        time.sleep(0.02)
    assert s.store.offset.dtype == np.int64          # a growing file may pass 4 GiB
    s.paused = True
    s.stop()


def test_decoded_pages_released_and_rows_still_readable(tmp_path):
    """The mapped capture pages the decoder has passed are given back (madvise), so RSS
    does not grow with the file; rows there still read (from the page cache)."""
    frames = [(ts, data + bytes(1400)) for ts, data in demo_frames(4000)]
    path = write_pcap(tmp_path / "big.pcap", frames)
    assert path.stat().st_size > 5 << 20
    s = load_session(path)
    f = s.files[0]
    assert s.n_decoded == 4000 and f._released >= 4 << 20
    assert s.record(0).data == frames[0][1] and s.record(3999).data == frames[3999][1]
    assert s.summary(8)[3] == "read seq=8 value-008" + "\x00" * 1400
    s.stop()
