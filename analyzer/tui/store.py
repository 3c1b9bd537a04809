"""Compact per-packet columns for the packet list (numpy arrays + interned strings).

One row per packet, in display (merged-by-time) order.  Index columns (time, file,
offset, lengths, link type) are filled by the indexer; summary columns (protocol,
addresses, info, security status) by the decoder.  Nothing else about a packet is kept:
its bytes are re-read and re-dissected on demand."""
from __future__ import annotations

import threading
from array import array
from bisect import bisect_right

import numpy as np

# security / decode status codes (column `status`)
ST_NONE, ST_PLAIN, ST_CIPHERED, ST_DECRYPTED, ST_NOKEY, ST_AUTHFAIL, ST_AUTHOK = 0, 1, 2, 3, 4, 5, 6
STATUS_NAMES = {ST_NONE: "", ST_PLAIN: "plaintext", ST_CIPHERED: "ciphered",
                ST_DECRYPTED: "decrypted", ST_NOKEY: "no key", ST_AUTHFAIL: "auth failed",
                ST_AUTHOK: "authenticated"}

# flags
F_DECODED = 1       # summary columns filled by the full pipeline
F_MALFORMED = 2
F_FINDING = 4       # a security finding / security expert item points at this packet
F_WARN = 8          # an expert item of severity warn or error

SEVERITIES = ("chat", "note", "warn", "error")


class Strings:
    """Interned strings: value <-> small integer id (id 0 is "")."""

    def __init__(self):
        self.values: list[str] = [""]
        self.ids: dict[str, int] = {"": 0}
        self._sorted: dict = {}         # key -> (sorted keys, ids, values covered, ids array)

    def id(self, s: str) -> int:
        i = self.ids.get(s)
        if i is None:
            i = self.ids[s] = len(self.values)
            self.values.append(s)
        return i

    def __getitem__(self, i: int) -> str:
        return self.values[i]

    def __len__(self):
        return len(self.values)

    def sorted_ids(self, key=None) -> np.ndarray:
        """The ids in value order (by `key`; equal keys in id order), covering every value
        interned so far.  Kept per key and extended as values are added (each new value
        is placed by bisection), so a sort does not sort all distinct values again."""
        vals = self.values
        n = len(vals)
        state = self._sorted.get(key)
        if state is not None and state[2] == n:
            return state[3]
        fn = vals.__getitem__ if key is None else (lambda i: key(vals[i]))
        if state is None or n - state[2] > max(64, state[2] >> 3):
            allkeys = [fn(i) for i in range(n)]
            ids = sorted(range(n), key=allkeys.__getitem__)
            keys = [allkeys[i] for i in ids]
        else:
            keys, ids, done, _ = state
            for i in range(done, n):
                k = fn(i)
                p = bisect_right(keys, k)
                keys.insert(p, k)
                ids.insert(p, i)
        arr = np.asarray(ids, dtype=np.int64)
        self._sorted[key] = (keys, ids, n, arr)
        return arr

    def ranks(self, key=None) -> np.ndarray:
        """rank[id]: the position of value `id` among all values sorted (by `key`), so that
        a column of ids sorts by value with one numpy gather."""
        ids = self.sorted_ids(key)
        r = np.empty(len(ids), dtype=np.int64)
        r[ids] = np.arange(len(ids), dtype=np.int64)
        return r


_COLUMNS = (      # index columns: filled for every packet as the file is indexed
    ("ts", np.int64), ("offset", np.int64), ("origlen", np.int32),
    ("linktype", np.uint16), ("file", np.int16),
)
_SUMMARY = (      # summary columns: allocated block by block as decoding reaches them
    ("proto", np.uint16), ("src", np.int32), ("dst", np.int32), ("stack", np.uint16),
    ("status", np.int8), ("flags", np.int8), ("assoc", np.int32), ("rawstatus", np.uint8),
    ("info", np.int32), ("aux_off", np.int64), ("aux_len", np.int32),
)
# Info texts are interned (a capture repeats a few hundred distinct summaries); past this
# many distinct texts, new ones go to a byte arena instead (4 bytes per row + the text).
INFO_INTERN_MAX = 65536

BLOCK_BITS = 16
BLOCK = 1 << BLOCK_BITS


