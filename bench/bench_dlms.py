"""Benchmark: xDLMS APDUs dissected per second (fast pass: flat summary fields, no tree)
on a realistic mix of DLMS traffic (GET/SET/ACTION requests and responses, a profile
buffer block, ACSE, ciphered APDUs, notifications).  Target: >= 50k APDUs/s on one core."""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dissectors.core import Dissection  # noqa: E402
from dissectors import xdlms  # noqa: E402

MIX = [
    # (weight, hex)
    (20, "C001C1 0008 0000010000FF 02 00"),                                     # get clock
    (20, "C401C1 00 090C07E8030505113B0400FEB600"),                              # clock value
    (10, "C001C1 0003 0100010800FF 02 00"),                                      # get energy register
    (10, "C401C1 00 0600001391"),
    (5, "C401C1 00 0202 0F00 1621"),                                             # scaler_unit
    (5, "C101C1 0008 0000010000FF 02 00 090C07E50118FF0E303950FFC400"),           # set clock
    (5, "C501C1 00"),
    (3, "C301C1 000F 0000280000FF 01 01 0911 1000001A90E6D2221FA2FD85EED61ACC22"),
    (3, "C701C1 00 01 00 0911 1000001AFDE8857B728A3499106AA665D1"),
    (5, "C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B"),     # glo-get
    (5, "DB0841424344454647481E30000000035591DC3F19035DC1CF591C6D90C3BBADE0B9E60C932EED720D"),
    (3, "0F000001DB000922125A8591360000000049000000110000000A5A8513D014800000000D0000000A0100"),
    (2, "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738BE10040E01000000065F1F0400007E1F04B0"),
    (2, "6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000501F01F40007"),
    (2, "C402C1 00 00000001 00 34" + "0204 090C07E8030505113B0400FEB600 0600001391 1200FF 1100" * 2),
]


def _mix() -> list[bytes]:
    out = []
    for w, h in MIX:
        b = bytes.fromhex(h.replace(" ", ""))
        out.extend([b] * w)
    return out


def run(quick: bool = False) -> list[dict]:
    apdus = _mix()
    n_rounds = 30 if quick else 300
    # warm up
    for a in apdus:
        d = Dissection(a, False)
        xdlms.dissect_apdu(a, 0, len(a), d, None)
    t0 = time.process_time()
    count = 0
    for _ in range(n_rounds):
        for a in apdus:
            d = Dissection(a, False)
            xdlms.dissect_apdu(a, 0, len(a), d, None)
        count += len(apdus)
    dt = time.process_time() - t0
    fast = count / dt
    # full tree (selected packet / -V)
    t0 = time.process_time()
    tcount = 0
    for _ in range(max(3, n_rounds // 10)):
        for a in apdus:
            d = Dissection(a, True)
            xdlms.dissect_apdu(a, 0, len(a), d, d.root)
        tcount += len(apdus)
    tree = tcount / (time.process_time() - t0)
    return [
        {"benchmark": "dlms: APDUs/s, fast pass (summary fields)", "value": round(fast), "unit": "APDU/s",
         "tshark": None, "ratio": None,
         "note": f"{len(MIX)}-kind realistic mix, {count} APDUs, target >= 50000; CPU time of this process (one core); tshark 4.0 has no DLMS"},
        {"benchmark": "dlms: APDUs/s, full tree", "value": round(tree), "unit": "APDU/s",
         "tshark": None, "ratio": None, "note": "tree with byte ranges and display text"},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['benchmark']}: {row['value']} {row['unit']}  ({row['note']})")
