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


_COLUMNS = (
    ("ts", np.int64), ("offset", np.int64), ("caplen", np.int32), ("origlen", np.int32),
    ("linktype", np.uint16), ("file", np.int16), ("proto", np.uint16), ("src", np.int32),
    ("dst", np.int32), ("stack", np.uint16), ("status", np.int8), ("flags", np.int8), ("assoc", np.int32),
    ("rawstatus", np.uint8),
)


class ColumnStore:
    """Growable columns.  Appends happen in one (worker) thread; readers in the UI thread
    see either the old or the new array objects, both valid up to the old length."""

    def __init__(self, capacity: int = 1024):
        self.n = 0
        self.cap = capacity
        for name, dt in _COLUMNS:
            setattr(self, name, np.zeros(capacity, dtype=dt))
        self.info: list[str] = []          # filled by the decoder (may lag behind n)
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
                for name, dt in _COLUMNS:
                    old = getattr(self, name)
                    new = np.zeros(rows, dtype=dt)
                    new[:self.n] = old[:self.n]
                    setattr(self, name, new)
                self.cap = rows

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
        self.flags[i] = flags | F_DECODED
        info_list = self.info
        if i == len(info_list):
            info_list.append(info)
        elif i < len(info_list):
            info_list[i] = info
        else:
            info_list.extend([""] * (i - len(info_list)))
            info_list.append(info)

    def decoded(self, i: int) -> bool:
        return bool(self.flags[i] & F_DECODED) and i < len(self.info)

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name, _ in _COLUMNS)
