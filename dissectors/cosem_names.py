"""COSEM naming: interface class, attribute and method names, OBIS code names, and the
short-name (SN) to class/attribute mapping of an association.

The tables are hand-authored data files in `dissectors/data/` (`classes.toml`,
`obis.csv`).  More OBIS names can be loaded from a user CSV (columns `obis,name`) with
`load_obis_csv(path)` or the environment variable `LONSCOPE_OBIS_CSV` (a path, or several
separated by the OS path separator).

SN referencing needs association state (the object list read from the meter): the
stateful stages build an `SNMap` per association and use `SNMap.lookup(short_name)`.
"""
from __future__ import annotations

import csv
import os
import tomllib
from pathlib import Path

_DATA = Path(__file__).resolve().parent / "data"

CLASSES: dict[int, dict] = {}
OBIS_NAMES: dict[str, str] = {}


def _load_classes() -> None:
    with open(_DATA / "classes.toml", "rb") as f:
        raw = tomllib.load(f)
    for k, v in raw.items():
        attrs = {1: "logical_name"}
        attrs.update({int(a): n for a, n in v.get("attributes", {}).items()})
        meths = {int(m): n for m, n in v.get("methods", {}).items()}
        CLASSES[int(k)] = {"name": v["name"], "attributes": attrs, "methods": meths}


def load_obis_csv(path) -> int:
    """Add OBIS names from a CSV file with columns obis,name (header optional, '#' comments).
    OBIS may be written a.b.c.d.e.f, a-b:c.d.e*f or as 12 hex digits.  Returns the number
    of names loaded; later files override earlier names."""
    n = 0
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(line for line in f if not line.lstrip().startswith("#")):
            if len(row) < 2:
                continue
            code = normalize_obis(row[0].strip())
            if code is None:
                continue
            OBIS_NAMES[code] = row[1].strip()
            n += 1
    return n


def normalize_obis(text: str) -> str | None:
    """'1-0:1.8.0*255', '1.0.1.8.0.255' or '0100010800FF' -> '1.0.1.8.0.255' (None if invalid)."""
    t = text.strip()
    if len(t) == 12 and all(c in "0123456789abcdefABCDEF" for c in t):
        return ".".join(str(b) for b in bytes.fromhex(t))
    for sep in "-:*":
        t = t.replace(sep, ".")
    parts = t.split(".")
    if len(parts) == 5:          # F omitted -> 255
        parts.append("255")
    if len(parts) != 6:
        return None
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        return None
    if any(v < 0 or v > 255 for v in vals):
        return None
    return ".".join(str(v) for v in vals)


_load_classes()
load_obis_csv(_DATA / "obis.csv")
for _p in filter(None, os.environ.get("LONSCOPE_OBIS_CSV", "").split(os.pathsep)):
    try:
        load_obis_csv(_p)
    except OSError:
        pass   # a missing user file must not break import; `lonscope` reports env problems


def class_name(class_id: int) -> str | None:
    c = CLASSES.get(class_id)
    return c["name"] if c else None


def attribute_name(class_id: int, attr: int) -> str | None:
    c = CLASSES.get(class_id)
    if c is None:
        return "logical_name" if attr == 1 else None
    return c["attributes"].get(attr)


def method_name(class_id: int, method: int) -> str | None:
    c = CLASSES.get(class_id)
    return c["methods"].get(method) if c else None


def obis_str(b: bytes, off: int = 0) -> str:
    return f"{b[off]}.{b[off + 1]}.{b[off + 2]}.{b[off + 3]}.{b[off + 4]}.{b[off + 5]}"


def obis_name(obis: str) -> str | None:
    n = OBIS_NAMES.get(obis)
    if n is not None:
        return n
    # value group B (channel) and F (billing period) are often varied: fall back to the
    # name of the code with B=0 / F=255, marked as such
    parts = obis.split(".")
    if len(parts) == 6:
        if parts[5] != "255":
            base = OBIS_NAMES.get(".".join(parts[:5] + ["255"]))
            if base:
                return f"{base} (F={parts[5]})"
        if parts[1] != "0":
            base = OBIS_NAMES.get(".".join([parts[0], "0"] + parts[2:]))
            if base:
                return f"{base} (channel {parts[1]})"
    return None


# --------------------------------------------------------------------------- SN mapping

# First method offset (bytes from base_name) per class for SN referencing.  Attributes are at
# base + (attr-1)*8; method m at base + first + (m-1)*8.  Values follow the Blue Book's SN
# tables (e.g. Association SN: methods start at 0x20, so method 8 = base + 0x58).
SN_METHOD_OFFSET = {3: 0x28, 4: 0x38, 5: 0x50, 6: 0x30, 7: 0x58, 8: 0x60, 9: 0x20, 10: 0x20,
                    11: 0x10, 12: 0x20, 17: 0x20, 18: 0x40, 20: 0x50, 70: 0x20}


class SNMap:
    """Short-name lookup for one association: filled from the SN object list
    (class 12 attribute 2: array of structure{base_name, class_id, version, logical_name})."""

    def __init__(self):
        self.objects: dict[int, tuple[int, str]] = {}   # base_name -> (class_id, obis)

    def add(self, base_name: int, class_id: int, obis: str) -> None:
        self.objects[base_name & 0xFFFF] = (class_id, obis)

    def add_object_list(self, value) -> int:
        """value: decoded A-XDR object list (list of [base_name, class_id, version, ln])."""
        n = 0
        if not isinstance(value, list):
            return 0
        for item in value:
            if isinstance(item, list) and len(item) >= 4 and isinstance(item[0], int) \
                    and isinstance(item[1], int) and isinstance(item[3], bytes) and len(item[3]) == 6:
                self.add(item[0], item[1], obis_str(item[3]))
                n += 1
        return n

    def lookup(self, short_name: int) -> dict | None:
        """-> {"class_id", "obis", "attribute_id"} or {"class_id", "obis", "method_id"}."""
        sn = short_name & 0xFFFF
        best = None
        for base, (cid, obis) in self.objects.items():
            if base <= sn and (best is None or base > best[0]):
                best = (base, cid, obis)
        if best is None:
            return None
        base, cid, obis = best
        delta = sn - base
        if delta % 8:
            return None
        first = SN_METHOD_OFFSET.get(cid)
        if first is not None and delta >= first:
            return {"class_id": cid, "obis": obis, "method_id": (delta - first) // 8 + 1}
        attr = delta // 8 + 1
        if attr > 32:
            return None
        return {"class_id": cid, "obis": obis, "attribute_id": attr}


__all__ = ["CLASSES", "OBIS_NAMES", "load_obis_csv", "normalize_obis", "class_name",
           "attribute_name", "method_name", "obis_str", "obis_name", "SNMap", "SN_METHOD_OFFSET"]
