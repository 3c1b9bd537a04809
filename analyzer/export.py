"""Exports: pandas DataFrames and streaming CSV / Parquet / JSON-lines files.

Packets are converted in chunks into Arrow tables (one row per packet: the summary
columns, then one column per flat field that occurs).  A field's column type comes from
the field registry (integers int64, booleans, floats, strings; byte strings lowercase hex;
OBIS codes "a.b.c.d.e.f"); a field that occurs several times in one packet becomes a list
column.  Because later chunks may add columns or need lists, chunks are spooled to
temporary Arrow IPC files and written at the end with one unified schema, so memory does
not grow with the capture size and every partition has the same dtypes (no categoricals).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any, Iterable, Iterator

import pyarrow as pa

from dissectors.core import (FT_BOOL, FT_BYTES, FT_FLOAT, FT_INT, FT_NONE, FT_OBIS, FT_STR, FT_TIME,
                             FT_UINT, REGISTRY)

from .output import VIRTUAL_NAMES, field_text, json_safe, with_virtual

CHUNK_ROWS = 5000
WHATS = ("packets", "sessions", "objects", "findings")

SUMMARY = [("number", pa.int64()), ("time", pa.float64()), ("file", pa.string()),
           ("source", pa.string()), ("destination", pa.string()), ("protocols", pa.string()),
           ("protocol", pa.string()), ("length", pa.int64()), ("info", pa.string()),
           ("status", pa.string())]
SUMMARY_NAMES = frozenset(n for n, _ in SUMMARY)
# columns that hold frame numbers (shifted when per-file partitions are concatenated):
# the tables' own columns, then the packet fields that refer to another frame
FRAME_COLUMNS = ("number", "frame", "first_frame", "last_frame", "aarq_frame", "aare_frame", "request_frame",
                 "ip.reassembled_in", "tcp.reassembled_in", "dlms.response_in", "dlms.response_to",
                 "dlms.request_in", "dlms.fragment", "dlms.reassembled_in", "lon.response_in",
                 "lon.response_to", "lon.retransmission")
# JSON-text columns holding a list of frame numbers (findings' evidence)
FRAME_LIST_TEXT = ("frames",)
# findings: "id" ("F1", "F2" ...) numbers the findings of an export; "message" names
# associations and frames in the audit's words ("association 3", "associations 2, 5",
# "frame 12", "frames 4 and 9"); text in single quotes (an LLS password) is data
FINDING_ID = "id"
FINDING_TEXT = ("message",)
_NAMED_NUMBERS = re.compile(r"\b(frames?|associations?) (\d+(?:(?:, | and )\d+)*)")
_DIGITS = re.compile(r"\d+")
_FINDING_ID = re.compile(r"F(\d+)")
# columns that hold association numbers (made unique across partitions)
ASSOC_COLUMNS = ("assoc_id", "dlms.assoc_id")

_ARROW = {FT_UINT: pa.int64(), FT_INT: pa.int64(), FT_BOOL: pa.bool_(), FT_FLOAT: pa.float64(),
          FT_TIME: pa.float64(), FT_STR: pa.string(), FT_OBIS: pa.string(), FT_BYTES: pa.string()}


class ExportError(Exception):
    """A user-facing export problem (one line)."""


# --------------------------------------------------------------------------- conversion

def _int_ok(v) -> bool:
    return (type(v) is int and -(1 << 63) <= v < (1 << 63)) or type(v) is bool


def _to_array(values: list, t: pa.DataType) -> tuple[pa.Array, pa.DataType]:
    """Scalars (None = missing) as an Arrow array of type t, or as strings when a value
    does not fit the registered type."""
    if t == pa.int64():
        if all(v is None or _int_ok(v) for v in values):
            return pa.array(values, type=t), t
    elif t == pa.bool_():
        if all(v is None or type(v) is bool for v in values):
            return pa.array(values, type=t), t
    elif t == pa.float64():
        if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            return pa.array([None if v is None else float(v) for v in values], type=t), t
    s = pa.string()
    return pa.array([None if v is None else (v if type(v) is str else field_text(v)) for v in values],
                    type=s), s


def field_arrow_type(name: str, sample: Any = None) -> pa.DataType | None:
    """Arrow type of a field's values (None: not exported, e.g. labels/protocol markers)."""
    f = REGISTRY.get(name)
    if f is not None:
        if f.type == FT_NONE:
            return None
        return _ARROW.get(f.type, pa.string())
    if sample is True:
        return None     # an unregistered protocol marker
    if type(sample) is int:
        return pa.int64()
    if type(sample) is bool:
        return pa.bool_()
    if type(sample) is float:
        return pa.float64()
    return pa.string()


