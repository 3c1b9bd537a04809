"""A-XDR encoded COSEM `Data` (IEC 62056-6-2 / Green Book): decoding into fields and tree
nodes, plus an encoder used by the simulator and for fuzz seeds.

A-XDR is a recursive tag/length/value format, so it is parsed by hand with
`struct.unpack_from` (a Construct definition would re-enter the interpreter for every
element).  Every length and element count is checked against the bytes that remain before
anything is read or allocated, and nesting depth is bounded (`MAX_DEPTH`).

Leaf values are real values: integers, floats, `bytes` (octet-string), `str`
(visible/utf8 strings, bit-strings as "0101..."), bools, and ISO strings for
date-time/date/time.  Date-time deviation follows the standard's sign convention
(deviation = UTC - local, in minutes), so the ISO offset is the negated deviation.
"""
from __future__ import annotations

import struct
from typing import Any

from .core import FT_BOOL, FT_BYTES, FT_FLOAT, FT_INT, FT_STR, FT_UINT, Truncated, field

MAX_DEPTH = 48          # structures nested deeper than this are reported as malformed

_u16 = struct.Struct(">H").unpack_from
_i16 = struct.Struct(">h").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i32 = struct.Struct(">i").unpack_from
_u64 = struct.Struct(">Q").unpack_from
_i64 = struct.Struct(">q").unpack_from
_f32 = struct.Struct(">f").unpack_from
_f64 = struct.Struct(">d").unpack_from

TYPE_NAMES = {
    0: "null-data", 1: "array", 2: "structure", 3: "boolean", 4: "bit-string",
    5: "double-long", 6: "double-long-unsigned", 9: "octet-string", 10: "visible-string",
    12: "utf8-string", 13: "bcd", 15: "integer", 16: "long", 17: "unsigned",
    18: "long-unsigned", 19: "compact-array", 20: "long64", 21: "long64-unsigned",
    22: "enum", 23: "float32", 24: "float64", 25: "date-time", 26: "date", 27: "time",
    255: "dont-care",
}
TYPE_TAGS = {v: k for k, v in TYPE_NAMES.items()}
# aliases accepted by the encoder
TYPE_TAGS.update({"null": 0, "bool": 3, "enumerate": 22, "int8": 15, "int16": 16, "uint8": 17,
                  "uint16": 18, "int32": 5, "uint32": 6, "int64": 20, "uint64": 21,
                  "float-32": 23, "float-64": 24})

# fixed-size scalar types: tag -> (size, unpack function or None for raw)
_FIXED = {3: 1, 5: 4, 6: 4, 13: 1, 15: 1, 16: 2, 17: 1, 18: 2, 20: 8, 21: 8, 22: 1, 23: 4,
          24: 8, 25: 12, 26: 5, 27: 4}

CLOCK_STATUS_BITS = {0: "invalid-value", 1: "doubtful-value", 2: "different-clock-base",
                     3: "invalid-clock-status", 7: "daylight-saving-active"}
WEEKDAYS = {1: "Mon", 2: "Tue", 3: "Wed", 4: "Thu", 5: "Fri", 6: "Sat", 7: "Sun"}

field("dlms.data.type", FT_STR, "A-XDR data type (every element, in order)")
field("dlms.data.value", FT_STR, "A-XDR leaf value (typed: int, float, str, bytes, bool)")
field("dlms.data.count", FT_UINT, "Number of elements of an array/structure")
field("dlms.data.datetime", FT_STR, "Date-time value as ISO 8601 (also octet-string(12) clock values)")
field("dlms.data.deviation", FT_INT, "Date-time deviation in minutes (UTC - local)")
field("dlms.data.clock_status", FT_UINT, "Date-time clock status byte", base="hex")
field("dlms.data.bits", FT_UINT, "Bit-string length in bits")
field("dlms.data.type_description", FT_STR, "Compact-array type description")
field("dlms.data.int", FT_INT, "Integer leaf value")
field("dlms.data.float", FT_FLOAT, "Floating point leaf value")
field("dlms.data.bytes", FT_BYTES, "Octet-string leaf value")
field("dlms.data.string", FT_STR, "Visible/UTF-8 string leaf value")
field("dlms.data.bool", FT_BOOL, "Boolean leaf value")


# --------------------------------------------------------------------------- lengths

