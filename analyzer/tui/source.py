"""Capture sources for the TUI: an offset index over pcap/pcapng files so that millions of
packets can be listed without keeping their bytes in memory.

Indexing keeps, per record, only its time, file offset, lengths and link type; a packet's
bytes are re-read from the mapped file when it is shown or re-dissected.  Compressed files
are decompressed once into memory and indexed the same way; formats without a record layout
we can index (sniffer logs) are read through `analyzer.capture.read_capture` and kept as
records.
"""
from __future__ import annotations

import gzip
import mmap
import os
import struct
import threading
from typing import Iterator

import numpy as np

from analyzer.packet import Record

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),        # microseconds, little endian
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),           # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


class Chunk:
    """Index entries of consecutive records (numpy arrays of equal length)."""
    __slots__ = ("ts", "offset", "caplen", "origlen", "linktype")

    def __init__(self, ts, offset, caplen, origlen, linktype):
        self.ts = np.asarray(ts, dtype=np.int64)
        self.offset = np.asarray(offset, dtype=np.int64)
        self.caplen = np.asarray(caplen, dtype=np.int32)
        self.origlen = np.asarray(origlen, dtype=np.int32)
        self.linktype = np.asarray(linktype, dtype=np.int32)

    def __len__(self):
        return len(self.ts)


