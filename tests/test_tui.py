"""TUI (`lonscope open`): offset index, session, every key binding and view (Pilot)."""
from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import tui_app
from tui_app import demo_frames, load_session, make_app, wait_loaded, write_pcap

from analyzer.tui.session import Session
from analyzer.tui.source import CaptureFile
from analyzer.tui.store import ST_AUTHFAIL, ST_DECRYPTED

ROOT = Path(__file__).resolve().parent.parent
SIZE = (160, 45)


@pytest.fixture(scope="module")
def demo_pcap(tmp_path_factory) -> Path:
    return write_pcap(tmp_path_factory.mktemp("tui") / "tuidemo.pcap", demo_frames())


# --------------------------------------------------------------------------- index

def tshark_frames(tshark, path) -> list[tuple[int, int]]:
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "frame.len",
                          "-e", "frame.time_epoch"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        ln, ts = line.split("\t")
        sec, _, frac = ts.partition(".")
        rows.append((int(ln), int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])))
    return rows


@pytest.mark.parametrize("name", ["Output-EPRI.pcap", "Output-Ciphered-HLS-AuthEnc.pcap", "Output.pcap"])
def test_index_matches_tshark(pcaps, tshark, name):
    path = pcaps / "htanwar922-wireshark-dlms" / name
    f = CaptureFile(str(path))
    chunks = list(f.chunks(limit=100))          # several chunks
    assert len(chunks) >= 1 and f.error is None
    import numpy as np
    ts = np.concatenate([c.ts for c in chunks])
    orig = np.concatenate([c.origlen for c in chunks])
    ref = tshark_frames(tshark, path)
    assert len(ts) == len(ref)
    assert [int(x) for x in orig] == [r[0] for r in ref]
    assert [int(x) for x in ts] == [r[1] for r in ref]


def test_index_pcapng_and_gz_match_classic(pcaps, tmp_path):
    """editcap (independent) converts to pcapng; a gzip copy must index the same way."""
    editcap = shutil.which("editcap")
    src = pcaps / "htanwar922-wireshark-dlms" / "Output-EPRI.pcap"
    classic = CaptureFile(str(src))
    c0 = list(classic.chunks())[0]
    rec0 = [classic.read(int(c0.offset[i]), int(c0.caplen[i]), int(c0.origlen[i]), int(c0.linktype[i]),
                         int(c0.ts[i])) for i in range(len(c0))]
    gz = tmp_path / "epri.pcap.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    variants = [gz]
    if editcap:
        ng = tmp_path / "epri.pcapng"
        subprocess.run([editcap, "-F", "pcapng", str(src), str(ng)], check=True)
        variants.append(ng)
    for v in variants:
        f = CaptureFile(str(v))
        c = list(f.chunks())[0]
        recs = [f.read(int(c.offset[i]), int(c.caplen[i]), int(c.origlen[i]), int(c.linktype[i]),
                       int(c.ts[i])) for i in range(len(c))]
        assert [(r.ts_ns, r.data, r.linktype) for r in recs] == [(r.ts_ns, r.data, r.linktype) for r in rec0]
        assert len(recs) == 52


def test_damaged_file_opens_up_to_damage(demo_pcap, tmp_path):
    data = demo_pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 7])
    s = load_session(cut)
    assert s.store.n == 59
    assert any("truncated" in m or "damage" in m for _, m in s.notices)
    s.stop()


def test_merge_files_by_time(tmp_path):
    frames = demo_frames(20)
    a = write_pcap(tmp_path / "a.pcap", frames[0::2])
    b = write_pcap(tmp_path / "b.pcap", frames[1::2])
    s = load_session([b, a])
    n = s.store.n
    assert n == 20
    assert list(s.store.ts[:n]) == [t for t, _ in frames]
    assert s.summary(3)[3] == "read seq=3 value-003"
    s.stop()


