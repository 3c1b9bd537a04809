"""Formatting of decoded packets for the command line: summary lines (like tshark),
details trees (-V), hex dumps (-x), JSON / JSON lines and tshark-style `-T fields`.

Formatters turn one packet into text; `cmd_decode` writes the text in large buffered
chunks.  Everything here is streaming: nothing is kept per packet."""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable

import click

from dissectors.core import REGISTRY, Dissection, Node

from .filters import ALIASES, alias_values

class CliError(click.ClickException):
    """A one-line error for the user: `lonscope: message`, exit status 2 by default."""
    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"lonscope: {self.format_message()}", err=True)


SEVERITY = {"chat": "Chat", "note": "Note", "warn": "Warning", "error": "Error"}


# --------------------------------------------------------------------------- values

def _fmt_bytes(v) -> str:
    return bytes(v).hex()


def _fmt_bool(v) -> str:
    return "1" if v else "0"


def _fmt_time(v) -> str:
    return f"{v:.9f}" if isinstance(v, float) else str(v)


def _fmt_other(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, float, str)):
        return str(v)
    try:
        return json.dumps(json_safe(v), separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return str(v)


# type -> formatter for -T fields (ints decimal, bytes lowercase hex, bools 1/0 as tshark 4.0)
FIELD_FORMAT: dict[type, Callable[[Any], str]] = {
    int: str, str: str, bytes: _fmt_bytes, bytearray: _fmt_bytes, bool: _fmt_bool,
    float: repr,
}


def field_text(v: Any) -> str:
    f = FIELD_FORMAT.get(type(v))
    return f(v) if f is not None else _fmt_other(v)


def json_safe(v: Any) -> Any:
    """A value as JSON: numbers stay numbers, bytes lowercase hex, tuples lists."""
    t = type(v)
    if t is int or t is str or t is bool or v is None:
        return v
    if t is float:
        return v if math.isfinite(v) else str(v)
    if t is bytes or t is bytearray or t is memoryview:
        return bytes(v).hex()
    if t is list or t is tuple:
        return [json_safe(x) for x in v]
    if t is dict:
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, int):          # IntEnum and friends
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, (list, tuple, set, frozenset)):
        return [json_safe(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def fields_json(fields: dict[str, list]) -> dict:
    """{name: value} for one occurrence, {name: [values]} for several."""
    out = {}
    for k, vals in fields.items():
        if len(vals) == 1:
            out[k] = json_safe(vals[0])
        else:
            out[k] = [json_safe(x) for x in vals]
    return out


# --------------------------------------------------------------------------- virtual fields

def virtual_fields(pkt, t0_ns: int, prev_ns: int | None = None) -> dict[str, list]:
    """Per-packet fields the dissectors do not set (frame number, times, columns)."""
    d = pkt.d
    return {
        "frame.number": [pkt.number],
        "frame.time_epoch": [pkt.ts_ns / 1e9],
        "frame.time_relative": [(pkt.ts_ns - t0_ns) / 1e9],
        "frame.time_delta": [((pkt.ts_ns - prev_ns) / 1e9) if prev_ns is not None else 0.0],
        "frame.len": [pkt.orig_len],
        "frame.cap_len": [len(pkt.data)],
        "frame.protocols": [":".join(d.protocols) if d else ""],
        "_ws.col.No.": [pkt.number],
        "_ws.col.Source": [d.src if d else ""],
        "_ws.col.Destination": [d.dst if d else ""],
        "_ws.col.Protocol": [pkt.protocol],
        "_ws.col.Length": [pkt.orig_len],
        "_ws.col.Info": [d.info if d else ""],
    } | ({"lonscope.status": [d.status]} if d is not None and d.status else {})


VIRTUAL_NAMES = frozenset(["frame.number", "frame.time_epoch", "frame.time_relative",
                           "frame.time_delta", "frame.len", "frame.cap_len", "frame.protocols",
                           "_ws.col.No.", "_ws.col.Source", "_ws.col.Destination",
                           "_ws.col.Protocol", "_ws.col.Length", "_ws.col.Info",
                           "lonscope.status"])


_VIRTUAL_GETTERS = {
    "frame.number": lambda p, t0, prev: p.number,
    "frame.time_epoch": lambda p, t0, prev: p.ts_ns / 1e9,
    "frame.time_relative": lambda p, t0, prev: (p.ts_ns - t0) / 1e9,
    "frame.time_delta": lambda p, t0, prev: ((p.ts_ns - prev) / 1e9) if prev is not None else 0.0,
    "frame.len": lambda p, t0, prev: p.orig_len,
    "frame.cap_len": lambda p, t0, prev: len(p.data),
}


def virtual_subset(names) -> Callable | None:
    """A cheap builder of only the requested virtual fields (frame numbers, times,
    lengths), or None when some other virtual field is needed (use `virtual_fields`)."""
    want = [n for n in names if n in VIRTUAL_NAMES]
    if any(n not in _VIRTUAL_GETTERS for n in want):
        return None
    getters = [(n, _VIRTUAL_GETTERS[n]) for n in want]

    def build(pkt, t0, prev):
        return {n: [g(pkt, t0, prev)] for n, g in getters}
    return build


def with_virtual(pkt, t0_ns: int, prev_ns: int | None = None) -> dict[str, list]:
    """The packet's flat fields plus the virtual ones (a new dict; the packet's own fields
    win where a dissector sets the same name)."""
    v = virtual_fields(pkt, t0_ns, prev_ns)
    v.update(pkt.d.fields if pkt.d else {})
    return v


# --------------------------------------------------------------------------- text

def summary_line(pkt, t0_ns: int) -> str:
    d = pkt.d
    rel = (pkt.ts_ns - t0_ns) / 1e9
    src = d.src if d else ""
    dst = d.dst if d else ""
    arrow = " → " if (src or dst) else " "
    info = d.info if d else ""
    if d is not None and d.status and d.status not in info:
        info = f"{info} [{d.status}]" if info else f"[{d.status}]"
    return f"{pkt.number:>5} {rel:>11.6f} {src:>15}{arrow}{dst:<15} {pkt.protocol:>6} {pkt.orig_len} {info}"


def tree_lines(d: Dissection, pkt=None) -> list[str]:
    """The details tree indented like `tshark -V` (4 spaces per level)."""
    out: list[str] = []
    shown_expert = set()
    first = d.root.children[0] if d.root is not None and d.root.children else None
    has_frame = first is not None and (first.field == "frame" or first.text.startswith("Frame"))
    if pkt is not None and not has_frame:
        cap = len(pkt.data)
        out.append(f"Frame {pkt.number}: {pkt.orig_len} bytes on wire ({pkt.orig_len * 8} bits), "
                   f"{cap} bytes captured ({cap * 8} bits)")
        out.append(f"    Arrival time (epoch): {pkt.ts_ns // 1_000_000_000}."
                   f"{pkt.ts_ns % 1_000_000_000:09d}")
        out.append(f"    Link type: {pkt.linktype}")
        if d.protocols:
            out.append(f"    [Protocols in frame: {':'.join(d.protocols)}]")
    if d.root is not None:
        stack = [(c, 0) for c in reversed(d.root.children)]
        while stack:
            n, depth = stack.pop()
            text = n.text
            if n is first and has_frame and pkt is not None and text.startswith("Frame:"):
                text = f"Frame {pkt.number}:" + text[6:]
            if n.field == "_ws.expert":
                shown_expert.add(n.value)
            out.append("    " * depth + text)
            if n.children:
                stack.extend((c, depth + 1) for c in reversed(n.children))
    for e in d.expert:
        if e.message in shown_expert:
            continue
        out.append(f"[Expert Info ({SEVERITY.get(e.severity, e.severity)}/{e.group.capitalize()}): "
                   f"{e.message}]")
    return out


def hexdump(data: bytes) -> list[str]:
    """tshark -x style: offset, 16 bytes, ASCII."""
    out = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(f"{off:04x}  {hx:<47}   {asc}")
    return out


def hexdump_sources(d: Dissection | None, data: bytes) -> list[str]:
    sources = d.sources if d is not None and d.sources else [("Frame", data)]
    if len(sources) == 1:
        return hexdump(sources[0][1])
    out = []
    for name, buf in sources:
        out.append(f"{name} ({len(buf)} bytes):")
        out.extend(hexdump(buf))
    return out


def expert_list(d: Dissection | None) -> list[dict]:
    return [e.to_dict() for e in d.expert] if d is not None else []


def packet_object(pkt, tree: bool = False, d: Dissection | None = None) -> dict:
    """The JSON object of one packet (DESIGN.md: -T jsonl)."""
    d = d if d is not None else pkt.d
    obj = {
        "number": pkt.number,
        "time": pkt.ts_ns / 1e9,
        "protocols": ":".join(d.protocols) if d else "",
        "source": d.src if d else "",
        "destination": d.dst if d else "",
        "info": d.info if d else "",
        "fields": fields_json(d.fields) if d else {},
        "expert": expert_list(d),
    }
    if tree and d is not None and d.root is not None:
        obj["tree"] = [c.to_dict() for c in d.root.children]
    return obj


def dumps(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


# --------------------------------------------------------------------------- -T fields

class FieldsFormatter:
    """tshark `-T fields` lines: one column per -e field; `-E` options as tshark."""

    def __init__(self, names: list[str], separator: str = "\t", occurrence: str = "a",
                 aggregator: str = ",", quote: str = "n", header: bool = False):
        self.names = names
        self.sep = separator
        self.occ = occurrence
        self.agg = aggregator
        self.q = {"d": '"', "s": "'"}.get(quote, "")
        self.header = header
        self.needs_virtual = any(n in VIRTUAL_NAMES for n in names)
        # times with nanosecond digits, as tshark prints them
        self.special = {n: _fmt_time for n in names if n.startswith("frame.time")}
        if occurrence == "a" and not self.q and not self.special and not any(n in ALIASES for n in names):
            self.line = _compiled_line(names, separator, aggregator)

    def header_line(self) -> str:
        return self.sep.join(self.names)

    def line(self, fields: dict[str, list], extra: dict | None = None) -> str:
        """One output line; `extra` holds virtual fields looked up before `fields`."""
        if extra:
            fields = {**fields, **extra}
        cols = []
        fmt = FIELD_FORMAT
        occ = self.occ
        agg = self.agg
        q = self.q
        special = self.special
        for name in self.names:
            vals = fields.get(name)
            if vals is None and name in ALIASES:
                vals = alias_values(fields, name)
            if not vals:
                cols.append(q + q if q else "")
                continue
            sp = special.get(name)
            if sp is not None:
                s = agg.join([sp(v) for v in vals]) if occ == "a" else sp(vals[0] if occ == "f" else vals[-1])
            elif len(vals) == 1 or occ != "a":
                v = vals[0] if occ != "l" else vals[-1]
                f = fmt.get(type(v))
                s = f(v) if f is not None else _fmt_other(v)
            else:
                s = agg.join([(fmt.get(type(v)) or _fmt_other)(v) for v in vals])
            cols.append(q + s + q if q else s)
        return self.sep.join(cols)


def _col_text(vals, agg: str) -> str:
    if len(vals) == 1:
        v = vals[0]
        f = FIELD_FORMAT.get(type(v))
        return f(v) if f is not None else _fmt_other(v)
    return agg.join([(FIELD_FORMAT.get(type(v)) or _fmt_other)(v) for v in vals])


_SMALL_INT = tuple(str(i) for i in range(1024))     # str() of the common small values


def _compiled_line(names, sep: str, agg: str) -> Callable:
    """`FieldsFormatter.line` for the default options (all occurrences, no quotes), generated
    once per field list: one dict look-up per column; single ints (from a table of strings
    for small ones) and byte strings converted inline, anything else as `field_text`."""
    lines = ["def line(fields, extra=None):",
             "    if extra:",
             "        fields = {**fields, **extra}",
             "    g = fields.get"]
    for i, n in enumerate(names):
        lines += [f"    v = g({n!r})",
                  "    if not v:",
                  f"        c{i} = ''",
                  "    elif len(v) == 1:",
                  "        x = v[0]",
                  "        t = type(x)",
                  "        if t is int:",
                  f"            c{i} = S[x] if 0 <= x < 1024 else str(x)",
                  "        elif t is bytes:",
                  f"            c{i} = x.hex()",
                  "        else:",
                  f"            c{i} = _one(x)",
                  "    else:",
                  f"        c{i} = _col(v, AGG)"]
    lines.append(f"    return SEP.join(({', '.join(f'c{i}' for i in range(len(names)))},))")
    ns = {"_col": _col_text, "_one": field_text, "SEP": sep, "AGG": agg, "S": _SMALL_INT}
    exec(compile("\n".join(lines) + "\n", "<fields line>", "exec"), ns)
    return ns["line"]


def parse_E(options: Iterable[str]) -> dict:
    """tshark's -E key=value options."""
    out = {"header": False, "separator": "\t", "occurrence": "a", "aggregator": ",", "quote": "n"}
    for opt in options:
        key, eq, val = opt.partition("=")
        key = key.strip().lower()
        if not eq:
            raise ValueError(f"-E {opt}: expected key=value")
        if key == "header":
            if val not in ("y", "n"):
                raise ValueError("-E header must be y or n")
            out["header"] = val == "y"
        elif key == "separator":
            out["separator"] = {"/t": "\t", "/s": " "}.get(val, val)
            if not out["separator"]:
                raise ValueError("-E separator must not be empty")
        elif key == "occurrence":
            if val not in ("f", "l", "a"):
                raise ValueError("-E occurrence must be f, l or a")
            out["occurrence"] = val
        elif key == "aggregator":
            out["aggregator"] = {"/t": "\t", "/s": " "}.get(val, val)
        elif key == "quote":
            if val not in ("d", "s", "n"):
                raise ValueError("-E quote must be d, s or n")
            out["quote"] = val
        elif key == "bom":
            pass
        else:
            raise ValueError(f"-E {key}: unknown option (header, separator, occurrence, aggregator, quote)")
    return out


def known_field(name: str) -> bool:
    if name in REGISTRY or name in VIRTUAL_NAMES:
        return True
    from analyzer.filters import _known_field
    return _known_field(name)
