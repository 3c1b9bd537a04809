"""Small widgets, one job each: the virtual packet list, the hex/ASCII pane, the column
header and the status bar."""
from __future__ import annotations

import time as _time

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from .store import (F_FINDING, F_MALFORMED, F_WARN, ST_AUTHFAIL, ST_AUTHOK, ST_CIPHERED,
                    ST_DECRYPTED, ST_NOKEY, ST_PLAIN)

TIME_MODES = ("relative", "absolute", "delta")

# Protocol colours (foreground) — the top-most protocol of a row decides.
PROTO_COLOURS = {
    "DLMS": "bright_cyan", "XDLMS": "bright_cyan", "ACSE": "cyan", "COSEM": "bright_cyan",
    "LON": "bright_green", "CNIP": "green", "LONIP": "green", "NI": "green",
    "ADP": "bright_blue", "LONPROXY": "blue", "OSGP": "bright_magenta",
    "WRAPPER": "cyan", "HDLC": "cyan",
    "TCP": "white", "UDP": "bright_white", "ARP": "yellow", "ICMP": "yellow", "DNS": "bright_yellow",
    "IP": "grey70", "IPV6": "grey70", "ETH": "grey58",
}
# Security status: background colour of the whole row.
STATUS_BG = {
    ST_DECRYPTED: "#123d12",     # decrypted: dark green
    ST_AUTHOK: "#1d3320",        # authenticated (not encrypted), tag verified
    ST_AUTHFAIL: "#5a1010",      # authentication failed: dark red
    ST_NOKEY: "#4a3a00",         # ciphered, no key: dark amber
    ST_CIPHERED: "#3a2f00",
    ST_PLAIN: "#1c2a3a",         # DLMS in plaintext: dark blue
}
STATUS_MARK = {ST_DECRYPTED: "D", ST_AUTHOK: "A", ST_AUTHFAIL: "!", ST_NOKEY: "K", ST_CIPHERED: "C",
               ST_PLAIN: "P"}


def fmt_time(mode: str, ts_ns: int, t0_ns: int, prev_ns: int | None) -> str:
    if mode == "absolute":
        secs, ns = divmod(int(ts_ns), 1_000_000_000)
        t = _time.gmtime(secs)
        return f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ns // 1000:06d}"
    if mode == "delta":
        return f"{(ts_ns - prev_ns) / 1e9:.6f}" if prev_ns is not None else "0.000000"
    return f"{(ts_ns - t0_ns) / 1e9:.6f}"


def column_widths(width: int) -> list[tuple[str, int]]:
    """(name, width) of each column for a given total width (Info takes the rest)."""
    cols = [("No.", 8), ("Time", 16), ("Source", 18), ("Destination", 18), ("Protocol", 9),
            ("Length", 6)]
    if width < 110:
        cols = [("No.", 7), ("Time", 12), ("Source", 13), ("Destination", 13), ("Protocol", 8),
                ("Length", 6)]
    used = sum(w + 1 for _, w in cols) + 2
    cols.append(("Info", max(10, width - used)))
    return cols


def _cell(text: str, w: int, right: bool = False) -> str:
    if len(text) > w:
        return text[:w - 1] + "…" if w > 1 else text[:w]
    return text.rjust(w) if right else text.ljust(w)


class ListHeader(Static):
    """Column titles above the packet list; the sort column carries ▲ (ascending) or ▼.
    Clicking a title posts `SortClicked` with the column name."""

    DEFAULT_CSS = "ListHeader { height: 1; background: $panel; text-style: bold; }"

    time_mode = reactive("relative")
    sort_col = reactive(None)
    sort_desc = reactive(False)

    class SortClicked(Message):
        def __init__(self, column: str):
            self.column = column
            super().__init__()

    def render(self):
        w = self.size.width or 120
        parts = ["  "]
        for name, cw in column_widths(w):
            title = f"Time ({self.time_mode})" if name == "Time" else name
            if name == self.sort_col:
                arrow = "▼" if self.sort_desc else "▲"
                title = _cell(title, cw - 2).rstrip() + " " + arrow
            parts.append(_cell(title, cw, right=name in ("No.", "Length")) + " ")
        return Text("".join(parts)[:w])

    def column_at(self, x: int) -> str | None:
        pos = 2
        for name, cw in column_widths(self.size.width or 120):
            if pos <= x < pos + cw + 1:
                return name
            pos += cw + 1
        return None

    def on_click(self, event: events.Click) -> None:
        name = self.column_at(event.x)
        if name is not None:
            self.post_message(self.SortClicked(name))


