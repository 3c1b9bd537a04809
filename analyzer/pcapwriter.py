"""Capture writers: classic pcap (`PcapWriter`) and pcapng (`PcapngWriter`).

Both accept `analyzer.packet.Record`s or plain tuples `(ts_ns, data, linktype[, comments])`,
write to a path or to a binary file object, and work as context managers.  Link-type
convention for raw LonTalk frames (defined in `dissectors.net`): LINKTYPE_USER0 = 147 is a
frame as a layer-2 NI delivers it, CRC-16 always present; LINKTYPE_USER2 = 149 is a frame
without CRC.
"""
from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO, Iterable

from .packet import Record

from dissectors.net import (LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL,  # noqa: F401
                            LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_RAW,
                            LINKTYPE_USER0, LINKTYPE_USER2, ip4_checksum)

DEFAULT_SNAPLEN = 262144


def _as_tuple(rec: Any, default_linktype: int | None) -> tuple[int, bytes, int, int, tuple]:
    """(ts_ns, data, linktype, orig_len, comments) from a Record or a short tuple."""
    if isinstance(rec, Record):
        return rec.ts_ns, rec.data, rec.linktype, rec.orig_len, tuple(rec.comments or ())
    ts_ns, data = rec[0], rec[1]
    lt = rec[2] if len(rec) > 2 and rec[2] is not None else default_linktype
    if lt is None:
        raise ValueError("record has no link type and the writer has no default")
    comments = rec[3] if len(rec) > 3 and rec[3] else ()
    if isinstance(comments, str):
        comments = (comments,)
    return int(ts_ns), bytes(data), int(lt), len(data), tuple(comments)


class _Writer:
    def __init__(self, path_or_file: str | os.PathLike | BinaryIO):
        if hasattr(path_or_file, "write"):
            self._f: BinaryIO = path_or_file  # type: ignore[assignment]
            self._own = False
        else:
            self._f = open(path_or_file, "wb")
            self._own = True
        self.count = 0
        self.bytes_written = 0
        self.closed = False

    def _out(self, b: bytes) -> None:
        self._f.write(b)
        self.bytes_written += len(b)

    def write_all(self, records: Iterable[Any]) -> int:
        n = 0
        for r in records:
            self.write(r)
            n += 1
        return n

    def flush(self) -> None:
        if not self.closed:
            self._f.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self._own:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class PcapWriter(_Writer):
    """Classic libpcap file, little-endian, microsecond (default) or nanosecond stamps.
    One link type per file: the first record's (or the `linktype` argument)."""

    def __init__(self, path_or_file, linktype: int | None = None, nano: bool = False,
                 snaplen: int = DEFAULT_SNAPLEN):
        super().__init__(path_or_file)
        self.nano = nano
        self.snaplen = snaplen
        self.linktype = linktype
        self._hdr = struct.Struct("<IIII")
        if linktype is not None:
            self._header(linktype)

    def _header(self, linktype: int) -> None:
        self.linktype = linktype
        magic = 0xA1B23C4D if self.nano else 0xA1B2C3D4
        self._out(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, self.snaplen, linktype))
        self._wrote_header = True

    def write(self, rec: Any) -> None:
        ts_ns, data, lt, orig, _ = _as_tuple(rec, self.linktype)
        if self.count == 0 and not getattr(self, "_wrote_header", False):
            self._header(lt)
        elif lt != self.linktype:
            raise ValueError(f"classic pcap holds one link type ({self.linktype}); got {lt} "
                             "(use PcapngWriter for mixed link types)")
        sec, frac = divmod(ts_ns, 1_000_000_000)
        if not self.nano:
            frac //= 1000
        self._out(self._hdr.pack(sec & 0xFFFFFFFF, frac, len(data), max(orig, len(data))))
        self._out(data)
        self.count += 1

    def close(self) -> None:
        if not self.closed and not getattr(self, "_wrote_header", False):
            self._header(self.linktype if self.linktype is not None else LINKTYPE_USER0)
        super().close()