class PacketTableBuilder:
    """Collects packets and turns every `chunk_rows` of them into an Arrow table."""

    def __init__(self, chunk_rows: int = CHUNK_ROWS, fields: Iterable[str] | None = None):
        self.chunk_rows = chunk_rows
        self.only = list(fields) if fields is not None else None
        self.mistyped: set[str] = set()    # fields whose values did not fit their type
        self._reset()

    def _reset(self) -> None:
        self.summary: list[list] = [[] for _ in SUMMARY]
        # field -> [row indexes, values, several-per-row seen]; a field's single value is
        # kept as the scalar (no per-row list objects: fewer tracked objects, cheaper GC)
        self.cols: dict[str, list] = {}
        self.rows = 0
        # later packets add fields to earlier ones (a request learns its response frame, a
        # block its reassembly frame): kept per row of this chunk and merged at flush
        self.row_of: dict[int, int] = {}
        self.late: list[tuple[int, str, Any]] = []

    def __len__(self) -> int:
        return self.rows

    def add(self, pkt) -> pa.Table | None:
        d = pkt.d
        s = self.summary
        i = self.rows
        s[0].append(pkt.number)
        s[1].append(pkt.ts_ns / 1e9)
        s[2].append(os.path.basename(pkt.file) if pkt.file else "")
        s[3].append(d.src if d else "")
        s[4].append(d.dst if d else "")
        s[5].append(":".join(d.protocols) if d else "")
        s[6].append(pkt.protocol)
        s[7].append(pkt.orig_len)
        s[8].append(d.info if d else "")
        s[9].append((d.status or None) if d else None)
        self.rows = i + 1
        self.row_of[pkt.number] = i
        if d:
            cols = self.cols
            get = cols.get
            only = self.only
            fields = d.fields
            for back, name in _BACK_REFERENCES:
                refs = fields.get(back)
                if refs:
                    for f in refs:
                        r = self.row_of.get(f) if f != pkt.number else None
                        if r is not None:
                            self.late.append((r, name, pkt.number))
                            if name not in cols and (only is None or name in self._only_set):
                                cols[name] = [[], [], 0]     # column order: first appearance
            for k, v in fields.items():
                c = get(k)
                if c is None:
                    if only is not None and k not in self._only_set:
                        continue
                    c = cols[k] = [[], [], 0]
                c[0].append(i)
                if len(v) == 1:
                    c[1].append(v[0])
                elif v:
                    c[1].append(list(v))
                    c[2] = 2                    # several values in a row: a list column
                else:
                    c[1].append([])
                    c[2] = c[2] or 1            # an empty occurrence (None if scalar column)
        if self.rows >= self.chunk_rows:
            return self.flush()
        return None

    def _merge_late(self) -> None:
        for r, name, value in self.late:
            if self.only is not None and name not in self._only_set:
                continue
            c = self.cols.get(name)
            if c is None:
                c = self.cols[name] = [[], [], 0]
            idx, vals = c[0], c[1]
            try:
                j = idx.index(r) if idx and idx[-1] >= r else -1
            except ValueError:
                j = -1
            if j < 0:
                idx.append(r)
                vals.append(value)
            else:
                old = vals[j]
                vals[j] = (old if type(old) is list else [old]) + [value]
                c[2] = 2
        self.late = []

    @property
    def _only_set(self) -> frozenset:
        o = self.__dict__.get("_only_fs")
        if o is None:
            o = self.__dict__["_only_fs"] = frozenset(self.only or ())
        return o

    def flush(self) -> pa.Table | None:
        if not self.rows:
            return None
        n = self.rows
        if self.late:
            self._merge_late()
        cols = {}
        for (name, t), vals in zip(SUMMARY, self.summary):
            cols[name] = pa.array(vals, type=t)
        # sparse columns: (row indexes, values) per field, in order of first appearance;
        # the cost follows the field occurrences, not rows x columns
        sparse = self.cols
        names = self.only if self.only is not None else list(sparse)
        for name in names:
            if name in SUMMARY_NAMES:
                continue
            c = sparse.get(name)
            if c is None:
                continue
            idx, vals, kind = c
            v0 = vals[0]
            t = field_arrow_type(name, (v0[0] if v0 else None) if kind and type(v0) is list else v0)
            if t is None:
                continue
            if kind == 2:
                vals = [v if type(v) is list else [v] for v in vals]
                arr = _list_values(vals, t, name in self.mistyped)
            else:
                if kind == 1:
                    vals = [None if type(v) is list else v for v in vals]
                arr = _scalar_values(vals, t, name in self.mistyped)
            if arr.type != t and not (pa.types.is_list(arr.type) and arr.type.value_type == t):
                self.mistyped.add(name)
            cols[name] = _spread(arr, idx, n)
        self._reset()
        return pa.table(cols)


# (field a packet carries, field it gives the earlier packet it refers to)
_BACK_REFERENCES = (("dlms.response_to", "dlms.response_in"), ("dlms.fragment", "dlms.reassembled_in"))

_CONVERT_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)


_NONE = type(None)
_OK_TYPES = {"int64": {int, _NONE}, "bool": {bool, _NONE}, "double": {float, int, _NONE}}


def _fits(values, t: pa.DataType) -> bool:
    ok = _OK_TYPES.get(str(t))
    return ok is not None and set(map(type, values)) <= ok


def _as_text(v):
    return v if type(v) is str else (None if v is None else field_text(v))


def _scalar_values(values: list, t: pa.DataType, mistyped: bool = False) -> pa.Array:
    """Values as type t, or as text (bytes as hex) when the type is text or a value does
    not fit."""
    if not mistyped and t != pa.string() and _fits(values, t):
        try:
            return pa.array(values, type=t)
        except _CONVERT_ERRORS:      # e.g. an integer beyond int64
            pass
    return pa.array([_as_text(v) for v in values], type=pa.string())


def _list_values(values: list, t: pa.DataType, mistyped: bool = False) -> pa.Array:
    if not mistyped and t != pa.string() and _fits([x for v in values if v for x in v], t):
        try:
            return pa.array(values, type=pa.list_(t))
        except _CONVERT_ERRORS:
            pass
    return pa.array([None if v is None else [_as_text(x) for x in v] for v in values],
                    type=pa.list_(pa.string()))


def _spread(arr: pa.Array, idx: list, n: int) -> pa.Array:
    """`arr` (one value per present row) spread over n rows, null elsewhere."""
    if len(idx) == n:
        return arr
    import numpy as np
    pos = np.full(n, -1, dtype=np.int64)
    pos[np.asarray(idx, dtype=np.int64)] = np.arange(len(idx), dtype=np.int64)
    return arr.take(pa.array(pos, mask=pos < 0))


# --------------------------------------------------------------------------- schema unification

def _merge_types(types: set) -> pa.DataType:
    is_list = any(pa.types.is_list(t) for t in types)
    base = {t.value_type if pa.types.is_list(t) else t for t in types}
    base.discard(pa.null())
    if not base:
        b = pa.string()
    elif len(base) == 1:
        b = base.pop()
    elif base <= {pa.int64(), pa.float64()}:
        b = pa.float64()
    else:
        b = pa.string()
    return pa.list_(b) if is_list else b


