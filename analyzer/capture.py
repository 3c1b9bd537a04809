"""Capture file readers: classic pcap, pcapng, gzip-compressed captures and sniffer logs.

Own struct/mmap walker (no third-party packet library on this path).  A damaged file is
read up to the damage; iteration then stops and the reader's `.error` holds a one-line
message.  A file that is not a capture at all raises `CaptureError` before anything is
yielded.
"""
from __future__ import annotations

import mmap
import os
import struct
import zlib
from bisect import bisect_right
from typing import Any, Iterator

from .packet import Record

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
GZIP_MAGIC = b"\x1f\x8b"

# A classic pcap record longer than this is treated as corruption rather than data.
MAX_RECORD = 0x4000000   # 64 MiB
MAX_BLOCK = 0x10000000   # 256 MiB

_new_record = tuple.__new__


class CaptureError(Exception):
    """The file is not a capture (or cannot be opened).  The message is one line."""


def _name(path: Any) -> str:
    try:
        return os.path.basename(os.fspath(path))
    except TypeError:
        return "<capture>"


# --------------------------------------------------------------------------- bytes source

def _gunzip(raw, name: str) -> tuple[bytes, str | None]:
    """Decompress all gzip members; a truncated/corrupt stream keeps what decoded."""
    out = []
    data = raw
    err = None
    while data[:2] == GZIP_MAGIC:
        dec = zlib.decompressobj(wbits=31)
        try:
            out.append(dec.decompress(data))
        except zlib.error as e:
            err = f"{name}: corrupt gzip stream ({e})"
            break
        if not dec.eof:
            out.append(dec.flush())
            err = f"{name}: gzip stream truncated"
            break
        data = dec.unused_data
    return b"".join(out), err


def _load(path) -> tuple[Any, Any, str | None]:
    """(buffer, closer, gzip error).  The buffer is an mmap for plain files."""
    name = _name(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CaptureError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{name}: is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(f"{name}: permission denied") from None
    except OSError as e:
        raise CaptureError(f"{name}: cannot open ({e.strerror or e})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CaptureError(f"{name}: empty file, not a capture")
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):
            buf = f.read()
    if buf[:2] == GZIP_MAGIC:
        data, err = _gunzip(buf, name)
        if isinstance(buf, mmap.mmap):
            buf.close()
        if not data:
            raise CaptureError(err or f"{name}: empty gzip stream")
        return data, None, err
    return buf, (buf.close if isinstance(buf, mmap.mmap) else None), None


def detect_format(head: bytes) -> str | None:
    """'pcap', 'pcapng' or None from the first bytes of a (decompressed) file."""
    if len(head) >= 4:
        le = struct.unpack_from("<I", head)[0]
        be = struct.unpack_from(">I", head)[0]
        if le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) or be in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            return "pcap"
        if le == PCAPNG_SHB:
            return "pcapng"
    return None


# --------------------------------------------------------------------------- pcapng helpers

class Interface:
    __slots__ = ("linktype", "snaplen", "tsmul", "tsdiv", "tsshift", "tsoffset_ns", "name")

    def __init__(self, linktype: int, snaplen: int):
        self.linktype = linktype
        self.snaplen = snaplen
        self.tsmul = 1000       # default resolution: microseconds
        self.tsdiv = 1
        self.tsshift = 0
        self.tsoffset_ns = 0
        self.name = ""

    def set_resol(self, v: int) -> None:
        if v & 0x80:
            self.tsmul, self.tsdiv, self.tsshift = 1_000_000_000, 1, v & 0x7F
        else:
            if v <= 9:
                self.tsmul, self.tsdiv = 10 ** (9 - v), 1
            else:
                self.tsmul, self.tsdiv = 1, 10 ** (v - 9)
            self.tsshift = 0

    def ts_ns(self, ts: int) -> int:
        if self.tsshift:
            return ((ts * self.tsmul) >> self.tsshift) + self.tsoffset_ns
        if self.tsdiv != 1:
            return ts // self.tsdiv + self.tsoffset_ns
        return ts * self.tsmul + self.tsoffset_ns


def _options(buf, off: int, end: int, e: str):
    """Yield (code, value bytes) of a pcapng option list; stops quietly at damage."""
    while off + 4 <= end:
        code, ln = struct.unpack_from(e + "HH", buf, off)
        off += 4
        if code == 0:
            return
        if off + ln > end:
            return
        yield code, bytes(buf[off:off + ln])
        off += ln + ((-ln) % 4)


