"""Live capture from an Echelon-family USB/serial network interface (U10/U20/U60/U70) in
layer-2 mode, talking the U50 or U61 wire framing directly over the tty (pyserial).

Framing (docs: lon-wire-formats §5.2):
- U50: a code packet `7E | frame-code | parameter | checksum` (frame-code: bits 7..5
  sequence, bit 4 ACK, bits 3..0 command; command 2 = "message" announces a message),
  followed for messages by `[len][NI cmd][payload][checksum]`, len = 1 + payload length.
- U61: every message starts `7E 00`, then the same `[len][cmd][payload][checksum]`.
- checksum = two's-complement negation of the sum of the preceding bytes (of the code
  packet, resp. of the message from len on); every 0x7E inside a message is doubled.

On open the interface is switched to layer 2 (NI command 0xD1) and an answer is awaited
(a reset uplink 0x50, an acknowledgement, or an echo); on close it is switched back to
layer 5 (0xD0).  Received frames (0x1A, 0x1B with phase, 0x1C with phase and SSI) become
raw LonTalk records (LINKTYPE_USER0) with `phase=N ssi=0xNNNN` pcapng comments; receive
errors 0x30..0x35 are counted.
"""
from __future__ import annotations

import errno
import grp
import os
import time

from dissectors.net import LINKTYPE_USER0

from ..packet import Record
from . import PollingSource

SYNC = 0x7E

NI_L2_RX = 0x1A            # received L2 frame (with CRC)
NI_L2_RX_PHASE = 0x1B      # phase byte + frame
NI_L2_RX_SSI = 0x1C        # phase byte + frame + 2 SSI bytes
NI_RESET = 0x50
NI_MODE_L5 = 0xD0
NI_MODE_L2 = 0xD1
NI_ERRORS = {0x30: "timeout", 0x31: "CRC", 0x32: "packet too long", 0x33: "preamble too long",
             0x34: "preamble too short", 0x35: "packet too short"}

U50_NULL, U50_FAIL, U50_MSG, U50_MSG_REQ, U50_MSG_ACK, U50_REJECT = 0, 1, 2, 3, 4, 5
U50_SHORT_NI, U50_RESYNC = 6, 7

BAUD = {"u50": 115200, "u61": 460800}


class SerialNiError(Exception):
    """A one-line, user-facing problem with the serial network interface."""


