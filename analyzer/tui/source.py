"""Capture sources for the TUI: an offset index over pcap/pcapng files so that millions of
packets can be listed without keeping their bytes in memory.

Indexing keeps, per record, only its time, file offset, lengths and link type; a packet's
bytes are re-read from the mapped file when it is shown or re-dissected.  The pcap/pcapng
record layouts are walked by `analyzer.capture.RecordScanner` (incremental: chunks of
records, resumed when a live file grows; `record_at` rebuilds one record with its comments).  Compressed files
are decompressed once into memory and indexed the same way; formats without a record layout
we can index (sniffer logs) are read through `analyzer.capture.read_capture` and kept as
records.
"""
from __future__ import annotations

import gzip
import mmap
import os
import threading
from typing import Iterator

import numpy as np

from analyzer.capture import PageRelease, RecordScanner, detect_format
from analyzer.packet import Record

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


class CaptureFile:
    """One capture file opened for the TUI: an offset index plus on-demand reads."""

    def __init__(self, path: str, live: bool = False):
        self.path = str(path)
        self.live = live
        self.indexer = RecordScanner(os.path.basename(self.path))
        self.buf = None          # mmap or bytes
        self._fh = None
        self.records: list[Record] | None = None   # formats we cannot index: kept in memory
        self.error: str | None = None
        self._size = 0
        # the mapped pages behind the indexer and behind the decoder are given back on their own
        self._index_pages = PageRelease(8 << 20)
        self._decoder_pages = PageRelease(4 << 20)
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
        if detect_format(head) is not None or (self.live and len(head) < 4):
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
        ix = self.indexer
        while True:
            ts, off, cap, orig, lt, _ = ix.scan(self.buf, None, limit)
            c = Chunk(ts, off, cap, orig, lt)
            self._drop_pages()
            if len(c):
                yield c
            if ix.error:
                self.error = ix.error
                return
            if ix.at_end or not len(c):
                if not self.live and ix.truncated and self.error is None:
                    self.error = ix.truncated
                return

    def _drop_pages(self) -> None:
        """Indexed pages of the mapped file need not stay resident (a 10M-packet file would
        otherwise count fully in RSS); they are read again from the page cache on demand."""
        self._index_pages.upto(self.buf, self.indexer.pos)

    def release(self, upto: int) -> None:
        """The decoder has passed file offset `upto`: the mapped pages before it need not
        stay resident (re-read from the page cache if a row there is shown again).
        Without this, decoding a capture maps all of it into the process's RSS."""
        self._decoder_pages.upto(self.buf, upto)

    @property
    def _released(self) -> int:
        """Where the decoder's page release has got to (the session sets it back to 0 when
        decoding starts again from the first packet)."""
        return self._decoder_pages.done

    @_released.setter
    def _released(self, offset: int) -> None:
        self._decoder_pages.done = offset

    def read(self, offset: int, caplen: int, origlen: int, linktype: int, ts: int) -> Record:
        if self.records is not None:
            return self.records[offset]
        return self.indexer.record_at(self.buf, offset)

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
