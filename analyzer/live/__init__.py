"""Live capture sources and the capture-to-file loop.

Source specifications (`lonscope sniff SOURCE`, `lonscope open --live SOURCE`):

| spec | what |
|---|---|
| `serial:/dev/ttyUSB0[?framing=u61&baud=460800]` | USB/serial NI in layer-2 mode (U50/U61 framing) |
| `iface:eth0` | an Ethernet/IP interface through scapy, BPF `udp port 1628 or 1629 or 2541 or portrange 4059-4069` (and TCP 4059-4069) |
| `lon:lon0` | the Linux lon-driver netdev: AF_PACKET raw socket, protocol 0x8950 (SICB messages) |
| `tshark:eth0` | any interface tshark can capture on, through pyshark (raw frames) |
| `file:PATH` | replay a capture or log file (tests, conversions) |

Every source is an iterable of `analyzer.packet.Record` with `.close()` and `.stats`.

Capture filter (`lonscope sniff -f`, `lonscope extcap --extcap-capture-filter`): a display
filter expression restricted to `lon` fields (`lon.srcnet == 1 && lon.srcnode == 5 ||
lon.domain == 4c`), evaluated on a quick stateless dissection of every received frame
(`capture_filter(text)`); frames it rejects are not written and counted as filtered.
"""
from __future__ import annotations

import os
import time
from typing import Iterable, Iterator
from urllib.parse import parse_qs

from ..packet import Record


class LiveError(Exception):
    """A one-line, user-facing problem with a live source."""