def _comments(buf, off: int, end: int, e: str) -> tuple:
    out = []
    for code, val in _options(buf, off, end, e):
        if code == 1:
            out.append(val.decode("utf-8", "replace").rstrip("\0"))
    return tuple(out)


class _Section:
    __slots__ = ("offset", "endian", "ifaces", "first_iface")

    def __init__(self, offset: int, endian: str, first_iface: int):
        self.offset = offset
        self.endian = endian
        self.ifaces: list[Interface] = []
        self.first_iface = first_iface   # global index of this section's interface 0


# --------------------------------------------------------------------------- reader

class CaptureReader:
    """Iterable of `Record`s from one capture file.  After iteration, `.error` is None or
    a one-line description of the damage that stopped the read; `.count` is the number of
    records yielded."""

    def __init__(self, path, buf=None):
        self.path = path
        self.name = _name(path)
        self.error: str | None = None
        self.count = 0
        self.format: str | None = None
        self.linktype: int | None = None      # classic pcap: the file's link type
        self._closer = None
        self._log_records = None
        if buf is None:
            buf, self._closer, gzerr = _load(path)
        else:
            gzerr = None
        self._gzerr = gzerr
        self.buf = buf
        head = bytes(buf[:4])
        fmt = detect_format(head)
        if fmt is None:
            try:
                from .logs import parse_log, LogError, looks_like_log
            except ImportError:
                looks_like_log = None
            if looks_like_log is not None and looks_like_log(buf):
                try:
                    self._log_records, self._log_error = parse_log(buf, self.name)
                except LogError as e:
                    self.close()
                    raise CaptureError(str(e)) from None
                fmt = "log"
            else:
                self.close()
                raise CaptureError(f"{self.name}: not a pcap, pcapng or sniffer log file "
                                   f"(starts with {head.hex()})")
        self.format = fmt
        self.sections: list[_Section] = []
        self.interfaces: list[Interface] = []
        if fmt == "pcap":
            self._pcap_header()

    # ---- classic pcap
    def _pcap_header(self) -> None:
        buf = self.buf
        if len(buf) < 24:
            self.endian = "<"
            self._nano = False
            self.linktype = None
            self._damaged_header = f"{self.name}: truncated pcap file header ({len(buf)} of 24 bytes); read 0 packets"
            return
        self._damaged_header = None
        magic = struct.unpack_from("<I", buf)[0]
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            self.endian = "<"
        else:
            self.endian = ">"
            magic = struct.unpack_from(">I", buf)[0]
        self._nano = magic == PCAP_MAGIC_NS
        _, _, _, _, self.snaplen, lt = struct.unpack_from(self.endian + "HHiIII", buf, 4)
        # the upper 16 bits of the link-type word carry FCS info (pcap-savefile); keep the type
        self.linktype = lt & 0xFFFF
        self.interfaces = [Interface(self.linktype, self.snaplen)]

    def _iter_pcap(self) -> Iterator[Record]:
        if self._damaged_header:
            self.error = self._damaged_header
            return
        buf = self.buf
        n = len(buf)
        unpack = struct.Struct(self.endian + "IIII").unpack_from
        mult = 1 if self._nano else 1000
        lt = self.linktype
        off = 24
        count = 0
        new = _new_record
        R = Record
        empty = ()
        try:
            while off + 16 <= n:
                sec, frac, incl, orig = unpack(buf, off)
                start = off + 16
                end = start + incl
                if end > n or incl > MAX_RECORD:
                    if incl > MAX_RECORD:
                        self.error = (f"{self.name}: corrupt record header at offset {off} "
                                      f"(packet {count + 1}, length {incl}); read {count} packets")
                    else:
                        self.error = (f"{self.name}: truncated record at offset {off} "
                                      f"(packet {count + 1}); read {count} packets")
                    return
                off = end
                count += 1
                yield new(R, (sec * 1_000_000_000 + frac * mult, buf[start:end], lt, orig, 0, empty))
            if off != n:
                self.error = (f"{self.name}: truncated record header at offset {off} "
                              f"(packet {count + 1}); read {count} packets")
        finally:
            self.count = count

    # ---- pcapng
    def _iter_pcapng(self) -> Iterator[Record]:
        buf = self.buf
        n = len(buf)
        off = 0
        count = 0
        e = "<"
        sec: _Section | None = None
        new = _new_record
        R = Record
        hdr = struct.Struct("<II").unpack_from
        epb = struct.Struct("<IIIIII").unpack_from      # btype, blen, ifid, hi, lo, caplen
        u32 = struct.Struct("<I").unpack_from
        fast: list = []                                   # per interface: (linktype, mul, offset) or None
        try:
            while off < n:
                # fast path: an enhanced packet block of a plain-resolution interface, no options
                if off + 32 <= n:
                    btype, blen, ifid, hi, lo, cap = epb(buf, off)
                    if btype == 6 and ifid < len(fast) and fast[ifid] is not None:
                        end = off + blen
                        dend = off + 28 + cap
                        if end <= n and end - 4 - ((-cap) % 4) == dend and not blen % 4 \
                                and u32(buf, end - 4)[0] == blen:
                            lt, mul, tsoff, gid = fast[ifid]
                            count += 1
                            self.block_offset = off
                            yield new(R, ((((hi << 32) | lo) * mul) + tsoff, buf[off + 28:dend], lt,
                                          u32(buf, off + 24)[0], gid, ()))
                            off = end
                            continue
                if off + 12 > n:
                    self.error = (f"{self.name}: truncated block header at offset {off} "
                                  f"(after packet {count}); read {count} packets")
                    return
                btype = struct.unpack_from(e + "I", buf, off)[0]
                if btype == PCAPNG_SHB:
                    bom = struct.unpack_from("<I", buf, off + 8)[0]
                    if bom == 0x1A2B3C4D:
                        e = "<"
                    elif bom == 0x4D3C2B1A:
                        e = ">"
                    else:
                        self.error = (f"{self.name}: bad section header byte-order magic at offset {off}; "
                                      f"read {count} packets")
                        return
                    sec = _Section(off, e, len(self.interfaces))
                    self.sections.append(sec)
                    hdr = struct.Struct(e + "II").unpack_from
                    epb = struct.Struct(e + "IIIIII").unpack_from
                    u32 = struct.Struct(e + "I").unpack_from
                    fast = []
                blen = struct.unpack_from(e + "I", buf, off + 4)[0]
                if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                    self.error = (f"{self.name}: corrupt block length {blen} at offset {off} "
                                  f"(after packet {count}); read {count} packets")
                    return
                end = off + blen
                if end > n:
                    self.error = (f"{self.name}: truncated block at offset {off} "
                                  f"(packet {count + 1}); read {count} packets")
                    return
                if struct.unpack_from(e + "I", buf, end - 4)[0] != blen:
                    self.error = (f"{self.name}: block length mismatch at offset {off} "
                                  f"(packet {count + 1}); read {count} packets")
                    return
                if sec is None:
                    self.error = f"{self.name}: pcapng block before the section header; read 0 packets"
                    return
                if btype == 6 or btype == 2:        # enhanced / obsolete packet block
                    rec = (self._epb if btype == 6 else self._opb)(buf, off, end, e, sec)
                    if rec is None:
                        self.error = (f"{self.name}: corrupt packet block at offset {off} "
                                      f"(packet {count + 1}); read {count} packets")
                        return
                    count += 1
                    self.block_offset = off
                    yield rec
                elif btype == 1:        # interface description
                    if blen < 20:
                        self.error = f"{self.name}: corrupt interface block at offset {off}; read {count} packets"
                        return
                    lt, _, snap = struct.unpack_from(e + "HHI", buf, off + 8)
                    iface = Interface(lt, snap)
                    for code, val in _options(buf, off + 16, end - 4, e):
                        if code == 9 and val:
                            iface.set_resol(val[0])
                        elif code == 14 and len(val) == 8:
                            iface.tsoffset_ns = struct.unpack(e + "q", val)[0] * 1_000_000_000
                        elif code == 2:
                            iface.name = val.decode("utf-8", "replace").rstrip("\0")
                    sec.ifaces.append(iface)
                    fast.append((iface.linktype, iface.tsmul, iface.tsoffset_ns, len(self.interfaces))
                                if iface.tsdiv == 1 and not iface.tsshift else None)
                    self.interfaces.append(iface)
                elif btype == 3:        # simple packet block
                    if not sec.ifaces or blen < 16:
                        self.error = f"{self.name}: corrupt simple packet block at offset {off}; read {count} packets"
                        return
                    iface = sec.ifaces[0]
                    orig = struct.unpack_from(e + "I", buf, off + 8)[0]
                    cap = min(orig, blen - 16, iface.snaplen or orig)
                    count += 1
                    self.block_offset = off
                    yield new(R, (0, bytes(buf[off + 12:off + 12 + cap]), iface.linktype, orig,
                                  sec.first_iface, ()))
                off = end
        finally:
            self.count = count

    def _epb(self, buf, off: int, end: int, e: str, sec: _Section):
        if end - off < 32:
            return None
        ifid, hi, lo, cap, orig = struct.unpack_from(e + "IIIII", buf, off + 8)
        if ifid >= len(sec.ifaces):
            return None
        dstart = off + 28
        dend = dstart + cap
        if dend > end - 4:
            return None
        iface = sec.ifaces[ifid]
        oend = end - 4
        ostart = dend + ((-cap) % 4)
        comments = _comments(buf, ostart, oend, e) if ostart + 4 <= oend else ()
        return _new_record(Record, (iface.ts_ns((hi << 32) | lo), buf[dstart:dend], iface.linktype,
                                    orig, sec.first_iface + ifid, comments))

    def _opb(self, buf, off: int, end: int, e: str, sec: _Section):
        if end - off < 32:
            return None
        ifid, _drops, hi, lo, cap, orig = struct.unpack_from(e + "HHIIII", buf, off + 8)
        if ifid >= len(sec.ifaces) or off + 28 + cap > end - 4:
            return None
        iface = sec.ifaces[ifid]
        dend = off + 28 + cap
        ostart = dend + ((-cap) % 4)
        comments = _comments(buf, ostart, end - 4, e) if ostart + 4 <= end - 4 else ()
        return _new_record(Record, (iface.ts_ns((hi << 32) | lo), buf[off + 28:dend], iface.linktype,
                                    orig, sec.first_iface + ifid, comments))

    # ---- iteration
    def __iter__(self) -> Iterator[Record]:
        self.error = None
        if self.format == "pcap":
            it = self._iter_pcap()
        elif self.format == "pcapng":
            self.sections, self.interfaces = [], []
            it = self._iter_pcapng()
        else:
            it = self._iter_log()
        yield from it
        if self._gzerr:
            self.error = f"{self.error}; {self._gzerr}" if self.error else \
                f"{self._gzerr}; read {self.count} packets"

    def _iter_log(self) -> Iterator[Record]:
        n = 0
        for rec in self._log_records:
            n += 1
            yield rec
        self.count = n
        self.error = self._log_error

    def close(self) -> None:
        if self._closer is not None:
            try:
                self._closer()
            except BufferError:     # records still reference the map; the GC frees it
                pass
            self._closer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_reader(path) -> CaptureReader:
    """Open a capture (pcap, pcapng, gzip of either, sniffer log).  Raises CaptureError
    when the file is not a capture; damage inside is reported in `.error` after iteration."""
    return CaptureReader(path)