def _note_types(types: dict[str, set], schema: pa.Schema) -> None:
    """Add `schema`'s columns and their types to `types` (column -> set of types, in
    first-seen column order)."""
    for f in schema:
        types.setdefault(f.name, set()).add(f.type)


def _unified(types: dict[str, set]) -> pa.Schema:
    return pa.schema([(n, _merge_types(ts)) for n, ts in types.items()])


def unify_schema(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """One schema for tables of differing schemas: every column seen, in first-seen order,
    with one type (see `_merge_types`)."""
    types: dict[str, set] = {}
    for sc in schemas:
        _note_types(types, sc)
    return _unified(types)


def _convert_value(v, t: pa.DataType):
    if v is None:
        return None
    if pa.types.is_list(t):
        if not isinstance(v, list):
            v = [v]
        return [_convert_value(x, t.value_type) for x in v]
    if isinstance(v, list):          # a list where a scalar is expected cannot happen after merge
        return ",".join(field_text(x) for x in v)
    if t == pa.string():
        return v if type(v) is str else field_text(v)
    if t == pa.float64():
        return float(v)
    return v


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns and types (missing columns are null)."""
    n = table.num_rows
    cols = []
    have = {name: i for i, name in enumerate(table.column_names)}
    for f in schema:
        i = have.get(f.name)
        if i is None:
            cols.append(pa.nulls(n, type=f.type))
            continue
        col = table.column(i)
        if col.type == f.type:
            cols.append(col)
            continue
        try:
            if not pa.types.is_list(f.type) and not pa.types.is_list(col.type):
                cols.append(col.cast(f.type))
                continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        cols.append(pa.array([_convert_value(v, f.type) for v in col.to_pylist()], type=f.type))
    return pa.Table.from_arrays(cols, schema=schema)


class Spool:
    """Chunks of differing schemas, kept on disk (Arrow IPC) until the schema is known."""

    # LZ4 frames: a chunk of a few thousand packets with a few hundred mostly-null columns
    # is ~10x smaller on disk and cheaper to write than uncompressed IPC
    OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")

    def __init__(self, directory: str | None = None):
        self.dir = tempfile.TemporaryDirectory(prefix="lonscope-export-", dir=directory)
        self.files: list[str] = []
        self.types: dict[str, set] = {}
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        path = os.path.join(self.dir.name, f"{len(self.files):06d}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema, options=self.OPTIONS) as w:
            w.write_table(table)
        self.files.append(path)
        # the union of the columns and their types so far, not every chunk's schema (a
        # 10M-packet export has 2000 chunks of a few hundred columns)
        _note_types(self.types, table.schema)
        self.rows += table.num_rows

    def schema(self) -> pa.Schema:
        return _unified(self.types)

    def tables(self, schema: pa.Schema | None = None) -> Iterator[pa.Table]:
        schema = schema or self.schema()
        for path in self.files:
            with pa.OSFile(path, "rb") as src:
                t = pa.ipc.open_file(src).read_all()
            yield conform(t, schema)
            del t
            os.unlink(path)

    def close(self) -> None:
        self.dir.cleanup()


# --------------------------------------------------------------------------- writers

def csv_ready(table: pa.Table) -> pa.Table:
    """List columns become "a,b" strings (CSV has no lists)."""
    import pyarrow.compute as pc
    cols, names = [], []
    for name, col in zip(table.column_names, table.columns):
        if pa.types.is_list(col.type):
            sl = col.cast(pa.list_(pa.string()))
            col = pc.binary_join(sl, ",")
        cols.append(col)
        names.append(name)
    return pa.Table.from_arrays(cols, names=names)


def is_dataset(path) -> bool:
    """The one rule for an export's output: a directory of Parquet parts (a dataset: one
    part per capture file with the Dask engine, one per PART_ROWS rows with the local one)
    when `path` ends with a path separator or names an existing directory, else a single
    file whose format comes from its extension."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or os.path.isdir(text)


def output_format(path: str) -> str:
    low = str(path).lower()
    for ext, fmt in ((".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"),
                     (".jsonl", "jsonl"), (".ndjson", "jsonl")):
        if low.endswith(ext):
            return fmt
    raise ExportError(f"{path}: output must end in .csv, .parquet or .jsonl")