class PacketList(ScrollView, can_focus=True):
    """The packet list: a virtual list (Line API) over the session's column store.  Only
    the visible lines are ever formatted; rows not yet decoded by the pipeline come from a
    quick stateless dissection."""

    DEFAULT_CSS = """
    PacketList { height: 1fr; overflow-x: hidden; }
    """
    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
    ]

    cursor = reactive(0, always_update=True, init=False)

    class Selected(Message):
        """The cursor moved to a packet (store row)."""

        def __init__(self, row: int):
            self.row = row
            super().__init__()

    def __init__(self, session, **kw):
        super().__init__(**kw)
        self.session = session
        self.time_mode = "relative"
        self.follow = False
        self._count = 0
        self._stamp = None
        self._styles: dict = {}
        self.first_paint: float | None = None
        self.cursor_paint: float | None = None     # when the cursor row was last drawn (bench)
        self.first_full_paint: float | None = None  # first row drawn with its protocol columns
        self._last_selected: int | None = None
        self._sort_gen = 0

    # -- data
    def refresh_count(self) -> None:
        s = self.session
        s.update_sort()
        n = s.visible_count()
        stamp = (s.n_decoded, s.done, s.decode_gen, len(s.findings))
        if stamp != self._stamp:
            # rows were decoded (or findings marked): redraw the visible lines
            self._stamp = stamp
            self.refresh()
        if n != self._count:
            self._count = n
            self.virtual_size = Size(0, n)
            if self.follow and n and s.sort_col is None:
                self.cursor = n - 1
            elif self.cursor >= n and n:
                self.cursor = n - 1
            self.refresh()
        if self._last_selected is None and self._count > 0 and s.sort_gen == self._sort_gen:
            self._last_selected = s.row_of(min(self.cursor, self._count - 1))
        if s.sort_gen != self._sort_gen:
            # the order changed (sorted, or new rows merged in): keep the same packet selected
            self._sort_gen = s.sort_gen
            self.keep_selection()
            self.refresh()

    def keep_selection(self) -> None:
        row = self._last_selected
        if row is None or not self.count:
            return
        line = self.session.line_of(row)
        if line is not None and line != self.cursor:
            self.cursor = line

    def reset(self) -> None:
        """The view changed (filter): start again at the top."""
        self._count = -1
        self.refresh_count()

    @property
    def count(self) -> int:
        return max(self._count, 0)

    def selected_row(self) -> int | None:
        if not self.count:
            return None
        return self.session.row_of(min(self.cursor, self.count - 1))

    # -- cursor
    def watch_cursor(self, value: int) -> None:
        if self.count == 0:
            return
        value = max(0, min(value, self.count - 1))
        if value != self.cursor:
            self.cursor = value
            return
        self.session.ui_busy()
        top = int(self.scroll_offset.y)
        h = self.scrollable_content_region.height or self.size.height
        if value < top:
            self.scroll_to(y=value, animate=False, immediate=True)
        elif value >= top + h:
            self.scroll_to(y=value - h + 1, animate=False, immediate=True)
        self.refresh()
        row = self.session.row_of(value)
        if row != self._last_selected:
            self._last_selected = row
            self.post_message(self.Selected(row))

    def action_cursor(self, delta: int) -> None:
        self.follow = False
        self.cursor = max(0, min(self.cursor + delta, self.count - 1))

    def action_page(self, direction: int) -> None:
        self.follow = False
        h = max(1, (self.scrollable_content_region.height or self.size.height) - 1)
        self.cursor = max(0, min(self.cursor + direction * h, self.count - 1))

    def action_first(self) -> None:
        self.follow = False
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = max(0, self.count - 1)

    def go_to_row(self, row: int) -> bool:
        """Move to store row `row` (or the nearest shown one); True if shown exactly."""
        line = self.session.line_of(row)
        self.follow = False
        if line is None:
            self.cursor = self.session.nearest_line(row)
            return False
        self.cursor = line
        return True

    def on_click(self, event: events.Click) -> None:
        line = int(self.scroll_offset.y) + event.y
        if 0 <= line < self.count:
            self.follow = False
            self.cursor = line

    # -- rendering
    def _style(self, proto: str, status: int, flags: int, selected: bool, pending: bool) -> Style:
        key = (proto, status, flags, selected, pending)
        st = self._styles.get(key)
        if st is None:
            fg = PROTO_COLOURS.get(proto, "white")
            if flags & F_MALFORMED:
                fg = "bright_red"
            bg = STATUS_BG.get(status)
            st = Style(color=fg, bgcolor=bg, dim=pending, bold=bool(flags & F_FINDING))
            if selected:
                st = Style(color="black", bgcolor="bright_white" if self.has_focus else "grey62", bold=True)
            self._styles[key] = st
        return st

    def on_focus(self) -> None:
        self._styles.clear()
        self.refresh()

    def on_blur(self) -> None:
        self._styles.clear()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        line = int(self.scroll_offset.y) + y
        if line >= self.count or line < 0:
            return Strip.blank(width)
        s = self.session
        st = s.store
        row = s.row_of(line)
        proto, src, dst, info, status, flags = s.summary(row)
        pending = not st.decoded(row)
        prev = None
        if self.time_mode == "delta" and line > 0:
            prev = int(st.ts[s.row_of(line - 1)])
        t0 = int(st.ts[0]) if st.n else 0
        mark = STATUS_MARK.get(status, " ")
        if flags & F_FINDING:
            mark = "*"
        elif flags & (F_WARN | F_MALFORMED) and mark == " ":
            mark = "!"
        vals = {"No.": str(row + 1), "Time": fmt_time(self.time_mode, int(st.ts[row]), t0, prev),
                "Source": src, "Destination": dst, "Protocol": proto,
                "Length": str(int(st.origlen[row])), "Info": info}
        parts = [mark + " "]
        for name, cw in column_widths(width):
            parts.append(_cell(vals[name], cw, right=name in ("No.", "Length")) + " ")
        text = "".join(parts)
        text = text[:width].ljust(width)
        if self.first_paint is None:
            self.first_paint = _time.perf_counter()
            self.call_after_refresh(s.first_paint_done.set)
        if self.first_full_paint is None and (proto or not pending):
            self.first_full_paint = _time.perf_counter()
        if line == self.cursor and self.cursor_paint is None:
            self.cursor_paint = _time.perf_counter()
        style = self._style(proto, status, flags, line == self.cursor, pending)
        return Strip([Segment(text, style)], width)


