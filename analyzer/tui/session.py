"""The TUI's model: capture files, the column store, and the background work that fills it.

One worker thread indexes the files (offsets only), then runs every packet through the
pipeline in capture order (stateful stages: associations, decryption, audit) and fills
the summary columns.  A second thread applies the display filter.  The UI thread only
reads: it polls the counters and redraws.  Nothing raised in a worker reaches the screen:
errors become notices the UI shows as notifications."""
from __future__ import annotations

import os
import pickle
import tempfile
import threading
import time
import traceback
from array import array
from collections import Counter, OrderedDict
from typing import Any, Callable

import numpy as np

from analyzer.packet import Packet, Record
from dissectors.core import Dissection

from .sorting import RowSort, make_sort, natural_key  # noqa: F401 (natural_key: API)
from .source import CaptureFile
from .store import (ColumnStore, F_FINDING, F_MALFORMED, F_WARN, ST_AUTHFAIL, ST_AUTHOK,
                    ST_CIPHERED, ST_DECRYPTED, ST_NOKEY, ST_NONE, ST_PLAIN)

VIRTUAL = frozenset(["frame.number", "frame.time_epoch", "frame.time_relative", "frame.time_delta",
                     "frame.len", "frame.cap_len", "frame.protocols", "_ws.col.No.", "_ws.col.Source",
                     "_ws.col.Destination", "_ws.col.Protocol", "_ws.col.Length", "_ws.col.Info",
                     "lonscope.status"])
FIELDS_CACHE_MAX = 5_000       # flat fields of small captures kept for instant filtering (~8 kB each)
OBJECTS_MAX = 100_000
AUX_MEM = 16 << 20             # pkt.aux kept in memory; the rest goes to a temporary file

# Packet-list columns the list can be sorted by.  No./Time/Length come from the index
# columns (known for every row at once); the others from the decoder's summary columns.
SORT_COLUMNS = ("No.", "Time", "Source", "Destination", "Protocol", "Length", "Info")
_INDEX_SORT = frozenset(("No.", "Time", "Length"))
SORT_MERGE_EVERY = 0.5         # seconds between merges of newly decoded rows into a sort
CHUNK = 50_000
FIRST_CHUNK = 2_000


class AuxStore:
    """What the stateful stages stored per packet (`pkt.aux`: plaintexts, reassembly and
    association notes), pickled back to back so that a packet can be re-dissected later.
    The first 32 MB stay in memory; beyond that (very large captures) entries go to an
    unlinked temporary file, read back with pread."""

    def __init__(self, mem_limit: int = AUX_MEM):
        self.limit = mem_limit
        self.mem = bytearray()
        self.f = None
        self.fend = 0
        self.lock = threading.Lock()

    def put(self, obj) -> tuple[int, int] | None:
        try:
            b = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            return None
        with self.lock:
            if self.f is None and len(self.mem) + len(b) <= self.limit:
                off = len(self.mem)
                self.mem += b
                return off, len(b)
            if self.f is None:
                self.f = tempfile.TemporaryFile(prefix="lonscope-")
            os.pwrite(self.f.fileno(), b, self.fend)
            off = self.limit + self.fend
            self.fend += len(b)
            return off, len(b)

    def get(self, off: int, n: int):
        if off < self.limit:
            b = bytes(self.mem[off:off + n])
        else:
            b = os.pread(self.f.fileno(), n, off - self.limit)
        return pickle.loads(b)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


class ObjectLog:
    """Decoded operations as (row, op) pairs, the ops pickled back to back (about 200 bytes
    each on the simulator's captures, instead of a dict and its values per operation): the
    Objects and Follow views iterate them."""

    def __init__(self):
        self.rows = array("q")
        self.ends = array("q")
        self.buf = bytearray()
        self.odd: dict[int, Any] = {}       # ops that cannot be pickled, by position

    def append(self, item: tuple) -> None:
        row, op = item
        try:
            self.buf += pickle.dumps(op, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            self.odd[len(self.rows)] = op
        self.ends.append(len(self.buf))
        self.rows.append(row)         # last: len() counts complete entries only

    def __len__(self) -> int:
        return len(self.rows)

    def _item(self, k: int) -> tuple:
        op = self.odd.get(k)
        if op is None:
            start = self.ends[k - 1] if k else 0
            op = pickle.loads(bytes(self.buf[start:self.ends[k]]))
        return self.rows[k], op

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._item(i) for i in range(*k.indices(len(self)))]
        return self._item(range(len(self))[k])

    def __iter__(self):
        for k in range(len(self)):
            yield self._item(k)

    def clear(self) -> None:
        self.rows, self.ends, self.buf, self.odd = array("q"), array("q"), bytearray(), {}

    @property
    def nbytes(self) -> int:
        return len(self.buf) + 8 * (len(self.rows) + len(self.ends))