class TableWriter:
    """Writes Arrow tables (all with one schema) to CSV, Parquet or JSON lines.

    Parquet: the writer keeps every row group's column metadata until the footer is written
    (measured with pyarrow: about 1 KB per column per row group, twice that while the footer
    is written; min/max statistics on every column would add ~1 KB more), and a row group's
    rows are gathered in memory first (~1.6 KB per packet row).  So statistics are written
    only for the number/time columns (what readers filter row groups on), and with
    `expected_rows` known the row-group size is the one that minimises the sum of the two,
    sqrt(rows x columns), at least ROW_GROUP_ROWS: 20,000 rows up to ~1.5M packets, ~51,000
    at 10M (196 row groups of 262 columns instead of 500: ~180 MB instead of ~280 MB at the
    end of a 10M-packet export).  A Parquet dataset (`write_tables` to a directory) closes a
    part every PART_ROWS rows: its memory does not depend on the capture size at all."""

    ROW_GROUP_ROWS = 20_000
    MAX_GROUP_ROWS = 250_000

    @classmethod
    def group_rows_for(cls, rows: int | None, columns: int) -> int:
        if not rows:
            return cls.ROW_GROUP_ROWS
        return max(cls.ROW_GROUP_ROWS, min(cls.MAX_GROUP_ROWS, int((rows * max(columns, 1)) ** 0.5)))
    STATISTICS = ("number", "time", "length", "frame", "request_frame", "assoc_id", "first_frame", "last_frame",
                  "first_time", "last_time")

    def __init__(self, path: str, fmt: str, schema: pa.Schema, expected_rows: int | None = None):
        self.path, self.fmt, self.schema = path, fmt, schema
        self.group_rows = self.group_rows_for(expected_rows, len(schema))
        self.rows = 0
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        if fmt == "parquet":
            import pyarrow.parquet as pq
            self.w = pq.ParquetWriter(path, schema,
                                      write_statistics=[n for n in self.STATISTICS if n in schema.names] or False)
        elif fmt == "csv":
            import pyarrow.csv as pcsv
            self.w = pcsv.CSVWriter(path, csv_ready(schema.empty_table()).schema)
        else:
            self.w = open(path, "w", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self.fmt == "parquet":
            self.pending.append(table)
            self.pending_rows += table.num_rows
            if self.pending_rows >= self.group_rows:
                self._flush()
        elif self.fmt == "csv":
            self.w.write_table(csv_ready(table))
        else:
            lines = []
            for row in table.to_pylist():
                lines.append(json.dumps({k: v for k, v in row.items() if v is not None},
                                        ensure_ascii=False, separators=(",", ":"), default=str))
            if lines:
                self.w.write("\n".join(lines) + "\n")

    def _flush(self) -> None:
        if self.pending:
            t = self.pending[0] if len(self.pending) == 1 else pa.concat_tables(self.pending)
            self.pending, self.pending_rows = [], 0
            self.w.write_table(t, row_group_size=max(t.num_rows, 1))

    def close(self) -> None:
        if self.fmt == "parquet":
            self._flush()
        self.w.close()


def empty_table(what: str = "packets") -> pa.Table:
    schema = {"packets": SUMMARY, "sessions": SESSION_SCHEMA, "objects": OBJECT_SCHEMA,
              "findings": FINDING_SCHEMA}.get(what, SUMMARY)
    return pa.table({n: pa.array([], type=t) for n, t in schema})


PART_ROWS = 1_000_000       # rows per part of a Parquet dataset written by the local engine


def dataset_part(directory: str, k: int) -> str:
    """The path of part `k` of a Parquet dataset (both engines name parts alike)."""
    return os.path.join(directory, f"part-{k:05d}.parquet")


def clear_dataset(directory: str) -> None:
    """Make the dataset directory, without the parts of an earlier export."""
    import glob
    os.makedirs(directory, exist_ok=True)
    for old in glob.glob(os.path.join(directory, "part-*.parquet")):
        os.unlink(old)


class DatasetWriter:
    """A Parquet dataset: DIR/part-00000.parquet, part-00001.parquet, … of PART_ROWS rows
    each (the last one shorter), every part with the same schema; parts of an earlier
    export in DIR are removed first.  Each part is closed before the next opens, so no
    metadata accumulates over the capture."""

    def __init__(self, directory: str, schema: pa.Schema, part_rows: int | None = None):
        self.dir, self.schema = directory, schema
        self.part_rows = part_rows or PART_ROWS
        clear_dataset(directory)
        self.parts = 0
        self.rows = 0
        self.w: TableWriter | None = None

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.w is None:
                self.w = TableWriter(dataset_part(self.dir, self.parts), "parquet", self.schema,
                                     expected_rows=self.part_rows)
                self.parts += 1
            room = self.part_rows - self.w.rows
            head, table = table.slice(0, room), table.slice(room)
            self.w.write(head)
            self.rows += head.num_rows
            if self.w.rows >= self.part_rows:
                self.w.close()
                self.w = None

    def close(self) -> None:
        if self.w is None and not self.parts:      # nothing exported: one empty part keeps the columns
            self.w = TableWriter(dataset_part(self.dir, 0), "parquet", self.schema)
        if self.w is not None:
            self.w.close()
            self.w = None


def _writer(path: str, fmt: str, schema: pa.Schema, rows: int | None = None, dataset: bool = False):
    return DatasetWriter(path, schema) if dataset else TableWriter(path, fmt, schema, expected_rows=rows)


def write_tables(tables: Iterable[pa.Table], path: str, fmt: str | None = None,
                 tmpdir: str | None = None, what: str = "packets") -> int:
    """Write chunks that may differ in schema to one file, or to a Parquet dataset when
    `path` is a directory (`is_dataset`); returns the row count.  JSON lines are written as
    they come; CSV/Parquet wait for the unified schema (spooled).  Nothing to write gives an
    empty file (or part) with the columns of `what`."""
    dataset = is_dataset(path)
    fmt = "parquet" if dataset else fmt or output_format(path)
    if fmt == "jsonl":
        w = None
        n = 0
        for t in tables:
            if w is None:
                w = TableWriter(path, fmt, t.schema)
            w.write(t)
            n += t.num_rows
        if w is None:
            open(path, "w").close()
        else:
            w.close()
        return n
    first: pa.Table | None = None
    spool: Spool | None = None
    for t in tables:
        if first is None and spool is None:
            first = t
            continue
        if spool is None:
            spool = Spool(tmpdir)
            spool.add(first)
            first = None
        spool.add(t)
    if spool is None:
        table = first if first is not None else empty_table(what)
        w = _writer(path, fmt, table.schema, table.num_rows, dataset)
        w.write(table)
        w.close()
        return table.num_rows
    try:
        schema = spool.schema()
        w = _writer(path, fmt, schema, spool.rows, dataset)
        for t in spool.tables(schema):
            w.write(t)
        w.close()
        return w.rows
    finally:
        spool.close()


# --------------------------------------------------------------------------- packets

class PacketSource:
    """Iterable of decoded packets from capture files (one pipeline for all of them)."""

    RELEASE_STEP = 16 << 20     # mapped capture pages are given back in steps of this size

    def __init__(self, paths, keys=None, profile=None, display_filter: str | None = None):
        self.paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        self.keys = keys
        self.profile = profile
        self.display_filter = display_filter
        self.errors: list[str] = []
        self.pipeline = None
        self.extra: list = []
        self.records = 0        # records read (frame numbers), whatever the filter kept

    def __iter__(self):
        from .capture import PageRelease, open_reader
        from .pipeline import Pipeline
        self.pipeline = Pipeline(keys=self.keys, profile=self.profile)
        match = None
        if self.display_filter:
            from .filters import compile_filter
            match = compile_filter(self.display_filter)
        virtual = bool(match is not None and getattr(match, "fields", frozenset()) & VIRTUAL_NAMES)
        t0 = prev = None
        for p in self.paths:
            reader = open_reader(p)
            # the mapped capture pages the reader has gone past need not stay resident
            release = PageRelease(self.RELEASE_STEP)
            try:
                for rec in reader:
                    pkt = self.pipeline.feed(rec, str(p))
                    self.records += 1
                    release.upto(reader.buf, reader.position)
                    if match is not None:
                        if t0 is None:
                            t0 = pkt.ts_ns
                        fields = with_virtual(pkt, t0, prev) if virtual else pkt.d.fields
                        prev = pkt.ts_ns
                        if not match(fields):
                            continue
                    yield pkt
            finally:
                if reader.error:
                    self.errors.append(reader.error)
                reader.close()
        self.extra = list(self.pipeline.finish() or ())


def packet_tables(packets: Iterable, chunk_rows: int = CHUNK_ROWS,
                  fields: Iterable[str] | None = None) -> Iterator[pa.Table]:
    b = PacketTableBuilder(chunk_rows, fields)
    for pkt in packets:
        t = b.add(pkt)
        if t is not None:
            yield t
    t = b.flush()
    if t is not None:
        yield t


_PANDAS_TYPES = None


def to_pandas(table: pa.Table):
    """Arrow -> pandas with nullable, stable dtypes (Int64, boolean, string; lists stay
    Python lists)."""
    import pandas as pd
    global _PANDAS_TYPES
    if _PANDAS_TYPES is None:
        _PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(),
                         pa.string(): pd.StringDtype(), pa.float64(): pd.Float64Dtype()}
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)