def read_capture(path) -> Iterator[Record]:
    """Iterate the records of a capture file (format auto-detected).  Reading stops at
    the first damage without raising; use `open_reader` to see the error message."""
    return iter(open_reader(path))


# --------------------------------------------------------------------------- offset index

class CaptureIndex:
    """Record offsets of a capture for lazy, random access (the TUI's packet list).

    - `offsets`: numpy int64 array, byte offset of each record (pcap: its 16-byte record
      header; pcapng: its block) in `buf` (the decompressed bytes for .gz files)
    - `ts_ns`, `caplen`, `orig_len`: numpy arrays per record
    - `error`: damage message or None (the index stops at the damage)
    - `record(i)` / `read_record_at(buf, offset, index)` rebuild one Record
    """

    def __init__(self, reader: CaptureReader):
        self.reader = reader
        self.buf = reader.buf
        self.format = reader.format
        self.error: str | None = None
        self.offsets = None
        self.ts_ns = None
        self.caplen = None
        self.orig_len = None
        self._records: list | None = None     # logs: the records themselves

    def __len__(self) -> int:
        return len(self.offsets)

    def record(self, i: int) -> Record:
        if self._records is not None:
            return self._records[i]
        return read_record_at(self.buf, int(self.offsets[i]), self)

    def _section_for(self, offset: int) -> _Section:
        secs = self.reader.sections
        i = bisect_right([s.offset for s in secs], offset) - 1
        return secs[max(i, 0)]

    def close(self) -> None:
        self.reader.close()


