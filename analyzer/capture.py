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


def _shb_endian(buf, off: int) -> str | None:
    """Byte order of the section header block at `off` from its byte-order magic."""
    bom = struct.unpack_from("<I", buf, off + 8)[0]
    return "<" if bom == 0x1A2B3C4D else ">" if bom == 0x4D3C2B1A else None


def _parse_idb(buf, off: int, end: int, e: str) -> Interface | None:
    """Interface description block (link type, snap length, if_name, if_tsresol, if_tsoffset)."""
    if end - off < 20:
        return None
    lt, _, snap = struct.unpack_from(e + "HHI", buf, off + 8)
    iface = Interface(lt, snap)
    for code, val in _options(buf, off + 16, end - 4, e):
        if code == 9 and val:
            iface.set_resol(val[0])
        elif code == 14 and len(val) == 8:
            iface.tsoffset_ns = struct.unpack(e + "q", val)[0] * 1_000_000_000
        elif code == 2:
            iface.name = val.decode("utf-8", "replace").rstrip("\0")
    return iface


def _isb_drops(buf, off: int, end: int, e: str) -> int | None:
    """isb_ifdrop (packets dropped by the interface) of an interface statistics block."""
    for code, val in _options(buf, off + 20, end - 4, e):
        if code == 5 and len(val) == 8:
            return struct.unpack(e + "Q", val)[0]
    return None


def _packet_block(buf, off: int, end: int, e: str, sec: _Section, btype: int):
    """Enhanced (6), obsolete (2) or simple (3) packet block ->
    (ts_ns, data start, caplen, orig_len, linktype, global interface id, comments) or None."""
    if btype == 3:
        if not sec.ifaces or end - off < 16:
            return None
        iface = sec.ifaces[0]
        orig = struct.unpack_from(e + "I", buf, off + 8)[0]
        return 0, off + 12, min(orig, end - off - 16, iface.snaplen or orig), orig, iface.linktype, \
            sec.first_iface, ()
    if end - off < 32:
        return None
    if btype == 6:
        ifid, hi, lo, cap, orig = struct.unpack_from(e + "IIIII", buf, off + 8)
    else:
        ifid, _drops, hi, lo, cap, orig = struct.unpack_from(e + "HHIIII", buf, off + 8)
    if ifid >= len(sec.ifaces):
        return None
    dend = off + 28 + cap
    oend = end - 4
    if dend > oend:
        return None
    iface = sec.ifaces[ifid]
    ostart = dend + ((-cap) % 4)
    comments = _comments(buf, ostart, oend, e) if ostart + 4 <= oend else ()
    return iface.ts_ns((hi << 32) | lo), off + 28, cap, orig, iface.linktype, sec.first_iface + ifid, comments


# --------------------------------------------------------------------------- record scanner