def _concat(tables: list[pa.Table], empty_schema: list) -> pa.Table:
    if not tables:
        return pa.table({n: pa.array([], type=t) for n, t in empty_schema})
    schema = unify_schema(t.schema for t in tables)
    return pa.concat_tables([conform(t, schema) for t in tables])


def _packets_of(capture) -> Iterable:
    if hasattr(capture, "paths") and hasattr(capture, "__iter__"):
        return capture
    return PacketSource(capture)


def packets_table(capture) -> pa.Table:
    return _concat(list(packet_tables(_packets_of(capture))), SUMMARY)


def packets_dataframe(capture):
    """One row per packet: summary columns (number, time, file, source, destination,
    protocols, protocol, length, info, status) and one column per flat field."""
    return to_pandas(packets_table(capture))


# --------------------------------------------------------------------------- sessions / objects / findings

SESSION_SCHEMA = [("assoc_id", pa.int64()), ("file", pa.string()), ("transport", pa.string()),
                  ("client", pa.string()), ("server", pa.string()), ("client_title", pa.string()),
                  ("server_title", pa.string()), ("mechanism", pa.string()), ("context", pa.string()),
                  ("security", pa.string()), ("suite", pa.int64()), ("dedicated_key", pa.bool_()),
                  ("state", pa.string()), ("result", pa.string()), ("first_frame", pa.int64()),
                  ("last_frame", pa.int64()), ("first_time", pa.float64()), ("last_time", pa.float64()),
                  ("requests", pa.int64()), ("responses", pa.int64()), ("errors", pa.int64()),
                  ("hls_pass3", pa.string()), ("hls_pass4", pa.string()),
                  ("mean_response_time", pa.float64()), ("max_response_time", pa.float64()),
                  ("keyset", pa.string()), ("conformance", pa.string()),
                  ("client_max_pdu", pa.int64()), ("server_max_pdu", pa.int64())]

OBJECT_SCHEMA = [("frame", pa.int64()), ("time", pa.float64()), ("file", pa.string()),
                 ("assoc_id", pa.int64()), ("source", pa.string()), ("destination", pa.string()),
                 ("service", pa.string()), ("dir", pa.string()), ("invoke_id", pa.int64()),
                 ("class_id", pa.int64()), ("class_name", pa.string()), ("obis", pa.string()),
                 ("obis_name", pa.string()), ("attribute_id", pa.int64()), ("attribute_name", pa.string()),
                 ("method_id", pa.int64()), ("method_name", pa.string()), ("value", pa.string()),
                 ("scaler", pa.int64()), ("unit", pa.string()), ("scaled_value", pa.float64()),
                 ("result", pa.string()), ("request_frame", pa.int64())]

FINDING_SCHEMA = [("id", pa.string()), ("rule", pa.string()), ("severity", pa.string()),
                  ("title", pa.string()), ("message", pa.string()), ("frame", pa.int64()),
                  ("frames", pa.string()), ("evidence_count", pa.int64()), ("assoc_id", pa.int64()),
                  ("explanation", pa.string()), ("recommendation", pa.string()), ("file", pa.string())]


def rows_table(rows: list[dict], schema: list) -> pa.Table:
    """Rows (dicts) as a table: known columns with their types first, then any other keys
    the producing stage added (typed by their values, strings when mixed)."""
    known = dict(schema)
    extra: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k not in known and k not in extra:
                extra[k] = None
    cols = {}
    for name, t in schema:
        vals = [r.get(name) for r in rows]
        arr, _ = _to_array([_cell(v, t) for v in vals], t)
        if arr.type != t:
            arr = pa.array([None if v is None else str(v) for v in arr.to_pylist()], type=pa.string())
        cols[name] = arr
    for name in extra:
        vals = [_cell(r.get(name), None) for r in rows]
        sample = next((v for v in vals if v is not None), None)
        t = field_arrow_type("", sample) or pa.string()
        arr, _ = _to_array(vals, t)
        cols[name] = arr
    return pa.table(cols)