def _option(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


class PcapngWriter(_Writer):
    """pcapng: one section header, one interface description block per link type used
    (nanosecond resolution), enhanced packet blocks with opt_comment strings."""

    def __init__(self, path_or_file, linktype: int | None = None, snaplen: int = DEFAULT_SNAPLEN,
                 application: str = "lonscope"):
        super().__init__(path_or_file)
        self.snaplen = snaplen
        self._ifaces: dict[int, int] = {}
        opts = _option(4, application.encode()) + _option(0, b"")      # shb_userappl
        body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + opts
        self._block(0x0A0D0D0A, body)
        self._epb = struct.Struct("<IIIII")
        if linktype is not None:
            self._iface(linktype)

    def _block(self, btype: int, body: bytes) -> None:
        total = 12 + len(body)
        self._out(struct.pack("<II", btype, total) + body + struct.pack("<I", total))

    def _iface(self, linktype: int) -> int:
        idx = self._ifaces.get(linktype)
        if idx is None:
            idx = self._ifaces[linktype] = len(self._ifaces)
            opts = _option(9, b"\x09") + _option(0, b"")               # if_tsresol = 10^-9
            self._block(1, struct.pack("<HHI", linktype, 0, self.snaplen) + opts)
        return idx

    def write(self, rec: Any) -> None:
        ts_ns, data, lt, orig, comments = _as_tuple(rec, None if not self._ifaces else next(iter(self._ifaces)))
        idx = self._iface(lt)
        body = [self._epb.pack(idx, (ts_ns >> 32) & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF, len(data),
                               max(orig, len(data))), data, b"\0" * ((-len(data)) % 4)]
        if comments:
            for c in comments:
                body.append(_option(1, c.encode("utf-8") if isinstance(c, str) else bytes(c)))
            body.append(_option(0, b""))
        self._block(6, b"".join(body))
        self.count += 1


def write_capture(path, records: Iterable[Any], linktype: int | None = None) -> int:
    """Write records to `path`: pcapng unless the name ends in .pcap.  Returns the count."""
    p = os.fspath(path)
    w = PcapWriter(p, linktype) if p.endswith(".pcap") else PcapngWriter(p, linktype)
    with w:
        return w.write_all(records)


# --------------------------------------------------------------------------- Wireshark interop

CNIP_PORT = 1628
WS_SRC_MAC = bytes.fromhex("020000000001")
WS_DST_MAC = bytes.fromhex("020000000002")
WS_SRC_IP = bytes([10, 14, 9, 8])      # synthetic addresses of the CN/IP wrapper
WS_DST_IP = bytes([10, 14, 9, 9])


def wrap_cnip(frame: bytes, seqno: int = 0, ts_ms: int = 0, outbound: bool = False,
              ident: int = 0) -> bytes:
    """One raw LonTalk frame as Ethernet/IPv4/UDP 1628/CN-IP Data (ISO/IEC 14908-4 type
    0x01, protocol 0 = LonTalk): the form stock Wireshark decodes with cnip -> lon.
    The frame bytes are kept as they are (a USER0 frame's CRC-16 follows the NPDU)."""
    from dissectors.cnip import build_cnip
    cnip = build_cnip(frame, pkt_type=1, seqno=seqno & 0xFFFFFFFF, timestamp=ts_ms & 0xFFFFFFFF)
    udp = struct.pack("!HHHH", CNIP_PORT, CNIP_PORT, 8 + len(cnip), 0) + cnip
    src, dst = (WS_DST_IP, WS_SRC_IP) if outbound else (WS_SRC_IP, WS_DST_IP)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", ip4_checksum(hdr)) + hdr[12:]
    macs = (WS_SRC_MAC + WS_DST_MAC) if outbound else (WS_DST_MAC + WS_SRC_MAC)
    return macs + b"\x08\x00" + hdr + udp


def export_for_wireshark(records: Iterable[Any], path_or_file, pcapng: bool = True) -> int:
    """Write records so that stock Wireshark/tshark decodes the LonTalk frames: raw
    LonTalk (LINKTYPE_USER0 with CRC, USER2 without) frames become Ethernet/IPv4/UDP 1628/CN-IP data packets (CN/IP
    sequence number = frame number, time stamp = capture time in ms; `dir=tx` comments swap
    the synthetic addresses); records of other link types are written unchanged (pcapng;
    classic pcap keeps only Ethernet).  Time stamps and comments are kept.  Returns the
    number of records written."""
    w = PcapngWriter(path_or_file) if pcapng else PcapWriter(path_or_file, LINKTYPE_ETHERNET)
    n = 0
    with w:
        for rec in records:
            ts_ns, data, lt, orig, comments = _as_tuple(rec, None)
            n += 1
            if lt in (LINKTYPE_USER0, LINKTYPE_USER2):
                outbound = any(str(c).strip().lower() in ("dir=tx", "dir=out") for c in comments)
                data = wrap_cnip(data, seqno=n, ts_ms=ts_ns // 1_000_000, outbound=outbound, ident=n)
                lt = LINKTYPE_ETHERNET
                orig = len(data)
            elif not pcapng and lt != LINKTYPE_ETHERNET:
                n -= 1
                continue
            w.write(Record(ts_ns, data, lt, orig, 0, comments))
    return n


__all__ = ["PcapWriter", "PcapngWriter", "write_capture", "export_for_wireshark", "wrap_cnip", "LINKTYPE_USER0", "LINKTYPE_USER2",
           "LINKTYPE_ETHERNET", "ip4_checksum",
           "LINKTYPE_NULL", "LINKTYPE_RAW", "LINKTYPE_LOOP", "LINKTYPE_LINUX_SLL",
           "LINKTYPE_LINUX_SLL2", "LINKTYPE_IPV4", "LINKTYPE_IPV6"]