class HexView(ScrollView, can_focus=True):
    """Hex/ASCII dump of one data source with the selected field's bytes highlighted.
    Clicking a byte posts `ByteClicked` (the details tree selects the deepest field)."""

    DEFAULT_CSS = "HexView { height: 1fr; }"
    BINDINGS = [
        Binding("up,k", "move(-16)", "Up", show=False),
        Binding("down,j", "move(16)", "Down", show=False),
        Binding("left,h", "move(-1)", "Left", show=False),
        Binding("right,l", "move(1)", "Right", show=False),
        Binding("enter", "pick", "Select field", show=False),
    ]

    class ByteClicked(Message):
        def __init__(self, source: int, offset: int):
            self.source = source
            self.offset = offset
            super().__init__()

    def __init__(self, **kw):
        super().__init__(**kw)
        self.data = b""
        self.source = 0
        self.hl = (0, 0)           # highlighted [start, end)
        self.cursor_byte = 0

    def show(self, data: bytes, source: int = 0, hl: tuple[int, int] = (0, 0)) -> None:
        self.data = data or b""
        self.source = source
        self.hl = hl
        self.virtual_size = Size(78, (len(self.data) + 15) // 16)
        if hl[1] > hl[0]:
            line = hl[0] // 16
            top = int(self.scroll_offset.y)
            h = self.size.height or 8
            if not top <= line < top + h:
                self.scroll_to(y=max(0, line - 1), animate=False, immediate=True)
        self.refresh()

    def highlight(self, start: int, length: int) -> None:
        self.show(self.data, self.source, (start, start + max(0, length)))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        line = int(self.scroll_offset.y) + y
        base = line * 16
        if base >= len(self.data) or line < 0:
            return Strip.blank(width)
        chunk = self.data[base:base + 16]
        a, b = self.hl
        plain = Style(color="grey82")
        hi = Style(color="black", bgcolor="bright_yellow", bold=True)
        cur = Style(color="black", bgcolor="cyan")
        segs = [Segment(f"{base:04x}  ", Style(color="grey50"))]
        for k, byte in enumerate(chunk):
            off = base + k
            st = hi if a <= off < b else plain
            if self.has_focus and off == self.cursor_byte:
                st = cur
            segs.append(Segment(f"{byte:02x}", st))
            segs.append(Segment(" " if k != 7 else "  ", hi if a <= off < b - 1 and k != 15 else plain))
        segs.append(Segment("   " * (16 - len(chunk)) + (" " if len(chunk) < 8 else "") + " ", plain))
        for k, byte in enumerate(chunk):
            off = base + k
            ch = chr(byte) if 32 <= byte < 127 else "."
            segs.append(Segment(ch, hi if a <= off < b else plain))
        return Strip(segs).crop(0, width).extend_cell_length(width)

    def offset_at(self, x: int, y: int) -> int | None:
        line = int(self.scroll_offset.y) + y
        x -= 6
        if x < 0:
            return None
        if x < 50:
            k = x // 3 if x < 24 else (x - 1) // 3
            if k > 15:
                return None
        else:
            k = x - 50
            if not 0 <= k < 16:
                return None
        off = line * 16 + k
        return off if off < len(self.data) else None

    def on_click(self, event: events.Click) -> None:
        off = self.offset_at(event.x, event.y)
        if off is not None:
            self.cursor_byte = off
            self.post_message(self.ByteClicked(self.source, off))
            self.refresh()

    def action_move(self, delta: int) -> None:
        if not self.data:
            return
        self.cursor_byte = max(0, min(len(self.data) - 1, self.cursor_byte + delta))
        line = self.cursor_byte // 16
        top = int(self.scroll_offset.y)
        h = self.size.height or 8
        if line < top:
            self.scroll_to(y=line, animate=False, immediate=True)
        elif line >= top + h:
            self.scroll_to(y=line - h + 1, animate=False, immediate=True)
        self.refresh()

    def action_pick(self) -> None:
        if self.data:
            self.post_message(self.ByteClicked(self.source, self.cursor_byte))


class Splitter(Widget):
    """A one-cell bar between two panes that the mouse drags: press captures the mouse,
    each move posts `Dragged` with the pointer's screen position (the app resizes the
    panes), release lets the mouse go.  "horizontal" lies between panes stacked top and
    bottom, "vertical" between panes side by side."""

    DEFAULT_CSS = """
    Splitter { color: $panel-lighten-2; }
    Splitter.-horizontal { height: 1; width: 1fr; }
    Splitter.-vertical { width: 1; height: 1fr; }
    Splitter:hover, Splitter.-dragging { color: $accent; }
    """

    class Dragged(Message):
        def __init__(self, splitter: "Splitter", screen_x: int, screen_y: int):
            self.splitter = splitter
            self.screen_x = screen_x
            self.screen_y = screen_y
            super().__init__()

    def __init__(self, orientation: str = "horizontal", **kw):
        super().__init__(**kw)
        self.orientation = orientation
        self.dragging = False
        self.add_class("-" + orientation)

    def render_line(self, y: int) -> Strip:
        w = self.size.width
        ch = "─" if self.orientation == "horizontal" else "│"
        return Strip([Segment(ch * w, self.rich_style)], w)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        self.dragging = True
        self.add_class("-dragging")
        self.capture_mouse()
        event.stop()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self.dragging:
            self.post_message(self.Dragged(self, int(event.screen_x), int(event.screen_y)))
            event.stop()

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self.dragging:
            self.post_message(self.Dragged(self, int(event.screen_x), int(event.screen_y)))
            self.dragging = False
            self.remove_class("-dragging")
            self.release_mouse()
            event.stop()


class StatusBar(Static):
    DEFAULT_CSS = "StatusBar { height: 1; background: $primary-background; color: $text; }"


class SourceBar(Static):
    """The byte sources of the selected packet ("Frame", "Decrypted xDLMS", ...): the
    active one is highlighted; click one (or press [ / ]) to show its bytes."""

    DEFAULT_CSS = "SourceBar { height: 1; background: $panel; }"

    class Picked(Message):
        def __init__(self, index: int):
            self.index = index
            super().__init__()

    def __init__(self, **kw):
        super().__init__("", **kw)
        self.names: list[str] = ["Frame"]
        self.active = 0
        self._spans: list[tuple[int, int]] = []

    def set_sources(self, names: list[str], active: int = 0) -> None:
        self.names = list(names) or ["Frame"]
        self.active = active
        self.refresh()

    def set_active(self, k: int) -> None:
        self.active = k
        self.refresh()

    def render(self):
        t = Text()
        self._spans = []
        for k, n in enumerate(self.names):
            label = f" {n} "
            start = len(t.plain)
            t.append(label, style="bold reverse" if k == self.active else "")
            self._spans.append((start, start + len(label)))
            t.append(" ")
        if len(self.names) > 1:
            t.append(" [ ] switch", style="dim")
        return t

    def on_click(self, event: events.Click) -> None:
        for k, (a, b) in enumerate(self._spans):
            if a <= event.x < b:
                self.post_message(self.Picked(k))
                return
