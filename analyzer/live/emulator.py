"""A serial network-interface emulator on a pseudo-terminal, for tests and demos.

`NiEmulator(framing)` opens a pty pair; `.path` is the device a `SerialNiSource` (or
`lonscope sniff serial:PATH`) opens.  A background thread decodes what the host sends
(layer-2/5 mode switches are recorded in `.modes` and answered with a reset uplink 0x50);
`send_frame()` / `send_error()` play traffic the way a layer-2 interface delivers it.
"""
from __future__ import annotations

import os
import threading
import tty

from . import Closing
from .serial_ni import (NI_L2_RX, NI_L2_RX_PHASE, NI_L2_RX_SSI, NI_MODE_L2, NI_MODE_L5, NI_RESET,
                        U50_MSG, Decoder, encode)


class NiEmulator(Closing):
    def __init__(self, framing: str = "u61", answer: bool = True):
        self.framing = framing
        self.answer = answer
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        self.decoder = Decoder(framing)
        self.modes: list[int] = []          # NI mode commands received (0xD1, 0xD0)
        self.host_messages: list[tuple[int, bytes]] = []
        self.acks = 0
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        while not self._stop:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            for ev in self.decoder.feed(data):
                if ev[0] == "code":
                    if ev[4]:
                        self.acks += 1
                    continue
                cmd, payload = ev[1], ev[2]
                self.host_messages.append((cmd, payload))
                if cmd in (NI_MODE_L2, NI_MODE_L5):
                    self.modes.append(cmd)
                    if self.answer:
                        # reset uplink: layer mode (2 or 5) and a channel-type byte
                        self._write(encode(self.framing, NI_RESET, bytes([2 if cmd == NI_MODE_L2 else 5, 0x04]),
                                           self._next_seq()))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 7
        return self._seq

    def _write(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view:
                n = os.write(self.master, view)
                view = view[n:]

    def message(self, cmd: int, payload: bytes) -> bytes:
        return encode(self.framing, cmd, payload, self._next_seq())

    def frame_bytes(self, frame: bytes, phase: int | None = None, ssi: int | None = None) -> bytes:
        """The wire bytes of one received frame (0x1A, 0x1B with phase, 0x1C with SSI)."""
        if ssi is not None:
            return self.message(NI_L2_RX_SSI, bytes([(phase or 0) + 1]) + frame + ssi.to_bytes(2, "big"))
        if phase is not None:
            return self.message(NI_L2_RX_PHASE, bytes([phase + 1]) + frame)
        return self.message(NI_L2_RX, frame)

    def send_frame(self, frame: bytes, phase: int | None = None, ssi: int | None = None) -> None:
        self._write(self.frame_bytes(frame, phase, ssi))

    def send_many(self, items) -> None:
        """items: iterable of (frame, phase, ssi); written in large chunks."""
        chunk = []
        size = 0
        for frame, phase, ssi in items:
            b = self.frame_bytes(frame, phase, ssi)
            chunk.append(b)
            size += len(b)
            if size > 16384:
                self._write(b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            self._write(b"".join(chunk))

    def send_error(self, code: int = 0x31) -> None:
        self._write(self.message(code, b""))

    def send_raw(self, data: bytes) -> None:
        self._write(data)

    def close(self) -> None:
        self._stop = True
        for fd in (self.slave, self.master):
            try:
                os.close(fd)
            except OSError:
                pass


__all__ = ["NiEmulator", "U50_MSG"]
