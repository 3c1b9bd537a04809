"""Modal screens: help, go to packet, key manager, export."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static

KEY_HELP = [
    ("Filter", [
        ("/  Ctrl+F", "focus the display filter bar (Enter applies, Esc back to the list)"),
        ("Tab (in filter)", "accept the suggested field name"),
        ("Ctrl+U (in filter)", "clear the filter text"),
    ]),
    ("Packet list", [
        ("↑ ↓  j k", "previous / next packet"),
        ("PgUp PgDn", "page up / down"),
        ("g  Home", "first packet"),
        ("G  End", "last packet"),
        ("Ctrl+G", "go to packet number"),
        ("t", "time format: relative / absolute (UTC) / delta"),
        ("s", "sort by the next column (No. → Time → … → Info → capture order)"),
        ("S", "reverse the sort (without one: newest first)"),
        ("o", "back to capture order"),
        ("click a column title", "sort by it; again: reverse; a third time: capture order"),
        ("F", "follow the selected packet's association"),
        ("a", "auto-scroll: follow the live tail"),
        ("Space", "live capture: pause / resume"),
    ]),
    ("Panes", [
        ("Tab  Shift+Tab", "cycle panes (list, details, bytes, filter)"),
        ("F2 / F3", "show / hide the details / bytes pane"),
        ("+  -", "packet list taller / shorter"),
        ("<  >", "details pane narrower / wider"),
        ("drag a splitter", "mouse: resize the list / details / bytes panes"),
        ("[  ]", "previous / next byte source (Frame, Decrypted xDLMS, ...)"),
        ("click / Enter on a byte", "select the deepest field covering it"),
    ]),
    ("Views", [
        ("1", "Packets"),
        ("2", "Associations (Enter: filter on it, f: follow it)"),
        ("3", "Follow association (dialogue)"),
        ("4", "Objects (values read / written, with OBIS names)"),
        ("5", "Findings (Enter: jump to the evidence frame)"),
        ("6", "Statistics"),
    ]),
    ("Other", [
        ("K", "key manager (add / remove key sets; decryption runs again)"),
        ("e", "export the shown packets (CSV, Parquet, pcapng)"),
        ("?  F1", "this help"),
        ("q  Ctrl+C", "quit"),
    ]),
]


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help { width: 90; height: 80%; border: thick $accent; background: $surface; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        lines = ["[b]lonscope — keys[/b]", ""]
        for group, items in KEY_HELP:
            lines.append(f"[b u]{group}[/]")
            for k, what in items:
                lines.append(f"  [b]{k:<24}[/b] {what}")
            lines.append("")
        lines.append("Esc or ? closes this help.")
        with VerticalScroll(id="help"):
            yield Static("\n".join(lines), markup=True)


class GotoScreen(ModalScreen[int | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    GotoScreen { align: center middle; }
    #goto { width: 44; height: auto; border: thick $accent; background: $surface; padding: 1; }
    """

    def compose(self) -> ComposeResult:
        with Vertical(id="goto"):
            yield Label("Go to packet number:")
            yield Input(placeholder="number", id="goto-input", type="integer")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(int(event.value))
        except ValueError:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _masked(ks) -> str:
    names = []
    for f in ("ek", "ak", "bk", "kek", "hls_secret", "lls_password", "dedicated_key", "oma_key",
              "psk", "auth_key", "domain_key", "domain0_key", "domain1_key"):
        v = getattr(ks, f, None)
        if v:
            names.append(f"{f}=••••••••")
    return " ".join(names)


