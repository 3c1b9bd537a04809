"""Network-interface live sources.

- `ScapySource` (`iface:eth0`): scapy's layer-2 listening socket with a BPF filter
  (default: CN/IP 1628/1629, LON/IP 2541, DLMS 4059..4069).
- `LonNetdevSource` (`lon:lon0`): the Linux lon-driver netdev, an AF_PACKET socket for
  protocol 0x8950 (each packet one SICB/NI message, link type 0x950).  The socket is of
  the cooked kind (SOCK_DGRAM): on the real lon netdev (no link header) it yields the same
  bytes as SOCK_RAW; on an Ethernet-type test interface it strips the Ethernet header.
- `TsharkSource` (`tshark:IFACE`): any interface tshark/dumpcap can capture on; the
  capture is streamed as pcapng through a pipe and read block by block (link types and
  time stamps as captured).
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import time

from dissectors.net import ETHERTYPE_SICB as ETH_P_SICB, LINKTYPE_LON_NETDEV

from ..packet import Record
from . import PollingSource

SO_TIMESTAMPNS = 35


def _netdev_error(kind: str, name: str, e: OSError) -> str:
    if e.errno in (errno.EPERM, errno.EACCES):
        return (f"{kind}:{name}: permission denied: capturing needs CAP_NET_RAW (run as root, or "
                f"sudo setcap cap_net_raw,cap_net_admin+eip on the Python interpreter)")
    if e.errno in (errno.ENODEV, errno.ENXIO) or "No such device" in str(e):
        hint = " (is the lon-driver loaded and lonifd running?)" if kind == "lon" else ""
        return f"{kind}:{name}: no such network interface{hint}"
    return f"{kind}:{name}: cannot capture ({e.strerror or e})"


def _live_error(msg: str):
    from . import LiveError
    return LiveError(msg)


class LonNetdevSource(PollingSource):
    linktype = LINKTYPE_LON_NETDEV

    def __init__(self, ifname: str, read_timeout: float = 0.2):
        self.ifname = ifname
        self.stats = {"frames": 0}
        self.closed = False
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_SICB))
        except OSError as e:
            raise _live_error(_netdev_error("lon", ifname, e)) from None
        try:
            self.sock.bind((ifname, ETH_P_SICB))
        except OSError as e:
            self.sock.close()
            raise _live_error(_netdev_error("lon", ifname, e)) from None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self._ts = True
        except OSError:
            self._ts = False
        self.sock.settimeout(read_timeout)

    def poll(self) -> list[Record]:
        if self.closed:
            return []
        out = []
        try:
            while len(out) < 1000:
                data, anc, _flags, _addr = self.sock.recvmsg(65536, 64)
                ts = time.time_ns()
                for level, typ, val in anc:
                    if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(val) >= 16:
                        sec, nsec = struct.unpack("qq", val[:16])
                        ts = sec * 1_000_000_000 + nsec
                out.append(Record(ts, data, LINKTYPE_LON_NETDEV, len(data)))
                self.sock.settimeout(0)
        except (socket.timeout, BlockingIOError):
            pass
        except OSError as e:
            self.close()
            raise _live_error(_netdev_error("lon", self.ifname, e)) from None
        finally:
            if not self.closed:
                self.sock.settimeout(0.2)
        self.stats["frames"] += len(out)
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


class ScapySource(PollingSource):
    """Layer-2 capture through scapy with a kernel BPF filter."""

    def __init__(self, iface: str, bpf: str):
        self.iface = iface
        self.stats = {"frames": 0}
        self.closed = False
        try:
            from scapy.all import conf
            from scapy.data import DLT_EN10MB  # noqa: F401
        except ImportError as e:
            raise _live_error(f"iface:{iface}: scapy is not installed ({e})") from None
        try:
            self.sock = conf.L2listen(iface=iface, filter=bpf)
        except OSError as e:
            raise _live_error(_netdev_error("iface", iface, e)) from None
        except Exception as e:      # scapy reports bad interfaces/filters in its own types
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "No such device" in text or "not found" in text.lower():
                raise _live_error(f"iface:{iface}: no such network interface") from None
            raise _live_error(f"iface:{iface}: cannot capture ({text})") from None
        self.linktype = self._linktype()

    def _linktype(self) -> int:
        try:
            from scapy.arch.linux import get_if_raw_hwaddr  # noqa: F401
            with open(f"/sys/class/net/{self.iface}/type") as f:
                arphrd = int(f.read().strip())
        except (OSError, ValueError, ImportError):
            return 1
        # ARPHRD -> LINKTYPE: Ethernet and loopback are Ethernet-framed; others cooked
        return {1: 1, 772: 1, 65534: 101, 0x950: LINKTYPE_LON_NETDEV}.get(arphrd, 1)

    def poll(self) -> list[Record]:
        if self.closed:
            return []
        from scapy.all import select_objects
        out = []
        ready = select_objects([self.sock], 0.2)
        for _ in ready:
            try:
                cls, data, ts = self.sock.recv_raw(65536)
            except OSError as e:
                self.close()
                raise _live_error(_netdev_error("iface", self.iface, e)) from None
            if data is None:
                continue
            ts_ns = int(ts * 1_000_000_000) if ts else time.time_ns()
            out.append(Record(ts_ns, bytes(data), self.linktype, len(data)))
        self.stats["frames"] += len(out)
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except Exception:
                pass


class PcapngStream:
    """Incremental pcapng reader over a byte stream (a pipe): `feed(bytes)` returns the
    records completed so far."""

    def __init__(self):
        self.buf = bytearray()
        self.e = "<"
        self.ifaces: list = []

    def feed(self, data: bytes) -> list[Record]:
        from ..capture import Interface, _comments, _options
        self.buf += data
        out = []
        while len(self.buf) >= 12:
            if self.buf[:4] == b"\x0a\x0d\x0d\x0a":
                self.e = "<" if struct.unpack_from("<I", self.buf, 8)[0] == 0x1A2B3C4D else ">"
                self.ifaces = []
            e = self.e
            btype, blen = struct.unpack_from(e + "II", self.buf, 0)
            if blen < 12 or blen % 4:
                raise ValueError(f"corrupt pcapng stream (block length {blen})")
            if len(self.buf) < blen:
                break
            blk = bytes(self.buf[:blen])
            del self.buf[:blen]
            if btype == 1:
                lt, _, snap = struct.unpack_from(e + "HHI", blk, 8)
                iface = Interface(lt, snap)
                for code, val in _options(blk, 16, blen - 4, e):
                    if code == 9 and val:
                        iface.set_resol(val[0])
                self.ifaces.append(iface)
            elif btype == 6 and blen >= 32:
                ifid, hi, lo, cap, orig = struct.unpack_from(e + "IIIII", blk, 8)
                if ifid < len(self.ifaces) and 28 + cap <= blen - 4:
                    iface = self.ifaces[ifid]
                    oend = 28 + cap + ((-cap) % 4)
                    com = _comments(blk, oend, blen - 4, e) if oend + 4 <= blen - 4 else ()
                    out.append(Record(iface.ts_ns((hi << 32) | lo), blk[28:28 + cap], iface.linktype,
                                      orig, ifid, com))
        return out


class TsharkSource(PollingSource):
    """Capture through tshark (dumpcap), streamed as pcapng over a pipe."""

    def __init__(self, iface: str, bpf: str | None = None, tshark: str = "tshark"):
        import shutil
        self.iface = iface
        self.stats = {"frames": 0}
        self.closed = False
        exe = shutil.which(tshark)
        if exe is None:
            raise _live_error(f"tshark:{iface}: tshark is not installed (apt-get install tshark)")
        cmd = [exe, "-i", iface, "-q", "-w", "-", "-F", "pcapng"]
        if bpf:
            cmd += ["-f", bpf]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.stream = PcapngStream()
        self._err = b""
        self._started = False
        self._pending: list[Record] = []
        # dumpcap writes the section header as soon as the capture runs: wait for it, so that
        # errors (no such device, permissions) surface here as one line
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._started:
            if self.proc.poll() is not None:
                break
            self._pending += self._read(0.1)
        if not self._started:
            self._fail()

    def _read(self, timeout: float) -> list[Record]:
        import select
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        out = []
        if r:
            try:
                data = self.proc.stdout.read(65536)
            except BlockingIOError:
                data = b""
            if data:
                self._started = True
                out = self.stream.feed(data)
        return out

    def _fail(self):
        try:
            self.proc.kill()
        except OSError:
            pass
        err = self.proc.stderr.read().decode("utf-8", "replace") if self.proc.stderr else ""
        lines = [ln.strip() for ln in err.splitlines()
                 if ln.strip() and "Running as user" not in ln and not ln.startswith("Capturing on")]
        msg = lines[0] if lines else "tshark did not start capturing"
        self.closed = True
        if "permission" in msg.lower() or "don't have permission" in msg.lower():
            msg += " (add your user to the 'wireshark' group or run with CAP_NET_RAW)"
        raise _live_error(f"tshark:{self.iface}: {msg}")

    def poll(self) -> list[Record]:
        if self.closed:
            return []
        recs = self._pending + self._read(0.2)
        self._pending = []
        if not recs and self.proc.poll() is not None:
            self.closed = True
        self.stats["frames"] += len(recs)
        return recs

    def close(self) -> None:
        if not self.closed:
            self.closed = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except Exception:
                pass


__all__ = ["LonNetdevSource", "ScapySource", "TsharkSource", "PcapngStream"]