def checksum(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def escape(data: bytes) -> bytes:
    return data.replace(b"\x7e", b"\x7e\x7e")


def encode_message(cmd: int, payload: bytes = b"") -> bytes:
    """`[len][cmd][payload][checksum]` with 0x7E doubled (the part common to U50/U61)."""
    body = bytes([1 + len(payload), cmd]) + bytes(payload)
    return escape(body + bytes([checksum(body)]))


def u50_code_packet(command: int, parameter: int = 0, seq: int = 0, ack: bool = False) -> bytes:
    fc = (seq & 7) << 5 | (0x10 if ack else 0) | (command & 0x0F)
    head = bytes([SYNC, fc, parameter & 0xFF])
    return head + bytes([checksum(head)])


def encode(framing: str, cmd: int, payload: bytes = b"", seq: int = 0) -> bytes:
    """One NI message as sent on the wire in the given framing."""
    if framing == "u50":
        return u50_code_packet(U50_MSG, 0, seq) + encode_message(cmd, payload)
    return bytes([SYNC, 0x00]) + encode_message(cmd, payload)


class Decoder:
    """Incremental decoder of the byte stream from the interface.  `feed(bytes)` returns
    a list of events: ("msg", cmd, payload) and, for U50, ("code", command, parameter,
    seq, ack).  Bad checksums and broken frames are counted in `errors`."""

    def __init__(self, framing: str):
        if framing not in ("u50", "u61"):
            raise ValueError(f"unknown framing {framing!r} (u50 or u61)")
        self.framing = framing
        self.state = "idle"
        self.buf = bytearray()
        self.pending_7e = False
        self.need = 0
        self.errors = 0
        self.bad_checksums = 0

    def _restart(self) -> None:
        self.state = "idle"
        self.buf.clear()

    def feed(self, data: bytes) -> list:
        out = []
        for b in data:
            self._byte(b, out)
        return out

    def _start_frame(self) -> None:
        self.buf.clear()
        self.state = "code" if self.framing == "u50" else "u61_zero"

    def _byte(self, b: int, out: list) -> None:
        st = self.state
        if st == "idle":
            if b == SYNC:
                self._start_frame()
            return
        if st == "code":                       # U50 code packet: fc, param, checksum
            self.buf.append(b)
            if len(self.buf) == 3:
                fc, param, ck = self.buf
                if checksum(bytes([SYNC, fc, param])) != ck:
                    # a stray 0x7E: look for the real start among the bytes just read
                    self.bad_checksums += 1
                    self.errors += 1
                    again = bytes(self.buf)
                    self._restart()
                    for x in again:
                        self._byte(x, out)
                    return
                cmd = fc & 0x0F
                out.append(("code", cmd, param, fc >> 5, bool(fc & 0x10)))
                if cmd == U50_MSG:
                    self.state = "msg"
                    self.buf.clear()
                    self.pending_7e = False
                else:
                    self._restart()
            return
        if st == "u61_zero":
            if b == 0x00:
                self.state = "msg"
                self.buf.clear()
                self.pending_7e = False
            elif b != SYNC:
                self.errors += 1
                self._restart()
            return
        # st == "msg": [len][cmd][payload][checksum], 0x7E doubled
        if self.pending_7e:
            self.pending_7e = False
            if b != SYNC:
                # a single 0x7E: a new frame starts; the message was cut
                self.errors += 1
                self._start_frame()
                self._byte(b, out)
                return
        elif b == SYNC:
            self.pending_7e = True
            return
        self.buf.append(b)
        ln = self.buf[0]
        if ln == 0:
            self.errors += 1
            self._restart()
            return
        if len(self.buf) == ln + 2:
            body = bytes(self.buf[:-1])
            if checksum(body) != self.buf[-1]:
                self.bad_checksums += 1
                self.errors += 1
            else:
                out.append(("msg", body[1], body[2:]))
            self._restart()


def frame_record(cmd: int, payload: bytes, ts_ns: int) -> Record | None:
    """A layer-2 receive message as a raw LonTalk record (None if not a frame)."""
    if cmd == NI_L2_RX:
        return Record(ts_ns, bytes(payload), LINKTYPE_USER0, len(payload))
    if cmd == NI_L2_RX_PHASE and len(payload) >= 1:
        frame = bytes(payload[1:])
        return Record(ts_ns, frame, LINKTYPE_USER0, len(frame), 0, (f"phase={payload[0] - 1}",))
    if cmd == NI_L2_RX_SSI and len(payload) >= 3:
        frame = bytes(payload[1:-2])
        ssi = payload[-2] << 8 | payload[-1]
        return Record(ts_ns, frame, LINKTYPE_USER0, len(frame), 0, (f"phase={payload[0] - 1} ssi=0x{ssi:04x}",))
    return None


def _permission_hint(dev: str) -> str:
    try:
        st = os.stat(dev)
        group = grp.getgrgid(st.st_gid).gr_name
    except (OSError, KeyError):
        group = "dialout"
    return (f"permission denied on {dev}: add your user to the '{group}' group "
            f"(sudo usermod -aG {group} $USER, then log in again) or run with rights to open the device")


class SerialNiSource(PollingSource):
    """Iterable of Records from a serial NI; `stats` counts frames, errors and resets."""

    linktype = LINKTYPE_USER0

    def __init__(self, device: str, framing: str = "u61", baudrate: int | None = None,
                 answer_timeout: float = 2.0, switch_mode: bool = True, read_timeout: float = 0.2):
        if framing not in ("u50", "u61"):
            raise SerialNiError(f"unknown framing {framing!r}: use u50 (U10 FT rev C, U60 FT) or u61")
        self.device = device
        self.framing = framing
        self.baudrate = baudrate or BAUD[framing]
        self.decoder = Decoder(framing)
        self.stats = {"frames": 0, "rx_errors": 0, "rx_error_kinds": {}, "framing_errors": 0,
                      "resets": 0, "other": 0}
        self.closed = False
        self._seq = 0
        self._last_seq = 0
        self._queue: list[Record] = []
        self.read_timeout = read_timeout
        self.port = self._open()
        if switch_mode:
            self._switch_l2(answer_timeout)

    # ---- open / close
    def _open(self):
        import serial
        if not os.path.exists(self.device):
            raise SerialNiError(f"serial:{self.device}: no such device (is the interface plugged in? "
                                "ls /dev/ttyUSB* /dev/ttyACM*)")
        try:
            return serial.Serial(self.device, self.baudrate, timeout=self.read_timeout, write_timeout=2)
        except serial.SerialException as e:
            err = getattr(e, "errno", None)
            text = str(e)
            if err == errno.EACCES or "Permission denied" in text:
                raise SerialNiError(f"serial:{self.device}: " + _permission_hint(self.device)) from None
            if err == errno.ENOENT or "No such file" in text:
                raise SerialNiError(f"serial:{self.device}: no such device") from None
            if err == errno.EBUSY or "busy" in text.lower():
                raise SerialNiError(f"serial:{self.device}: device busy (is lonifd or another program using it?)") from None
            raise SerialNiError(f"serial:{self.device}: cannot open ({text.splitlines()[0] if text else e})") from None

    def _send(self, cmd: int, payload: bytes = b"") -> None:
        self.port.write(encode(self.framing, cmd, payload, self._seq))
        self._seq = (self._seq + 1) & 7

    def _switch_l2(self, timeout: float) -> None:
        self._send(NI_MODE_L2)
        deadline = time.monotonic() + timeout
        answered = False
        while not answered and time.monotonic() < deadline:
            data = self.port.read(self.port.in_waiting or 1)
            if not data:
                continue
            for ev in self.decoder.feed(data):
                # everything after the answer in the same read is traffic: keep it
                if ev[0] == "code":
                    self._last_seq = ev[3]
                    if ev[4] or ev[1] == U50_MSG_ACK:        # acknowledgement of our message
                        answered = True
                    continue
                cmd, payload = ev[1], ev[2]
                if not answered and cmd in (NI_RESET, NI_MODE_L2):
                    if cmd == NI_RESET:
                        self.stats["resets"] += 1
                    answered = True
                    continue
                self._handle(cmd, payload)
                if self.framing == "u50":
                    self.port.write(u50_code_packet(U50_NULL, 0, self._last_seq, ack=True))
        if answered:
            return
        self.port.close()
        self.closed = True
        raise SerialNiError(f"serial:{self.device}: no answer to the layer-2 mode switch (NI command 0xD1) "
                            f"within {timeout:g} s; check the framing ({self.framing}; try "
                            f"{'u61' if self.framing == 'u50' else 'u50'}) and the baud rate ({self.baudrate})")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._send(NI_MODE_L5)
            self.port.flush()
        except Exception:   # the device may be gone already; closing must not fail
            pass
        try:
            self.port.close()
        except Exception:
            pass

    # ---- receive
    def _handle(self, cmd: int, payload: bytes) -> None:
        rec = frame_record(cmd, payload, time.time_ns())
        if rec is not None:
            self.stats["frames"] += 1
            self._queue.append(rec)
        elif 0x30 <= cmd <= 0x3F:
            self.stats["rx_errors"] += 1
            kind = NI_ERRORS.get(cmd, f"0x{cmd:02x}")
            self.stats["rx_error_kinds"][kind] = self.stats["rx_error_kinds"].get(kind, 0) + 1
        elif cmd == NI_RESET:
            self.stats["resets"] += 1
        else:
            self.stats["other"] += 1

    def poll(self) -> list[Record]:
        """Read what is available (waiting at most the read timeout); return new records."""
        if self.closed:
            return []
        try:
            data = self.port.read(self.port.in_waiting or 1)
        except Exception as e:      # unplugged: stop with a clear message
            self.close()
            raise SerialNiError(f"serial:{self.device}: read failed ({e})") from None
        if data:
            for ev in self.decoder.feed(data):
                if ev[0] == "code":
                    self._last_seq = ev[3]
                elif ev[0] == "msg":
                    self._handle(ev[1], ev[2])
                    if self.framing == "u50":
                        # acknowledge the message so that the interface does not repeat it
                        self.port.write(u50_code_packet(U50_NULL, 0, self._last_seq, ack=True))
            self.stats["framing_errors"] = self.decoder.errors
        out, self._queue = self._queue, []
        return out


__all__ = ["SerialNiSource", "SerialNiError", "Decoder", "encode", "encode_message", "u50_code_packet",
           "frame_record", "checksum", "NI_MODE_L2", "NI_MODE_L5"]