def _cell(v, t):
    """A value for a table cell: scalars stay, bytes become hex, containers JSON text."""
    if v is None or type(v) in (int, float, str, bool):
        if t == pa.string() and v is not None and type(v) is not str:
            return str(v)
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, (set, frozenset)):
        v = sorted(v, key=str)
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(json_safe(v), ensure_ascii=False, separators=(",", ":"), default=str)
    if isinstance(v, int):
        return int(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _require_stage(pipeline, name: str, module: str):
    st = pipeline.stage(name) if pipeline is not None else None
    if st is None:
        import importlib.util
        if importlib.util.find_spec(module) is None:
            raise ExportError(f"this export needs the {name} stage ({module.replace('.', '/')}.py), "
                              f"which is not available in this build")
        raise ExportError(f"the {name} stage ({module}) did not load")
    return st


def iter_session_rows(pipeline, file: str = "") -> Iterator[dict]:
    """One row per association, in number order, streamed (closed associations are read
    back from the association stage's spool)."""
    st = _require_stage(pipeline, "associations", "analyzer.associations")
    name = os.path.basename(file) if file else ""
    for r in st.rows():
        r.setdefault("file", name)
        yield r


def session_rows(pipeline, file: str = "") -> list[dict]:
    return list(iter_session_rows(pipeline, file))


def session_tables(pipeline, file: str = "", chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Table]:
    """The sessions table in chunks of `chunk_rows` (at least one chunk, maybe empty)."""
    rows: list[dict] = []
    sent = False
    for r in iter_session_rows(pipeline, file):
        rows.append(r)
        if len(rows) >= chunk_rows:
            yield rows_table(rows, SESSION_SCHEMA)
            rows, sent = [], True
    if rows or not sent:
        yield rows_table(rows, SESSION_SCHEMA)


# DLMS/COSEM unit enumeration (Blue Book, scaler_unit of classes 3/4/5): code -> symbol
UNITS = {1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C", 10: "currency",
         11: "m", 12: "m/s", 13: "m³", 14: "m³ (corrected)", 15: "m³/h", 16: "m³/h (corrected)",
         17: "m³/d", 18: "m³/d (corrected)", 19: "l", 20: "kg", 21: "N", 22: "Nm", 23: "Pa",
         24: "bar", 25: "J", 26: "J/h", 27: "W", 28: "VA", 29: "var", 30: "Wh", 31: "VAh",
         32: "varh", 33: "A", 34: "C", 35: "V", 36: "V/m", 37: "F", 38: "Ω", 39: "Ωm²/m",
         40: "Wb", 41: "T", 42: "A/m", 43: "H", 44: "Hz", 45: "1/(Wh)", 46: "1/(varh)",
         47: "1/(VAh)", 48: "V²h", 49: "A²h", 50: "kg/s", 51: "S", 52: "K", 53: "1/(V²h)",
         54: "1/(A²h)", 55: "1/m³", 56: "%", 57: "Ah", 60: "Wh/m³", 61: "J/m³", 62: "mol %",
         63: "g/m³", 64: "Pa s", 65: "J/kg", 66: "g/cm²", 67: "atm", 70: "dBm", 71: "dBµV",
         72: "dB", 254: "other", 255: "count"}

# interface class -> (attribute holding scaler_unit, attributes it scales)
SCALED = {3: (3, (2,)), 4: (3, (2,)), 5: (4, (2, 3))}
# operations that are not an access to an object attribute/method
_NOT_OBJECT = frozenset(("initiate",))


def unit_name(code) -> str | None:
    if type(code) is not int:
        return None
    return UNITS.get(code, f"unit {code}")


class ObjectState:
    """Per-association memory of the object export: the scaler_unit of each register the
    association has read (never shared between associations)."""

    def __init__(self):
        # association -> {obis: (scaler, unit)}, most recently used last; bounded so that a
        # capture with millions of associations keeps the latest MAX_ASSOCIATIONS only
        self.scalers: dict[tuple, dict[str, tuple]] = {}
        # value rows of the current chunk read before their register's scaler_unit
        self.pending: dict[tuple, list[dict]] = {}
        # access requests by (association, invoke id): their specifications in order
        self.access: dict[tuple, tuple[int, list[dict]]] = {}

    def match_access(self, pkt, ops: list) -> list:
        """Access responses carry no object descriptors: give each response item the
        class/OBIS/attribute|method of the request item at the same position."""
        if not any(op.get("service") == "access" for op in ops):
            return ops
        key = self.key(pkt.d)
        out = []
        resp_i: dict = {}
        for op in ops:
            if op.get("service") != "access":
                out.append(op)
                continue
            k = (key, op.get("invoke_id"))
            if op.get("dir") == "request":
                cur = self.access.get(k)
                if cur is None or cur[0] != pkt.number:
                    cur = self.access[k] = (pkt.number, [])
                cur[1].append(op)
                if len(self.access) > 4096:
                    self.access.pop(next(iter(self.access)))
                out.append(op)
            elif op.get("dir") == "response" and k in self.access:
                frame, reqs = self.access[k]
                i = resp_i.get(k, 0)
                resp_i[k] = i + 1
                if i < len(reqs) and op.get("obis") is None:
                    op = dict(op)
                    for a in ("class_id", "obis", "attribute_id", "method_id"):
                        if op.get(a) is None:
                            op[a] = reqs[i].get(a)
                    op["_request_frame"] = frame
                if i + 1 >= len(reqs):
                    self.access.pop(k, None)
                out.append(op)
            else:
                out.append(op)
        return out

    MAX_ASSOCIATIONS = 8192

    def registers(self, key: tuple) -> dict:
        regs = self.scalers.pop(key, None)
        if regs is None:
            regs = {}
            if len(self.scalers) >= self.MAX_ASSOCIATIONS:
                del self.scalers[next(iter(self.scalers))]
        self.scalers[key] = regs
        return regs

    def key(self, d) -> tuple:
        from .reassembly import flow_key
        try:
            return flow_key(d)
        except Exception:        # no transport information: one bucket per packet source
            return ("none",)


def _is_object_op(op: dict) -> bool:
    if op.get("service") in _NOT_OBJECT:
        return False
    if op.get("partial"):        # a block of a block transfer: the reassembled op carries the value
        return False
    if op.get("choice") == "next":   # get-request-next: asks for the next block only
        return False
    return True


def object_row(pkt, op: dict, state: ObjectState | None = None) -> dict:
    from dissectors.cosem_names import attribute_name, class_name, method_name, obis_name
    d = pkt.d
    aid = d.fields.get("dlms.assoc_id") if d else None
    res = op.get("result")
    cid, obis = op.get("class_id"), op.get("obis")
    attr, meth = op.get("attribute_id"), op.get("method_id")
    value = op.get("value")
    row = {"frame": pkt.number, "time": pkt.ts_ns / 1e9,
           "file": os.path.basename(pkt.file) if pkt.file else "",
           "assoc_id": aid[0] if aid else None,
           "source": d.src if d else "", "destination": d.dst if d else "",
           "service": op.get("service"), "dir": op.get("dir"), "invoke_id": op.get("invoke_id"),
           "class_id": cid, "class_name": class_name(cid) if type(cid) is int else None,
           "obis": obis, "obis_name": obis_name(obis) if obis else None,
           "attribute_id": attr,
           "attribute_name": attribute_name(cid, attr) if type(cid) is int and type(attr) is int else None,
           "method_id": meth,
           "method_name": method_name(cid, meth) if type(cid) is int and type(meth) is int else None,
           "value": _value_text(value), "scaler": None, "unit": None, "scaled_value": None,
           "result": None if res is None else str(res), "request_frame": None}
    rq = d.fields.get("dlms.request_in") if d else None
    if op.get("_request_frame") is not None:
        row["request_frame"] = op["_request_frame"]
    elif rq and op.get("dir") == "response":
        row["request_frame"] = rq[0]
    sc = SCALED.get(cid) if type(cid) is int else None
    if sc is not None and state is not None and obis and type(attr) is int and d is not None:
        regs = state.registers(state.key(d))
        su_attr, scaled_attrs = sc
        if (attr == su_attr and op.get("dir") in ("response", "request")
                and op.get("service") in ("get", "set", "read", "write", "access")
                and isinstance(value, (list, tuple)) and len(value) == 2
                and type(value[0]) is int and type(value[1]) is int):
            su = regs[obis] = (value[0], value[1])
            row["scaler"], row["unit"] = value[0], unit_name(value[1])
            # the same association read the value first (the usual order): scale those rows too
            for r in state.pending.pop((state.key(d), obis), ()):
                _apply_scaler(r, su)
        elif attr in scaled_attrs and type(value) in (int, float):
            su = regs.get(obis)
            if su is not None:
                _apply_scaler(row, su)
            else:
                row["_raw"] = value
                state.pending.setdefault((state.key(d), obis), []).append(row)
    return row


def _apply_scaler(row: dict, su: tuple) -> None:
    scaler, unit = su
    row["scaler"], row["unit"] = scaler, unit_name(unit)
    value = row.pop("_raw", None)
    if value is None:
        try:
            value = json.loads(row["value"]) if row.get("value") else None
        except ValueError:
            value = None
    if type(value) in (int, float):
        try:
            row["scaled_value"] = float(value * 10 ** scaler) if scaler >= 0 else value / 10 ** -scaler
        except OverflowError:
            pass


def _value_text(v) -> str | None:
    if v is None:
        return None
    if type(v) is str:
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    return json.dumps(json_safe(v), ensure_ascii=False, separators=(",", ":"), default=str)


def object_tables(packets: Iterable, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Table]:
    """One row per COSEM attribute read/written or method invoked (get/set/action/read/
    write/access/notify ...; block transfers as one row with the reassembled value on the
    packet that completes them), with class/OBIS/attribute names and, where the same
    association read the register's scaler_unit earlier, scaler, unit and scaled value."""
    rows: list[dict] = []
    state = ObjectState()
    for pkt in packets:
        ops = pkt.d.ctx.get("dlms.ops") if pkt.d else None
        if ops:
            for op in state.match_access(pkt, ops):
                if _is_object_op(op):
                    rows.append(object_row(pkt, op, state))
        if len(rows) >= chunk_rows:
            yield _object_chunk(rows, state)
            rows = []
    if rows:
        yield _object_chunk(rows, state)


def _object_chunk(rows: list[dict], state: ObjectState) -> pa.Table:
    state.pending.clear()       # rows written out can no longer be scaled afterwards
    for r in rows:
        r.pop("_raw", None)
    return rows_table(rows, OBJECT_SCHEMA)


def finding_rows(pipeline, extra: Iterable = (), file: str = "") -> list[dict]:
    st = _require_stage(pipeline, "audit", "analyzer.audit")
    src = getattr(st, "findings", None)
    if callable(src):
        src = src()
    items = list(src or ())
    for e in extra or ():
        if e not in items:
            items.append(e)
    rows = []
    for f in items:
        if isinstance(f, dict):
            r = dict(f)
        elif hasattr(f, "to_dict"):
            r = f.to_dict()
        elif hasattr(f, "__dataclass_fields__"):
            import dataclasses
            r = dataclasses.asdict(f)
        elif hasattr(f, "_asdict"):
            r = f._asdict()
        else:
            continue
        r.setdefault("file", os.path.basename(file) if file else "")
        rows.append(r)
    return rows


def _run(capture) -> Any:
    """Iterate a Capture (or paths) to the end; returns the pipeline and finish() output."""
    src = _packets_of(capture)
    for _ in src:
        pass
    pipe = getattr(src, "pipeline", None)
    extra = getattr(src, "extra", ())
    return pipe, extra


def sessions_dataframe(capture):
    """One row per DLMS association (from the association-tracking stage)."""
    pipe, _ = _run(capture)
    return to_pandas(rows_table(session_rows(pipe), SESSION_SCHEMA))


def objects_dataframe(capture):
    """One row per COSEM object access (service, class, OBIS, attribute/method, value)."""
    return to_pandas(_concat(list(object_tables(_packets_of(capture))), OBJECT_SCHEMA))


def findings_dataframe(capture):
    """One row per security finding of the audit stage."""
    pipe, extra = _run(capture)
    return to_pandas(rows_table(finding_rows(pipe, extra), FINDING_SCHEMA))


# --------------------------------------------------------------------------- one-shot export

class gc_tuned:
    """For a long export in its own process: objects alive at the start (modules, field
    registry, dissector tables) are frozen out of the cyclic collector's scans, and young
    collections run less often (a decode allocates many short-lived containers; the
    builder holds a chunk's values).  About 5% of the export's CPU time; restored after."""

    def __enter__(self):
        import gc
        self.old = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        return self

    def __exit__(self, *exc):
        import gc
        gc.set_threshold(*self.old)
        gc.unfreeze()


def export_tables(what: str, paths, keys=None, profile=None, errors: list | None = None,
                  chunk_rows: int = CHUNK_ROWS, display_filter: str | None = None,
                  stats: dict | None = None) -> Iterator[pa.Table]:
    """The chunks of an export of `what` from capture files (local engine).  `stats`, when
    given, receives "records" (frames read) and "associations" (associations numbered)
    once the chunks are exhausted."""
    src = PacketSource(paths, keys, profile, display_filter)
    try:
        if what == "packets":
            yield from packet_tables(src, chunk_rows)
        elif what == "objects":
            yield from object_tables(src, chunk_rows)
        elif what == "sessions":
            for _ in src:
                pass
            file = src.paths[0] if len(src.paths) == 1 else ""
            yield from session_tables(src.pipeline, file, chunk_rows)
        elif what == "findings":
            for _ in src:
                pass
            file = src.paths[0] if len(src.paths) == 1 else ""
            yield rows_table(finding_rows(src.pipeline, src.extra, file), FINDING_SCHEMA)
        else:
            raise ExportError(f"--what must be one of {', '.join(WHATS)}")
    finally:
        if errors is not None:
            errors.extend(src.errors)
        if stats is not None:
            stats["records"] = src.records
            stats["associations"] = association_count(src.pipeline)


def _add(col, offset: int):
    """`offset` added to an integer column or to the elements of a list-of-integers column
    (None when the column holds something else, e.g. text after a type conflict)."""
    import pyarrow.compute as pc
    t = col.type
    if pa.types.is_integer(t):
        return pc.add(col, offset)
    if pa.types.is_list(t) and pa.types.is_integer(t.value_type):
        chunks = []
        for ch in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]):
            vals = pc.add(ch.values, offset)
            chunks.append(pa.ListArray.from_arrays(ch.offsets, vals, type=t, mask=ch.is_null()))
        return pa.chunked_array(chunks, type=t)
    return None


