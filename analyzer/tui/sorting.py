"""Sorted packet-list order, kept up to date incrementally.

A `RowSort` holds the rows of the current view in sort order and is extended batch by
batch (`merge`) as the decoder (or the filter) makes rows sortable.  Every batch only
holds rows after all rows merged before (capture order), so the result equals a full
stable sort of all rows by (key, capture order) — also when descending: equal keys keep
capture order both ways.  Per batch of B new rows over N sorted ones, only the B new rows
are keyed; the merge is `searchsorted` (or counts per distinct value) plus one
`np.insert` of the N row numbers.

- numeric columns (No., Time, Length): the sorted keys are kept beside the order;
- interned string columns (Protocol, Source, Destination, Info while every text is
  interned): the number of sorted rows per string id is kept; the new rows' places come
  from a cumulative sum over the distinct values in value order (O(distinct), not O(N));
- Info past the store's interning limit (texts in the byte arena, one entry per row): the
  new rows' texts are binary-searched among the sorted rows (O(B log N) texts read), and a
  first sort (or a batch too large for that) ranks the texts with numpy over the arena
  bytes (`byte_string_ranks`), without building a Python string per row.
"""
from __future__ import annotations

import re

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int64)


class RowSort:
    """Rows sorted by one column; `order` is the sorted row array."""

    def __init__(self, store, column: str, desc: bool):
        self.store = store
        self.column = column
        self.desc = desc
        self.order = _EMPTY
        self.keyed = 0          # rows whose sort key was computed (each row once)

    def merge(self, new: np.ndarray) -> None:
        """Merge rows `new` (ascending, all after every row merged so far)."""
        raise NotImplementedError


class NumericSort(RowSort):
    """No., Time, Length: int64 keys (negated when descending), kept sorted beside `order`."""

    def __init__(self, store, column, desc):
        super().__init__(store, column, desc)
        self.keys = _EMPTY

    def row_keys(self, rows: np.ndarray) -> np.ndarray:
        st = self.store
        self.keyed += len(rows)
        if self.column == "No.":
            k = rows.astype(np.int64, copy=True)
        elif self.column == "Time":
            k = st.ts[rows].astype(np.int64)
        else:
            k = st.origlen[rows].astype(np.int64)
        return -k if self.desc else k

    def merge(self, new):
        k = self.row_keys(new)
        idx = np.argsort(k, kind="stable")
        k = k[idx]
        if not len(self.order):
            self.order, self.keys = new[idx], k
            return
        # side="right": among equal keys the new rows (later in capture order) go last
        pos = np.searchsorted(self.keys, k, side="right")
        self.order = np.insert(self.order, pos, new[idx])
        self.keys = np.insert(self.keys, pos, k)


class CodeSort(RowSort):
    """A column of interned string ids.  Kept: the count of sorted rows per id.  A new row
    with value rank r goes after every sorted row of rank <= r (ascending) or >= r
    (descending): one cumulative sum over the distinct values in value order."""

    def __init__(self, store, column, desc):
        super().__init__(store, column, desc)
        self.counts = _EMPTY
        st = store
        if column == "Protocol":
            self.col, self.strings, self.key = st.proto, st.protos, None
        elif column == "Source":
            self.col, self.strings, self.key = st.src, st.addrs, natural_key
        elif column == "Destination":
            self.col, self.strings, self.key = st.dst, st.addrs, natural_key
        else:
            self.col, self.strings, self.key = st.info, st.infos, None

    def codes(self, rows: np.ndarray) -> np.ndarray:
        self.keyed += len(rows)
        return self.col.take(rows).astype(np.int64)

    def merge(self, new):
        self.merge_codes(new, self.codes(new))

    def merge_codes(self, new: np.ndarray, codes: np.ndarray) -> None:
        perm = self.strings.sorted_ids(self.key)      # ids in value order (read after the codes)
        d = len(perm)
        rank = np.empty(d, dtype=np.int64)
        rank[perm] = np.arange(d, dtype=np.int64)
        r = rank[codes]
        idx = np.argsort(-r if self.desc else r, kind="stable")
        r = r[idx]
        counts = self.counts
        if len(counts) < d:
            counts = np.concatenate([counts, np.zeros(d - len(counts), dtype=np.int64)])
        if not len(self.order):
            self.order = new[idx]
        else:
            c = counts[perm]                        # sorted rows per value, in value order
            le = np.cumsum(c)                       # sorted rows with rank <= r
            pos = (len(self.order) - (le[r] - c[r])) if self.desc else le[r]
            self.order = np.insert(self.order, pos, new[idx])
        self.counts = counts + np.bincount(codes, minlength=len(counts))[:len(counts)]