class BlockColumn:
    """A column allocated in blocks of 65,536 rows when first written (rows never decoded
    cost nothing).  Supports x[i], x[i] = v, x[a:b] (a new array) and x[:] = 0."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.blocks: list = []

    def _block(self, k: int):
        blocks = self.blocks
        while len(blocks) <= k:
            blocks.append(None)
        b = blocks[k]
        if b is None:
            b = blocks[k] = np.zeros(BLOCK, dtype=self.dtype)
        return b

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self.blocks) * BLOCK if i.stop is None else max(i.stop, 0))
            out = np.zeros(max(0, stop - start), dtype=self.dtype)
            k = start >> BLOCK_BITS
            pos = start
            while pos < stop:
                b = self.blocks[k] if k < len(self.blocks) else None
                lo = pos - (k << BLOCK_BITS)
                hi = min(BLOCK, stop - (k << BLOCK_BITS))
                if b is not None:
                    out[pos - start:pos - start + hi - lo] = b[lo:hi]
                pos += hi - lo
                k += 1
            return out[::step] if step != 1 else out
        k = i >> BLOCK_BITS
        b = self.blocks[k] if k < len(self.blocks) else None
        return self.dtype.type(0) if b is None else b[i & (BLOCK - 1)]

    def __setitem__(self, i, v):
        if isinstance(i, slice):
            if i == slice(None) and not np.any(v):
                self.blocks = []
                return
            start, stop, _ = i.indices(len(self.blocks) * BLOCK)
            for r in range(start, stop):
                self[r] = v
            return
        self._block(i >> BLOCK_BITS)[i & (BLOCK - 1)] = v

    def put(self, rows: np.ndarray, values: np.ndarray) -> None:
        """x[rows] = values, vectorised per block."""
        if not len(rows):
            return
        ks = rows >> BLOCK_BITS
        for k in np.unique(ks):
            m = ks == k
            self._block(int(k))[rows[m] & (BLOCK - 1)] = values[m]

    def take(self, rows: np.ndarray, n: int | None = None) -> np.ndarray:
        """Values at `rows`, vectorised per block (only the blocks holding `rows` are read)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros(len(rows), dtype=self.dtype)
        if not len(rows):
            return out
        ks = rows >> BLOCK_BITS
        blocks = self.blocks
        if len(rows) < 2 or np.all(ks[1:] >= ks[:-1]):      # ascending: one slice per block
            cut = np.flatnonzero(ks[1:] != ks[:-1]) + 1
            for a, b in zip(np.concatenate([[0], cut]), np.concatenate([cut, [len(rows)]])):
                k = int(ks[a])
                blk = blocks[k] if k < len(blocks) else None
                if blk is not None:
                    out[a:b] = blk[rows[a:b] & (BLOCK - 1)]
            return out
        for k in np.unique(ks):
            blk = blocks[int(k)] if int(k) < len(blocks) else None
            if blk is not None:
                m = ks == k
                out[m] = blk[rows[m] & (BLOCK - 1)]
        return out

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.blocks if b is not None)


class CapturedLength:
    """`store.caplen[i]`: the captured length, kept only for the rows where it differs
    from the length on the wire (a truncated capture), as caplen + 1 in a block column:
    full-length captures cost nothing for it."""

    def __init__(self, store: "ColumnStore"):
        self.store = store
        self.short = BlockColumn(np.int32)

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self.store.n)
            v = self.short[start:stop].astype(np.int64)
            out = np.where(v > 0, v - 1, self.store.origlen[start:stop])
            return out[::step] if step != 1 else out
        v = int(self.short[i])
        return np.int64(v - 1) if v else np.int64(self.store.origlen[i])

    @property
    def nbytes(self) -> int:
        return self.short.nbytes


