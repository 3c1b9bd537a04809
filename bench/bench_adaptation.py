"""Benchmark: the layers between LonTalk / TCP-UDP and xDLMS, fast pass (summary fields, no
tree): HDLC frames, wrapper PDUs, adaptation PDUs, proxy frames (nested target decoded)
and OSGP requests per second, each including the xDLMS APDU inside where there is one.
tshark 4.0 has none of these layers (it stops at the LonTalk code byte), hence no ratio."""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dissectors import load_all  # noqa: E402
from dissectors.core import Dissection  # noqa: E402

load_all()

from dissectors import adaptation, hdlc, osgp, proxy, wrapper  # noqa: E402

GET = bytes.fromhex("C001C100080000010000FF0200")
RSP = bytes.fromhex("C401C100090C07E8030505113B0400FEB600")
LON_CTX = {"src_subnet": 1, "src_node": 5, "dst_type": "unicast", "dst_subnet": 1, "dst_node": 10,
           "type": "REQUEST", "tid": 1}


def _rate(samples, fn, rounds: int) -> float:
    for s in samples:                       # warm-up
        fn(s)
    t0 = time.process_time()
    n = 0
    for _ in range(rounds):
        for s in samples:
            fn(s)
        n += len(samples)
    return n / max(1e-9, time.process_time() - t0)


def _hdlc(b):
    d = Dissection(b, False)
    hdlc.dissect_frames(b, 0, len(b), d, None)


def _wrapper(b):
    d = Dissection(b, False)
    wrapper.dissect_pdus(b, 0, len(b), d, None)


def _adp(b):
    d = Dissection(b, False)
    d.ctx["lon"] = LON_CTX
    adaptation.dissect_adp(b, 0, len(b), d, None)


def _proxy(b):
    d = Dissection(b, False)
    d.ctx["lon"] = LON_CTX
    proxy.dissect_proxy(b, 0, len(b), d, None)


def _osgp(b):
    d = Dissection(b, False)
    osgp.dissect_request(b, 0, len(b), d, None)


def run(quick: bool = False) -> list[dict]:
    rounds = 2000 if quick else 20000
    cases = [
        ("hdlc: I-frames/s (HCS+FCS check, LLC, GET inside)",
         [hdlc.build_frame(1, 16, 0x10, GET, llc=b"\xe6\xe6\x00"),
          hdlc.build_frame(16, 1, 0x30, RSP, llc=b"\xe6\xe7\x00")], _hdlc, "frame/s"),
        ("wrapper: PDUs/s (GET/response inside)", [wrapper.build(16, 1, GET), wrapper.build(1, 16, RSP)],
         _wrapper, "PDU/s"),
        ("adaptation: PDUs/s (inferred profile, GET inside)", [adaptation.build_pdu(GET), adaptation.build_pdu(RSP)],
         _adp, "PDU/s"),
        ("proxy: frames/s (2 hops, nested adaptation GET)",
         [proxy.build_proxy([(1, 11)], (1, 20), adaptation.build_pdu(GET))], _proxy, "frame/s"),
        ("osgp: requests/s (partial read + trailer)",
         [bytes.fromhex("3F0017000000002C0102030474861F6D7658DD56")], _osgp, "req/s"),
    ]
    rows = []
    for name, samples, fn, unit in cases:
        rows.append({"benchmark": name, "value": round(_rate(samples, fn, rounds // len(samples))), "unit": unit,
                     "tshark": None, "ratio": None,
                     "note": "CPU time of this process (one core), fast pass; tshark 4.0 has no such dissector"})
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['benchmark']}: {row['value']} {row['unit']}  ({row['note']})")