def _shift_frame_text(text, offset: int):
    if text is None:
        return None
    try:
        v = json.loads(text)
    except ValueError:
        return text
    if isinstance(v, list) and all(type(x) is int for x in v):
        return json.dumps([x + offset for x in v], separators=(",", ":"))
    return text


def shift_message(text, offset: int, assoc_offset: int):
    """A finding's message with the frame numbers it names moved by `offset` and the
    association numbers by `assoc_offset` (text in single quotes kept as it is)."""
    if text is None or not (offset or assoc_offset):
        return text
    head, quote, rest = text.partition("'")

    def shift(m):
        off = offset if m.group(1)[0] == "f" else assoc_offset
        if not off:
            return m.group(0)
        return m.group(1) + " " + _DIGITS.sub(lambda n: str(int(n.group(0)) + off), m.group(2))

    return _NAMED_NUMBERS.sub(shift, head) + quote + rest


def _shift_finding_id(text, offset: int):
    m = _FINDING_ID.fullmatch(text) if text is not None else None
    return f"F{int(m.group(1)) + offset}" if m else text


def _map_text(table: pa.Table, name: str, fn) -> pa.Table:
    """`fn` applied to the values of string column `name` (if the table has it)."""
    if name not in table.column_names or not pa.types.is_string(table.schema.field(name).type):
        return table
    i = table.column_names.index(name)
    return table.set_column(i, table.schema.field(i),
                            pa.array([fn(v) for v in table.column(i).to_pylist()], type=pa.string()))