class RecordScanner:
    """The one walker of the pcap/pcapng record layouts: an incremental index over a
    bytes-like buffer (mmap or bytes) that keeps the header/section/interface state.

    `scan(buf, start, limit)` indexes up to `limit` records from `start` (default: where the
    last scan stopped) and returns lists `(ts_ns, offset, caplen, origlen, linktype,
    next_offset)`; offsets are those of the record (pcap: its 16-byte header; pcapng: its
    block).  A record cut by the end of the buffer stops the scan quietly: `.at_end` is set
    and `.truncated` holds the message to report if the file does not grow any more.
    Damage sets `.error` (scanning stops there).  `record_at(buf, offset)` rebuilds one
    Record (pcapng: with its opt_comment strings).  `.drops` is the last isb_ifdrop seen."""

    def __init__(self, name: str = "<capture>"):
        self.name = name
        self.format: str | None = None        # "pcap" | "pcapng"
        self.endian = "<"
        self.linktype: int | None = None      # classic pcap
        self.snaplen = 0
        self.mult = 1000                      # classic pcap: ns per fraction unit
        self.sections: list[_Section] = []
        self.interfaces: list[Interface] = []
        self.pos = 0
        self.count = 0
        self.error: str | None = None
        self.truncated: str | None = None
        self.at_end = False
        self.drops = 0
        self._sec: _Section | None = None
        self._fast: list = []

    def _header(self, buf) -> bool:
        n = len(buf)
        fmt = detect_format(bytes(buf[:4]))
        if fmt is None:
            if n >= 4:
                self.error = f"{self.name}: not a pcap or pcapng file (starts with {bytes(buf[:4]).hex()})"
            return False
        if fmt == "pcap":
            if n < 24:
                self.truncated = (f"{self.name}: truncated pcap file header ({n} of 24 bytes); "
                                  f"read 0 packets")
                return False
            magic = struct.unpack_from("<I", buf)[0]
            if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
                self.endian = "<"
            else:
                self.endian = ">"
                magic = struct.unpack_from(">I", buf)[0]
            self.mult = 1 if magic == PCAP_MAGIC_NS else 1000
            _, _, _, _, self.snaplen, lt = struct.unpack_from(self.endian + "HHiIII", buf, 4)
            # the upper 16 bits of the link-type word carry FCS info (pcap-savefile)
            self.linktype = lt & 0xFFFF
            self.interfaces = [Interface(self.linktype, self.snaplen)]
            self.pos = 24
        self.format = fmt
        return True

    def scan(self, buf, start: int | None = None, limit: int = 1 << 62) -> tuple:
        ts: list[int] = []
        offs: list[int] = []
        caps: list[int] = []
        origs: list[int] = []
        lts: list[int] = []
        self.at_end = False
        if start is not None:
            self.pos = start
        if self.error is None and self.format is None and not self._header(buf):
            self.at_end = self.error is None
        elif self.error is None:
            self.truncated = None
            if self.format == "pcap":
                self._index_pcap(buf, limit, ts, offs, caps, origs, lts)
            else:
                ats, aoff, acap, aorig, alt = ts.append, offs.append, caps.append, origs.append, lts.append
                for off, t, _ds, cap, orig, lt, _gid, _c in self.walk(buf, limit):
                    ats(t)
                    aoff(off)
                    acap(cap)
                    aorig(orig)
                    alt(lt)
        return ts, offs, caps, origs, lts, self.pos

    def _index_pcap(self, buf, limit, ts, offs, caps, origs, lts) -> None:
        """scan() of a classic pcap: `pcap_records` from `.pos` noting at most `limit`
        records in the lists."""
        for _ in self.pcap_records(buf, index=(ts, offs, caps, origs), limit=limit):
            pass
        lts.extend([self.linktype] * len(offs))
        if self.pos >= len(buf) and self.error is None:
            self.at_end = True

    def pcap_records(self, buf, start: int | None = None, stop: int | None = None, index: tuple | None = None,
                     limit: int = 1 << 62) -> Iterator[Record]:
        """The one classic-pcap record loop: the Records from the record header at `start`
        (default `.pos`) up to, not including, the first record at or after `stop` (default:
        the end of `buf`) — the hot path of plain iteration and of the `decode -j` byte-range
        workers (`CaptureReader.pcap_range`).  With `index` (lists: times, offsets, caplens, origlens) the
        records are not built but appended to the lists, at most `limit` of them, and
        nothing is yielded.  `.pos` is the offset after the last record yielded (noted: once
        the loop stops) and `.count` counts on when the loop stops.  Where the records end before `stop` (damage, a cut
        record, the end of the file) `.error` / `.truncated` / `.at_end` are set as
        described for `scan`."""
        n = len(buf)
        off = self.pos if start is None else start
        stop = n if stop is None else stop
        # off < top: before `stop` with a whole header in buf (and the index not yet full)
        top = min(stop, n - 15) if limit > 0 else off
        unpack = struct.Struct(self.endian + "IIII").unpack_from
        mult = self.mult
        lt = self.linktype
        new = _new_record
        R = Record
        empty = ()
        if index is not None:
            ats, aoff, acap, aorig = (x.append for x in index)
        count = 0
        try:
            while off < top:
                sec, frac, incl, orig = unpack(buf, off)
                ds = off + 16
                de = ds + incl
                if de > n or incl > MAX_RECORD:
                    break
                if index is None:
                    self.pos = off = de
                    count += 1
                    yield new(R, (sec * 1_000_000_000 + frac * mult, buf[ds:de], lt, orig, 0, empty))
                else:
                    ats(sec * 1_000_000_000 + frac * mult)
                    aoff(off)
                    acap(incl)
                    aorig(orig)
                    off = de
                    count += 1
                    if count == limit:
                        return
            if off < stop and count != limit:
                self.pcap_end(buf, off, self.count + count)
        finally:
            self.pos = off
            self.count += count

    def pcap_end(self, buf, off: int, count: int) -> None:
        """Why the classic-pcap records stop at `off` after `count` records: the end of the
        file (`.at_end`), a cut header or record (`.at_end`, `.truncated`) or a corrupt
        header (`.error`)."""
        n = len(buf)
        if off + 16 > n:
            self.at_end = True
            if off != n:
                self.truncated = (f"{self.name}: truncated record header at offset {off} "
                                  f"(packet {count + 1}); read {count} packets")
            return
        incl = struct.unpack_from(self.endian + "I", buf, off + 8)[0]
        if incl > MAX_RECORD:
            self.error = (f"{self.name}: corrupt record header at offset {off} "
                          f"(packet {count + 1}, length {incl}); read {count} packets")
        else:
            self.at_end = True
            self.truncated = (f"{self.name}: truncated record at offset {off} "
                              f"(packet {count + 1}); read {count} packets")

    def walk(self, buf, limit: int = 1 << 62):
        """Walk pcapng blocks from `.pos`, yielding per packet `(block offset, ts_ns, data
        start, caplen, orig_len, linktype, global interface id, comments)`; sections,
        interfaces and drop counters are noted on the way; `.pos` is the offset after the
        block of the packet last yielded."""
        n = len(buf)
        pos = self.pos
        e = self.endian
        sec = self._sec
        fast = self._fast
        epb = struct.Struct(e + "IIIIII").unpack_from      # btype, blen, ifid, hi, lo, caplen
        u32 = struct.Struct(e + "I").unpack_from
        got = 0
        try:
            while got < limit:
                if pos + 32 <= n:
                    # fast path: an enhanced packet block of a plain-resolution interface, no options
                    btype, blen, ifid, hi, lo, cap = epb(buf, pos)
                    if btype == 6 and ifid < len(fast) and fast[ifid] is not None:
                        end = pos + blen
                        dend = pos + 28 + cap
                        if end <= n and end - 4 - ((-cap) % 4) == dend and not blen % 4 \
                                and u32(buf, end - 4)[0] == blen:
                            lt, mul, tsoff, gid = fast[ifid]
                            got += 1
                            off = pos
                            self.pos = pos = end
                            yield off, ((hi << 32) | lo) * mul + tsoff, off + 28, cap, \
                                u32(buf, off + 24)[0], lt, gid, ()
                            continue
                count = self.count + got
                if pos + 12 > n:
                    if pos != n:
                        self.at_end = True
                        self.truncated = (f"{self.name}: truncated block header at offset {pos} "
                                          f"(after packet {count}); read {count} packets")
                    else:
                        self.at_end = True
                    return
                btype = u32(buf, pos)[0]
                be = e
                if btype == PCAPNG_SHB:           # the same in both byte orders
                    be = _shb_endian(buf, pos)
                    if be is None:
                        self.error = (f"{self.name}: bad section header byte-order magic at offset {pos}; "
                                      f"read {count} packets")
                        return
                blen = struct.unpack_from(be + "I", buf, pos + 4)[0]
                if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                    self.error = (f"{self.name}: corrupt block length {blen} at offset {pos} "
                                  f"(after packet {count}); read {count} packets")
                    return
                end = pos + blen
                if end > n:
                    self.at_end = True
                    self.truncated = (f"{self.name}: truncated block at offset {pos} "
                                      f"(packet {count + 1}); read {count} packets")
                    return
                if struct.unpack_from(be + "I", buf, end - 4)[0] != blen:
                    self.error = (f"{self.name}: block length mismatch at offset {pos} "
                                  f"(packet {count + 1}); read {count} packets")
                    return
                if btype == PCAPNG_SHB:
                    e = be
                    sec = _Section(pos, e, len(self.interfaces))
                    self.sections.append(sec)
                    epb = struct.Struct(e + "IIIIII").unpack_from
                    u32 = struct.Struct(e + "I").unpack_from
                    fast = []
                elif sec is None:
                    self.error = f"{self.name}: pcapng block before the section header; read 0 packets"
                    return
                elif btype == 6 or btype == 2 or btype == 3:
                    p = _packet_block(buf, pos, end, e, sec, btype)
                    if p is None:
                        self.error = (f"{self.name}: corrupt packet block at offset {pos} "
                                      f"(packet {count + 1}); read {count} packets")
                        return
                    got += 1
                    off = pos
                    self.pos = pos = end
                    yield (off,) + p
                    continue
                elif btype == 1:
                    iface = _parse_idb(buf, pos, end, e)
                    if iface is None:
                        self.error = f"{self.name}: corrupt interface block at offset {pos}; read {count} packets"
                        return
                    sec.ifaces.append(iface)
                    fast.append((iface.linktype, iface.tsmul, iface.tsoffset_ns, len(self.interfaces))
                                if iface.tsdiv == 1 and not iface.tsshift else None)
                    self.interfaces.append(iface)
                elif btype == 5:
                    drops = _isb_drops(buf, pos, end, e)
                    if drops is not None:
                        self.drops = drops
                pos = end
        finally:
            self.pos = pos
            self.endian = e
            self._sec = sec
            self._fast = fast
            self.count += got

    def _section_for(self, offset: int) -> _Section:
        secs = self.sections
        i = bisect_right([s.offset for s in secs], offset) - 1
        return secs[max(i, 0)]

    def record_at(self, buf, offset: int) -> Record:
        """The record whose header (pcap) or block (pcapng) starts at `offset`."""
        if self.format == "pcap":
            sec, frac, incl, orig = struct.unpack_from(self.endian + "IIII", buf, offset)
            return Record(sec * 1_000_000_000 + frac * self.mult,
                          bytes(buf[offset + 16:offset + 16 + incl]), self.linktype, orig)
        p = None
        if self.sections:
            sec = self._section_for(offset)
            e = sec.endian
            btype, blen = struct.unpack_from(e + "II", buf, offset)
            if btype in (2, 3, 6) and 12 <= blen and offset + blen <= len(buf):
                p = _packet_block(buf, offset, offset + blen, e, sec, btype)
        if p is None:
            raise CaptureError(f"{self.name}: corrupt packet block at offset {offset}")
        ts, ds, cap, orig, lt, gid, comments = p
        return Record(ts, bytes(buf[ds:ds + cap]), lt, orig, gid, comments)


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
        self._scanner = RecordScanner(self.name)
        self.sections: list[_Section] = []
        self.interfaces: list[Interface] = []
        if fmt == "pcap":
            sc = self._scanner
            sc.scan(buf, None, 0)       # the file header only
            self.linktype, self.interfaces = sc.linktype, sc.interfaces

    # ---- classic pcap and pcapng: the record scanner's walk
    def _iter_pcap(self) -> Iterator[Record]:
        sc = self._scanner
        if sc.format is None:                     # the file header is cut
            self.error = sc.error or sc.truncated
            return
        sc.error = sc.truncated = None
        sc.count = 0
        try:
            yield from sc.pcap_records(self.buf, 24)
            self.error = sc.error or sc.truncated
        finally:
            self.count = sc.count

    # ---- classic pcap byte ranges (parallel decoding: each worker walks its own range)
    def pcap_sync(self, pos: int, chain: int = 16) -> int | None:
        """Classic pcap: the first offset >= `pos` where `chain` consecutive record headers
        are plausible (fraction below one second, length within the snap length) and the
        last of them fits in the file or ends exactly at its end; None if there is none.
        A guess: the caller checks it against the walk of the previous range."""
        sc = self._scanner
        if sc.format != "pcap":
            return None
        buf = self.buf
        n = len(buf)
        unpack = struct.Struct(sc.endian + "IIII").unpack_from
        top = 1_000_000_000 if sc.mult == 1 else 1_000_000
        lim = min(MAX_RECORD, max(sc.snaplen, 262144))
        pos = max(pos, 24)
        while pos + 16 <= n:
            off = pos
            k = 0
            while k < chain and off + 16 <= n:
                _, frac, incl, _ = unpack(buf, off)
                if frac >= top or incl > lim or off + 16 + incl > n:
                    break
                off += 16 + incl
                k += 1
            if k == chain or (k and off == n):
                return pos
            pos += 1
        return None

    def pcap_range(self, start: int, stop: int) -> Iterator[Record]:
        """Classic pcap: the Records from the record header at `start` up to, not including,
        the first record at or after `stop`; stops quietly at damage (see `pcap_walk` for
        where).  A worker's own walk: the reader's iteration state is not touched."""
        return self._range_scanner().pcap_records(self.buf, start, stop)

    def pcap_walk(self, start: int, stop: int) -> tuple[list, int, bool]:
        """Classic pcap: `(offsets, next_offset, damaged)` of the records from `start` (a
        record header) up to the first record at or after `stop` (`next_offset`), or up to
        the damage (`damaged` True, `next_offset` where the intact records end)."""
        sc = self._range_scanner()
        offs: list = []
        for _ in sc.pcap_records(self.buf, start, stop, index=([], offs, [], [])):
            pass
        return offs, sc.pos, bool(sc.error or sc.truncated)

    def _range_scanner(self) -> RecordScanner:
        sc = self._scanner
        r = RecordScanner(self.name)
        r.format, r.endian, r.mult, r.linktype, r.snaplen = sc.format, sc.endian, sc.mult, sc.linktype, sc.snaplen
        return r

    def pcap_error(self, off: int, count: int) -> str | None:
        """The damage message of a classic pcap whose intact records end at `off` after
        `count` records (the same words as a single pass)."""
        sc = self._range_scanner()
        sc.pcap_end(self.buf, off, count)
        return sc.error or sc.truncated

    def _iter_pcapng(self) -> Iterator[Record]:
        sc = self._scanner = RecordScanner(self.name)
        sc.format = "pcapng"
        self.sections, self.interfaces = sc.sections, sc.interfaces
        buf = self.buf
        new = _new_record
        R = Record
        count = 0
        try:
            for off, ts, ds, cap, orig, lt, gid, comments in sc.walk(buf):
                count += 1
                yield new(R, (ts, buf[ds:ds + cap], lt, orig, gid, comments))
            self.error = sc.error or sc.truncated
        finally:
            self.count = count

    @property
    def position(self) -> int:
        """The offset in `.buf` after the last record iteration has yielded (0 for sniffer
        logs): the reader is done with the bytes before it."""
        return self._scanner.pos if self.format in ("pcap", "pcapng") else 0

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


