"""Reusable TCP stream reassembly for one direction of a connection.

`TcpStream.add(seq, data, syn=False, fin=False)` returns the bytes that became deliverable
in order.  Out-of-order segments wait in a bounded buffer; retransmitted bytes are dropped,
partial overlaps trimmed (first copy wins).  When the buffer exceeds its bound, the stream
skips the hole and records a gap `(stream_offset, length)` in `.gaps`, so that a PDU
parser can resynchronise.  Sequence numbers wrap modulo 2**32.
"""
from __future__ import annotations

MOD = 1 << 32
HALF = 1 << 31


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space (signed, modulo 2**32)."""
    d = (a - b) & 0xFFFFFFFF
    return d - MOD if d >= HALF else d


class TcpStream:
    """In-order delivery of one TCP direction."""

    def __init__(self, max_buffer: int = 1 << 20, max_segments: int = 1024):
        self.next_seq: int | None = None   # next expected sequence number
        self.delivered = 0                  # stream offset of next_seq (bytes delivered)
        self.pending: dict[int, bytes] = {}  # seq -> data (out of order)
        self.pending_bytes = 0
        self.max_buffer = max_buffer
        self.max_segments = max_segments
        self.gaps: list[tuple[int, int]] = []   # (stream offset, missing bytes)
        self.retransmitted = 0                  # segments wholly dropped as duplicates
        self.fin = False
        self.last_was_retransmission = False
        self.last_was_out_of_order = False
        self.last_direct = 0        # bytes at the start of add()'s result that are this segment's tail

    def add(self, seq: int, data: bytes, syn: bool = False, fin: bool = False) -> bytes:
        """Feed one segment; return the newly deliverable in-order bytes (maybe empty)."""
        self.last_was_retransmission = False
        self.last_was_out_of_order = False
        self.last_direct = 0
        if syn:
            if self.next_seq is None:
                self.next_seq = (seq + 1) & 0xFFFFFFFF
            seq = (seq + 1) & 0xFFFFFFFF
        if self.next_seq is None:          # capture started mid-stream
            self.next_seq = seq
        if fin:
            self.fin = True
        if not data:
            return b""
        d = seq_diff(seq, self.next_seq)
        if d < 0:                         # starts before what we expect: old bytes
            if -d >= len(data):
                self.retransmitted += 1
                self.last_was_retransmission = True
                return b""
            data = data[-d:]
            seq = self.next_seq
            d = 0
        if d > 0:                         # a hole before this segment
            self.last_was_out_of_order = True
            if seq not in self.pending or len(self.pending[seq]) < len(data):
                self.pending_bytes += len(data) - len(self.pending.get(seq, b""))
                self.pending[seq] = bytes(data)
            if self.pending_bytes > self.max_buffer or len(self.pending) > self.max_segments:
                return self._skip_gap()
            return b""
        out = bytearray(data)
        self.last_direct = len(data)
        self._advance(len(data))
        out += self._drain()
        return bytes(out)

    def _advance(self, n: int) -> None:
        self.next_seq = (self.next_seq + n) & 0xFFFFFFFF
        self.delivered += n

    def _drain(self) -> bytes:
        out = bytearray()
        while self.pending:
            progressed = False
            for s in list(self.pending):
                data = self.pending[s]
                d = seq_diff(s, self.next_seq)
                if d > 0:
                    continue
                del self.pending[s]
                self.pending_bytes -= len(data)
                if -d < len(data):
                    chunk = data[-d:] if d else data
                    out += chunk
                    self._advance(len(chunk))
                progressed = True
            if not progressed:
                break
        return bytes(out)

    def _skip_gap(self) -> bytes:
        """Give up on the hole before the earliest buffered segment."""
        first = min(self.pending, key=lambda s: seq_diff(s, self.next_seq))
        missing = seq_diff(first, self.next_seq)
        self.gaps.append((self.delivered, missing))
        self._advance(missing)
        return self._drain()

    def flush(self) -> bytes:
        """End of capture: skip every remaining hole and return what was buffered."""
        out = bytearray()
        while self.pending:
            out += self._skip_gap()
        return bytes(out)
