"""`lonscope open`: the Textual application (filter bar, packet list, details tree, hex
pane, status bar; analysis views in tabs; modal help / go-to / keys / export screens)."""
from __future__ import annotations

import os
import sys
import time

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.suggester import Suggester
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane, Tree

from .screens import ExportScreen, GotoScreen, HelpScreen, KeysScreen
from .session import SORT_COLUMNS, Session
from .store import F_FINDING
from .views import (FINDING_COLUMNS, OBJECT_COLUMNS, association_filter, association_of_row,
                    association_total, associations, finding_rows, follow_lines, object_rows, statistics_text)
from .widgets import TIME_MODES, HexView, ListHeader, PacketList, SourceBar, Splitter, StatusBar

VIEW_IDS = ("packets", "assoc", "follow", "objects", "findings", "stats")


class FieldSuggester(Suggester):
    """Completes the field name being typed from the field registry."""

    def __init__(self):
        super().__init__(use_cache=True, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        cands = complete_field(value)
        if not cands:
            return None
        word = _last_word(value)
        if not word:
            return None
        return value[: len(value) - len(word)] + cands[0]


def _last_word(text: str) -> str:
    k = len(text)
    while k > 0 and (text[k - 1].isalnum() or text[k - 1] in "._-"):
        k -= 1
    return text[k:]


def complete_field(text: str) -> list[str]:
    word = _last_word(text)
    if not word or word[0].isdigit():
        return []
    try:
        from analyzer.filters import complete
        return [c for c in complete(text) if c != word][:50]
    except Exception:
        from dissectors.core import REGISTRY
        return sorted(n for n in REGISTRY if n.startswith(word) and n != word)[:50]


class FilterBar(Input):
    """The display-filter bar: green when the text compiles, red (with the error) when not."""

    BINDINGS = [Binding("tab", "accept_or_next", "Complete", show=False),
                Binding("escape", "leave", "Back to list", show=False),
                Binding("ctrl+u", "clear_text", "Clear", show=False)]

    def __init__(self, **kw):
        super().__init__(placeholder="Apply a display filter …  (/ or Ctrl+F; Enter applies, e.g. dlms.apdu == \"get-request\")",
                         suggester=FieldSuggester(), **kw)
        self.error: str | None = None

    def action_accept_or_next(self) -> None:
        if self._suggestion and self.cursor_at_end:
            self.value = self._suggestion
            self.cursor_position = len(self.value)
        else:
            self.app.action_focus_next()

    def action_leave(self) -> None:
        self.app.q(PacketList).focus()

    def action_clear_text(self) -> None:
        self.value = ""

    def on_input_changed(self, event: Input.Changed) -> None:
        self.error = check_filter(event.value)
        self.set_class(bool(event.value.strip()) and self.error is None, "-valid")
        self.set_class(self.error is not None, "-invalid")
        app = self.app
        if hasattr(app, "filter_hint"):
            cands = complete_field(event.value) if self.cursor_at_end else []
            if cands:
                app.filter_hint = "fields: " + " ".join(cands[:8]) + (" …" if len(cands) > 8 else "")
            else:
                app.filter_hint = self.error or ""


def check_filter(text: str) -> str | None:
    if not text.strip():
        return None
    try:
        from analyzer.filters import validate
        err = validate(text)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    if err is None:
        return None
    col = getattr(err, "column", None)
    return f"{err}" if col is None or f"column {col}" in str(err) else f"{err} (column {col})"


class LonscopeApp(App):
    TITLE = "lonscope"
    CSS = """
    Screen { layout: vertical; }
    FilterBar { height: 3; border: tall $panel; }
    FilterBar.-valid { border: tall $success; }
    FilterBar.-invalid { border: tall $error; }
    #views { height: 1fr; }
    #views > ContentSwitcher { height: 1fr; }
    TabPane { padding: 0; height: 1fr; }
    #packets-pane { layout: vertical; height: 1fr; }
    #lower { height: 45%; }
    #panes { height: 1fr; }
    #details { width: 55%; }
    #bytes { width: 1fr; }
    #sources { height: 1; }
    #hint { height: 1; color: $text-muted; }
    DataTable { height: 1fr; }
    #follow-title { height: 1; text-style: bold; }
    """

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark,f1", "help", "Help"),
        Binding("slash,ctrl+f", "focus_filter", "Filter"),
        Binding("ctrl+g", "goto", "Go to"),
        Binding("t", "time_mode", "Time fmt"),
        Binding("s", "sort_next", "Sort", show=False),
        Binding("S", "sort_reverse", "Reverse sort", show=False),
        Binding("o", "sort_clear", "Capture order", show=False),
        Binding("K", "keys", "Keys"),
        Binding("e", "export", "Export"),
        Binding("F", "follow", "Follow", show=False),
        Binding("a", "autoscroll", "Auto-scroll", show=False),
        Binding("space", "pause", "Pause", show=False),
        Binding("f2", "toggle_pane('details')", "Details", show=False),
        Binding("f3", "toggle_pane('bytes')", "Bytes", show=False),
        Binding("plus,equals_sign", "resize_list(-5)", "List taller", show=False),
        Binding("minus", "resize_list(5)", "List shorter", show=False),
        Binding("less_than_sign", "resize_details(-5)", "Details narrower", show=False),
        Binding("greater_than_sign", "resize_details(5)", "Details wider", show=False),
        Binding("left_square_bracket", "source(-1)", "Prev bytes", show=False),
        Binding("right_square_bracket", "source(1)", "Next bytes", show=False),
        Binding("1", "view('packets')", "Packets", show=False),
        Binding("2", "view('assoc')", "Assoc", show=False),
        Binding("3", "view('follow')", "Follow", show=False),
        Binding("4", "view('objects')", "Objects", show=False),
        Binding("5", "view('findings')", "Findings", show=False),
        Binding("6", "view('stats')", "Stats", show=False),
    ]

    def __init__(self, session: Session, name: str | None = None, tick: float = 0.2,
                 keyring=None, live: bool = False):
        super().__init__()
        self.session = session
        self.keyring = keyring if keyring is not None else session.keys
        self.tick_interval = tick
        self.live = live or bool(session.live)
        self.file_label = name or ", ".join(os.path.basename(p) for p in session.paths) or (session.live or "")
        self.filter_hint = ""
        self._last_hint = self._last_status = None
        self._reveal_pending = False
        self._detail_gen = 0
        self._want_details = None
        self.dissection = None
        self.detail_row: int | None = None
        self._detail_decoded = False
        self._tree_nodes: list = []
        self._shown_source = 0
        self._view_stamp: dict[str, tuple] = {}
        self._assoc_cache: list[dict] = []
        self._follow_assoc: dict | None = None
        self._follow_row: int | None = None
        self._lower_h = 45
        self._details_w = 55
        self._follow_before_sort = False
        self.t_start = time.perf_counter()

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        self.w = {}
        yield self._keep(FilterBar(id="filter"))
        with self._keep(TabbedContent(id="views", initial="packets")):
            with TabPane("Packets", id="packets"):
                with self._keep(Vertical(id="packets-pane")):
                    yield self._keep(ListHeader(id="header"))
                    yield self._keep(PacketList(self.session, id="list"))
                    with self._keep(Vertical(id="lower")):
                        yield self._keep(Splitter("horizontal", id="split-h"))
                        with self._keep(Horizontal(id="panes")):
                            yield self._keep(Tree("Packet details", id="details"))
                            yield self._keep(Splitter("vertical", id="split-v"))
                            with self._keep(Vertical(id="bytes")):
                                yield self._keep(SourceBar(id="sources"))
                                yield self._keep(HexView(id="hex"))
            # the analysis views are mounted when first shown (a faster first screen)
            for pane_id, title in (("assoc", "Associations"), ("follow", "Follow"), ("objects", "Objects"),
                                   ("findings", "Findings"), ("stats", "Statistics")):
                yield self._keep(TabPane(title, id=pane_id))
        self._lazy_views = {
            "assoc": [self._keep(DataTable(id="assoc-table", cursor_type="row", zebra_stripes=True))],
            "follow": [self._keep(Static("Select a packet or an association, then press F (or f in Associations).",
                                         id="follow-title")),
                       self._keep(DataTable(id="follow-table", cursor_type="row"))],
            "objects": [self._keep(DataTable(id="objects-table", cursor_type="row", zebra_stripes=True))],
            "findings": [self._keep(DataTable(id="findings-table", cursor_type="row", zebra_stripes=True))],
            "stats": [self._keep(VerticalScroll(self._keep(Static("", id="stats-body")), id="stats-scroll"))],
        }
        self._mounted_views: set[str] = {"packets"}
        yield self._keep(Static("", id="hint"))
        yield self._keep(StatusBar("", id="status"))
        yield Footer()

    def _keep(self, widget):
        self.w[widget.id] = widget
        return widget

    def q(self, key):
        """A widget of the main screen by id or type (works while a modal is on top)."""
        if isinstance(key, str):
            return self.w[key.lstrip("#")]
        return {PacketList: self.w["list"], FilterBar: self.w["filter"], HexView: self.w["hex"],
                TabbedContent: self.w["views"], ListHeader: self.w["header"],
                StatusBar: self.w["status"]}[key]

    def on_mount(self) -> None:
        # a short interpreter switch interval keeps the UI responsive next to the decoder
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(0.001)
        self.session.ui_busy(0.2)
        plist = self.q(PacketList)
        plist.follow = self.live
        if self.session.filter_text:
            self.q(FilterBar).value = self.session.filter_text
        if self.session._thread is None:
            self.session.start(wait_for_ui=True)
        self.call_after_refresh(self.session.first_paint_done.set)
        plist.focus()
        self.set_interval(self.tick_interval, self.tick)
        self.tick()

    def on_unmount(self) -> None:
        self.session.stop()
        sys.setswitchinterval(self._switch)

    async def on_event(self, event) -> None:
        # input first: background decoding pauses for a moment while the user interacts
        if isinstance(event, (events.Key, events.MouseDown, events.MouseScrollDown,
                              events.MouseScrollUp)):
            self.session.ui_busy()
        await super().on_event(event)

    # ------------------------------------------------------------------ periodic refresh
    def tick(self) -> None:
        try:
            self._tick()
        except Exception as exc:     # never let a refresh error take the UI down
            self.notify(f"refresh: {type(exc).__name__}: {exc}", severity="error")

    def _tick(self) -> None:
        s = self.session
        while s.notices:
            sev, msg = s.notices.pop(0)
            self.notify(msg, severity="error" if sev == "error" else "warning", timeout=8)
        plist = self.q(PacketList)
        plist.refresh_count()
        row = plist.selected_row()
        if row is not None and s.dissectors_ready and (row != self.detail_row or
                                (not self._detail_decoded and s.store.decoded(row) and s.n_decoded > row)):
            self.show_details(row)
        hint = self.filter_hint or self._progress_hint()
        if hint != self._last_hint:
            self._last_hint = hint
            self.q("#hint").update(Text(hint))
        status = self.status_text()
        if status != self._last_status:
            self._last_status = status
            self.q(StatusBar).update(Text(status))
        active = self.q(TabbedContent).active
        if active != "packets":
            self.refresh_view(active)

    def _progress_hint(self) -> str:
        s = self.session
        if s.filter_fn is not None:
            return f"Filter: {s.filter_text}"
        return ""

    def status_text(self) -> str:
        s = self.session
        st = s.store
        total = st.n
        shown = s.visible_count()
        parts = [f" {self.file_label}", f"Packets: {shown}/{total}",
                 f"Decrypted: {s.decrypted}/{s.ciphered}"]
        if s.findings:
            sev = s.severity
            order = ("critical", "high", "medium", "low", "info")
            fs = " ".join(f"{k}:{sev[k]}" for k in order if sev.get(k))
            parts.append(f"Findings: {fs or len(s.findings)}")
        elif s.done:
            n_flag = int((st.flags[:total] & F_FINDING).astype(bool).sum()) if total else 0
            parts.append(f"Findings: {n_flag}")
        if s.sort_col is not None:
            parts.append(f"Sort: {s.sort_col} {'▼' if s.sort_desc else '▲'}")
        if s.indexing and not s.live:
            parts.append("Indexing…")
        elif not s.done:
            pct = 100.0 * s.n_decoded / total if total else 0.0
            parts.append(f"Decoding {pct:.0f}%")
        elif s.filter_fn is not None and s.view_upto < s.n_decoded:
            parts.append(f"Filtering {100.0 * s.view_upto / max(1, s.n_decoded):.0f}%")
        else:
            parts.append("Loaded")
        if s.live:
            plist = self.q(PacketList)
            parts.append(("PAUSED" if s.paused else "LIVE") + (" ⇣tail" if plist.follow else "")
                         + f" drops:{s.drops}")
        return " │ ".join(parts)

    # ------------------------------------------------------------------ details + hex
    def on_packet_list_selected(self, event: PacketList.Selected) -> None:
        # the list repaints first; the details follow (only for the latest selection)
        self._want_details = event.row
        self.call_after_refresh(self._details_after_refresh, event.row)

    def _details_after_refresh(self, row: int) -> None:
        if self._want_details == row and row != self.detail_row and self.session.dissectors_ready:
            self.show_details(row)

    def show_details(self, row: int) -> None:
        s = self.session
        tree = self.q("#details")
        self.detail_row = row
        self._detail_gen += 1
        self._detail_decoded = s.store.decoded(row) and s.n_decoded > row
        try:
            d = s.dissect(row)
        except Exception as exc:
            tree.clear()
            tree.root.label = Text(f"Frame {row + 1}: cannot dissect ({type(exc).__name__}: {exc})")
            self.dissection = None
            return
        self.dissection = d
        st = s.store
        tree.clear()
        tree.scroll_to(0, 0, animate=False, immediate=True)
        tree.root.label = Text(f"Frame {row + 1}: {int(st.origlen[row])} bytes on wire, "
                               f"{int(st.caplen[row])} captured")
        tree.root.data = None
        self._tree_nodes = []
        fallback = None
        for child in d.root.children if d.root is not None else ():
            fallback = self._add_node(tree.root, child)
        # the deepest protocol layer with bytes (a decrypted layer nested in its ciphered
        # APDU counts; annotations such as "[DLMS association]" do not)
        protos = set(d.protocols)
        by_id = {id(core): tn for core, tn in self._tree_nodes}
        deepest = None
        for n in d.root.walk() if d.root is not None else ():
            if n is not d.root and n.field in protos and n.length > 0:
                deepest = by_id.get(id(n), deepest)
        deepest = deepest or fallback
        for e in d.expert:
            if not any(n.field == "_ws.expert" and n.value == e.message for n, _ in self._tree_nodes):
                tree.root.add_leaf(Text(f"[Expert {e.severity}/{e.group}] {e.message}"))
        tree.root.expand()
        self._set_sources(d)
        self.show_source(0)
        if deepest is not None:
            self._reveal_pending = True
            self.call_after_refresh(self._reveal, tree, deepest, self._detail_gen)

    def _reveal(self, tree, node, gen) -> None:
        """Select the deepest layer once the tree has laid out its lines."""
        if gen != self._detail_gen:
            return
        self._reveal_pending = False
        tree.move_cursor(node)
        tree.scroll_to_node(node, animate=False)

    def _add_node(self, parent, core):
        label = Text(core.text or (core.field or ""))
        if core.children:
            tn = parent.add(label, data=core, expand=bool(getattr(core, "expanded", True)))
            for c in core.children:
                self._add_node(tn, c)
        else:
            tn = parent.add_leaf(label, data=core)
        self._tree_nodes.append((core, tn))
        return tn

    def _set_sources(self, d) -> None:
        self.q("#sources").set_sources([n for n, _ in d.sources], 0)

    def show_source(self, k: int, hl: tuple[int, int] = (0, 0)) -> None:
        d = self.dissection
        if d is None or not 0 <= k < len(d.sources):
            return
        self._shown_source = k
        self.q("#sources").set_active(k)
        self.q(HexView).show(d.sources[k][1], k, hl)

    def on_source_bar_picked(self, event: SourceBar.Picked) -> None:
        if event.index != self._shown_source:
            self.show_source(event.index)

    @on(Tree.NodeHighlighted, "#details")
    def _node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        core = event.node.data
        if core is None:
            return
        if core.source != self._shown_source:
            self.show_source(core.source, (core.offset, core.offset + core.length))
        else:
            self.q(HexView).highlight(core.offset, core.length)

    def on_hex_view_byte_clicked(self, event: HexView.ByteClicked) -> None:
        best = None
        best_depth = -1
        d = self.dissection
        if d is None or d.root is None:
            return

        def visit(n, depth):
            nonlocal best, best_depth
            for c in n.children:
                if c.source == event.source and c.length > 0 and c.offset <= event.offset < c.offset + c.length:
                    if depth >= best_depth:
                        best, best_depth = c, depth
                visit(c, depth + 1)
        visit(d.root, 0)
        if best is None:
            return
        for core, tn in self._tree_nodes:
            if core is best:
                tree = self.q("#details")
                tree.move_cursor(tn)
                tree.scroll_to_node(tn, animate=False)
                break

    # ------------------------------------------------------------------ actions
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_focus_filter(self) -> None:
        self.q(TabbedContent).active = "packets"
        self.q(FilterBar).focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.apply_filter(event.value)

    def apply_filter(self, text: str) -> bool:
        s = self.session
        plist = self.q(PacketList)
        keep = plist.selected_row()
        try:
            s.set_filter(text)
        except Exception as exc:
            col = getattr(exc, "column", None)
            self.notify(f"Invalid filter{f' at column {col}' if col else ''}: {exc}", severity="error")
            return False
        plist.reset()
        plist.cursor = 0
        self._restore_after_filter = keep
        self.set_timer(0.3, self._reselect_after_filter)
        plist.focus()
        return True

    def _reselect_after_filter(self) -> None:
        keep = getattr(self, "_restore_after_filter", None)
        plist = self.q(PacketList)
        plist.refresh_count()
        if keep is not None and plist.count:
            plist.go_to_row(keep)

    def action_goto(self) -> None:
        def done(num):
            if num is None:
                return
            self.go_to_packet(num)
        self.push_screen(GotoScreen(), done)

    def go_to_packet(self, num: int) -> None:
        s = self.session
        self.q(TabbedContent).active = "packets"
        plist = self.q(PacketList)
        if not 1 <= num <= s.store.n:
            self.notify(f"No packet {num} (1–{s.store.n})", severity="warning")
            return
        if not plist.go_to_row(num - 1):
            self.notify(f"Packet {num} is hidden by the display filter; showing the nearest one",
                        severity="warning")
        plist.focus()

    def action_time_mode(self) -> None:
        plist = self.q(PacketList)
        k = (TIME_MODES.index(plist.time_mode) + 1) % len(TIME_MODES)
        plist.time_mode = TIME_MODES[k]
        self.q(ListHeader).time_mode = TIME_MODES[k]
        plist.refresh()

    def action_toggle_pane(self, which: str) -> None:
        w = self.q(f"#{which}")
        w.display = not w.display
        details, data = self.q("#details").display, self.q("#bytes").display
        self.q("#lower").display = details or data
        self.q("#split-v").display = details and data
        if details and not data:
            self.q("#details").styles.width = "1fr"
        elif details:
            self.q("#details").styles.width = f"{self._details_w}%"

    def action_resize_list(self, delta: int) -> None:
        self._lower_h = max(10, min(80, round(self._lower_h) + delta))
        self.q("#lower").styles.height = f"{self._lower_h}%"

    def action_resize_details(self, delta: int) -> None:
        self._details_w = max(15, min(85, round(self._details_w) + delta))
        self.q("#details").styles.width = f"{self._details_w}%"

    def on_splitter_dragged(self, event: Splitter.Dragged) -> None:
        """Mouse drag of a pane splitter: the splitter follows the pointer (the sizes are
        then kept in cells; the +/- and </> keys go back to percentages)."""
        if event.splitter.id == "split-h":
            pane = self.q("#packets-pane").region
            if pane.height < 8:
                return
            # the splitter is the first line of #lower: #lower starts at the pointer
            h = max(3, min(pane.height - 4, pane.bottom - event.screen_y))
            self._lower_h = 100.0 * h / pane.height
            self.q("#lower").styles.height = h
        elif event.splitter.id == "split-v":
            panes = self.q("#panes").region
            if panes.width < 24:
                return
            w = max(10, min(panes.width - 11, event.screen_x - panes.x))
            self._details_w = 100.0 * w / panes.width
            self.q("#details").styles.width = w

    # ------------------------------------------------------------------ sorting
    def sort_by(self, column: str | None, descending: bool = False) -> None:
        """Sort the packet list (None: capture order), keeping the selected packet.  While
        sorted, auto-scroll (follow the live tail) is suspended; new packets are merged
        into their sorted place."""
        s = self.session
        plist = self.q(PacketList)
        keep = plist.selected_row()
        if column is not None and s.sort_col is None:
            self._follow_before_sort = plist.follow
        plist.follow = False
        s.ui_busy(0.5)
        try:
            s.set_sort(column, descending)
        except Exception as exc:       # never a traceback on screen
            self.notify(f"sort: {type(exc).__name__}: {exc}", severity="error")
            s.set_sort(None)
            column = None
        header = self.q(ListHeader)
        header.sort_col = column
        header.sort_desc = s.sort_desc
        plist.refresh_count()
        if keep is not None:
            plist.go_to_row(keep)
        if column is None and self._follow_before_sort:
            self._follow_before_sort = False
            plist.follow = True
            plist.action_last()
        plist.refresh()

    def on_list_header_sort_clicked(self, event: ListHeader.SortClicked) -> None:
        """Header click: ascending, again descending, a third time capture order."""
        s = self.session
        if s.sort_col != event.column:
            self.sort_by(event.column)
        elif not s.sort_desc:
            self.sort_by(event.column, True)
        else:
            self.sort_by(None)
        self.q(PacketList).focus()

    def action_sort_next(self) -> None:
        """s: sort by the next column (No. → Time → … → Info → capture order)."""
        cur = self.session.sort_col
        if cur is None:
            self.sort_by(SORT_COLUMNS[0])
        else:
            k = SORT_COLUMNS.index(cur) + 1
            self.sort_by(SORT_COLUMNS[k] if k < len(SORT_COLUMNS) else None)

    def action_sort_reverse(self) -> None:
        """S: reverse the sort (without a sort: newest packet first)."""
        s = self.session
        if s.sort_col is None:
            self.sort_by("No.", True)
        else:
            self.sort_by(s.sort_col, not s.sort_desc)

    def action_sort_clear(self) -> None:
        if self.session.sort_col is not None:
            self.sort_by(None)

    def action_source(self, delta: int) -> None:
        d = self.dissection
        if d is None:
            return
        self.show_source((self._shown_source + delta) % len(d.sources))

    def action_autoscroll(self) -> None:
        plist = self.q(PacketList)
        if not plist.follow and self.session.sort_col is not None:
            self._follow_before_sort = True       # following the tail needs capture order
            self.sort_by(None)
            self.notify("capture order restored: auto-scroll on", timeout=2)
            return
        plist.follow = not plist.follow
        if plist.follow:
            plist.action_last()
        self.notify("auto-scroll on" if plist.follow else "auto-scroll off", timeout=2)

    def action_pause(self) -> None:
        s = self.session
        if not s.live:
            self.notify("pause/resume applies to live captures (--live)", timeout=3)
            return
        s.paused = not s.paused
        self.notify("capture paused" if s.paused else "capture resumed", timeout=2)

    async def _ensure_view(self, view: str) -> None:
        if view in self._mounted_views or view not in self._lazy_views:
            return
        self._mounted_views.add(view)
        await self.w[view].mount_all(self._lazy_views[view])
        if view == "assoc":
            self.q("#assoc-table").add_columns("#", "Client", "Server", "Mechanism", "Security", "State",
                                               "Req", "Resp", "Packets", "Duration s")
        elif view == "follow":
            self.q("#follow-table").add_columns("", "Dialogue")
        elif view == "objects":
            self.q("#objects-table").add_columns(*OBJECT_COLUMNS)
        elif view == "findings":
            self.q("#findings-table").add_columns(*FINDING_COLUMNS)

    async def action_view(self, view: str) -> None:
        await self._ensure_view(view)
        self.q(TabbedContent).active = view
        self.refresh_view(view, force=True)
        if view == "packets":
            self.q(PacketList).focus()
        else:
            tbl = {"assoc": "#assoc-table", "follow": "#follow-table", "objects": "#objects-table",
                   "findings": "#findings-table"}.get(view)
            if tbl:
                self.q(tbl).focus()

    @on(TabbedContent.TabActivated, "#views")
    async def _view_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane.id if event.pane is not None else None
        if pane:
            await self._ensure_view(pane)
            self.refresh_view(pane, force=True)

    async def action_follow(self) -> None:
        plist = self.q(PacketList)
        row = plist.selected_row()
        if row is None:
            return
        self._follow_assoc = association_of_row(self.session, row)
        self._follow_row = row
        await self.action_view("follow")

    def action_keys(self) -> None:
        if self.keyring is None:
            from analyzer.keyring import KeyRing
            self.keyring = KeyRing()
        ring = self.keyring

        def done(changed):
            if changed:
                self.session.reload_keys(ring)
                self.detail_row = None
                self.notify("keys changed: decrypting again", timeout=3)
        self.push_screen(KeysScreen(ring), done)

    def action_export(self) -> None:
        base = os.path.splitext(os.path.basename(self.session.paths[0] if self.session.paths else "live"))[0]
        default = os.path.abspath(f"{base}-export.csv")

        def done(path):
            if path:
                self.export(path)
        self.push_screen(ExportScreen(default, self.session.visible_count()), done)

    @work(thread=True, exclusive=True, group="export")
    def export(self, path: str) -> None:
        from .export import export_view
        try:
            n = export_view(self.session, path)
        except Exception as exc:
            self.call_from_thread(self.notify, f"export failed: {exc}", severity="error")
            return
        self.call_from_thread(self.notify, f"exported {n} packets to {path}", timeout=5)

    # ------------------------------------------------------------------ views
    def refresh_view(self, view: str, force: bool = False) -> None:
        if view not in self._mounted_views:
            return
        s = self.session
        stamp = (s.n_decoded, s.done, len(s.findings), s.decode_gen, id(self._follow_assoc), self._follow_row)
        if not force and self._view_stamp.get(view) == stamp:
            return
        last = self._view_stamp.get(view + "@t", (0.0,))[0]
        now = time.monotonic()
        if not force and not s.done and now - last < 1.0:
            return
        self._view_stamp[view] = stamp
        self._view_stamp[view + "@t"] = (now,)
        try:
            if view == "assoc":
                self._fill_assoc()
            elif view == "follow":
                self._fill_follow()
            elif view == "objects":
                self._fill_table("#objects-table", object_rows(s))
            elif view == "findings":
                self._fill_table("#findings-table", finding_rows(s))
            elif view == "stats":
                self.q("#stats-body").update(Text(statistics_text(s)))
        except Exception as exc:
            self.notify(f"{view}: {type(exc).__name__}: {exc}", severity="error")

    def _fill_table(self, sel: str, rows: list[tuple]) -> None:
        t = self.q(sel)
        cur = t.cursor_row
        t.clear()
        for k, r in enumerate(rows):
            t.add_row(*[Text(str(x)) for x in r], key=str(k))
        if rows and cur:
            t.move_cursor(row=min(cur, len(rows) - 1))

    def _fill_assoc(self) -> None:
        self._assoc_cache = associations(self.session)
        rows = []
        for a in self._assoc_cache:
            rows.append((a["id"], a["client"], a["server"], a["mechanism"], a["security"], a["state"],
                         "" if a["requests"] is None else a["requests"],
                         "" if a["responses"] is None else a["responses"],
                         a["packets"], f"{a['duration']:.3f}"))
        self._fill_table("#assoc-table", rows)
        total = association_total(self.session)
        self.q("#assoc-table").border_title = (f"latest {len(rows):,} of {total:,} associations "
                                               f"(all: lonscope export --what sessions)"
                                               if total > len(rows) else None)

    def _fill_follow(self) -> None:
        a = self._follow_assoc
        row = self._follow_row
        title = self.q("#follow-title")
        if a is None and row is None:
            return
        if a is not None:
            title.update(Text(f"Association {a['id']}: {a['client']} ⇄ {a['server']}  "
                              f"({a['mechanism'] or 'mechanism ?'}, {a['security'] or 'security ?'})"))
        else:
            proto, src, dst, *_ = self.session.summary(row)
            title.update(Text(f"Conversation {src} ⇄ {dst} (no association found for packet {row + 1})"))
        lines = follow_lines(self.session, a, row)
        self._follow_frames = [int(t.split()[0][1:]) if t.startswith("#") else None for _, t in lines]
        self._fill_table("#follow-table", lines)

    @on(DataTable.RowSelected, "#assoc-table")
    def _assoc_selected(self, event: DataTable.RowSelected) -> None:
        k = event.cursor_row
        if not 0 <= k < len(self._assoc_cache):
            return
        text = association_filter(self._assoc_cache[k])
        if text:
            self.q(FilterBar).value = text
            if self.apply_filter(text):
                self.q(TabbedContent).active = "packets"

    async def key_f(self) -> None:
        """f in the Associations view: follow the highlighted association."""
        if self.q(TabbedContent).active != "assoc":
            return
        t = self.q("#assoc-table")
        k = t.cursor_row
        if 0 <= k < len(self._assoc_cache):
            self._follow_assoc = self._assoc_cache[k]
            self._follow_row = None
            await self.action_view("follow")

    @on(DataTable.RowSelected, "#findings-table")
    def _finding_selected(self, event: DataTable.RowSelected) -> None:
        from .session import finding_frames
        from .views import SEV_ORDER
        fs = sorted(self.session.findings,
                    key=lambda f: SEV_ORDER.get(str(f.get("severity", "info")).lower(), 5))
        k = event.cursor_row
        if 0 <= k < len(fs):
            frames = finding_frames(fs[k])
            if frames:
                self._jump_showing(frames[0])

    @on(DataTable.RowSelected, "#objects-table")
    def _object_selected(self, event: DataTable.RowSelected) -> None:
        t = self.q("#objects-table")
        try:
            num = int(str(t.get_row_at(event.cursor_row)[0]))
        except (ValueError, IndexError):
            return
        self._jump_showing(num)

    @on(DataTable.RowSelected, "#follow-table")
    def _follow_selected(self, event: DataTable.RowSelected) -> None:
        frames = getattr(self, "_follow_frames", [])
        k = event.cursor_row
        if 0 <= k < len(frames) and frames[k]:
            self._jump_showing(frames[k])

    def _jump_showing(self, num: int) -> None:
        """Go to packet num, clearing the display filter if it hides it."""
        s = self.session
        if s.filter_fn is not None and s.line_of(num - 1) is None:
            self.q(FilterBar).value = ""
            self.apply_filter("")
            self._restore_after_filter = num - 1      # not the row selected before
        self.q(TabbedContent).active = "packets"
        plist = self.q(PacketList)
        plist.refresh_count()
        plist.go_to_row(num - 1)
        plist.focus()