class InfoSort(CodeSort):
    """Info: interned ids (as CodeSort) until a row's text lives in the store's arena
    (code < 0, past the interning limit); from then on, texts are compared."""

    BISECT_MAX = 4.0        # binary search while B * log2(N) <= N / BISECT_MAX, else re-rank

    def __init__(self, store, column, desc):
        super().__init__(store, column, desc)
        self.text_mode = False
        self.ocodes = None          # info codes of `order` (text mode)
        self.texts_read = 0         # texts read to place new rows (tests)

    def merge(self, new):
        codes = self.codes(new)
        if not self.text_mode and not (len(codes) and codes.min() < 0):
            self.merge_codes(new, codes)
            return
        if not self.text_mode:
            self.text_mode = True
            self.ocodes = self.col.take(self.order).astype(np.int64) if len(self.order) else _EMPTY
            self.counts = _EMPTY
        n, b = len(self.order), len(new)
        if not n or b * (np.log2(n) + 1) * self.BISECT_MAX > n:
            self._rerank(np.concatenate([self.order, new]), np.concatenate([self.ocodes, codes]))
        else:
            self._bisect(new, codes)

    def _rerank(self, rows: np.ndarray, codes: np.ndarray) -> None:
        """Full sort of `rows` by text (numpy over the bytes), ties in capture order."""
        by_row = np.argsort(rows, kind="stable")
        rows, codes = rows[by_row], codes[by_row]
        rank = info_ranks(self.store, codes)
        idx = np.argsort(-rank if self.desc else rank, kind="stable")
        self.order, self.ocodes = rows[idx], codes[idx]

    def _bisect(self, new: np.ndarray, codes: np.ndarray) -> None:
        st = self.store
        text = st.info_text
        texts = [text(int(c)) for c in codes]
        self.texts_read += len(texts)
        idx = sorted(range(len(texts)), key=texts.__getitem__, reverse=self.desc)   # stable
        ocodes = self.ocodes
        n = len(ocodes)
        pos = np.empty(len(idx), dtype=np.int64)
        lo = 0
        prev = None
        read = 0
        for j, i in enumerate(idx):
            t = texts[i]
            if t != prev:
                hi = n
                # first sorted row that a new row with text t goes before
                while lo < hi:
                    mid = (lo + hi) >> 1
                    u = text(int(ocodes[mid]))
                    read += 1
                    if (u >= t) if self.desc else (u <= t):
                        lo = mid + 1
                    else:
                        hi = mid
                prev = t
            pos[j] = lo
        self.texts_read += read
        idx = np.asarray(idx, dtype=np.int64)
        self.order = np.insert(self.order, pos, new[idx])
        self.ocodes = np.insert(ocodes, pos, codes[idx])


def make_sort(store, column: str, desc: bool) -> RowSort:
    if column in ("No.", "Time", "Length"):
        return NumericSort(store, column, desc)
    if column == "Info":
        return InfoSort(store, column, desc)
    return CodeSort(store, column, desc)


_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> list:
    """"1/5" before "1/12": digit runs compare as numbers (addresses)."""
    parts: list = _DIGITS.split(text)
    parts[1::2] = [int(x) for x in parts[1::2]]
    return parts


# --------------------------------------------------------------------------- text ranks