def index_capture(path) -> tuple:
    """Walk a capture once and return `(offsets, index)`: a numpy int64 array of record
    offsets and the `CaptureIndex` (arrays of time stamps and lengths, damage `.error`,
    `.record(i)`)."""
    import numpy as np
    reader = open_reader(path)
    idx = CaptureIndex(reader)
    buf = reader.buf
    if reader.format == "pcap":
        offs, ts, caps, origs = [], [], [], []
        if not reader._damaged_header:
            n = len(buf)
            unpack = struct.Struct(reader.endian + "IIII").unpack_from
            mult = 1 if reader._nano else 1000
            off = 24
            ao, at, ac, ag = offs.append, ts.append, caps.append, origs.append
            while off + 16 <= n:
                sec, frac, incl, orig = unpack(buf, off)
                if incl > MAX_RECORD or off + 16 + incl > n:
                    break
                ao(off)
                at(sec * 1_000_000_000 + frac * mult)
                ac(incl)
                ag(orig)
                off += 16 + incl
            if off != n:
                # damaged: the reader's own walk gives the exact message
                for _ in reader._iter_pcap():
                    pass
        else:
            reader.error = reader._damaged_header
        idx.error = reader.error
    else:
        offs, ts, caps, origs = [], [], [], []
        if reader.format == "pcapng":
            # walk with the reader and note block offsets through a position hook
            for rec, off in _pcapng_with_offsets(reader):
                offs.append(off)
                ts.append(rec.ts_ns)
                caps.append(len(rec.data))
                origs.append(rec.orig_len)
        else:
            recs = list(reader)
            idx._records = recs
            offs = list(range(len(recs)))
            ts = [r.ts_ns for r in recs]
            caps = [len(r.data) for r in recs]
            origs = [r.orig_len for r in recs]
        idx.error = reader.error
    idx.offsets = np.asarray(offs, dtype=np.int64)
    idx.ts_ns = np.asarray(ts, dtype=np.int64)
    idx.caplen = np.asarray(caps, dtype=np.int64)
    idx.orig_len = np.asarray(origs, dtype=np.int64)
    return idx.offsets, idx


