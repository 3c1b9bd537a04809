"""Sniffer logs as capture sources: text hex dumps and CSV exports.

Three layouts are recognised (auto-detected by `analyzer.capture.read_capture`):

- **line log**: one frame per line, optional time stamp and direction before the hex
  bytes::

      2024-01-02 10:00:00.123 RX 01 23 45 ...
      12.345 <- 0123456789
      [0.250] TX: 0a 0b 0c
      01 23 45 67                      (no time stamp: frames 1 ms apart from 0)

- **offset dump** (text2pcap / `od -Ax -tx1` / Wireshark "hex dump"): lines start with a
  hex offset, a new frame starts at offset 0; an optional line before a frame holds its
  time stamp and direction (I/O, RX/TX, <-/->); an ASCII column at the right is ignored.
- **CSV**: a header row naming the columns (time/timestamp, direction/dir, data/hex/frame/
  bytes/payload), any of `, ; \\t |` as separator; or explicit column numbers through
  `parse_log(..., columns={"time": 0, "dir": 1, "data": 2})`.

Each frame becomes a `Record` with a raw-LonTalk link type, unless its bytes look like
another framing (below).  Whether the log's LonTalk frames carry their CRC-16 is decided per
file: when more than half of them end in two bytes that verify as the frame's CRC-16
(CRC-16/GENIBUS, as the NI delivers them), the file carries CRCs and every raw frame is
LINKTYPE_USER0 (147, CRC always present, a wrong one shows as `lon.crc.status == "bad"`);
otherwise they are LINKTYPE_USER2 (149, no CRC).  Other framings: Ethernet II (IPv4/IPv6/VLAN/0x8950 ethertype)
→ LINKTYPE_ETHERNET, an IPv4/IPv6 packet whose length field matches → LINKTYPE_RAW, an
NI/SICB message `[cmd][len]…` with a layer-2 receive command → 0x950 (the lon netdev link
type).  The direction is kept as a pcapng comment `dir=rx` / `dir=tx`.

A line that cannot be read stops the read there: the records before it are kept and the
reader's `.error` names the line (`capture.log: line 17: ...`).
"""
from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone
from typing import Any

from dissectors.net import (LINKTYPE_ETHERNET, LINKTYPE_LON_NETDEV, LINKTYPE_RAW, LINKTYPE_USER0,
                            LINKTYPE_USER2)

from .packet import Record

DEFAULT_STEP_NS = 1_000_000      # frames without a time stamp: 1 ms apart

MAX_LOG_BYTES = 1 << 30


class LogError(Exception):
    """A log that cannot be read at all (one-line message naming the line)."""


# --------------------------------------------------------------------------- tokens

_DIRS = {"rx": "rx", "tx": "tx", "in": "rx", "out": "tx", "i": "rx", "o": "tx", "<-": "rx",
         "->": "tx", "<": "rx", ">": "tx", "r": "rx", "t": "tx", "<<": "rx", ">>": "tx",
         "recv": "rx", "sent": "tx", "send": "tx", "received": "rx", "up": "rx", "down": "tx"}

_TS_ISO = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(Z|[+-]\d\d:?\d\d)?")
_TS_TOD = re.compile(r"(\d{1,2}):(\d\d):(\d\d)(?:[.,](\d{1,9}))?")
_TS_SEC = re.compile(r"\d+[.,]\d+|\d+(?=s\b)")
_HEXBYTES = re.compile(r"(?:[0-9A-Fa-f]{2}[ :\-]?)+")


def _frac_ns(frac: str | None) -> int:
    if not frac:
        return 0
    return int(frac.ljust(9, "0")[:9])


def parse_time(text: str) -> tuple[int | None, int]:
    """(ts_ns or None, characters consumed) for a time stamp at the start of text.
    ISO date-time (UTC unless an offset is given), time of day (on 1970-01-01), or
    seconds with a fraction ("12.345")."""
    s = text.lstrip("[(")
    skip = len(text) - len(s)
    m = _TS_ISO.match(s)
    if m:
        y, mo, d, h, mi, se, frac, tz = m.groups()
        try:
            dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(se), tzinfo=timezone.utc)
        except ValueError:
            return None, 0
        ns = int(dt.timestamp()) * 1_000_000_000 + _frac_ns(frac)
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            hh, mm = int(tz[1:3]), int(tz[-2:])
            ns -= sign * (hh * 3600 + mm * 60) * 1_000_000_000
        end = m.end()
    else:
        m = _TS_TOD.match(s)
        if m:
            h, mi, se, frac = m.groups()
            if int(h) > 23 or int(mi) > 59 or int(se) > 60:
                return None, 0
            ns = ((int(h) * 60 + int(mi)) * 60 + int(se)) * 1_000_000_000 + _frac_ns(frac)
            end = m.end()
        else:
            m = _TS_SEC.match(s)
            if not m:
                return None, 0
            txt = m.group(0).replace(",", ".")
            if "." in txt:
                whole, frac = txt.split(".")
            else:
                whole, frac = txt, ""
            ns = int(whole) * 1_000_000_000 + _frac_ns(frac)
            end = m.end()
            if s[end:end + 1] == "s":
                end += 1
    rest = s[end:]
    stripped = rest.lstrip("])")
    return ns, skip + end + (len(rest) - len(stripped))