class Indexer:
    """Incremental record indexer over a bytes-like buffer (mmap or bytes).

    `scan(buf, limit)` indexes up to `limit` records starting at `self.pos`.  It stops
    quietly before an incomplete record at the end of the buffer (`self.at_end`; a growing
    file may complete it later) and sets `self.error` on damage (reading stops there)."""

    def __init__(self):
        self.kind: str | None = None     # "pcap" | "pcapng"
        self.endian = "<"
        self.pos = 0
        self.error: str | None = None
        self.at_end = False
        self.scale = 1000                # pcap: ns per fraction unit
        self.linktype = 1
        self.ifaces: list[tuple[int, int, int]] = []   # pcapng: (linktype, mul, div) to ns
        self.drops = 0                   # pcapng interface statistics: packets dropped

    # -- header
    def _header(self, buf) -> bool:
        n = len(buf)
        if n < 4:
            return False
        magic = bytes(buf[0:4])
        if magic in PCAP_MAGICS:
            if n < 24:
                return False
            self.kind = "pcap"
            self.endian, self.scale = PCAP_MAGICS[magic]
            self.linktype = struct.unpack_from(self.endian + "I", buf, 20)[0] & 0x0FFFFFFF
            self.pos = 24
            return True
        if magic == PCAPNG_SHB:
            if n < 12:
                return False
            bom = bytes(buf[8:12])
            if bom == b"\x4d\x3c\x2b\x1a":
                self.endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                self.endian = ">"
            else:
                self.error = "pcapng section header has a bad byte-order magic"
                return False
            self.kind = "pcapng"
            self.pos = 0
            return True
        self.error = "not a pcap or pcapng file"
        return False

    def scan(self, buf, limit: int = 50000) -> Chunk:
        ts: list[int] = []
        off: list[int] = []
        cap: list[int] = []
        orig: list[int] = []
        lt: list[int] = []
        self.at_end = False
        if self.error is None and self.kind is None and not self._header(buf):
            self.at_end = True
            return Chunk(ts, off, cap, orig, lt)
        if self.error is not None:
            return Chunk(ts, off, cap, orig, lt)
        if self.kind == "pcap":
            self._scan_pcap(buf, limit, ts, off, cap, orig, lt)
        else:
            self._scan_pcapng(buf, limit, ts, off, cap, orig, lt)
        return Chunk(ts, off, cap, orig, lt)

    def _scan_pcap(self, buf, limit, ts, off, cap, orig, lt):
        unpack = struct.Struct(self.endian + "IIII").unpack_from
        n = len(buf)
        pos = self.pos
        scale = self.scale
        link = self.linktype
        count = 0
        while count < limit:
            if pos + 16 > n:
                self.at_end = True
                break
            sec, frac, incl, olen = unpack(buf, pos)
            if incl > 0x4000000:
                self.error = f"damaged record header at offset {pos} (captured length {incl})"
                break
            if pos + 16 + incl > n:
                self.at_end = True
                break
            ts.append(sec * 1_000_000_000 + frac * scale)
            off.append(pos + 16)
            cap.append(incl)
            orig.append(olen)
            lt.append(link)
            pos += 16 + incl
            count += 1
        self.pos = pos

    def _scan_pcapng(self, buf, limit, ts, off, cap, orig, lt):
        e = self.endian
        u32 = struct.Struct(e + "I").unpack_from
        epb = struct.Struct(e + "IIIII").unpack_from
        n = len(buf)
        pos = self.pos
        count = 0
        while count < limit:
            if pos + 12 > n:
                self.at_end = True
                break
            btype, blen = struct.unpack_from(e + "II", buf, pos)
            if btype == 0x0A0D0D0A:
                bom = bytes(buf[pos + 8:pos + 12])
                e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
                if e is None:
                    self.error = f"damaged section header at offset {pos}"
                    break
                self.endian = e
                u32 = struct.Struct(e + "I").unpack_from
                epb = struct.Struct(e + "IIIII").unpack_from
                blen = u32(buf, pos + 4)[0]
                self.ifaces = []
            if blen < 12 or blen % 4 or blen > 0x4000000:
                self.error = f"damaged block at offset {pos} (length {blen})"
                break
            if pos + blen > n:
                self.at_end = True
                break
            if btype == 6 and blen >= 32:
                iface, hi, lo, incl, olen = epb(buf, pos + 8)
                if iface >= len(self.ifaces) or 28 + incl > blen:
                    self.error = f"damaged packet block at offset {pos}"
                    break
                link, mul, div = self.ifaces[iface]
                ts.append(((hi << 32) | lo) * mul // div)
                off.append(pos + 28)
                cap.append(incl)
                orig.append(olen)
                lt.append(link)
                count += 1
            elif btype == 3 and blen >= 16:
                if not self.ifaces:
                    self.error = f"simple packet block before any interface at offset {pos}"
                    break
                olen = u32(buf, pos + 8)[0]
                ts.append(ts[-1] if ts else 0)
                off.append(pos + 12)
                cap.append(min(olen, blen - 16))
                orig.append(olen)
                lt.append(self.ifaces[0][0])
                count += 1
            elif btype == 5 and blen >= 24:
                # interface statistics: isb_ifdrop (code 5) = packets dropped by the interface
                p = pos + 20
                bend = pos + blen - 4
                while p + 4 <= bend:
                    code, olen_ = struct.unpack_from(e + "HH", buf, p)
                    if code == 0:
                        break
                    if code == 5 and olen_ == 8 and p + 12 <= bend:
                        self.drops = struct.unpack_from(e + "Q", buf, p + 4)[0]
                    p += 4 + ((olen_ + 3) & ~3)
            elif btype == 1 and blen >= 20:
                link = struct.unpack_from(e + "H", buf, pos + 8)[0]
                mul, div = 1000, 1           # default resolution: microseconds
                p = pos + 16
                bend = pos + blen - 4
                while p + 4 <= bend:
                    code, olen_ = struct.unpack_from(e + "HH", buf, p)
                    if code == 0:
                        break
                    if code == 9 and olen_ >= 1:
                        r = buf[p + 4]
                        if r & 0x80:
                            mul, div = 1_000_000_000, 1 << (r & 0x7F)
                        else:
                            exp = r & 0x7F
                            mul, div = (10 ** (9 - exp), 1) if exp <= 9 else (1, 10 ** (exp - 9))
                    p += 4 + ((olen_ + 3) & ~3)
                self.ifaces.append((link, mul, div))
            pos += blen
        self.pos = pos


def epb_comments(buf, offset: int, caplen: int, endian: str) -> tuple:
    """opt_comment strings of the enhanced packet block whose data starts at offset."""
    try:
        blen = struct.unpack_from(endian + "I", buf, offset - 24)[0]
        p = offset + ((caplen + 3) & ~3)
        bend = offset - 28 + blen - 4
        out = []
        while p + 4 <= bend:
            code, olen = struct.unpack_from(endian + "HH", buf, p)
            if code == 0:
                break
            if code == 1:
                out.append(bytes(buf[p + 4:p + 4 + olen]).decode("utf-8", "replace"))
            p += 4 + ((olen + 3) & ~3)
        return tuple(out)
    except (struct.error, IndexError):
        return ()


class CaptureFile:
    """One capture file opened for the TUI: an offset index plus on-demand reads."""

    def __init__(self, path: str, live: bool = False):
        self.path = str(path)
        self.live = live
        self.indexer = Indexer()
        self.buf = None          # mmap or bytes
        self._fh = None
        self.records: list[Record] | None = None   # formats we cannot index: kept in memory
        self.error: str | None = None
        self._size = 0
        self._open()

    def _open(self):
        with open(self.path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(self.path, "rb") as g:
                try:
                    self.buf = g.read()
                except (OSError, EOFError) as exc:
                    self.buf = b""
                    self.error = f"compressed file is damaged: {exc}"
            return
        if head in PCAP_MAGICS or head == PCAPNG_SHB or (self.live and len(head) < 4):
            self._map()
            return
        # Not a pcap/pcapng: let the capture readers (sniffer logs...) decode it.
        from analyzer.capture import open_reader
        reader = open_reader(self.path)
        self.records = []
        try:
            for rec in reader:
                self.records.append(rec)
        except Exception as exc:      # a reader bug must not stop the TUI
            self.error = f"{type(exc).__name__}: {exc}"
        self.error = self.error or getattr(reader, "error", None)

    def _map(self):
        size = os.path.getsize(self.path)
        if size == self._size and self.buf is not None:
            return
        self._size = size
        if size == 0:
            self.buf = b""
            return
        if self._fh is None:
            self._fh = open(self.path, "rb")
        self.buf = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)

    def refresh(self) -> bool:
        """Live files: re-map if the file grew.  True when there are new bytes."""
        old = self._size
        self._map()
        return self._size > old

    def chunks(self, limit: int = 50000) -> Iterator[Chunk]:
        """Index the (remaining) records in chunks."""
        if self.records is not None:
            pos = getattr(self, "_rpos", 0)
            while pos < len(self.records):
                stop = min(len(self.records), pos + limit)
                recs = self.records[pos:stop]
                self._rpos = stop
                yield Chunk([r.ts_ns for r in recs], list(range(pos, stop)), [len(r.data) for r in recs],
                            [r.orig_len for r in recs], [r.linktype for r in recs])
                pos = stop
            return
        while True:
            c = self.indexer.scan(self.buf, limit)
            self._drop_pages()
            if len(c):
                yield c
            if self.indexer.error:
                self.error = self.indexer.error
                return
            if self.indexer.at_end or not len(c):
                if not self.live and self.indexer.at_end and self.indexer.pos < len(self.buf) \
                        and self.error is None and self.indexer.kind is not None:
                    self.error = f"file is truncated at offset {self.indexer.pos}"
                return

    def _drop_pages(self) -> None:
        """Indexed pages of the mapped file need not stay resident (a 10M-packet file would
        otherwise count fully in RSS); they are read again from the page cache on demand."""
        buf = self.buf
        if not isinstance(buf, mmap.mmap) or not hasattr(buf, "madvise"):
            return
        end = (self.indexer.pos // mmap.PAGESIZE) * mmap.PAGESIZE
        start = getattr(self, "_dropped", 0)
        if end - start >= (8 << 20):
            try:
                buf.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError, AttributeError):
                return
            self._dropped = end

    def read(self, offset: int, caplen: int, origlen: int, linktype: int, ts: int) -> Record:
        if self.records is not None:
            return self.records[offset]
        data = bytes(self.buf[offset:offset + caplen])
        comments = ()
        if self.indexer.kind == "pcapng":
            comments = epb_comments(self.buf, offset, caplen, self.indexer.endian)
        return Record(int(ts), data, int(linktype), int(origlen), 0, comments)

    def close(self):
        try:
            if isinstance(self.buf, mmap.mmap):
                self.buf.close()
        except (BufferError, ValueError):
            pass
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _LiveState:
    """What the session's live loop reads from a source: end-of-data and drop counter."""

    def __init__(self):
        self.at_end = True
        self.drops = 0
        self.error = None


class LiveSourceFile:
    """A live source (`analyzer.live.open_source`: serial NI, interface, lon netdev,
    tshark) presented like a growing capture: a thread pulls records from the source into
    memory; the session indexes the new ones on each poll."""

    live = True

    def __init__(self, source, name: str):
        self.src = source
        self.path = name
        self.records: list[Record] = []
        self.indexer = _LiveState()
        self.error: str | None = None
        self._pos = 0
        self._thread = threading.Thread(target=self._pump, name="lonscope-live", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for rec in self.src:
                self.records.append(rec)
        except Exception as exc:      # a source failure is shown, never raised
            self.error = f"live source stopped: {type(exc).__name__}: {exc}"

    def _drops(self) -> int:
        st = getattr(self.src, "stats", None) or {}
        try:
            return int(st.get("dropped", st.get("drops", 0)) or 0) + int(st.get("rx_errors", 0) or 0) \
                + int(st.get("framing_errors", 0) or 0)
        except (TypeError, ValueError):
            return 0

    def refresh(self) -> bool:
        self.indexer.drops = self._drops()
        return len(self.records) > self._pos

    def chunks(self, limit: int = 50000) -> Iterator[Chunk]:
        end = len(self.records)
        while self._pos < end:
            stop = min(end, self._pos + limit)
            recs = self.records[self._pos:stop]
            yield Chunk([r.ts_ns for r in recs], list(range(self._pos, stop)), [len(r.data) for r in recs],
                        [r.orig_len for r in recs], [r.linktype for r in recs])
            self._pos = stop

    def read(self, offset: int, caplen: int, origlen: int, linktype: int, ts: int) -> Record:
        return self.records[offset]

    def close(self) -> None:
        try:
            self.src.close()
        except Exception:
            pass