class Closing:
    """Context manager that calls `close()` on exit (sources, the NI emulator)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class PollingSource(Closing):
    """Base of the live sources built on `poll() -> list[Record]`: iterating yields the
    records until the source is closed."""

    closed = False

    def __iter__(self) -> Iterator[Record]:
        while not self.closed:
            yield from self.poll()


BPF_DEFAULT = ("udp port 1628 or udp port 1629 or udp port 2541 or udp portrange 4059-4069 "
               "or tcp portrange 4059-4069")


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """'kind:target?k=v&...' -> (kind, target, options)."""
    if ":" not in spec:
        raise LiveError(f"live source {spec!r}: expected KIND:TARGET "
                        "(serial:/dev/ttyUSB0, iface:eth0, lon:lon0, tshark:eth0, file:PATH)")
    kind, rest = spec.split(":", 1)
    target, _, query = rest.partition("?")
    opts = {k: v[-1] for k, v in parse_qs(query).items()}
    return kind.lower(), target, opts


def open_source(spec: str, **kw):
    """Open a live source from its specification (see the module docstring)."""
    kind, target, opts = parse_spec(spec)
    opts.update({k: v for k, v in kw.items() if v is not None})
    if kind == "serial":
        from .serial_ni import SerialNiError, SerialNiSource
        try:
            return SerialNiSource(target, framing=opts.get("framing", "u61"),
                                  baudrate=int(opts["baud"]) if "baud" in opts else None,
                                  answer_timeout=float(opts.get("timeout", 2.0)))
        except SerialNiError as e:
            raise LiveError(str(e)) from None
    if kind == "iface":
        from .netdev import ScapySource
        return ScapySource(target, bpf=opts.get("filter", BPF_DEFAULT))
    if kind == "lon":
        from .netdev import LonNetdevSource
        return LonNetdevSource(target)
    if kind == "tshark":
        from .netdev import TsharkSource
        return TsharkSource(target, bpf=opts.get("filter", BPF_DEFAULT))
    if kind == "file":
        return FileSource(target)
    raise LiveError(f"unknown live source kind {kind!r} (serial, iface, lon, tshark, file)")


class FileSource:
    """Replay of a capture or log file as a live source."""

    linktype = None

    def __init__(self, path: str):
        from ..capture import CaptureError, open_reader
        try:
            self.reader = open_reader(path)
        except CaptureError as e:
            raise LiveError(str(e)) from None
        self.stats = {"frames": 0}
        self.closed = False

    def __iter__(self) -> Iterator[Record]:
        for rec in self.reader:
            if self.closed:
                return
            self.stats["frames"] += 1
            yield rec
        self.closed = True

    def poll(self) -> list[Record]:
        if not hasattr(self, "_it"):
            self._it = iter(self)
        out = []
        for rec in self._it:
            out.append(rec)
            if len(out) >= 1000:
                break
        return out

    def close(self) -> None:
        self.closed = True
        self.reader.close()


# --------------------------------------------------------------------------- capture filter

def capture_filter(text: str):
    """`accept(record) -> bool` for a display-filter expression over `lon` / `lon.*` fields,
    evaluated on the stateless dissection of the record (any link type that reaches the
    LonTalk layer: raw frames, SICB messages, CN/IP).  Raises LiveError (one line) for a
    syntax error or a field outside `lon`."""
    from ..filters import FilterError, compile_filter
    try:
        fn = compile_filter(text)
    except FilterError as e:
        raise LiveError(f"capture filter {text!r}: {e}") from None
    other = sorted(f for f in getattr(fn, "fields", ()) if f != "lon" and not f.startswith("lon."))
    if other:
        raise LiveError(f"capture filter {text!r}: only lon.* fields can be used in a capture filter "
                        f"(not {', '.join(other)}); use a display filter for the rest")
    from dissectors import dissect_frame

    def accept(rec) -> bool:
        try:
            return bool(fn(dissect_frame(rec.data, rec.linktype).fields))
        except Exception:        # a filter never stops a capture: an undecodable frame fails it
            return False
    accept.text = text          # type: ignore[attr-defined]
    return accept


# --------------------------------------------------------------------------- output files

class RingWriter:
    """pcapng output with tshark-style ring buffer options: `filesize` (kB) starts a new
    file when the current one exceeds it, `files` keeps only the last N files.  File
    names: OUT_00001_YYYYmmddHHMMSS.pcapng when a ring option is set."""

    def __init__(self, path, filesize_kb: int | None = None, files: int | None = None,
                 linktype: int | None = None):
        from ..pcapwriter import PcapngWriter
        self._cls = PcapngWriter
        self.base = os.fspath(path)
        self.filesize = filesize_kb * 1000 if filesize_kb else None
        self.files_max = files
        self.linktype = linktype
        self.ring = bool(filesize_kb or files)
        self.paths: list[str] = []
        self.index = 0
        self.count = 0
        self.last_flush = time.monotonic()
        self.writer = None
        self._next_file()

    def _name(self) -> str:
        if not self.ring or self.base == "-":
            return self.base
        root, ext = os.path.splitext(self.base)
        return f"{root}_{self.index:05d}_{time.strftime('%Y%m%d%H%M%S')}{ext or '.pcapng'}"

    def _next_file(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.index += 1
        name = self._name()
        if name == "-":
            import sys
            self.writer = self._cls(sys.stdout.buffer, self.linktype)
        else:
            self.writer = self._cls(name, self.linktype)
        self.paths.append(name)
        if self.files_max and len(self.paths) > self.files_max:
            old = self.paths.pop(0)
            try:
                os.remove(old)
            except OSError:
                pass

    def write(self, rec) -> None:
        if self.filesize and self.writer.bytes_written >= self.filesize and self.writer.count:
            self._next_file()
        self.writer.write(rec)
        self.count += 1

    def tick(self) -> None:
        """Flush at least once a second, so that readers of the file see the packets."""
        now = time.monotonic()
        if now - self.last_flush >= 0.5:
            self.writer.flush()
            self.last_flush = now

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def capture(source, out: RingWriter | None = None, count: int | None = None,
            duration: float | None = None, on_record=None, stop=None, accept=None,
            counters: dict | None = None) -> int:
    """Pump records from a live source into `out` (and/or `on_record`) until `count`
    records, `duration` seconds, `stop()` returns True, or the source ends.  With `accept`
    (see `capture_filter`) only accepted records count and are passed on; the others are
    counted in `counters["filtered"]`.  Flushes the output at least every second.  Returns
    the number of records passed on."""
    if counters is None:
        counters = {}
    counters.setdefault("filtered", 0)
    n = 0
    t_end = time.monotonic() + duration if duration else None
    poll = getattr(source, "poll", None)
    it = None if poll else iter(source)
    try:
        while True:
            if stop is not None and stop():
                break
            if t_end is not None and time.monotonic() >= t_end:
                break
            if poll is not None:
                recs = poll()
                if not recs and getattr(source, "closed", False):
                    break
            else:
                try:
                    recs = [next(it)]
                except StopIteration:
                    break
            for rec in recs:
                if accept is not None and not accept(rec):
                    counters["filtered"] += 1
                    continue
                if out is not None:
                    out.write(rec)
                if on_record is not None:
                    on_record(rec)
                n += 1
                if count and n >= count:
                    return n
            if out is not None:
                out.tick()
    finally:
        if out is not None:
            out.writer.flush()
    return n


__all__ = ["Closing", "PollingSource", "capture_filter", "LiveError", "open_source", "parse_spec", "RingWriter", "capture", "FileSource", "BPF_DEFAULT"]
