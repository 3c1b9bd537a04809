"""Compact per-packet columns for the packet list (numpy arrays + interned strings).

One row per packet, in display (merged-by-time) order.  Index columns (time, file,
offset, lengths, link type) are filled by the indexer; summary columns (protocol,
addresses, info, security status) by the decoder.  Nothing else about a packet is kept:
its bytes are re-read and re-dissected on demand."""
from __future__ import annotations

import threading

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


_COLUMNS = (      # index columns: filled for every packet as the file is indexed
    ("ts", np.int64), ("offset", np.int64), ("caplen", np.int32), ("origlen", np.int32),
    ("linktype", np.uint16), ("file", np.int16),
)
_SUMMARY = (      # summary columns: allocated block by block as decoding reaches them
    ("proto", np.uint16), ("src", np.int32), ("dst", np.int32), ("stack", np.uint16),
    ("status", np.int8), ("flags", np.int8), ("assoc", np.int32), ("rawstatus", np.uint8),
    ("info_off", np.int64), ("info_len", np.int32), ("aux_off", np.int64), ("aux_len", np.int32),
)

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

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.blocks if b is not None)


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
        self._info = bytearray()           # Info texts, UTF-8, back to back
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
        for name, dt in _COLUMNS:
            old = getattr(self, name)
            new = np.zeros(cap, dtype=dt)
            new[:self.n] = old[:self.n]
            setattr(self, name, new)
        self.cap = cap

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
            self.caplen[s] = caplen
            self.origlen[s] = origlen
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
        b = info.encode("utf-8", "replace")
        self.info_off[i] = len(self._info)
        self._info += b
        self.info_len[i] = len(b)
        self.flags[i] = flags | F_DECODED      # last: readers check this flag first

    def info_at(self, i: int) -> str:
        off = int(self.info_off[i])
        return bytes(self._info[off:off + int(self.info_len[i])]).decode("utf-8", "replace")

    def forget_summaries(self) -> None:
        """Decoding starts again (new keys): rows show quick summaries until re-decoded."""
        for name, dt in _SUMMARY:
            setattr(self, name, BlockColumn(dt))
        self._info = bytearray()

    def decoded(self, i: int) -> bool:
        return bool(self.flags[i] & F_DECODED)

    def nbytes(self) -> int:
        return (sum(getattr(self, name).nbytes for name, _ in _COLUMNS + _SUMMARY) + len(self._info))