def test_session_summary_status_and_fields(demo_pcap):
    s = load_session(demo_pcap)
    assert s.store.n == 60 and s.n_decoded == 60
    proto, src, dst, info, status, flags = s.summary(2)
    assert (proto, src, dst, status) == ("TUIPLAIN", "1/5", "1/9", ST_DECRYPTED)
    assert info == "ciphered seq=2 → value-002"
    assert s.summary(4)[4] == ST_AUTHFAIL
    assert s.decrypted == 15
    d = s.dissect(2)
    assert [n for n, _ in d.sources] == ["Frame", "Decrypted xDLMS"]
    assert d.sources[1][1] == b"value-002"
    s.stop()


def test_live_file_tail(tmp_path):
    frames = demo_frames(30)
    path = write_pcap(tmp_path / "live.pcap", frames[:5])
    s = Session([], live=f"file:{path}")
    s.start()

    def grow():
        for ts, data in frames[5:]:
            with open(path, "ab") as f:
                sec, ns = divmod(ts, 1_000_000_000)
                f.write(struct.pack("<IIII", sec, ns // 1000, len(data), len(data)))
                f.flush()
                f.write(data)          # header and body in two writes: a partial record
            time.sleep(0.01)
    t = threading.Thread(target=grow)
    t.start()
    t.join()
    end = time.time() + 10
    while s.n_decoded < 30 and time.time() < end:
        time.sleep(0.05)
    assert s.store.n == 30 and s.n_decoded == 30
    assert s.summary(29)[3].startswith("read seq=29") or "seq=29" in s.summary(29)[3]
    s.paused = True
    s.stop()


def test_filter_in_session(demo_pcap):
    s = load_session(demo_pcap, display_filter="tuidemo.type == 2")
    assert list(s.view) == [i for i in range(60) if i % 8 in (2, 5)]
    s.set_filter("tuidemo.src == 9 && tuidemo.type == 1")
    t = time.time()
    while s.view_upto < s.n_decoded and time.time() - t < 10:
        time.sleep(0.02)
    assert list(s.view) == [i for i in range(60) if i % 2 == 1 and i % 8 in (1, 3, 7)]
    # virtual fields (frame.*, _ws.col.*, lonscope.status) come from the columns
    s.set_filter('lonscope.status == "auth failed" || frame.number <= 2')
    t = time.time()
    while s.view_upto < s.n_decoded and time.time() - t < 10:
        time.sleep(0.02)
    assert list(s.view) == [0, 1] + [i for i in range(60) if i % 8 == 4]
    s.set_filter("")
    assert s.view is None and s.visible_count() == 60
    s.stop()


def test_export_view(demo_pcap, tmp_path):
    import pandas as pd
    from analyzer.capture import read_capture
    from analyzer.tui.export import export_view
    s = load_session(demo_pcap, display_filter="tuidemo.type == 2")
    n = export_view(s, str(tmp_path / "v.csv"))
    df = pd.read_csv(tmp_path / "v.csv")
    assert n == 15 and list(df["number"][:3]) == [3, 6, 11]
    assert df["info"][0] == "ciphered seq=2 → value-002" and df["status"][0] == "decrypted"
    export_view(s, str(tmp_path / "v.parquet"))
    assert list(pd.read_parquet(tmp_path / "v.parquet")["number"][:3]) == [3, 6, 11]
    assert export_view(s, str(tmp_path / "v.pcapng")) == 15
    recs = list(read_capture(tmp_path / "v.pcapng"))
    assert [r.data for r in recs] == [demo_frames()[i][1] for i in (2, 5, 10, 13, 18, 21, 26, 29, 34, 37, 42, 45, 50, 53, 58)]
    s.stop()


# --------------------------------------------------------------------------- CLI

def test_open_without_tty_is_one_line_error(lonscope_cmd, demo_pcap):
    r = subprocess.run(lonscope_cmd + ["open", str(demo_pcap)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "terminal" in err[0]


def test_open_missing_file_and_bad_filter(lonscope_cmd, demo_pcap):
    r = subprocess.run(lonscope_cmd + ["open", "/nonexistent.pcap"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(lonscope_cmd + ["open", str(demo_pcap), "-Y", "tuidemo.type =="],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "filter" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- pilot: keys

async def test_first_paint_and_status(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        plist = app.q("list")
        assert plist.count == 60 and plist.first_paint is not None
        text = app.status_text()
        assert "tuidemo.pcap" in text and "Packets: 60/60" in text and "Decrypted: 15/22" in text
        assert "Loaded" in text


NAVIGATION = [
    (["G"], 59), (["g"], 0), (["end"], 59), (["home"], 0),
    (["down", "down", "j"], 3), (["up", "k"], 1), (["pagedown"], None), (["pageup"], 1),
]


async def test_list_navigation_keys(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        plist = app.q("list")
        for keys, expected in NAVIGATION:
            await pilot.press(*keys)
            await pilot.pause()
            if expected is None:
                assert plist.cursor > 5, keys
            else:
                assert plist.cursor == expected, keys
                assert app.detail_row == expected, keys


async def test_goto_packet_ctrl_g(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.press("ctrl+g")
        await pilot.pause()
        from analyzer.tui.screens import GotoScreen
        assert isinstance(app.screen, GotoScreen)
        await pilot.press("4", "2", "enter")
        await pilot.pause()
        assert app.q("list").selected_row() == 41
        assert app.detail_row == 41


async def test_filter_bar_keys_validation_and_apply(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.press("slash")
        bar = app.q("filter")
        assert bar.has_focus
        await pilot.press(*"tuidemo.ty")
        await pilot.pause(0.2)
        assert "tuidemo.type" in app.filter_hint
        await pilot.press("tab")                      # accept the suggested field name
        assert bar.value == "tuidemo.type"
        await pilot.press("space", "=", "=")
        await pilot.pause()
        assert bar.has_class("-invalid") and app.filter_hint
        await pilot.press("space", "3")
        await pilot.pause()
        assert bar.has_class("-valid") and not bar.has_class("-invalid")
        await pilot.press("enter")
        await wait_loaded(pilot)
        assert app.q("list").has_focus
        assert list(app.session.view) == [i for i in range(60) if i % 8 == 4]
        assert "Packets: 7/60" in app.status_text()
        await pilot.press("ctrl+f")
        assert bar.has_focus
        await pilot.press("ctrl+u", "enter")
        await wait_loaded(pilot)
        assert app.session.view is None and app.q("list").count == 60


async def test_invalid_filter_submitted_notifies(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.press("slash", *"nosuch.field", "enter")
        await pilot.pause()
        assert app.session.filter_fn is None
        assert any("Invalid filter" in n.message for n in app._notifications)


async def test_escape_leaves_filter_and_tab_cycles_panes(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        plist = app.q("list")
        assert plist.has_focus
        await pilot.press("tab")
        assert app.q("details").has_focus
        await pilot.press("tab")
        assert app.q("hex").has_focus
        await pilot.press("shift+tab")
        assert app.q("details").has_focus
        await pilot.press("slash")
        await pilot.press("escape")
        assert plist.has_focus


async def test_help_and_quit(demo_pcap):
    from analyzer.tui.screens import HelpScreen
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_time_format_cycles(demo_pcap):
    from analyzer.tui.widgets import fmt_time
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        plist = app.q("list")
        assert plist.time_mode == "relative"
        line = plist.render_line(5).text
        assert " 1.250000 " in line
        await pilot.press("t")
        assert plist.time_mode == "absolute" and app.q("header").time_mode == "absolute"
        assert "22:13:21.250000" in plist.render_line(5).text    # 1700000001.25 s = 22:13:21 UTC
        await pilot.press("t")
        assert plist.time_mode == "delta"
        assert " 0.250000 " in plist.render_line(5).text
        await pilot.press("t")
        assert plist.time_mode == "relative"
    assert fmt_time("absolute", 1_700_000_001_250_000_000, 0, None) == "22:13:21.250000"


async def test_pane_toggle_and_resize_keys(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.press("f2")
        assert not app.q("details").display and app.q("lower").display
        await pilot.press("f3")
        assert not app.q("bytes").display and not app.q("lower").display
        await pilot.press("f2", "f3")
        assert app.q("details").display and app.q("bytes").display and app.q("lower").display
        h0 = app.q("lower").size.height
        await pilot.press("plus")
        await pilot.pause()
        assert app.q("lower").size.height < h0
        await pilot.press("minus", "minus")
        await pilot.pause()
        assert app.q("lower").size.height > h0
        w0 = app.q("details").size.width
        await pilot.press("greater_than_sign")
        await pilot.pause()
        assert app.q("details").size.width > w0
        await pilot.press("less_than_sign", "less_than_sign")
        await pilot.pause()
        assert app.q("details").size.width < w0


async def test_details_deepest_layer_and_field_highlights_bytes(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        tree = app.q("details")
        hexv = app.q("hex")
        # packet 1: the deepest (only) layer is selected and its bytes highlighted
        assert tree.cursor_node.data.field == "tuidemo"
        assert hexv.hl == (0, len(demo_frames()[0][1]))
        # select the sequence-number field: bytes 3..4
        seq = next(tn for core, tn in app._tree_nodes if core.field == "tuidemo.seq")
        tree.move_cursor(seq)
        await pilot.pause()
        assert hexv.hl == (3, 5) and hexv.source == 0
        # a byte click selects the deepest field covering it (byte 1 = source node)
        hexv.post_message(hexv.ByteClicked(0, 1))
        await pilot.pause()
        assert tree.cursor_node.data.field == "tuidemo.src"
        assert hexv.hl == (1, 2)


async def test_hex_click_with_mouse(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        hexv = app.q("hex")
        # byte 2 (destination) is at x = 6 + 3*2 on the first line
        await pilot.click("#hex", offset=(6 + 3 * 2, 0))
        await pilot.pause()
        assert app.q("details").cursor_node.data.field == "tuidemo.dst"
        assert hexv.hl == (2, 3)
        # ASCII column: byte 6 at x = 56 + 6
        await pilot.click("#hex", offset=(56 + 6, 0))
        await pilot.pause()
        assert app.q("details").cursor_node.data.field == "tuidemo.payload"


async def test_decrypted_source_keys(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.press("down", "down")          # packet 3: decrypted
        await pilot.pause()
        bar = app.q("sources")
        assert bar.names == ["Frame", "Decrypted xDLMS"]
        # the deepest layer is the decrypted one: its own byte view is shown
        assert app.q("hex").source == 1 and app.q("hex").data == b"value-002"
        await pilot.press("left_square_bracket")
        assert app.q("hex").source == 0 and bar.active == 0
        await pilot.press("right_square_bracket")
        assert app.q("hex").source == 1 and bar.active == 1
        # clicking the bar's first label shows the frame bytes again
        await pilot.click("#sources", offset=(2, 0))
        await pilot.pause()
        assert app.q("hex").source == 0


async def test_mouse_click_selects_row(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.click("#list", offset=(20, 7))
        await pilot.pause()
        assert app.q("list").cursor == 7 and app.detail_row == 7


async def test_views_by_number_keys(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        for key, view in (("2", "assoc"), ("3", "follow"), ("4", "objects"), ("5", "findings"),
                          ("6", "stats"), ("1", "packets")):
            await pilot.press(key)
            await pilot.pause()
            assert app.q("views").active == view
        await pilot.press("6")
        await pilot.pause()
        body = str(app.q("stats-body").render())
        assert "Protocol hierarchy" in body and "tuidemo" in body
        assert "1/5" in body and "1/9" in body       # the one conversation
        assert "decrypted" in body


async def test_follow_key_shows_dialogue(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.press("F")
        await pilot.pause()
        assert app.q("views").active == "follow"
        t = app.q("follow-table")
        assert t.row_count == 60
        first = [str(c) for c in t.get_row_at(0)]
        assert first[1].startswith("#1 1/5 → 1/9")
        t.move_cursor(row=10)
        await pilot.press("enter")
        await pilot.pause()
        assert app.q("views").active == "packets" and app.q("list").selected_row() == 10


async def test_autoscroll_and_pause_keys(demo_pcap, tmp_path):
    frames = demo_frames(40)
    path = write_pcap(tmp_path / "live.pcap", frames[:10])
    from analyzer.tui.app import LonscopeApp
    s = Session([], live=f"file:{path}")
    app = LonscopeApp(s, tick=0.05, live=True)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if s.n_decoded >= 10:
                break
        plist = app.q("list")
        assert plist.follow and "LIVE" in app.status_text()
        with open(path, "ab") as f:
            for ts, data in frames[10:20]:
                sec, ns = divmod(ts, 1_000_000_000)
                f.write(struct.pack("<IIII", sec, ns // 1000, len(data), len(data)) + data)
        for _ in range(100):
            await pilot.pause(0.05)
            if plist.count >= 20:
                break
        await pilot.pause(0.1)
        assert plist.cursor == 19                       # auto-scrolled to the tail
        await pilot.press("space")
        assert s.paused and "PAUSED" in app.status_text()
        with open(path, "ab") as f:
            for ts, data in frames[20:30]:
                sec, ns = divmod(ts, 1_000_000_000)
                f.write(struct.pack("<IIII", sec, ns // 1000, len(data), len(data)) + data)
        await pilot.pause(0.5)
        assert s.store.n == 20                          # paused: nothing read
        await pilot.press("space")
        for _ in range(100):
            await pilot.pause(0.05)
            if plist.count >= 30:
                break
        assert s.store.n == 30
        await pilot.press("a")                          # auto-scroll off
        assert not plist.follow
        await pilot.press("a")
        assert plist.follow and plist.cursor == plist.count - 1


async def test_key_manager_add_remove_redecrypts(demo_pcap):
    from analyzer.keyring import KeyRing
    from analyzer.tui.screens import KeysScreen
    ring = KeyRing()
    ring.add_dlms("first", ek="000102030405060708090A0B0C0D0E0F", ak="D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
    app = make_app(demo_pcap, keys=ring)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        gen = app.session.decode_gen
        await pilot.press("K")
        await pilot.pause()
        assert isinstance(app.screen, KeysScreen)
        table = app.screen.query_one("#keys-table")
        assert table.row_count == 1
        shown = " ".join(str(c) for c in table.get_row_at(0))
        assert "000102" not in shown.upper() and "ek=•" in shown        # masked
        app.screen.query_one("#k-name").value = "second"
        app.screen.query_one("#k-ek").value = "11" * 16
        await pilot.click("#k-add")
        await pilot.pause()
        assert table.row_count == 2 and ring.names() == ["first", "second"]
        table.move_cursor(row=0)
        await pilot.press("delete")
        await pilot.pause()
        assert ring.names() == ["second"]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, KeysScreen)
        assert app.session.decode_gen == gen + 1
        await wait_loaded(pilot)
        assert app.session.n_decoded == 60 and app.session.decrypted == 15


async def test_export_key_writes_csv(demo_pcap, tmp_path):
    import pandas as pd
    from analyzer.tui.screens import ExportScreen
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen)
        out = tmp_path / "shown.csv"
        app.screen.query_one("#export-path").value = str(out)
        await pilot.press("enter")
        for _ in range(100):
            await pilot.pause(0.05)
            if out.exists() and any("exported" in n.message for n in app._notifications):
                break
        df = pd.read_csv(out)
        assert len(df) == 60 and df["source"][0] == "1/5" and df["info"][1] == "read seq=1 value-001"


async def test_findings_and_objects_views_jump(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        s = app.session
        s.findings = [{"rule": "demo-rule", "severity": "high", "message": "demo finding", "frames": [12, 13]}]
        s.objects = [(20, {"service": "get", "dir": "response", "invoke_id": 1, "class_id": 3,
                           "obis": "1.0.1.8.0.255", "attribute_id": 2, "value": 1234, "result": "success"})]
        # a filter that hides the evidence frame is cleared by the jump
        await pilot.press("slash", *"tuidemo.type == 2", "enter")
        await wait_loaded(pilot)
        await pilot.press("5")
        await pilot.pause()
        t = app.q("findings-table")
        assert [str(c) for c in t.get_row_at(0)] == ["high", "demo-rule", "demo finding", "12, 13"]
        await pilot.press("enter")
        await pilot.pause(0.6)
        assert app.q("views").active == "packets" and app.q("list").selected_row() == 11
        assert app.session.filter_fn is None
        await pilot.press("4")
        await pilot.pause()
        t = app.q("objects-table")
        row = [str(c) for c in t.get_row_at(0)]
        assert row[0] == "21" and row[1] == "get" and row[4].startswith("1.0.1.8.0.255") and row[6] == "1234"
        await pilot.press("enter")
        await pilot.pause()
        assert app.q("list").selected_row() == 20


# --------------------------------------------------------------------------- real captures

def test_columns_and_objects_match_tshark_and_gurux(pcaps, tshark):
    """Packet-list columns against tshark; the Objects view against Gurux's translator."""
    import re
    from gurux_dlms import GXByteBuffer, GXDLMSTranslator
    from gurux_dlms.enums import TranslatorOutputType
    path = pcaps / "htanwar922-wireshark-dlms" / "Output-EPRI.pcap"
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
                          "-e", "frame.len", "-e", "tcp.payload"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    s = load_session(path)
    assert s.store.n == len(out) == 52
    objects = {}
    for r, op in s.objects:
        objects.setdefault(r, []).append(op)
    checked = 0
    for i, line in enumerate(out):
        src, dst, flen, payload = line.split("\t")
        proto, ssrc, sdst, info, status, flags = s.summary(i)
        assert (ssrc, sdst, int(s.store.origlen[i])) == (src, dst, int(flen))
        apdu = bytes.fromhex(payload)[8:]           # after the 8-byte wrapper header
        if apdu[:2] == b"\xc0\x01":                  # get-request-normal
            xml = GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML).pduToXml(GXByteBuffer(apdu))
            cls = int(re.search(r'<ClassId Value="([0-9A-F]+)"', xml).group(1), 16)
            inst = ".".join(str(b) for b in bytes.fromhex(re.search(r'<InstanceId Value="([0-9A-F]+)"', xml).group(1)))
            attr = int(re.search(r'<AttributeId Value="([0-9A-F]+)"', xml).group(1), 16)
            ops = [op for op in objects.get(i, []) if op.get("service") == "get" and op.get("dir") == "request"]
            assert [(op["class_id"], op["obis"], op["attribute_id"]) for op in ops] == [(cls, inst, attr)]
            assert proto == "DLMS" and inst in info
            checked += 1
    assert checked >= 20
    s.stop()


DEMO = ROOT / "captures" / "demo.pcapng"
DEMO_KEYS = ROOT / "keys" / "demo.toml"


@pytest.mark.skipif(not DEMO.exists() or not DEMO_KEYS.exists(), reason="demo capture not generated")
async def test_demo_capture_decrypted_rows_and_views():
    """The README's first command: the demo capture with the demo keys."""
    from analyzer import open_capture
    from analyzer.keyring import load_keys
    from analyzer.tui.views import association_frames
    keys = load_keys(str(DEMO_KEYS))
    statuses = [p.d.status for p in open_capture(str(DEMO), keys=keys)]
    app = make_app(DEMO, keys=keys)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot, timeout=60)
        s = app.session
        assert s.store.n == len(statuses)
        dec = [i for i, st in enumerate(statuses) if st == "decrypted"]
        assert dec and s.decrypted == len(dec)
        assert [i for i in range(s.store.n) if s.summary(i)[4] == ST_DECRYPTED] == dec
        assert f"Decrypted: {len(dec)}/" in app.status_text()
        # select the first decrypted packet: its decrypted bytes are a source of their own
        await pilot.press("ctrl+g", *str(dec[0] + 1), "enter")
        await pilot.pause(0.3)
        assert "Decrypted xDLMS" in app.q("sources").names
        await pilot.press("2")
        await pilot.pause(0.2)
        assert app.q("assoc-table").row_count >= 1
        await pilot.press("f")                        # follow the highlighted association
        await pilot.pause(0.2)
        assert app.q("views").active == "follow"
        first = app._assoc_cache[0]
        assert str(app.q("follow-title").render()).startswith(f"Association {first['id']}: {first['client']}")
        # (frames are computed when an association is followed; the view may have been
        # refreshed since, with fresh rows)
        assert app.q("follow-table").row_count >= len(association_frames(app.session, first)) > 0
        await pilot.press("2")
        await pilot.pause(0.2)
        await pilot.press("enter")                    # filter on the first association
        await wait_loaded(pilot, timeout=60)
        assert app.session.filter_text.startswith("dlms.assoc_id") and 0 < app.q("list").count < s.store.n


@pytest.mark.skipif(not DEMO.exists() or not DEMO_KEYS.exists(), reason="demo capture not generated")
def test_association_view_reads_the_stage_and_counts_from_the_column():
    """The Associations view: the latest associations read one by one from the association
    stage (no list of all, no per-association scan of the packets), packet counts and the
    frames of a followed association equal the packets whose dlms.assoc_id it is."""
    from analyzer import open_capture
    from analyzer.keyring import load_keys
    from analyzer.tui.views import association_frames, association_of_row, association_total, associations
    from tui_app import load_session
    keys = load_keys(str(DEMO_KEYS))
    frames_of: dict[int, list[int]] = {}
    for p in open_capture(str(DEMO), keys=keys):
        ids = p.d.fields.get("dlms.assoc_id") or []
        if ids:
            frames_of.setdefault(ids[0], []).append(p.number)
    s = load_session(DEMO, keys=keys)
    try:
        rows = associations(s)
        total = association_total(s)
        assert total == len(rows) == max(frames_of) and [a["id"] for a in rows] == list(range(1, total + 1))
        assert {a["id"]: a["packets"] for a in rows if a["packets"]} == {k: len(v) for k, v in frames_of.items()}
        ref = {r["assoc_id"]: r for r in s.pipeline.stage("associations").list()}
        assert all((a["client"], a["requests"], a["state"]) == (ref[a["id"]]["client"], ref[a["id"]]["requests"],
                                                                ref[a["id"]]["state"]) for a in rows)
        last3 = associations(s, limit=3)
        assert [a["id"] for a in last3] == [total - 2, total - 1, total]
        aid = max(frames_of, key=lambda k: len(frames_of[k]))
        a = association_of_row(s, frames_of[aid][-1] - 1)
        assert a["id"] == aid and a["frames"] is None and a["filter"] == f"dlms.assoc_id == {aid}"
        assert association_frames(s, a) == frames_of[aid] and a["frames"] == frames_of[aid]
        assert association_of_row(s, next(i for i in range(s.store.n)
                                          if all(i + 1 not in v for v in frames_of.values()))) is None
    finally:
        s.stop()


def test_pcapng_blocks_resolution_and_drop_counter():
    """Hand-built pcapng: nanosecond if_tsresol, an enhanced packet block with a comment,
    and an interface statistics block whose isb_ifdrop is the live drop counter."""
    from analyzer.capture import RecordScanner
    def block(t, body):
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", t, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, struct.pack("<HHI", 147, 0, 0) + struct.pack("<HH", 9, 1) + b"\x09\0\0\0" + b"\0\0\0\0")
    data = b"\x01\x02\x03\x04\x05"
    ts = 1_700_000_000_123_456_789
    comment = b"phase=A"
    opts = struct.pack("<HH", 1, len(comment)) + comment + b"\0" + struct.pack("<HH", 0, 0)
    epb = block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), 60) + data + b"\0\0\0" + opts)
    isb = block(5, struct.pack("<III", 0, 0, 0) + struct.pack("<HHQ", 5, 8, 7) + struct.pack("<HH", 0, 0))
    buf = shb + idb + epb + isb
    ix = RecordScanner()
    cts, coff, ccap, corig, clt, nxt = ix.scan(buf)
    assert ix.error is None and ix.truncated is None and len(cts) == 1 and nxt == len(buf)
    assert cts[0] == ts and clt[0] == 147 and corig[0] == 60 and ccap[0] == 5
    assert coff[0] == len(shb) + len(idb)           # the enhanced packet block
    rec = ix.record_at(buf, coff[0])
    assert rec.data == data and rec.ts_ns == ts and rec.comments == ("phase=A",)
    assert ix.drops == 7
    # incremental: a block cut by the end of a growing file waits for the rest
    ix = RecordScanner()
    cut = len(shb) + len(idb) + 10
    assert ix.scan(buf[:cut])[0] == [] and ix.at_end and ix.error is None and "truncated block" in ix.truncated
    assert ix.scan(buf)[0] == [ts] and ix.truncated is None and ix.pos == len(buf)


def test_live_source_object_rows_and_drops():
    """A live source (the `analyzer.live` interface: iterable of Records with .stats and
    .close) is pumped into the list; its drop counters reach the status."""
    from analyzer.packet import Record

    class FakeSource:
        def __init__(self):
            self.stats = {"frames": 0, "dropped": 2, "rx_errors": 1}
            self.closed = False

        def __iter__(self):
            for ts, data in demo_frames(12):
                time.sleep(0.01)
                self.stats["frames"] += 1
                yield Record(ts, data, tui_app.LINK_TUIDEMO, len(data))

        def close(self):
            self.closed = True

    src = FakeSource()
    s = Session([], live="iface:fake0", live_source=src)
    s.start()
    end = time.time() + 10
    while s.n_decoded < 12 and time.time() < end:
        time.sleep(0.05)
    assert s.n_decoded == 12 and s.summary(11)[3] == "read seq=11 value-011"
    time.sleep(0.4)
    assert s.drops == 3
    s.stop()
    assert src.closed


def test_sniffer_log_opens_like_the_capture(pcaps, tmp_path):
    """A text sniffer log (read through the capture readers, kept in memory) lists the
    same packets as the pcap it was made from."""
    from analyzer.capture import read_capture
    path = pcaps / "htanwar922-wireshark-dlms" / "Output-EPRI.pcap"
    recs = list(read_capture(path))[:6]
    t0 = recs[0].ts_ns
    log = tmp_path / "sniff.log"
    log.write_text("".join(f"{(r.ts_ns - t0) / 1e9:.6f} RX {r.data.hex(' ')}\n" for r in recs))
    a = load_session(path)
    b = load_session(log)
    assert b.store.n == 6
    for i in range(6):
        pa, pb = a.summary(i), b.summary(i)
        assert pb[:3] == pa[:3] == ("DLMS", "127.0.0.1", "127.0.0.1")
        assert pb[3] == pa[3]
        assert int(b.store.ts[i]) - int(b.store.ts[0]) == recs[i].ts_ns - t0
    a.stop()
    b.stop()


async def test_hex_pane_keyboard_and_ctrl_c(demo_pcap):
    app = make_app(demo_pcap)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(pilot)
        await pilot.press("tab", "tab")
        hexv = app.q("hex")
        assert hexv.has_focus and hexv.cursor_byte == 0
        await pilot.press("right", "right", "l")      # byte 3: first byte of the sequence number
        assert hexv.cursor_byte == 3
        await pilot.press("enter")
        await pilot.pause()
        assert app.q("details").cursor_node.data.field == "tuidemo.seq" and hexv.hl == (3, 5)
        await pilot.press("left", "h")
        assert hexv.cursor_byte == 1
        await pilot.press("down")                     # 14-byte frame: clamped to the last byte
        assert hexv.cursor_byte == 13
        await pilot.press("up", "k")
        assert hexv.cursor_byte == 0
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert app.return_code == 0
