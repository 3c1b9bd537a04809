"""Snapshot tests of the main TUI screens (fixed 160x45 terminal, deterministic capture:
see tests/tui_app.py).  Regenerate after an intended change with
`pytest tests/test_tui_snapshots.py --snapshot-update` and review the SVGs."""
from __future__ import annotations

import pytest

from tui_app import demo_frames, make_app, wait_loaded, write_pcap

SIZE = (160, 45)


@pytest.fixture
def demo_pcap(tmp_path):
    d = tmp_path / "snap"
    d.mkdir()
    return write_pcap(d / "tuidemo.pcap", demo_frames())


def test_main_screen(snap_compare, demo_pcap):
    async def before(pilot):
        await wait_loaded(pilot)
    assert snap_compare(make_app(demo_pcap), terminal_size=SIZE, run_before=before)


def test_filtered_decrypted_field_selected(snap_compare, demo_pcap):
    """Filter applied, a decrypted packet selected, its decrypted field's bytes highlighted
    in the "Decrypted xDLMS" byte view."""
    async def before(pilot):
        await wait_loaded(pilot)
        await pilot.press("slash", *"tuidemo.type == 2", "enter")
        await wait_loaded(pilot)
        await pilot.press("down")
        await pilot.pause(0.2)
        await pilot.press("tab")           # details tree: the decrypted layer is selected
        await pilot.press("down")          # its text field
        await pilot.pause(0.2)
    assert snap_compare(make_app(demo_pcap), terminal_size=SIZE, run_before=before)


def test_help_screen(snap_compare, demo_pcap):
    async def before(pilot):
        await wait_loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.2)
    assert snap_compare(make_app(demo_pcap), terminal_size=SIZE, run_before=before)


def test_statistics_view(snap_compare, demo_pcap):
    async def before(pilot):
        await wait_loaded(pilot)
        await pilot.press("6")
        await pilot.pause(0.2)
    assert snap_compare(make_app(demo_pcap), terminal_size=SIZE, run_before=before)


def test_follow_view(snap_compare, demo_pcap):
    async def before(pilot):
        await wait_loaded(pilot)
        await pilot.press("F")
        await pilot.pause(0.2)
    assert snap_compare(make_app(demo_pcap), terminal_size=SIZE, run_before=before)


def test_sorted_by_source_descending(snap_compare, demo_pcap):
    """The Source title clicked twice: ▼ in the header, "Sort: Source ▼" in the status
    bar, packets from 1/9 first (capture order among them), packet 1 still selected."""
    async def before(pilot):
        await wait_loaded(pilot)
        await pilot.click("#header", offset=(30, 0))
        await pilot.click("#header", offset=(30, 0))
        await pilot.pause(0.2)
    assert snap_compare(make_app(demo_pcap), terminal_size=SIZE, run_before=before)
