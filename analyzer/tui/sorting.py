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
        self.decoding: tuple = ()   # the session's decoding generation it was made in

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
        # the store's attributes (read at each merge: decoding again replaces them)
        self.col_name, self.strings_name, self.key = {
            "Protocol": ("proto", "protos", None), "Source": ("src", "addrs", natural_key),
            "Destination": ("dst", "addrs", natural_key)}.get(column, ("info", "infos", None))

    @property
    def col(self):
        return getattr(self.store, self.col_name)

    @property
    def strings(self):
        return getattr(self.store, self.strings_name)

    def codes(self, rows: np.ndarray) -> np.ndarray:
        self.keyed += len(rows)
        return self.col.take(rows)

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
    (code < 0, past the interning limit); from then on, texts are compared (bytewise over
    the UTF-8 bytes, which is the order of Python strings), vectorised with numpy."""

    # binary search while B * (log2(N) + 1) * BISECT_MAX <= N, else rank all texts again
    # (measured on 1M rows: about 26 us per new row searched, 3 us per row ranked)
    BISECT_MAX = 0.5

    def __init__(self, store, column, desc):
        super().__init__(store, column, desc)
        self.text_mode = False
        self.ocodes = None          # info codes of `order` (text mode)
        self.texts = None           # TextTable (text mode)
        self.probes = 0             # (new row, sorted row) comparisons to place new rows (tests)
        self.words_read = 0         # 7-byte words of sorted rows read for them (tests)

    def merge(self, new):
        codes = self.codes(new)
        if not self.text_mode and not (len(codes) and codes.min() < 0):
            self.merge_codes(new, codes)
            return
        if not self.text_mode:
            self.text_mode = True
            self.ocodes = self.col.take(self.order) if len(self.order) else _EMPTY
            self.counts = _EMPTY
        if self.texts is None:
            self.texts = TextTable(self.store)
        self.texts.refresh()
        n, b = len(self.order), len(new)
        if not n or b * (np.log2(n) + 1) * self.BISECT_MAX > n:
            self._rerank(np.concatenate([self.order, new]), np.concatenate([self.ocodes, codes]))
        else:
            self._bisect(new, codes)

    def _rerank(self, rows: np.ndarray, codes: np.ndarray) -> None:
        """Full sort of `rows` by text (numpy over the bytes), ties in capture order."""
        by_row = np.argsort(rows, kind="stable")
        rows, codes = rows[by_row], codes[by_row]
        del by_row
        rank = self.texts.ranks(codes)
        idx = np.argsort(-rank if self.desc else rank, kind="stable")
        del rank
        self.order, self.ocodes = rows[idx], codes[idx]

    def _bisect(self, new: np.ndarray, codes: np.ndarray) -> None:
        """Place each new row after the sorted rows whose text is <= its own (ascending;
        >= descending): one binary search per distinct new text, all at once."""
        tt = self.texts
        rank = tt.ranks(codes)                       # the batch among itself
        idx = np.argsort(-rank if self.desc else rank, kind="stable")
        codes, new, rank = codes[idx], new[idx], rank[idx]
        head = np.flatnonzero(np.concatenate([[True], rank[1:] != rank[:-1]]))
        q = tt.locate(codes[head])                   # the distinct new texts
        qw = tt.words(*q, 0, int(q[2].max()) // 7 + 2)     # all their words, once
        ocodes = self.ocodes
        lo = np.zeros(len(head), dtype=np.int64)
        hi = np.full(len(head), len(ocodes), dtype=np.int64)
        # words each new text shares with the sorted rows just outside [lo, hi): every row
        # inside shares them too, so comparisons start after them
        dlo = np.zeros(len(head), dtype=np.int64)
        dhi = np.zeros(len(head), dtype=np.int64)
        act = np.arange(len(head))
        while len(act):
            mid = (lo[act] + hi[act]) >> 1
            self.probes += len(act)
            c, deq = tt.compare(qw[act], tt.locate(ocodes[mid]),
                                np.minimum(dlo[act], dhi[act]))      # sign(new - sorted)
            self.words_read += tt.last_words
            right = (c <= 0) if self.desc else (c >= 0)
            lo[act[right]] = mid[right] + 1
            dlo[act[right]] = deq[right]
            hi[act[~right]] = mid[~right]
            dhi[act[~right]] = deq[~right]
            act = act[lo[act] < hi[act]]
        pos = np.repeat(lo, np.diff(np.append(head, len(codes))))
        self.order = np.insert(self.order, pos, new)
        self.ocodes = np.insert(ocodes, pos, codes)


class TextTable:
    """Where the text of each Info code is, as bytes: interned texts encoded once (UTF-8)
    into one buffer, arena texts in the store's arena (read in place).  Element e is
    buffer src[e] (0 interned, 1 arena) at start[e], len[e] bytes; both buffers have 8
    readable bytes past every text (one 8-byte gather per word)."""

    def __init__(self, store):
        self.store = store
        self.n_interned = -1
        self.ends = _EMPTY
        self.last_words = 0

    def refresh(self) -> None:
        st = self.store
        if st.infos is not getattr(self, "_infos", None) or st._info_ends is not getattr(self, "_ends", None):
            self._infos, self._ends = st.infos, st._info_ends      # decoding started again
            self.n_interned = -1
            self.ends = _EMPTY
        values = st.infos.values
        if len(values) != self.n_interned:
            n = len(values)
            enc = [values[i].encode("utf-8", "surrogatepass") for i in range(n)]
            self.ilen = np.fromiter(map(len, enc), dtype=np.int64, count=n)
            self.istart = np.zeros(n, dtype=np.int64)
            np.cumsum(self.ilen[:-1], out=self.istart[1:])
            self.ibuf = np.frombuffer(b"".join(enc) + bytes(8), dtype=np.uint8)
            self.n_interned = n
        ends = st._info_ends                     # end offsets first, then the arena
        k = len(self.ends)
        if len(ends) > k:
            self.ends = np.concatenate([self.ends, np.frombuffer(ends[k:], dtype=np.int64)])
        self.arena = st._info if len(st._info) >= 8 else np.zeros(8, dtype=np.uint8)
        self.bufs = (self.ibuf, self.arena)
        # grid[j]: the 8 bytes from offset j as one (unaligned, little-endian) integer —
        # a view with a stride of one byte, no copy; byte-swapped after the gather
        self.grids = [np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
                      for buf in self.bufs]

    def locate(self, codes: np.ndarray):
        """(src, start, length) of the text of each code."""
        codes = np.asarray(codes)
        src = codes < 0
        start = np.empty(len(codes), dtype=np.int64)
        length = np.empty(len(codes), dtype=np.int64)
        inter = ~src
        c = codes[inter]
        start[inter] = self.istart[c]
        length[inter] = self.ilen[c]
        del c, inter
        if src.any():
            k = (-1 - codes[src]).astype(np.int64)
            end = self.ends[k]
            k -= 1
            s0 = np.where(k >= 0, self.ends[k], 0)     # k = -1 (the first text) reads ends[-1]: masked
            start[src] = s0
            end -= s0
            length[src] = end
        return src, start, length

    CHUNK = 1 << 16         # strings per step of `word` (bounds its temporaries)
    PY_RANKS = 16384        # up to this many texts, `ranks` sorts Python strings

    def word(self, src, start, length, depth) -> np.ndarray:
        """Bytes 7*depth .. 7*depth+6 of each string (zero past its end), shifted left by
        4, | min(bytes left, 8): equal words with 8 mean "the strings go on".  `depth`:
        one for all, or one per string."""
        return self.words(src, start, length, depth, 1).reshape(-1)

    def words(self, src, start, length, depth, k: int) -> np.ndarray:
        """`word` at depths depth .. depth+k-1: an (n, k) array."""
        n = len(start)
        out = np.empty((n, k), dtype=np.uint64)
        steps = 7 * np.arange(k, dtype=np.int64)
        deep = np.ndim(depth) > 0
        chunk = max(1, self.CHUNK // k)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            off = 7 * (depth[a:b] if deep else np.full(b - a, depth, dtype=np.int64))
            ln = length[a:b]
            rem = (ln - off)[:, None] - steps                   # bytes left at each word
            p = (start[a:b] + np.minimum(off, ln))[:, None] + np.clip(steps, None, np.maximum(ln - off, 0)[:, None])
            w = out[a:b]
            self._gather(w, src[a:b], p)
            w >>= np.uint64(8)                                  # 7 bytes
            sh = np.clip(7 - rem, 0, 7).astype(np.uint64)
            sh <<= np.uint64(3)
            w >>= sh                                            # zero the bytes past the end
            w <<= sh
            w <<= np.uint64(4)
            w |= np.clip(rem, 0, 8).astype(np.uint64)
        return out

    def _gather(self, w: np.ndarray, sc: np.ndarray, p: np.ndarray) -> None:
        """w[i] = the 8 bytes at position p[i] of grid sc[i], first byte most significant."""
        grids = self.grids
        if sc.all() or not sc.any():
            w[:] = grids[int(sc[0])][p]
        else:
            for g, grid in enumerate(grids):
                m = sc == g
                w[m] = grid[p[m]]
        w.byteswap(inplace=True)

    def prefix(self, src, start, length, off: int, nb: int) -> np.ndarray:
        """Bytes off .. off+nb-1 of each string (nb <= 7; zero past its end), shifted left
        by 4, | min(bytes left, nb + 1): equal keys with nb + 1 mean "the strings go on"."""
        n = len(start)
        out = np.empty(n, dtype=np.uint64)
        top = np.uint64(64 - 8 * nb)
        for a in range(0, n, self.CHUNK):
            b = min(n, a + self.CHUNK)
            rem = length[a:b] - off
            p = start[a:b] + off
            w = out[a:b]
            self._gather(w, src[a:b], p)
            w >>= top                                           # nb bytes
            sh = np.clip(nb - rem, 0, nb).astype(np.uint64)
            sh <<= np.uint64(3)
            w >>= sh                                            # zero the bytes past the end
            w <<= sh
            w <<= np.uint64(4)
            w |= np.clip(rem, 0, nb + 1).astype(np.uint64)
        return out

    def compare(self, qw: np.ndarray, b, depth=0, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """(sign(a - b), words equal before the decision) per pair of strings: a given by
        all its words (`qw`, one row per pair, from `words`), b as (src, start, length).
        Compares from word `depth` on (one for all, or one per pair: known equal before
        it), k words per round."""
        n = len(qw)
        out = np.zeros(n, dtype=np.int8)
        d = np.zeros(n, dtype=np.int64) + depth
        u = np.arange(n)
        last = qw.shape[1] - 1
        steps = np.arange(k)
        words = 0
        while len(u):
            du = d[u]
            if words:           # the pairs left share long prefixes: their words at once
                steps = np.arange(max(k, int(last - du.min()) + 1))
            ka = qw[u[:, None], np.minimum(du[:, None] + steps, last)]
            kb = self.words(*(x[u] for x in b), du, len(steps))
            words += kb.size
            go = (ka == kb) & ((ka & np.uint64(15)) == 8)
            j = np.argmin(go, axis=1)                           # first word that decides
            r = np.arange(len(u))
            done = ~go[r, j]
            r, jd = r[done], j[done]
            out[u[done]] = (ka[r, jd] > kb[r, jd]).astype(np.int8) - (ka[r, jd] < kb[r, jd])
            d[u[done]] += jd
            d[u[~done]] += len(steps)
            u = u[~done]
        self.last_words = words
        return out, d

    def ranks(self, codes: np.ndarray) -> np.ndarray:
        """Dense rank of each code's text among the texts of `codes` (equal texts, equal
        rank).  Interned codes are ranked once per distinct id."""
        codes = np.asarray(codes)
        if not len(codes):
            return _EMPTY
        if len(codes) <= self.PY_RANKS:     # a small batch: Python strings are cheaper
            text = self.store.info_text
            uniq, inv = np.unique(codes, return_inverse=True)
            texts = [text(int(c)) for c in uniq]
            by_text = sorted(range(len(texts)), key=texts.__getitem__)
            dense = np.zeros(len(texts), dtype=np.int64)
            for a, b in zip(by_text, by_text[1:]):
                dense[b] = dense[a] + (texts[b] != texts[a])
            return dense[inv.reshape(-1)]
        inter = codes >= 0
        uniq, inv = np.unique(codes[inter], return_inverse=True)
        ni = len(uniq)
        src, start, length = self.locate(np.concatenate([uniq, codes[~inter]]))
        erank = byte_string_ranks(self, src, start, length)
        out = np.empty(len(codes), dtype=np.int64)
        out[inter] = erank[:ni][inv.reshape(-1)]
        out[~inter] = erank[ni:]
        return out


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
    """Dense rank of each Info code's text among the texts of `codes` (Python str order)."""
    tt = TextTable(store)
    tt.refresh()
    return tt.ranks(codes)