def read_length(buf: bytes, off: int, end: int) -> tuple[int, int]:
    """A-XDR/BER definite length: one byte < 0x80, or 0x8n followed by n bytes (n <= 4)."""
    if off >= end:
        raise Truncated(off, 1, 0, "length")
    b = buf[off]
    if b < 0x80:
        return b, off + 1
    n = b & 0x7F
    if n == 0 or n > 4:
        raise Truncated(off, n, end - off, f"unsupported length form 0x{b:02x}")
    if off + 1 + n > end:
        raise Truncated(off, 1 + n, end - off, "length")
    v = int.from_bytes(buf[off + 1:off + 1 + n], "big")
    return v, off + 1 + n


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return b"\x81" + bytes((n,))
    if n <= 0xFFFF:
        return b"\x82" + n.to_bytes(2, "big")
    return b"\x84" + n.to_bytes(4, "big")


# --------------------------------------------------------------------------- date/time

def _p2(v: int) -> str:
    return "**" if v == 0xFF else f"{v:02d}"


def date_iso(b: bytes, off: int = 0) -> str:
    """5 bytes year|month|day|weekday.  Unspecified parts (0xFF/0xFFFF) are shown as '*'."""
    year = _u16(b, off)[0]
    month, day = b[off + 2], b[off + 3]
    y = "****" if year == 0xFFFF else f"{year:04d}"
    m = {0xFD: "DSTend", 0xFE: "DSTbegin"}.get(month) or _p2(month)
    dd = {0xFD: "2ndlast", 0xFE: "last"}.get(day) or _p2(day)
    return f"{y}-{m}-{dd}"


def time_iso(b: bytes, off: int = 0) -> str:
    h, mi, s, hs = b[off], b[off + 1], b[off + 2], b[off + 3]
    t = f"{_p2(h)}:{_p2(mi)}:{_p2(s)}"
    if hs != 0xFF:
        t += f".{hs:02d}"
    return t


def datetime_iso(b: bytes, off: int = 0) -> str:
    """12-byte COSEM date-time as ISO 8601 with the offset = -deviation (UTC - local)."""
    s = date_iso(b, off) + "T" + time_iso(b, off + 5)
    dev = _i16(b, off + 9)[0]
    if dev != -0x8000:
        local = -dev
        sign = "+" if local >= 0 else "-"
        a = abs(local)
        s += f"{sign}{a // 60:02d}:{a % 60:02d}"
    return s


def clock_status_names(st: int) -> list[str]:
    return [n for bit, n in CLOCK_STATUS_BITS.items() if st >> bit & 1]


def looks_like_datetime(b: bytes, off: int = 0) -> bool:
    """Heuristic for octet-string(12) clock values: plausible month/day/hour/min/sec."""
    month, day, wd = b[off + 2], b[off + 3], b[off + 4]
    h, mi, s, hs = b[off + 5], b[off + 6], b[off + 7], b[off + 8]
    year = _u16(b, off)[0]
    if not (year == 0xFFFF or 1970 <= year <= 2200):
        return False
    if not (1 <= month <= 12 or month >= 0xFD):
        return False
    if not (1 <= day <= 31 or day >= 0xFD):
        return False
    if not (1 <= wd <= 7 or wd == 0xFF):
        return False
    if not ((h < 24 or h == 0xFF) and (mi < 60 or mi == 0xFF) and (s < 60 or s == 0xFF)
            and (hs < 100 or hs == 0xFF)):
        return False
    dev = _i16(b, off + 9)[0]
    return dev == -0x8000 or -840 <= dev <= 840


def datetime_text(b: bytes, off: int = 0) -> str:
    iso = datetime_iso(b, off)
    wd = b[off + 4]
    dev = _i16(b, off + 9)[0]
    st = b[off + 11]
    parts = [iso]
    if wd != 0xFF:
        parts.append(WEEKDAYS.get(wd, f"wd={wd}"))
    parts.append("deviation unspecified" if dev == -0x8000 else f"deviation {dev} min (UTC-local)")
    if st == 0xFF:
        parts.append("status unspecified")
    else:
        names = clock_status_names(st)
        parts.append(f"status 0x{st:02x}" + (f" ({', '.join(names)})" if names else ""))
    return ", ".join(parts)


# --------------------------------------------------------------------------- decoding