def parse_direction(text: str) -> tuple[str | None, int]:
    s = text.lstrip()
    lead = len(text) - len(s)
    m = re.match(r"(<-|->|<<|>>|[<>]|[A-Za-z]+)(?::|\b|(?=\s)|$)", s)
    if not m:
        return None, 0
    tok = m.group(1)
    d = _DIRS.get(tok.lower())
    if d is None:
        return None, 0
    end = m.end()
    if s[end:end + 1] == ":":
        end += 1
    return d, lead + end


def parse_hex(text: str) -> bytes | None:
    """Hex bytes, spaced ("01 23 ab"), separated by ':' or '-', or packed ("0123ab")."""
    t = text.strip()
    if not t:
        return None
    t = t.replace(":", " ").replace("-", " ")
    parts = t.split()
    if not parts:
        return None
    if len(parts) == 1:
        p = parts[0]
        if p.lower().startswith("0x"):
            p = p[2:]
        if len(p) % 2 or not re.fullmatch(r"[0-9A-Fa-f]+", p):
            return None
        return bytes.fromhex(p)
    if all(len(p) == 2 for p in parts):
        try:
            return bytes.fromhex("".join(parts))
        except ValueError:
            return None
    if all(len(p) % 2 == 0 for p in parts) and all(re.fullmatch(r"[0-9A-Fa-f]+", p) for p in parts):
        return bytes.fromhex("".join(parts))
    return None


# --------------------------------------------------------------------------- framing guess

def guess_linktype(data: bytes) -> int:
    """USER0 (raw LonTalk) unless the bytes clearly are Ethernet, raw IP or a SICB message."""
    n = len(data)
    if n >= 14:
        et = int.from_bytes(data[12:14], "big")
        if et in (0x0800, 0x86DD, 0x8100, 0x88A8, 0x8950) and n >= 34:
            return LINKTYPE_ETHERNET
    if n >= 20 and data[0] == 0x45 and int.from_bytes(data[2:4], "big") == n:
        return LINKTYPE_RAW
    if n >= 40 and data[0] >> 4 == 6 and int.from_bytes(data[4:6], "big") + 40 == n:
        return LINKTYPE_RAW
    if n >= 4 and data[0] in (0x1A, 0x1B, 0x1C) and data[1] == n - 2:
        return LINKTYPE_LON_NETDEV
    return LINKTYPE_USER0


def _record(ts_ns: int, data: bytes, direction: str | None, linktype: int | None) -> Record:
    lt = guess_linktype(data) if linktype is None else linktype
    comments = (f"dir={direction}",) if direction else ()
    return Record(ts_ns, data, lt, len(data), 0, comments)


# --------------------------------------------------------------------------- layouts

_OFFSET_LINE = re.compile(r"^\s*([0-9A-Fa-f]{2,8})(?::)?(\s+)(.*)$")


def _is_offset_line(line: str) -> bool:
    m = _OFFSET_LINE.match(line)
    if not m:
        return False
    # an offset is followed by spaced hex byte tokens
    toks = m.group(3).split()
    return bool(toks) and len(toks[0]) == 2 and all(c in "0123456789abcdefABCDEF" for c in toks[0])


def _offset_bytes(rest: str) -> list[int]:
    """Hex byte tokens after the offset, up to the ASCII column ('|' of hexdump -C, or a
    run of 3+ spaces as in tshark -x); a following offset trims any excess."""
    bar = rest.find("|")
    if bar >= 0:
        rest = rest[:bar]
    m = re.search(r"\S(\s{3,}|\t)", rest)
    if m:
        rest = rest[:m.start() + 1]
    out = []
    for tok in rest.split():
        if len(tok) != 2:
            break
        try:
            out.append(int(tok, 16))
        except ValueError:
            break
    return out


def _split_lines(text: str):
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("//"):
            yield n, ""
            continue
        yield n, line.rstrip()