def _pcapng_with_offsets(reader: CaptureReader):
    """Yield (record, block offset) from the reader's own walk."""
    reader.sections, reader.interfaces = [], []
    for rec in reader._iter_pcapng():
        yield rec, reader.block_offset


def read_record_at(src, offset: int, index: CaptureIndex | None = None) -> Record:
    """Read the one record at `offset`.  `src` is the index's buffer (mmap/bytes) or a
    path; `index` (from `index_capture`) gives the format, byte order and interfaces."""
    if index is None:
        _, index = index_capture(src)
    buf = index.buf if isinstance(src, (str, os.PathLike)) else src
    r = index.reader
    if index.format == "pcap":
        sec, frac, incl, orig = struct.unpack_from(r.endian + "IIII", buf, offset)
        mult = 1 if r._nano else 1000
        return Record(sec * 1_000_000_000 + frac * mult, bytes(buf[offset + 16:offset + 16 + incl]),
                      r.linktype, orig)
    if index.format == "pcapng":
        sec = index._section_for(offset)
        e = sec.endian
        bt, blen = struct.unpack_from(e + "II", buf, offset)
        end = offset + blen
        if bt == 6:
            rec = r._epb(buf, offset, end, e, sec)
        elif bt == 2:
            rec = r._opb(buf, offset, end, e, sec)
        else:
            iface = sec.ifaces[0]
            orig = struct.unpack_from(e + "I", buf, offset + 8)[0]
            cap = min(orig, blen - 16, iface.snaplen or orig)
            rec = Record(0, bytes(buf[offset + 12:offset + 12 + cap]), iface.linktype, orig, sec.first_iface)
        if rec is None:
            raise CaptureError(f"{r.name}: corrupt packet block at offset {offset}")
        return rec._replace(data=bytes(rec.data))
    return index.record(offset)


__all__ = ["CaptureError", "CaptureReader", "CaptureIndex", "open_reader", "read_capture",
           "index_capture", "read_record_at", "detect_format"]