def _leaf(d, parent, tag: int, name: str, value: Any, off: int, length: int, text: str | None):
    """Record one leaf: type name, value and the typed value field."""
    if d is None:
        return
    add = d.add
    add(None, "dlms.data.type", name, off, 1)
    if parent is not None:
        node = d.add(parent, "dlms.data.value", value, off, length, text)
    else:
        add(None, "dlms.data.value", value, off, length)
        node = None
    if type(value) is int:
        add(None, "dlms.data.int", value, off, length)
    elif type(value) is bytes:
        add(None, "dlms.data.bytes", value, off, length)
    elif type(value) is float:
        add(None, "dlms.data.float", value, off, length)
    elif type(value) is bool:
        add(None, "dlms.data.bool", value, off, length)
    elif type(value) is str and tag in (10, 12):
        add(None, "dlms.data.string", value, off, length)
    return node


def _scalar(buf: bytes, off: int, tag: int) -> Any:
    """Value of a fixed-size scalar at off (size already checked)."""
    if tag == 17 or tag == 22 or tag == 13:
        return buf[off]
    if tag == 18:
        return _u16(buf, off)[0]
    if tag == 6:
        return _u32(buf, off)[0]
    if tag == 5:
        return _i32(buf, off)[0]
    if tag == 15:
        v = buf[off]
        return v - 256 if v > 127 else v
    if tag == 16:
        return _i16(buf, off)[0]
    if tag == 3:
        return buf[off] != 0
    if tag == 20:
        return _i64(buf, off)[0]
    if tag == 21:
        return _u64(buf, off)[0]
    if tag == 23:
        return _f32(buf, off)[0]
    if tag == 24:
        return _f64(buf, off)[0]
    if tag == 25:
        return datetime_iso(buf, off)
    if tag == 26:
        return date_iso(buf, off)
    if tag == 27:
        return time_iso(buf, off)
    raise ValueError(tag)