def status_code(d: Dissection) -> int:
    st = (d.status or "").lower().replace("-", " ").replace("_", " ")
    sec = d.fields.get("dlms.sec.status")
    if not st and sec:
        st = str(sec[-1]).lower().replace("-", " ").replace("_", " ")
    if "decrypt" in st:
        return ST_DECRYPTED
    if st in ("ok", "verified", "authenticated", "auth ok"):
        return ST_AUTHOK
    if "auth" in st and "fail" in st or "fail" in st:
        return ST_AUTHFAIL
    if "no key" in st or "nokey" in st or "no_key" in st:
        return ST_NOKEY
    if d.ctx.get("dlms.ciphered"):
        return ST_CIPHERED
    if "dlms" in d.fields:
        return ST_PLAIN
    return ST_NONE


def _short(v: Any, n: int = 60) -> str:
    if isinstance(v, (bytes, bytearray)):
        s = bytes(v).hex()
    else:
        s = str(v)
    return s if len(s) <= n else s[:n - 1] + "…"


class Session:
    def __init__(self, paths: list[str], keys: Any = None, profile: Any = None,
                 display_filter: str | None = None, live: str | None = None,
                 key_path: str | None = None, key_extra: list[str] | None = None,
                 live_source: Any = None):
        self.paths = [str(p) for p in paths]
        self.keys = keys
        self.profile = profile
        self.live = live
        self.live_source = live_source       # an opened analyzer.live source (not file:)
        self.key_path = key_path
        self.key_extra = list(key_extra or [])
        self.store = ColumnStore()
        self.files: list[CaptureFile] = []
        self.pipeline = None
        self.aux: dict[int, dict] = {}       # pkt.aux that could not be pickled
        self.auxstore = AuxStore()
        self.fields_cache: list[dict] = []
        self.objects = ObjectLog()
        self.paths_seen: Counter = Counter()      # repeater paths
        self.findings: list[dict] = []
        self.severity: Counter = Counter()
        self.ciphered = 0
        self.decrypted = 0
        self.n_decoded = 0
        self.indexing = True
        self.done = False
        self.paused = False
        self.drops = 0
        self.notices: list[tuple[str, str]] = []  # (severity, message) for the UI
        self.decode_gen = 0
        self.decode_epoch = 0                # bumped by the worker once it restarted decoding
        self._lazy: OrderedDict[int, tuple] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # filter state
        self.filter_text = ""
        self.filter_fn: Callable | None = None
        self.view: array | None = None            # rows matching the filter (None = all)
        self.view_upto = 0
        self.filter_gen = 0
        self._fthread: threading.Thread | None = None
        self.t_first_rows: float | None = None
        self.ui_busy_until = 0.0          # workers pause while the UI handles input (time.monotonic)
        self.dissectors_ready = False
        self.first_paint_done = threading.Event()   # set by the UI after its first screen
        # sort state (UI thread only): `order` lists the rows of the current view whose
        # sort key is known, sorted; the rest of the view follows in capture order
        self.sort_col: str | None = None
        self.sort_desc = False
        self.order: np.ndarray | None = None
        self.sort_gen = 0
        self._sort_state: tuple | None = None
        self._sorter: RowSort | None = None      # sorted rows + what it keeps to merge new ones
        self._sort_t = 0.0
        self._sort_cost = 0.0                     # seconds the last merge took
        if display_filter:
            self.set_filter(display_filter, start=False)

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait_for_ui: bool = False) -> None:
        """Start loading.  With wait_for_ui, heavy start-up work waits (up to 3 s) until the
        UI sets `first_paint_done`, so that the first screen appears at once."""
        if not wait_for_ui:
            self.first_paint_done.set()
        self._thread = threading.Thread(target=self._run_guarded, name="lonscope-load", daemon=True)
        self._thread.start()
        if self.filter_fn is not None:
            self._start_filter()

    def stop(self) -> None:
        self._stop.set()
        self.first_paint_done.set()
        for t in (self._thread, self._fthread):
            if t is not None and t.is_alive() and t is not threading.current_thread():
                t.join(timeout=2)
        for f in self.files:
            f.close()
        self.auxstore.close()

    def ui_busy(self, seconds: float = 0.15) -> None:
        """The user is interacting: background work yields the interpreter for a moment."""
        self.ui_busy_until = time.monotonic() + seconds

    def _yield(self) -> None:
        while time.monotonic() < self.ui_busy_until and not self._stop.is_set():
            time.sleep(0.005)

    def _load_dissectors(self) -> None:
        if not self.dissectors_ready:
            from dissectors import load_all
            load_all()
            if self.pipeline is None:
                self.pipeline = self._new_pipeline()
            self.dissectors_ready = True

    def notice(self, severity: str, msg: str) -> None:
        self.notices.append((severity, msg))

    def _run_guarded(self):
        try:
            self._run()
        except Exception as exc:   # never let a worker error escape: show it
            self.notice("error", f"loading stopped: {type(exc).__name__}: {exc}")
            self._trace = traceback.format_exc()
        finally:
            self.indexing = False
            self.done = True

    # ------------------------------------------------------------------ loading
    def _new_pipeline(self):
        from analyzer.pipeline import Pipeline
        return Pipeline(keys=self.keys, profile=self.profile)

    def _open_files(self):
        live_path = None
        if self.live:
            src = self.live
            live_path = src[5:] if src.startswith("file:") else src
        for p in self.paths:
            try:
                self.files.append(CaptureFile(p))
            except OSError as exc:
                self.notice("error", f"{p}: {exc.strerror or exc}")
        if self.live_source is not None:
            from .source import LiveSourceFile
            self.files.append(LiveSourceFile(self.live_source, self.live))
        elif live_path:
            self.files.append(CaptureFile(live_path, live=True))
        if self.files and all(not f.live and _indexed_size(f) < 1 << 32 for f in self.files):
            self.store.narrow_offsets()

    def _index(self):
        st = self.store
        files = self.files
        if len(files) == 1:
            f = files[0]
            # a small first chunk: the first screen can be drawn at once
            for c in f.chunks(FIRST_CHUNK):
                st.append_index(c.ts, c.offset, c.caplen, c.origlen, c.linktype, 0)
                self.t_first_rows = time.perf_counter()
                size = len(f.buf) if f.buf is not None else 0
                if len(c) and f.indexer.pos and size > f.indexer.pos:
                    st.reserve(int(len(c) * size / f.indexer.pos * 1.02) + 1024)
                break
            # let the UI draw its first screen before the heavy start-up work
            self.first_paint_done.wait(timeout=3.0)
            self._load_dissectors()
            if not f.error:
                for c in f.chunks(CHUNK):
                    st.append_index(c.ts, c.offset, c.caplen, c.origlen, c.linktype, 0)
                    if self.t_first_rows is None:
                        self.t_first_rows = time.perf_counter()
                    if self._stop.is_set():
                        return
                    self._yield()
        elif files:
            parts = []
            for k, f in enumerate(files):
                for c in f.chunks(CHUNK):
                    parts.append((k, c))
                    if self._stop.is_set():
                        return
            if parts:
                ts = np.concatenate([c.ts for _, c in parts])
                order = np.argsort(ts, kind="stable")
                cols = [np.concatenate([getattr(c, a) for _, c in parts])[order]
                        for a in ("ts", "offset", "caplen", "origlen", "linktype")]
                fid = np.concatenate([np.full(len(c), k, dtype=np.int16) for k, c in parts])[order]
                for s in range(0, len(ts), CHUNK):
                    e = s + CHUNK
                    self.store.append_index(cols[0][s:e], cols[1][s:e], cols[2][s:e], cols[3][s:e],
                                            cols[4][s:e], fid[s:e])
                    if self.t_first_rows is None:
                        self.t_first_rows = time.perf_counter()
        for f in files:
            if f.error:
                self.notice("warning", f"{f.path}: {f.error} — showing the packets before the damage")

    def _run(self):
        self._open_files()
        self._index()
        self._load_dissectors()
        self.indexing = any(f.live for f in self.files)
        gen = self.decode_gen
        i = 0
        while not self._stop.is_set():
            if gen != self.decode_gen:          # keys changed: decode again from the start
                gen = self.decode_gen
                self._reset_decode()
                i = 0
            n = self.store.n
            if i < n:
                end = min(n, i + 2000)
                while i < end and gen == self.decode_gen and not self._stop.is_set():
                    self._decode_row(i)
                    i += 1
                    self.n_decoded = i
                    if not i % 4:
                        self._yield()
                self._release_behind(i - 1)
                if i % 250_000 < 2000:
                    trim_heap()
                continue
            live = [f for f in self.files if f.live]
            if not live:
                self._finish()
                # stay alive for key reloads
                while not self._stop.is_set() and gen == self.decode_gen:
                    time.sleep(0.1)
                continue
            if self.paused:
                time.sleep(0.2)
                continue
            f = live[0]
            grew = f.refresh()
            got = 0
            if grew or f.indexer.at_end:
                k = self.files.index(f)
                for c in f.chunks(CHUNK):
                    self.store.append_index(c.ts, c.offset, c.caplen, c.origlen, c.linktype, k)
                    got += len(c)
                self.drops = getattr(f.indexer, "drops", 0)
                if f.error:
                    self.notice("error", f"{f.path}: {f.error}")
                    f.live = False
            if not got:
                time.sleep(0.25)

    def _release_behind(self, row: int) -> None:
        f = self.files[int(self.store.file[row])]
        release = getattr(f, "release", None)
        if release is not None:
            release(int(self.store.offset[row]))

    def _reset_decode(self):
        for f in self.files:
            if hasattr(f, "_released"):
                f._released = 0            # decoding starts again from the first page
        self.pipeline = self._new_pipeline()
        self.aux.clear()
        self.store.forget_summaries()
        self.auxstore.close()
        self.auxstore = AuxStore()
        self.fields_cache.clear()
        self.objects.clear()
        self.paths_seen.clear()
        self.findings = []
        self.severity.clear()
        self.ciphered = self.decrypted = 0
        self.n_decoded = 0
        self.done = False
        self._lazy.clear()
        self.decode_epoch += 1
        if self.filter_fn is not None:
            self._start_filter()

    def _finish(self):
        if self.done:
            return
        try:
            extra = self.pipeline.finish()
        except Exception as exc:
            extra = []
            self.notice("error", f"end of capture: {type(exc).__name__}: {exc}")
        self._collect_findings(extra)
        self.done = True
        trim_heap()

    def _collect_findings(self, extra) -> None:
        """Findings from the audit stage (list of dict-like or objects)."""
        found = []
        items = []
        audit = self.pipeline.stage("audit") if self.pipeline else None
        if audit is not None:
            try:
                from analyzer.export import finding_rows
                items = finding_rows(self.pipeline, [x for x in (extra or []) if x is not None])
            except Exception:
                src = getattr(audit, "findings", None)
                if callable(src):
                    src = src()
                items = list(src or []) + [x for x in (extra or []) if x is not None]
        for item in items:
            f = item.to_dict() if hasattr(item, "to_dict") else (dict(item) if isinstance(item, dict) else None)
            if f is None:
                continue
            found.append(f)
        seen = set()
        uniq = []
        for f in found:
            key = (f.get("rule") or f.get("id"), str(f.get("frames") or f.get("packets") or f.get("evidence")),
                   f.get("message") or f.get("title"))
            if key in seen:
                continue
            seen.add(key)
            uniq.append(f)
        self.findings = uniq
        sev = Counter()
        for f in uniq:
            sev[str(f.get("severity", "info")).lower()] += 1
            for n in finding_frames(f):
                if 1 <= n <= self.store.n:
                    self.store.flags[n - 1] |= F_FINDING
        if uniq:
            self.severity = sev

    def record(self, i: int) -> Record:
        st = self.store
        f = self.files[int(st.file[i])]
        return f.read(int(st.offset[i]), int(st.caplen[i]), int(st.origlen[i]),
                      int(st.linktype[i]), int(st.ts[i]))

    def packet(self, i: int) -> Packet:
        f = self.files[int(self.store.file[i])]
        pkt = Packet(i + 1, self.record(i), f.path)
        aux = self.aux.get(i)
        if aux is None and self.store.decoded(i):
            n = int(self.store.aux_len[i])
            if n:
                try:
                    aux = self.auxstore.get(int(self.store.aux_off[i]), n)
                except Exception:
                    aux = None
        if aux:
            pkt.aux = aux
        return pkt

    def _decode_row(self, i: int) -> None:
        st = self.store
        f = self.files[int(st.file[i])]
        try:
            rec = self.record(i)
            pkt = self.pipeline.feed(rec, f.path)
        except Exception as exc:
            st.set_summary(i, "?", "", "", "", f"[decode error: {type(exc).__name__}]", ST_NONE, F_MALFORMED)
            return
        # the pipeline numbers packets itself; keep ours (row + 1)
        pkt.number = i + 1
        d = pkt.d
        flags = 0
        for e in d.expert:
            if e.severity in ("warn", "error"):
                flags |= F_WARN
            if e.group == "malformed":
                flags |= F_MALFORMED
            if e.group == "security":
                flags |= F_FINDING
        status = status_code(d)
        if status in (ST_DECRYPTED, ST_AUTHFAIL, ST_NOKEY, ST_CIPHERED, ST_AUTHOK):
            self.ciphered += 1
        if status == ST_DECRYPTED:
            self.decrypted += 1
        proto = d.protocols[-1].upper() if d.protocols else ""
        st.set_summary(i, proto, d.src, d.dst, ":".join(d.protocols), d.info, status, flags)
        if d.status:
            st.rawstatus[i] = min(st.statuses.id(d.status), 255)
        aid = d.fields.get("dlms.assoc_id")
        if aid and isinstance(aid[0], int):
            st.assoc[i] = aid[0]
        if pkt.aux:
            where = self.auxstore.put(pkt.aux)
            if where is None:
                self.aux[i] = pkt.aux
            else:
                st.aux_off[i], st.aux_len[i] = where
        if st.n <= FIELDS_CACHE_MAX and not self.indexing or i < 2000 and st.n <= FIELDS_CACHE_MAX:
            if i == len(self.fields_cache):
                self.fields_cache.append(d.fields)
        ops = d.ctx.get("dlms.ops")
        if ops and len(self.objects) < OBJECTS_MAX:
            for op in ops:
                try:
                    self.objects.append((i, op))
                except Exception:
                    pass
        for name in ("lonproxy.path", "lonproxy.hops"):
            v = d.fields.get(name)
            if v:
                self.paths_seen[" → ".join(str(x) for x in v)] += 1
                break
        if len(self._lazy) and i in self._lazy:
            self._lazy.pop(i, None)

    # ------------------------------------------------------------------ reading rows
    def summary(self, i: int) -> tuple[str, str, str, str, int, int]:
        """(proto, src, dst, info, status, flags) — from the store when decoded, otherwise
        from a quick stateless dissection (cached)."""
        st = self.store
        if st.decoded(i):
            return (st.protos[int(st.proto[i])], st.addrs[int(st.src[i])], st.addrs[int(st.dst[i])],
                    st.info_at(i), int(st.status[i]), int(st.flags[i]))
        hit = self._lazy.get(i)
        if hit is not None:
            return hit
        if not self.dissectors_ready:       # still starting: index columns only for now
            return ("", "", "", "", ST_NONE, 0)
        try:
            from dissectors import dissect_frame
            rec = self.record(i)
            d = dissect_frame(rec.data, rec.linktype)
            proto = d.protocols[-1].upper() if d.protocols else ""
            val = (proto, d.src, d.dst, d.info, ST_NONE, 0)
        except Exception as exc:
            val = ("?", "", "", f"[{type(exc).__name__}]", ST_NONE, 0)
        self._lazy[i] = val
        if len(self._lazy) > 4096:
            self._lazy.popitem(last=False)
        return val

    def dissect(self, i: int) -> Dissection:
        """Full tree of one packet (re-read from the file, stages use pkt.aux)."""
        pipeline = self.pipeline or self._new_pipeline()
        if self.pipeline is None:
            self.pipeline = pipeline
        return pipeline.redissect(self.packet(i))

    def fields_of(self, i: int) -> dict:
        if i < len(self.fields_cache):
            return self.fields_cache[i]
        return self.fast_packet(i).d.fields

    def fast_packet(self, i: int) -> Packet:
        """Packet i with a flat (no tree) dissection rebuilt from its bytes and pkt.aux."""
        pipeline = self.pipeline or self._new_pipeline()
        pkt = self.packet(i)
        pkt.d = pipeline.redissect(pkt, want_tree=False)
        return pkt

    # ------------------------------------------------------------------ filter
    def set_filter(self, text: str, start: bool = True) -> None:
        """Compile and apply a display filter ("" clears it).  Raises the filter module's
        error (with a message for the user) when the text does not compile."""
        text = (text or "").strip()
        if not text:
            self.filter_text = ""
            self.filter_fn = None
            self.filter_gen += 1
            self.view = None
            return
        from analyzer.filters import compile_filter
        fn = compile_filter(text)
        self.filter_text = text
        self.filter_fn = fn
        if start:
            self._start_filter()

    def _start_filter(self):
        self.filter_gen += 1
        self.view = array("q")
        self.view_upto = 0
        gen = self.filter_gen
        self._fthread = threading.Thread(target=self._filter_loop, args=(gen,), daemon=True,
                                         name="lonscope-filter")
        self._fthread.start()

    def _filter_loop(self, gen: int):
        fn = self.filter_fn
        view = self.view
        try:
            while not self._stop.is_set() and gen == self.filter_gen:
                upto = self.n_decoded
                i = self.view_upto
                if i >= upto:
                    if self.done and not any(f.live for f in self.files):
                        return
                    time.sleep(0.05)
                    continue
                virtual = bool(getattr(fn, "fields", None) and VIRTUAL & set(fn.fields))
                while i < upto and gen == self.filter_gen:
                    try:
                        fields = self.fields_of(i)
                        if virtual:
                            fields = {**self.virtual_fields(i), **fields}
                        ok = fn(fields)
                    except Exception:
                        ok = False
                    if ok:
                        view.append(i)
                    i += 1
                    self.view_upto = i
                    if not i % 4:
                        self._yield()
        except Exception as exc:
            self.notice("error", f"filter stopped: {type(exc).__name__}: {exc}")

    def virtual_fields(self, i: int) -> dict:
        """frame.* / _ws.col.* / lonscope.status of row i, from the columns (what the
        CLI's output layer adds for filters)."""
        st = self.store
        proto, src, dst, info, _status, _flags = self.summary(i)
        ts = int(st.ts[i])
        t0 = int(st.ts[0])
        prev = int(st.ts[i - 1]) if i > 0 else ts
        raw = st.statuses[int(st.rawstatus[i])] if st.decoded(i) else ""
        return {
            "frame.number": [i + 1], "frame.time_epoch": [ts / 1e9],
            "frame.time_relative": [(ts - t0) / 1e9], "frame.time_delta": [(ts - prev) / 1e9],
            "frame.len": [int(st.origlen[i])], "frame.cap_len": [int(st.caplen[i])],
            "frame.protocols": [st.stacks[int(st.stack[i])] if st.decoded(i) else ""],
            "_ws.col.No.": [i + 1], "_ws.col.Source": [src], "_ws.col.Destination": [dst],
            "_ws.col.Protocol": [proto], "_ws.col.Length": [int(st.origlen[i])], "_ws.col.Info": [info],
            "lonscope.status": [raw] if raw else [],
        }

    @property
    def filtering(self) -> bool:
        return self.filter_fn is not None and (self.view_upto < self.n_decoded or not self.done)

    def visible_count(self) -> int:
        return len(self.view) if self.view is not None else self.store.n

    def row_of(self, y: int) -> int:
        """Store row shown at list line y."""
        order = self.order
        if order is not None and y < len(order):
            return int(order[y])
        return self.view[y] if self.view is not None else y

    def _view_array(self) -> np.ndarray:
        # a copy: a numpy view of the array would block the filter thread's appends
        view = self.view
        return np.frombuffer(view[:], dtype=np.int64) if view is not None and len(view) else np.zeros(0, np.int64)

    def _base_line(self, row: int) -> int | None:
        if self.view is None:
            return row if row < self.store.n else None
        v = self._view_array()
        k = int(np.searchsorted(v, row))
        return k if k < len(v) and v[k] == row else None

    def line_of(self, row: int) -> int | None:
        """List line showing store row `row` (None when filtered out)."""
        order = self.order
        if order is not None and len(order):
            hit = np.flatnonzero(order == row)
            if len(hit):
                return int(hit[0])
        return self._base_line(row)     # not sorted, or not keyed yet (after the sorted rows)

    def nearest_line(self, row: int) -> int:
        if self.view is None:
            near = min(row, max(0, self.store.n - 1))
        else:
            v = self._view_array()
            if not len(v):
                return 0
            near = int(v[min(int(np.searchsorted(v, row)), len(v) - 1)])
        line = self.line_of(near)
        return 0 if line is None else line

    # ------------------------------------------------------------------ sorting
    def set_sort(self, column: str | None, descending: bool = False) -> None:
        """Sort the list by a column (None: capture order).  The sort is computed now for
        the rows whose key is known; rows decoded (or matched by the filter) later are
        merged into their place by `update_sort`."""
        if column is not None and column not in SORT_COLUMNS:
            raise ValueError(f"unknown column {column!r}")
        self.sort_col = column
        self.sort_desc = bool(descending) and column is not None
        self._sort_state = None
        self._sorter = None
        if column is None:
            self.order = None
            self.sort_gen += 1
            return
        self.update_sort(force=True)

    def _sort_base(self) -> tuple[int, Any]:
        """(number of rows of the current view whose key is known, view array or None)."""
        view = self.view
        if view is not None:
            return len(view), view          # the filter only ever sees decoded rows
        n = self.store.n
        return (n if self.sort_col in _INDEX_SORT else min(self.n_decoded, n)), None

    def update_sort(self, force: bool = False) -> bool:
        """Merge rows that became sortable into the sorted order: only the new rows are
        keyed, sorted, and placed among the sorted ones (`analyzer.tui.sorting`); the
        result is the order a full stable sort would give.  True when the order changed."""
        if self.sort_col is None:
            return False
        state = (self.sort_col, self.sort_desc, self.filter_gen, self.decode_epoch)
        if state != self._sort_state or self._sorter is None:
            self._sort_state = state
            self._sorter = make_sort(self.store, self.sort_col, self.sort_desc)
            self._sorter.decoding = (self.decode_gen, self.decode_epoch)
            self.order = self._sorter.order
            force = True
        now = time.monotonic()
        # merges take at most about a fifth of the UI thread's time (a slow merge waits longer)
        if not force and now - self._sort_t < max(SORT_MERGE_EVERY, 5 * self._sort_cost):
            return False
        known, view = self._sort_base()
        k0 = len(self.order)
        if known <= k0:
            return False
        self._sort_t = now
        if view is not None:
            new = np.frombuffer(view[k0:known], dtype=np.int64)
        else:
            new = np.arange(k0, known, dtype=np.int64)
        try:
            self._sorter.merge(new)
        except (IndexError, ValueError):
            if self._sorter.decoding == (self.decode_gen, self.decode_epoch):
                raise
            # decoding started again (new keys) under this merge: sort again from scratch
            self._sorter = None
            return False
        self.order = self._sorter.order
        self._sort_cost = time.monotonic() - now
        self.sort_gen += 1
        return True

    # ------------------------------------------------------------------ keys
    def reload_keys(self, keys: Any) -> None:
        """Use a new key ring: decryption runs again from the first packet; the list
        updates in place as rows are decoded again."""
        self.keys = keys
        self.decode_gen += 1

    @property
    def total_bytes(self) -> int:
        n = self.store.n
        return int(self.store.origlen[:n].sum()) if n else 0


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc `malloc_trim`): the decoder
    frees most of what each packet allocated, but the freed pages would otherwise stay
    counted in RSS."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _indexed_size(f) -> int:
    """The largest offset a file's index can hold (bytes, or records kept in memory)."""
    if getattr(f, "records", None) is not None:
        return len(f.records)
    buf = getattr(f, "buf", None)
    return len(buf) if buf is not None else 1 << 62


def finding_frames(f: dict) -> list[int]:
    for k in ("frames", "packets", "evidence", "frame", "packet", "numbers"):
        v = f.get(k)
        if v is None:
            continue
        if isinstance(v, int):
            return [v]
        if isinstance(v, (list, tuple)):
            return [int(x) for x in v if isinstance(x, int) or (isinstance(x, str) and x.isdigit())]
        if isinstance(v, str):
            return [int(x) for x in v.replace(",", " ").split() if x.isdigit()]
    return []