class PageRelease:
    """Gives back the pages of a capture's read-only, file-backed map (`CaptureReader.buf`,
    the TUI's map) before an offset its reader has passed: they need not stay resident (a
    page needed again is read back from the page cache), so the resident size does not grow
    with the file.  Nothing is done for other buffers (the bytes of a decompressed file) or
    where madvise is missing.  `.done`: the pages before this offset have been released."""

    def __init__(self, step: int):
        self.step = step
        self.done = 0
        self.disabled = not hasattr(mmap, "MADV_DONTNEED")

    def upto(self, buf, offset: int) -> None:
        """Release the pages of `buf` from `.done` up to `offset` (rounded down to a page)
        once at least `step` bytes have gathered."""
        end = offset - offset % mmap.PAGESIZE
        if end - self.done < self.step or self.disabled or not isinstance(buf, mmap.mmap):
            return
        try:
            buf.madvise(mmap.MADV_DONTNEED, self.done, end - self.done)
        except (OSError, ValueError, AttributeError):    # closed map, no madvise: stop trying
            self.disabled = True
            return
        self.done = end


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
        self.scanner: RecordScanner | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def record(self, i: int) -> Record:
        if self._records is not None:
            return self._records[i]
        return read_record_at(self.buf, int(self.offsets[i]), self)

    def close(self) -> None:
        self.reader.close()