def _detect_layout(text: str) -> str | None:
    lines = [ln for _, ln in _split_lines(text[:65536]) if ln][:12]
    if not lines:
        return None
    if _looks_csv(lines):
        return "csv"
    offs = sum(1 for ln in lines if _is_offset_line(ln))
    if offs and _is_offset_line(next(ln for ln in lines if _is_offset_line(ln))) and \
            int(_OFFSET_LINE.match(next(ln for ln in lines if _is_offset_line(ln))).group(1), 16) == 0 \
            and offs >= max(1, len(lines) // 2):
        return "offset"
    ok = [_parse_line(ln) is not None for ln in lines]
    if ok[0] and sum(ok) * 2 >= len(ok):
        return "line"
    return None


_CSV_NAMES = {
    "time": ("time", "timestamp", "ts", "date", "datetime", "time_epoch", "frame.time_epoch", "epoch"),
    "dir": ("direction", "dir", "rx/tx", "rxtx", "io"),
    "data": ("data", "hex", "frame", "bytes", "payload", "raw", "packet", "message"),
}


def _csv_dialect(sample: str) -> str:
    first = sample.splitlines()[0] if sample else ""
    counts = {sep: first.count(sep) for sep in (",", ";", "\t", "|")}
    return max(counts, key=counts.get) if max(counts.values()) else ","


def _header_columns(row: list[str]) -> dict | None:
    cols = {}
    for i, name in enumerate(row):
        key = name.strip().strip('"').lower()
        for role, names in _CSV_NAMES.items():
            if key in names and role not in cols:
                cols[role] = i
    return cols if "data" in cols else None


def _looks_csv(lines: list[str]) -> bool:
    sep = _csv_dialect("\n".join(lines))
    if lines[0].count(sep) < 1:
        return False
    row = next(csv.reader([lines[0]], delimiter=sep))
    return _header_columns(row) is not None


def _parse_line(line: str):
    """(ts_ns|None, dir|None, data) of a one-frame-per-line log entry, or None."""
    s = line.strip()
    ts, k = parse_time(s)
    s2 = s[k:].lstrip() if ts is not None else s
    # time stamp then direction, or direction then time stamp
    d, k2 = parse_direction(s2)
    if d is not None:
        s2 = s2[k2:].lstrip()
        if ts is None:
            ts, k = parse_time(s2)
            if ts is not None:
                s2 = s2[k:].lstrip()
    if ts is not None and s2 and s2[0] in ":|,;":
        s2 = s2[1:].lstrip()
    data = parse_hex(s2)
    if data is None:
        return None
    return ts, d, data


# --------------------------------------------------------------------------- public

def looks_like_log(buf) -> bool:
    """Cheap check on the first bytes of a file: text that is one of the log layouts."""
    head = bytes(buf[:65536])
    if b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return _detect_layout(text) is not None


def parse_log(buf, name: str = "log", layout: str | None = None, columns: dict | None = None,
              linktype: int | None = None, delimiter: str | None = None) -> tuple[list[Record], str | None]:
    """Parse a log held in `buf` (bytes/mmap).  Returns (records, damage message or None).
    Raises LogError when nothing at all can be read."""
    if len(buf) > MAX_LOG_BYTES:
        raise LogError(f"{name}: log larger than {MAX_LOG_BYTES >> 20} MiB")
    text = bytes(buf).decode("utf-8", "replace")
    layout = layout or ("csv" if columns else _detect_layout(text))
    if layout is None:
        raise LogError(f"{name}: not a recognised sniffer log (line log, offset hex dump or CSV)")
    if layout == "csv":
        recs, err = _parse_csv(text, name, columns, linktype, delimiter)
    elif layout == "offset":
        recs, err = _parse_offset(text, name, linktype)
    else:
        recs, err = _parse_lines(text, name, linktype)
    if not recs and err:
        raise LogError(err)
    if linktype is None:
        recs = choose_crc_linktype(recs)
    return recs, err


def crc_ok(frame: bytes) -> bool:
    """True when the last two bytes of `frame` are the CRC-16 of the bytes before them."""
    from binascii import crc_hqx
    return len(frame) >= 4 and crc_hqx(frame[:-2], 0xFFFF) ^ 0xFFFF == int.from_bytes(frame[-2:], "big")


def choose_crc_linktype(recs: list[Record]) -> list[Record]:
    """The per-file CRC decision for raw LonTalk records (guessed as USER0): keep USER0 if
    most of them verify as frames with a CRC-16, else turn them all into USER2."""
    raw = [r for r in recs if r.linktype == LINKTYPE_USER0]
    if not raw or 2 * sum(1 for r in raw if crc_ok(r.data)) > len(raw):
        return recs
    return [r._replace(linktype=LINKTYPE_USER2) if r.linktype == LINKTYPE_USER0 else r for r in recs]


def read_log(path, **kw) -> list[Record]:
    """Read a log file with explicit options (layout, columns, linktype, delimiter);
    raises LogError on the first line that cannot be read."""
    with open(path, "rb") as f:
        data = f.read()
    import os
    recs, err = parse_log(data, os.path.basename(str(path)), **kw)
    if err:
        raise LogError(err)
    return recs


def _bad(name: str, n: int, line: str, why: str, count: int) -> str:
    shown = line.strip()
    if len(shown) > 40:
        shown = shown[:40] + "…"
    return f"{name}: line {n}: {why}: {shown!r}; read {count} frames"


def _parse_lines(text: str, name: str, linktype) -> tuple[list[Record], str | None]:
    out: list[Record] = []
    last = -DEFAULT_STEP_NS
    for n, line in _split_lines(text):
        if not line:
            continue
        r = _parse_line(line)
        if r is None:
            return out, _bad(name, n, line, "cannot read a frame (time stamp, direction, hex bytes)", len(out))
        ts, d, data = r
        if ts is None:
            ts = last + DEFAULT_STEP_NS
        last = ts
        out.append(_record(ts, data, d, linktype))
    return out, None


def _parse_offset(text: str, name: str, linktype) -> tuple[list[Record], str | None]:
    out: list[Record] = []
    cur: bytearray | None = None
    cur_ts = cur_dir = None
    expect = 0
    pend_ts = pend_dir = None
    last = -DEFAULT_STEP_NS
    prev_line_bytes = None      # (start offset, bytes) of the previous dump line

    def finish():
        nonlocal cur, last
        if cur is not None and len(cur):
            ts = cur_ts if cur_ts is not None else last + DEFAULT_STEP_NS
            last = ts
            out.append(_record(ts, bytes(cur), cur_dir, linktype))
        cur = None

    for n, line in _split_lines(text):
        if not line:
            continue
        m = _OFFSET_LINE.match(line) if _is_offset_line(line) else None
        if m is None:
            # a header line before a frame: time stamp and/or direction
            s = line.strip()
            d, k = parse_direction(s)
            if d is not None:
                s = s[k:].strip()
            ts, k2 = parse_time(s)
            if ts is None and d is None:
                finish()
                return out, _bad(name, n, line, "neither a hex dump line nor a time stamp/direction", len(out))
            finish()
            pend_ts, pend_dir = ts, d
            expect = 0
            continue
        off = int(m.group(1), 16)
        data = _offset_bytes(m.group(3))
        if off == 0:
            finish()
            cur = bytearray()
            cur_ts, cur_dir = pend_ts, pend_dir
            pend_ts = pend_dir = None
            expect = 0
        elif cur is None:
            return out, _bad(name, n, line, "dump line before any frame starting at offset 0", len(out))
        if off != expect:
            if off > expect:
                finish()
                return out, _bad(name, n, line, f"offset 0x{off:x} leaves a gap (expected 0x{expect:x})", len(out))
            if off < expect - len(prev_line_bytes or ()):
                finish()
                return out, _bad(name, n, line, f"offset 0x{off:x} goes backwards (expected 0x{expect:x})", len(out))
            # the previous line's ASCII column was read as bytes: the offset says where it ends
            del cur[off:]
        cur += bytes(data)
        expect = off + len(data)
        prev_line_bytes = data
    finish()
    return out, None


def _parse_csv(text: str, name: str, columns, linktype, delimiter) -> tuple[list[Record], str | None]:
    sep = delimiter or _csv_dialect(text[:4096])
    rows = csv.reader(io.StringIO(text), delimiter=sep)
    out: list[Record] = []
    cols = dict(columns) if columns else None
    last = -DEFAULT_STEP_NS
    for n, row in enumerate(rows, 1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if cols is None:
            cols = _header_columns(row)
            if cols is None:
                return out, _bad(name, n, sep.join(row), "CSV header names no data column", 0)
            continue
        if columns and n == 1 and _header_columns(row) is not None:
            continue      # explicit columns and a header row: skip the header
        try:
            raw = row[cols["data"]]
        except (IndexError, KeyError):
            return out, _bad(name, n, sep.join(row), "missing data column", len(out))
        data = parse_hex(raw)
        if data is None:
            return out, _bad(name, n, sep.join(row), "data column is not hex bytes", len(out))
        ts = None
        if "time" in cols and cols["time"] < len(row) and row[cols["time"]].strip():
            ts, k = parse_time(row[cols["time"]].strip())
            if ts is None:
                return out, _bad(name, n, sep.join(row), "cannot read the time column", len(out))
        d = None
        if "dir" in cols and cols["dir"] < len(row) and row[cols["dir"]].strip():
            d, _ = parse_direction(row[cols["dir"]].strip())
        if ts is None:
            ts = last + DEFAULT_STEP_NS
        last = ts
        out.append(_record(ts, data, d, linktype))
    return out, None


__all__ = ["crc_ok", "choose_crc_linktype", "LINKTYPE_USER2", "LogError", "looks_like_log", "parse_log", "read_log", "guess_linktype", "parse_time",
           "parse_hex"]