def byte_string_ranks(tt: TextTable, src: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Dense ranks of byte strings (bytewise order, a prefix first; for UTF-8 that is the
    order of the code points, i.e. Python's str order).  Most-significant-digit radix
    refinement in numpy: sort by the next bytes (as many as fit in one 64-bit key beside
    the group number), then refine only the groups still tied.  Memory: a few integers
    per string, no Python object per string."""
    m = len(start)
    if not m:
        return _EMPTY
    ix = np.int32 if m < 1 << 31 else np.int64
    perm = np.arange(m, dtype=ix)           # the strings in sorted order (so far)
    first = np.zeros(m, dtype=bool)         # first[p]: position p starts a group of equal strings
    first[0] = True
    # the positions still tied, and beside them (aligned) what each needs: the string's
    # number, buffer, start, length, and whether it starts its group
    pos = np.arange(m, dtype=ix)
    el, sa, st, ln = perm.copy(), src, start, length.astype(ix)
    fa = first.copy()
    off = 0                                 # bytes known equal within each tied group
    while len(pos):
        # one integer key per string: (its group, the next nb bytes, bytes left): as many
        # bytes as fit beside the group number
        gid = np.cumsum(fa, dtype=np.int64)
        gid -= 1
        nb = min(7, (60 - int(gid[-1]).bit_length()) // 8)
        key = tt.prefix(sa, st, ln, off, nb)
        key |= gid.astype(np.uint64) << np.uint64(8 * nb + 4)
        del gid
        o = np.argsort(key, kind="stable")
        key = key[o]                        # one at a time: each old array goes at once
        el = el[o]
        sa = sa[o]
        st = st[o]
        ln = ln[o]
        del o
        fa = np.ones(len(key), dtype=bool)
        fa[1:] = key[1:] != key[:-1]
        first[pos] = fa
        perm[pos] = el
        # still tied: groups of more than one string that go on past these nb bytes
        gstart = np.flatnonzero(fa)
        size = np.diff(np.append(gstart, len(key)))
        more = (size > 1) & ((key[gstart] & np.uint64(15)) == nb + 1)
        del key, gstart
        keep = np.repeat(more, size)
        del more, size
        pos = pos[keep]
        el = el[keep]
        sa = sa[keep]
        st = st[keep]
        ln = ln[keep]
        fa = fa[keep]
        del keep
        off += nb
    out = np.empty(m, dtype=np.int64)
    out[perm] = np.cumsum(first, dtype=np.int64) - 1
    return out