def shift_frames(table: pa.Table, offset: int, assoc_offset: int = 0, findings: int | None = None) -> pa.Table:
    """Add `offset` to the frame-number columns and `assoc_offset` to the association
    numbers (per-file partitions -> the numbers of one export over all files).  A findings
    table (`findings`: how many findings the files before have) also gets its ids
    numbered on and the frame and association numbers in its messages moved."""
    for names, off in ((FRAME_COLUMNS, offset), (ASSOC_COLUMNS, assoc_offset)):
        if not off:
            continue
        for name in names:
            if name in table.column_names:
                i = table.column_names.index(name)
                col = _add(table.column(i), off)
                if col is not None:
                    table = table.set_column(i, table.schema.field(i), col)
    if offset:
        for name in FRAME_LIST_TEXT:
            table = _map_text(table, name, lambda v: _shift_frame_text(v, offset))
    if findings:
        table = _map_text(table, FINDING_ID, lambda v: _shift_finding_id(v, findings))
    if findings is not None and (offset or assoc_offset):
        for name in FINDING_TEXT:
            table = _map_text(table, name, lambda v: shift_message(v, offset, assoc_offset))
    return table


def association_count(pipeline) -> int:
    """How many associations the association stage numbered (0 without the stage)."""
    st = pipeline.stage("associations") if pipeline is not None else None
    if st is None:
        return 0
    return st.next_id - 1


__all__ = ["packets_dataframe", "sessions_dataframe", "objects_dataframe", "findings_dataframe",
           "export_tables", "write_tables", "PacketSource", "ExportError", "output_format", "is_dataset",
           "DatasetWriter",
           "shift_frames", "empty_table", "TableWriter"]