class ColumnStore:
    """Growable columns.  Appends happen in one (worker) thread; readers in the UI thread
    see either the old or the new array objects, both valid up to the old length."""

    def __init__(self, capacity: int = 1024):
        self.n = 0
        self.cap = capacity
        for name, dt in _COLUMNS:
            setattr(self, name, np.zeros(capacity, dtype=dt))
        for name, dt in _SUMMARY:
            setattr(self, name, BlockColumn(dt))
        self.caplen = CapturedLength(self)
        self.infos = Strings()             # interned Info texts (column `info` >= 0)
        # Info texts past INFO_INTERN_MAX, UTF-8, back to back: a numpy arena that grows by
        # copying into a larger one (readers keep a valid old array, as for the columns)
        self._info = np.zeros(0, dtype=np.uint8)
        self._info_len = 0
        self._info_ends = array("q")       # end offset in _info of overflow text k (info = -1 - k)
        self.protos = Strings()            # protocol column values (and stacks below)
        self.addrs = Strings()
        self.stacks = Strings()            # "eth:ip:tcp:wrapper:dlms"
        self.statuses = Strings()          # the pipeline's own status words (d.status)
        self.lock = threading.Lock()

    def _grow(self, need: int):
        cap = self.cap
        while cap < need:
            cap *= 2
        if cap == self.cap:
            return
        self._realloc(cap)

    def _realloc(self, cap: int) -> None:
        for name, _ in _COLUMNS:
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[:self.n] = old[:self.n]
            setattr(self, name, new)
        self.cap = cap

    def narrow_offsets(self) -> None:
        """File offsets fit 32 bits (every file is under 4 GiB and none grows): 4 bytes
        less per packet.  Only before the first row is indexed."""
        with self.lock:
            if self.n == 0:
                self.offset = np.zeros(self.cap, dtype=np.uint32)

    def reserve(self, rows: int) -> None:
        """Allocate room for `rows` rows at once (an estimate from the file size avoids
        the doubling overshoot on very large captures)."""
        with self.lock:
            if rows > self.cap:
                self._realloc(rows)

    def append_index(self, ts, offset, caplen, origlen, linktype, file: int) -> None:
        k = len(ts)
        with self.lock:
            self._grow(self.n + k)
            s = slice(self.n, self.n + k)
            self.ts[s] = ts
            self.offset[s] = offset
            self.origlen[s] = origlen
            cut = np.flatnonzero(np.asarray(caplen) != np.asarray(origlen))
            if len(cut):
                self.caplen.short.put(cut + self.n, np.asarray(caplen)[cut].astype(np.int32) + 1)
            self.linktype[s] = linktype
            self.file[s] = file
            self.n += k

    def set_summary(self, i: int, proto: str, src: str, dst: str, stack: str, info: str,
                    status: int, flags: int) -> None:
        self.proto[i] = min(self.protos.id(proto), 65535)
        self.src[i] = self.addrs.id(src)
        self.dst[i] = self.addrs.id(dst)
        self.stack[i] = min(self.stacks.id(stack), 65535)
        self.status[i] = status
        self.info[i] = self.info_code(info)
        self.flags[i] = flags | F_DECODED      # last: readers check this flag first

    def info_code(self, text: str) -> int:
        infos = self.infos
        k = infos.ids.get(text)
        if k is not None:
            return k
        if len(infos) < INFO_INTERN_MAX:
            return infos.id(text)
        b = text.encode("utf-8", "replace")
        start = self._info_len
        end = start + len(b)
        arena = self._info
        if end + 8 > len(arena):          # 8 spare bytes: a reader gathers 8 at a time
            grown = np.zeros(max(end + 8, 2 * len(arena), 1 << 16), dtype=np.uint8)
            grown[:start] = arena[:start]
            self._info = arena = grown
        arena[start:end] = np.frombuffer(b, dtype=np.uint8)
        self._info_len = end
        self._info_ends.append(end)            # last: readers see whole texts only
        return -len(self._info_ends)

    def info_text(self, code: int) -> str:
        try:
            if code >= 0:
                return self.infos.values[code]
            k = -1 - code
            start = self._info_ends[k - 1] if k else 0
            end = self._info_ends[k]
            return self._info[start:end].tobytes().decode("utf-8", "replace")
        except IndexError:          # decoding restarted under the reader (new keys)
            return ""

    def info_at(self, i: int) -> str:
        return self.info_text(int(self.info[i]))

    def forget_summaries(self) -> None:
        """Decoding starts again (new keys): rows show quick summaries until re-decoded."""
        for name, dt in _SUMMARY:
            setattr(self, name, BlockColumn(dt))
        self.infos = Strings()
        self._info = np.zeros(0, dtype=np.uint8)
        self._info_len = 0
        self._info_ends = array("q")

    def decoded(self, i: int) -> bool:
        return bool(self.flags[i] & F_DECODED)

    def nbytes(self) -> int:
        return (sum(getattr(self, name).nbytes for name, _ in _COLUMNS + _SUMMARY) + self._info_len
                + self.caplen.nbytes
                + self._info_ends.itemsize * len(self._info_ends))