def index_capture(path) -> tuple:
    """Walk a capture once and return `(offsets, index)`: a numpy int64 array of record
    offsets and the `CaptureIndex` (arrays of time stamps and lengths, damage `.error`,
    `.record(i)`)."""
    import numpy as np
    reader = open_reader(path)
    idx = CaptureIndex(reader)
    if reader.format in ("pcap", "pcapng"):
        sc = idx.scanner = RecordScanner(reader.name)
        ts, offs, caps, origs, _lts, _ = sc.scan(reader.buf)
        reader.sections, reader.interfaces = sc.sections, sc.interfaces
        reader.count = len(offs)
        reader.error = sc.error or sc.truncated
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


def read_record_at(src, offset: int, index: CaptureIndex | None = None) -> Record:
    """Read the one record at `offset`.  `src` is the index's buffer (mmap/bytes) or a
    path; `index` (from `index_capture`) gives the format, byte order and interfaces."""
    if index is None:
        _, index = index_capture(src)
    buf = index.buf if isinstance(src, (str, os.PathLike)) else src
    if index.scanner is not None:
        return index.scanner.record_at(buf, offset)
    return index.record(offset)


__all__ = ["CaptureError", "CaptureReader", "CaptureIndex", "PageRelease", "RecordScanner", "open_reader",
           "read_capture", "index_capture", "read_record_at", "detect_format"]