def dissect_data(buf: bytes, off: int, end: int, d, parent, depth: int = 0,
                 label: str | None = None) -> tuple[int, Any]:
    """Decode one A-XDR Data at off.  Records fields in `d` (may be None for a pure decode)
    and tree nodes under parent.  Returns (next offset, Python value)."""
    if depth > MAX_DEPTH:
        raise Truncated(off, 0, end - off, f"A-XDR nesting deeper than {MAX_DEPTH}")
    if off >= end:
        raise Truncated(off, 1, 0, "A-XDR data tag")
    tag = buf[off]
    p = off + 1
    size = _FIXED.get(tag)
    if size is not None:
        if p + size > end:
            raise Truncated(p, size, end - p, TYPE_NAMES[tag])
        value = _scalar(buf, p, tag)
        text = None
        if parent is not None:
            name = TYPE_NAMES[tag]
            if tag == 25:
                text = f"{name}: {datetime_text(buf, p)}"
            elif tag == 23 or tag == 24:
                text = f"{name}: {value!r}"
            else:
                text = f"{name}: {value}"
            if label:
                text = f"{label}: {text}"
        if d is not None:
            _leaf(d, parent, tag, TYPE_NAMES[tag], value, off, 1 + size, text)
            if tag == 25:
                d.add(None, "dlms.data.datetime", value, p, 12)
                d.add(None, "dlms.data.deviation", _i16(buf, p + 9)[0], p + 9, 2)
                d.add(None, "dlms.data.clock_status", buf[p + 11], p + 11, 1)
        return p + size, value
    if tag == 2 or tag == 1:
        count, p = read_length(buf, p, end)
        if count > end - p:   # every element needs at least one byte
            raise Truncated(p, count, end - p, f"{TYPE_NAMES[tag]} of {count} elements")
        node = None
        if d is not None:
            d.add(None, "dlms.data.type", TYPE_NAMES[tag], off, 1)
            if parent is not None:
                node = d.add(parent, "dlms.data.count", count, off, 0,
                             f"{label + ': ' if label else ''}{TYPE_NAMES[tag]} ({count} element{'s' if count != 1 else ''})")
            else:
                d.add(None, "dlms.data.count", count, off, 0)
        out = []
        for _ in range(count):
            p, v = dissect_data(buf, p, end, d, node, depth + 1)
            out.append(v)
        if node is not None:
            node.length = p - off
        return p, out
    if tag == 9 or tag == 10 or tag == 12:
        n, p = read_length(buf, p, end)
        if n > end - p:
            raise Truncated(p, n, end - p, TYPE_NAMES[tag])
        raw = buf[p:p + n]
        if tag == 9:
            value: Any = bytes(raw)
        elif tag == 10:
            value = raw.decode("latin-1")
        else:
            value = raw.decode("utf-8", "replace")
        text = None
        is_clock = tag == 9 and n == 12 and looks_like_datetime(buf, p)
        if parent is not None:
            name = TYPE_NAMES[tag]
            if tag == 9:
                text = f"{name} ({n}): {value.hex(' ') if n <= 64 else value[:64].hex(' ') + ' …'}"
                if is_clock:
                    text += f"  [date-time {datetime_text(buf, p)}]"
                elif n == 6:
                    text += f"  [{'.'.join(str(x) for x in value)}]"
            else:
                text = f"{name} ({n}): {value!r}"
            if label:
                text = f"{label}: {text}"
        if d is not None:
            _leaf(d, parent, tag, TYPE_NAMES[tag], value, off, p + n - off, text)
            if is_clock:
                d.add(None, "dlms.data.datetime", datetime_iso(buf, p), p, 12)
                d.add(None, "dlms.data.deviation", _i16(buf, p + 9)[0], p + 9, 2)
                d.add(None, "dlms.data.clock_status", buf[p + 11], p + 11, 1)
        return p + n, value
    if tag == 4:
        nbits, p = read_length(buf, p, end)
        nbytes = (nbits + 7) >> 3
        if nbytes > end - p:
            raise Truncated(p, nbytes, end - p, "bit-string")
        bits = "".join(format(b, "08b") for b in buf[p:p + nbytes])[:nbits]
        text = None
        if parent is not None:
            text = f"{label + ': ' if label else ''}bit-string ({nbits} bits): {bits}"
        if d is not None:
            _leaf(d, parent, tag, "bit-string", bits, off, p + nbytes - off, text)
            d.add(None, "dlms.data.bits", nbits, off + 1, p - off - 1)
        return p + nbytes, bits
    if tag == 0 or tag == 255:
        text = None
        if parent is not None:
            text = f"{label + ': ' if label else ''}{TYPE_NAMES[tag]}"
        if d is not None:
            _leaf(d, parent, tag, TYPE_NAMES[tag], None, off, 1, text)
        return p, None
    if tag == 19:
        return _compact_array(buf, off, end, d, parent, depth, label)
    raise Truncated(off, 0, end - off, f"unknown A-XDR data type {tag}")


# ---- compact-array

def _type_description(buf: bytes, off: int, end: int, depth: int) -> tuple[int, Any]:
    """TypeDescription: a tag, or array (1) count u16 + type, or structure (2) count + types.
    Returns (next offset, description) where description is a tag int, ("array", n, td)
    or ("structure", [td...])."""
    if depth > MAX_DEPTH:
        raise Truncated(off, 0, end - off, "type description nested too deeply")
    if off >= end:
        raise Truncated(off, 1, 0, "type description")
    tag = buf[off]
    p = off + 1
    if tag == 1:
        if p + 2 > end:
            raise Truncated(p, 2, end - p, "type description array count")
        n = _u16(buf, p)[0]
        p, inner = _type_description(buf, p + 2, end, depth + 1)
        return p, ("array", n, inner)
    if tag == 2:
        n, p = read_length(buf, p, end)
        if n > end - p:
            raise Truncated(p, n, end - p, "type description structure")
        items = []
        for _ in range(n):
            p, td = _type_description(buf, p, end, depth + 1)
            items.append(td)
        return p, ("structure", items)
    if tag not in TYPE_NAMES or tag == 19:
        raise Truncated(off, 0, end - off, f"unknown type {tag} in type description")
    return p, tag


def type_description_text(td) -> str:
    if isinstance(td, int):
        return TYPE_NAMES.get(td, str(td))
    if td[0] == "array":
        return f"array[{td[1]}] of {type_description_text(td[2])}"
    return "structure{" + ", ".join(type_description_text(t) for t in td[1]) + "}"


