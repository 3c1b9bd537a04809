"""Deterministic captures and apps for the TUI tests and snapshots.

The snapshot capture uses a private link type (65000, never assigned by tcpdump.org) with a
tiny test protocol registered here, so that the screens do not change when the real
dissectors evolve: every byte, field and Info text on screen is defined in this file."""
from __future__ import annotations

import struct
from pathlib import Path

from dissectors.core import FT_STR, FT_UINT, field, need, table

LINK_TUIDEMO = 65000

field("tuidemo.type", FT_UINT, "Message type", labels={1: "read", 2: "ciphered", 3: "bad-auth", 4: "broken"})
field("tuidemo.src", FT_UINT, "Source node")
field("tuidemo.dst", FT_UINT, "Destination node")
field("tuidemo.seq", FT_UINT, "Sequence number")
field("tuidemo.payload", FT_STR, "Payload text")
field("tuidemo.plain", FT_STR, "Decrypted text")


def dissect_tuidemo(buf, off, end, d, parent):
    """[type 1][src 1][dst 1][seq 2][payload...]; type 2 payload is XOR 0x5A "ciphered"."""
    need(end, off, 5, "tuidemo header")
    node = d.layer("tuidemo", "TUI demo protocol", off, end - off)
    typ, src, dst, seq = struct.unpack_from(">BBBH", buf, off)
    d.add(node, "tuidemo.type", typ, off, 1)
    d.add(node, "tuidemo.src", src, off + 1, 1)
    d.add(node, "tuidemo.dst", dst, off + 2, 1)
    d.add(node, "tuidemo.seq", seq, off + 3, 2)
    d.src, d.dst = f"1/{src}", f"1/{dst}"
    payload = bytes(buf[off + 5:end])
    if typ == 2:
        plain = bytes(b ^ 0x5A for b in payload)
        old = d.source
        d.new_source("Decrypted xDLMS", plain)
        inner = d.layer("tuiplain", "Decrypted payload", 0, len(plain))
        d.add(inner, "tuidemo.plain", plain.decode("ascii", "replace"), 0, len(plain))
        d.source = old
        d.status = "decrypted"
        d.info = f"ciphered seq={seq} → {plain.decode('ascii', 'replace')}"
    else:
        d.add(node, "tuidemo.payload", payload.decode("ascii", "replace"), off + 5, len(payload))
        if typ == 3:
            d.status = "auth failed"
            d.info = f"bad-auth seq={seq}"
        elif typ == 4:
            d.malformed("tuidemo", off + 5, "payload is broken", node)
            d.info = f"broken seq={seq}"
        else:
            d.info = f"read seq={seq} {payload.decode('ascii', 'replace')}"


table("link").register(LINK_TUIDEMO, "tuidemo", dissect_tuidemo)

T0 = 1_700_000_000


def demo_frames(n: int = 60) -> list[tuple[int, bytes]]:
    out = []
    for i in range(n):
        typ = (1, 1, 2, 1, 3, 2, 4, 1)[i % 8]
        src, dst = (5, 9) if i % 2 == 0 else (9, 5)
        text = f"value-{i:03d}".encode()
        payload = bytes(b ^ 0x5A for b in text) if typ == 2 else text
        ts_ns = (T0 + i // 4) * 1_000_000_000 + (i % 4) * 250_000_000
        out.append((ts_ns, struct.pack(">BBBH", typ, src, dst, i) + payload))
    return out


def write_pcap(path: Path, frames, linktype: int = LINK_TUIDEMO, nano: bool = False) -> Path:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
        for ts_ns, data in frames:
            sec, ns = divmod(ts_ns, 1_000_000_000)
            f.write(struct.pack("<IIII", sec, ns if nano else ns // 1000, len(data), len(data)))
            f.write(data)
    return Path(path)


def make_app(path, size_tick: float = 0.05, **kw):
    from analyzer.tui.app import LonscopeApp
    from analyzer.tui.session import Session
    paths = path if isinstance(path, (list, tuple)) else [path]
    session = Session([str(p) for p in paths], **kw)
    return LonscopeApp(session, tick=size_tick, keyring=kw.get("keys"))


async def wait_loaded(pilot, timeout: float = 20.0) -> None:
    import asyncio
    app = pilot.app
    s = app.session
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if s.done and (s.filter_fn is None or s.view_upto >= s.n_decoded):
            break
        await asyncio.sleep(0.02)
    await pilot.pause(0.1)
    # the details pane is final once the selected packet was decoded by the pipeline
    plist = app.q("list")
    while loop.time() < end and plist.count:
        node = app.q("details").cursor_node
        if app.detail_row is not None and app._detail_decoded and not app._reveal_pending \
                and node is not None and node.data is not None:
            break
        await asyncio.sleep(0.02)
    await pilot.pause(0.05)


def load_session(paths, **kw):
    """A TUI Session on `paths`, started and waited for (decoded, and filtered if a filter
    is set), at most 30 s."""
    import time

    from analyzer.tui.session import Session
    s = Session([str(p) for p in (paths if isinstance(paths, list) else [paths])], **kw)
    s.start()
    t = time.time()
    while not s.done and time.time() - t < 30:
        time.sleep(0.02)
    while s.filter_fn is not None and s.view_upto < s.n_decoded and time.time() - t < 30:
        time.sleep(0.02)
    return s