def info_ranks(store, codes: np.ndarray) -> np.ndarray:
    """Dense rank of each Info code's text among the texts of `codes` (equal texts, equal
    rank; order of Python strings).  Interned texts are encoded once per distinct id
    (at most the interning limit); arena texts are ranked in place over the arena bytes."""
    codes = np.asarray(codes, dtype=np.int64)
    m = len(codes)
    if not m:
        return _EMPTY
    inter = codes >= 0
    uniq, inv = np.unique(codes[inter], return_inverse=True)
    values = store.infos.values
    enc = [values[int(c)].encode("utf-8", "surrogatepass") for c in uniq]
    ilens = np.fromiter((len(x) for x in enc), dtype=np.int64, count=len(enc))
    istarts = np.concatenate([[0], np.cumsum(ilens)[:-1]]).astype(np.int64) if len(enc) else _EMPTY
    ibuf = np.frombuffer(b"".join(enc) + b"\0", dtype=np.uint8)
    # arena entries: read the end offsets first, then the arena (writes come before ends)
    k = -1 - codes[~inter]
    nends = int(k.max()) + 1 if len(k) else 0
    ends = np.frombuffer(store._info_ends[:nends], dtype=np.int64) if nends else _EMPTY
    arena = store._info
    ostarts = np.where(k > 0, ends[np.maximum(k - 1, 0)], 0) if len(k) else _EMPTY
    olens = ends[k] - ostarts if len(k) else _EMPTY
    # one element per distinct interned text, then one per arena row
    ni = len(uniq)
    starts = np.concatenate([istarts, ostarts])
    lens = np.concatenate([ilens, olens])
    src = np.zeros(len(starts), dtype=bool)
    src[ni:] = True
    erank = byte_string_ranks((ibuf, arena), src, starts, lens)
    out = np.empty(m, dtype=np.int64)
    out[inter] = erank[:ni][inv.reshape(-1)]
    out[~inter] = erank[ni:]
    return out


def byte_string_ranks(bufs, src: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Dense ranks of byte strings (bytewise order, a prefix first; for UTF-8 that is the
    order of the code points, i.e. Python's str order).  String e is
    bufs[src[e]][starts[e]:starts[e] + lens[e]].  Most-significant-digit radix refinement
    in numpy: sort by 7 bytes at a time, then refine only the groups still tied."""
    m = len(starts)
    perm = np.arange(m, dtype=np.int64)
    first = np.zeros(m, dtype=bool)         # first[p]: position p starts a group of equal strings
    if not m:
        return _EMPTY
    first[0] = True
    active = np.arange(m, dtype=np.int64)   # positions (in perm) of the groups still tied
    depth = 0
    while len(active):
        el = perm[active]
        key = _word(bufs, src[el], starts[el], lens[el], depth * 7)
        gid = np.cumsum(first)[active]      # groups are contiguous runs of positions
        o = np.lexsort((key, gid))
        perm[active] = el[o]
        key, gid = key[o], gid[o]
        b = np.ones(len(o), dtype=bool)
        b[1:] = (gid[1:] != gid[:-1]) | (key[1:] != key[:-1])
        first[active] = b
        # still tied: groups of more than one string that go on past these 7 bytes
        gstart = np.flatnonzero(b)
        size = np.diff(np.append(gstart, len(o)))
        more = (size > 1) & ((key[gstart] & 15) == 8)
        active = active[np.repeat(more, size)]
        depth += 1
    rank_at = np.cumsum(first) - 1
    out = np.empty(m, dtype=np.int64)
    out[perm] = rank_at
    return out


def _word(bufs, src, starts, lens, off: int) -> np.ndarray:
    """7 bytes of each string from `off` (zero past its end) << 4 | min(bytes left, 8)."""
    rem = lens - off
    word = np.zeros(len(starts), dtype=np.uint64)
    for j in range(7):
        valid = rem > j
        p = starts + (off + j)
        byte = np.zeros(len(starts), dtype=np.uint64)
        for s, buf in enumerate(bufs):
            m = valid & (src == s)
            if m.any():
                byte[m] = buf[p[m]]
        word = (word << np.uint64(8)) | byte
    return (word << np.uint64(4)) | np.minimum(np.maximum(rem, 0), 8).astype(np.uint64)