class KeysScreen(ModalScreen[bool]):
    """Key manager: key sets are listed with their values masked; adding or removing a
    set re-runs decryption over the capture (dismisses with True when something changed)."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("delete,ctrl+d", "remove", "Remove")]
    DEFAULT_CSS = """
    KeysScreen { align: center middle; }
    #keys { width: 110; height: 90%; border: thick $accent; background: $surface; padding: 0 1; }
    #keys DataTable { height: 1fr; }
    #keys Input { width: 1fr; }
    #keys Horizontal { height: auto; }
    """

    def __init__(self, keyring):
        super().__init__()
        self.keyring = keyring
        self.changed = False

    def compose(self) -> ComposeResult:
        with Vertical(id="keys"):
            yield Label("[b]Key sets[/b] (values are never shown; Del removes the selected set)", markup=True)
            yield DataTable(id="keys-table", cursor_type="row")
            yield Label("Add a DLMS key set (hex; system title optional):")
            with Horizontal():
                yield Input(placeholder="name", id="k-name")
                yield Input(placeholder="system title (16 hex)", id="k-title")
            with Horizontal():
                yield Input(placeholder="EK (32 hex)", id="k-ek", password=True)
                yield Input(placeholder="AK (32 hex)", id="k-ak", password=True)
            with Horizontal():
                yield Button("Add", id="k-add", variant="primary")
                yield Button("Remove selected", id="k-remove", variant="error")
                yield Button("Close", id="k-close")
            yield Label("", id="k-msg")

    def on_mount(self) -> None:
        t = self.query_one("#keys-table", DataTable)
        t.add_columns("Name", "Kind", "Match", "Secrets")
        self.fill()
        # nothing to remove yet: start in the "name" field of the add form
        (t if t.row_count else self.query_one("#k-name", Input)).focus()

    def fill(self) -> None:
        t = self.query_one("#keys-table", DataTable)
        t.clear()
        ring = self.keyring
        if ring is None:
            return
        for ks in ring.dlms_sets:
            title = ks.system_title.hex().upper() if getattr(ks, "system_title", None) else "(default)"
            t.add_row(ks.name, "dlms", title, _masked(ks), key=ks.name)
        for ks in ring.lon_sets:
            match = getattr(ks, "address", None) or (ks.neuron_id.hex() if getattr(ks, "neuron_id", None) else "")
            t.add_row(ks.name, "lon", str(match or "(any)"), _masked(ks), key=ks.name)

    def _msg(self, text: str) -> None:
        self.query_one("#k-msg", Label).update(text)

    def add_key(self) -> None:
        vals = {}
        name = self.query_one("#k-name", Input).value.strip() or None
        title = self.query_one("#k-title", Input).value.strip()
        ek = self.query_one("#k-ek", Input).value.strip()
        ak = self.query_one("#k-ak", Input).value.strip()
        if title:
            vals["system_title"] = title
        if ek:
            vals["ek"] = ek
        if ak:
            vals["ak"] = ak
        if not (ek or ak):
            self._msg("[red]enter at least an EK or an AK[/red]")
            return
        try:
            ks = self.keyring.add_dlms(name, **vals)
        except Exception as exc:     # KeyRingError messages never contain key bytes
            self._msg(f"[red]{exc}[/red]")
            return
        for i in ("#k-name", "#k-title", "#k-ek", "#k-ak"):
            self.query_one(i, Input).value = ""
        self.changed = True
        self.fill()
        self._msg(f"added key set {ks.name}; decrypting again")

    def action_remove(self) -> None:
        t = self.query_one("#keys-table", DataTable)
        if not t.row_count:
            return
        key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value
        if self.keyring.remove(key):
            self.changed = True
            self.fill()
            self._msg(f"removed key set {key}; decrypting again")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.add_key()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "k-add":
            self.add_key()
        elif event.button.id == "k-remove":
            self.action_remove()
        else:
            self.action_close()

    def action_close(self) -> None:
        self.dismiss(self.changed)


class ExportScreen(ModalScreen[str | None]):
    """Ask for an output path; the format follows the extension (.csv, .parquet, .pcapng)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    #export { width: 80; height: auto; border: thick $accent; background: $surface; padding: 1; }
    """

    def __init__(self, default: str, shown: int):
        super().__init__()
        self.default = default
        self.shown = shown

    def compose(self) -> ComposeResult:
        with Vertical(id="export"):
            yield Label(f"Export the {self.shown} shown packets to (.csv, .parquet, .pcapng):")
            yield Input(value=self.default, id="export-path")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