def _typed_value(buf: bytes, off: int, end: int, td, d, parent, depth: int) -> tuple[int, Any]:
    """A value without its tag, typed by the description (compact-array contents)."""
    if depth > MAX_DEPTH:
        raise Truncated(off, 0, end - off, "compact-array nested too deeply")
    if isinstance(td, int):
        size = _FIXED.get(td)
        if size is not None:
            if off + size > end:
                raise Truncated(off, size, end - off, TYPE_NAMES[td])
            v = _scalar(buf, off, td)
            if d is not None:
                text = f"{TYPE_NAMES[td]}: {v}" if parent is not None else None
                _leaf(d, parent, td, TYPE_NAMES[td], v, off, size, text)
            return off + size, v
        if td in (0, 255):
            if d is not None:
                _leaf(d, parent, td, TYPE_NAMES[td], None, off, 0, TYPE_NAMES[td] if parent is not None else None)
            return off, None
        # variable-length types keep their length prefix: reuse the tagged decoder on a
        # virtual tag by decoding length+content here
        if td in (9, 10, 12):
            n, p = read_length(buf, off, end)
            if n > end - p:
                raise Truncated(p, n, end - p, TYPE_NAMES[td])
            raw = bytes(buf[p:p + n])
            v: Any = raw if td == 9 else raw.decode("latin-1" if td == 10 else "utf-8", "replace")
            if d is not None:
                text = (f"{TYPE_NAMES[td]} ({n}): {raw.hex(' ') if td == 9 else repr(v)}"
                        if parent is not None else None)
                _leaf(d, parent, td, TYPE_NAMES[td], v, off, p + n - off, text)
            return p + n, v
        if td == 4:
            nbits, p = read_length(buf, off, end)
            nb = (nbits + 7) >> 3
            if nb > end - p:
                raise Truncated(p, nb, end - p, "bit-string")
            bits = "".join(format(b, "08b") for b in buf[p:p + nb])[:nbits]
            if d is not None:
                _leaf(d, parent, 4, "bit-string", bits, off, p + nb - off,
                      f"bit-string ({nbits} bits): {bits}" if parent is not None else None)
            return p + nb, bits
        raise Truncated(off, 0, end - off, f"type {td} not allowed in compact-array")
    if td[0] == "array":
        n = td[1]
        if _zero_size(td[2]):
            # elements without content (null-data/dont-care): nothing to read; not expanded
            # (a description could otherwise ask for 65535^k empty elements)
            return off, []
        if n > end - off:
            raise Truncated(off, n, end - off, "compact-array array")
        node = d.label(parent, f"array ({n} elements)", off, 0) if (d is not None and parent is not None) else None
        out = []
        p = off
        for _ in range(n):
            p, v = _typed_value(buf, p, end, td[2], d, node, depth + 1)
            out.append(v)
        if node is not None:
            node.length = p - off
        return p, out
    node = d.label(parent, f"structure ({len(td[1])} elements)", off, 0) if (d is not None and parent is not None) else None
    out = []
    p = off
    for t in td[1]:
        p, v = _typed_value(buf, p, end, t, d, node, depth + 1)
        out.append(v)
    if node is not None:
        node.length = p - off
    return p, out


def _zero_size(td) -> bool:
    if isinstance(td, int):
        return td in (0, 255)
    if td[0] == "array":
        return td[1] == 0 or _zero_size(td[2])
    return all(_zero_size(t) for t in td[1])


def _compact_array(buf, off, end, d, parent, depth, label):
    p, td = _type_description(buf, off + 1, end, depth + 1)
    n, cp = read_length(buf, p, end)
    if n > end - cp:
        raise Truncated(cp, n, end - cp, "compact-array contents")
    cend = cp + n
    tdtext = type_description_text(td)
    node = None
    if d is not None:
        d.add(None, "dlms.data.type", "compact-array", off, 1)
        if parent is not None:
            node = d.add(parent, "dlms.data.type_description", tdtext, off, cend - off,
                         f"{label + ': ' if label else ''}compact-array of {tdtext} ({n} bytes)")
        else:
            d.add(None, "dlms.data.type_description", tdtext, off, cend - off)
    out = []
    q = cp
    if _zero_size(td):
        return cend, out
    while q < cend:
        start = q
        q, v = _typed_value(buf, q, cend, td, d, node, depth + 1)
        out.append(v)
        if q == start:
            break
    return cend, out


def decode(data: bytes, off: int = 0, end: int | None = None) -> Any:
    """Pure decode of one Data (no fields): the Python value."""
    end = len(data) if end is None else end
    return dissect_data(data, off, end, None, None)[1]


# --------------------------------------------------------------------------- encoding

_PACK = {5: ">i", 6: ">I", 15: ">b", 16: ">h", 17: ">B", 18: ">H", 20: ">q", 21: ">Q",
         22: ">B", 13: ">B", 23: ">f", 24: ">d"}


def encode_datetime(year=0xFFFF, month=0xFF, day=0xFF, weekday=0xFF, hour=0xFF, minute=0xFF,
                    second=0xFF, hundredths=0xFF, deviation=-0x8000, status=0xFF) -> bytes:
    """12-byte COSEM date-time (deviation in minutes, UTC - local)."""
    return (struct.pack(">HBBBBBBBhB", year, month, day, weekday, hour, minute, second,
                        hundredths, deviation, status))


def encode(value: Any) -> bytes:
    """Encode a value spec as A-XDR Data.

    Specs: ``(type_name_or_tag, value)`` tuples, e.g. ``("double-long-unsigned", 5)``,
    ``("structure", [spec, ...])``, ``("array", [spec, ...])``, ``("octet-string", b"..")``,
    ``("bit-string", "0101")``, ``("date-time", 12 bytes)``,
    ``("compact-array", (type_description_bytes, contents_bytes))``.  Plain Python values
    are accepted too: None -> null-data, bool -> boolean, bytes -> octet-string,
    str -> visible-string, list -> structure, int -> double-long (signed) or
    double-long-unsigned / long64(-unsigned) by range, float -> float64."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (str, int)) \
            and not isinstance(value[0], bool):
        t, v = value
        tag = TYPE_TAGS[t] if isinstance(t, str) else t
        return _encode_tagged(tag, v)
    if value is None:
        return b"\x00"
    if isinstance(value, bool):
        return b"\x03" + (b"\x01" if value else b"\x00")
    if isinstance(value, (bytes, bytearray)):
        return _encode_tagged(9, bytes(value))
    if isinstance(value, str):
        return _encode_tagged(10, value)
    if isinstance(value, list):
        return _encode_tagged(2, value)
    if isinstance(value, int):
        if 0 <= value <= 0xFFFFFFFF:
            return _encode_tagged(6, value)
        if -0x80000000 <= value < 0:
            return _encode_tagged(5, value)
        return _encode_tagged(21 if value > 0 else 20, value)
    if isinstance(value, float):
        return _encode_tagged(24, value)
    raise TypeError(f"cannot encode {type(value).__name__} as A-XDR")


def _encode_tagged(tag: int, v: Any) -> bytes:
    t = bytes((tag,))
    if tag in (0, 255):
        return t
    if tag in (1, 2):
        items = list(v)
        return t + encode_length(len(items)) + b"".join(encode(x) for x in items)
    if tag == 3:
        return t + (b"\x01" if v else b"\x00")
    if tag in _PACK:
        return t + struct.pack(_PACK[tag], v)
    if tag in (9, 10, 12):
        raw = v if isinstance(v, (bytes, bytearray)) else str(v).encode("latin-1" if tag == 10 else "utf-8")
        return t + encode_length(len(raw)) + bytes(raw)
    if tag == 4:
        bits = str(v)
        n = len(bits)
        padded = bits + "0" * (-n % 8)
        raw = int(padded, 2).to_bytes(len(padded) // 8, "big") if padded else b""
        return t + encode_length(n) + raw
    if tag in (25, 26, 27):
        raw = bytes(v)
        if len(raw) != {25: 12, 26: 5, 27: 4}[tag]:
            raise ValueError(f"{TYPE_NAMES[tag]} needs {_FIXED[tag]} bytes")
        return t + raw
    if tag == 19:
        td, contents = v
        return t + bytes(td) + encode_length(len(contents)) + bytes(contents)
    raise ValueError(f"unknown A-XDR type {tag}")


__all__ = ["TYPE_NAMES", "TYPE_TAGS", "MAX_DEPTH", "read_length", "encode_length", "dissect_data",
           "decode", "encode", "encode_datetime", "datetime_iso", "date_iso", "time_iso",
           "datetime_text", "looks_like_datetime", "type_description_text"]
