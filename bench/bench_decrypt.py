"""Benchmark: ciphered xDLMS APDUs decrypted (or verified) and dissected per second on a
ciphered mix (glo-get request/response A+E, general-glo-ciphering, authentication-only,
encryption-only, dedicated key), and the same mix end to end through the pipeline
(Ethernet/IPv4/UDP/wrapper frames, association tracking, decryption, plaintext dissection).
Target: >= 50k APDUs/s decrypt+dissect on one core."""
from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analyzer import dlmscrypto as dc  # noqa: E402
from analyzer.associations import Association  # noqa: E402
from analyzer.decrypt import decrypt_one  # noqa: E402
from analyzer.keyring import Secret, load_keys  # noqa: E402
from dissectors.core import Dissection, table  # noqa: E402
from dissectors import load_all  # noqa: E402

EK = bytes(range(16))
AK = bytes(range(16, 32))
DK = bytes(range(32, 48))
CT, SV = b"CLIENT01", b"SERVER01"

PLAINS = [
    (True, bytes.fromhex("C001C1000800000100FF0200")),                                   # get clock
    (False, bytes.fromhex("C401C100090C07E8030505113B0400FEB600")),                        # clock value
    (True, bytes.fromhex("C001C100030100010800FF0200")),                                   # get energy
    (False, bytes.fromhex("C401C1000600001391")),
    (False, bytes.fromhex("C402C1000000000100340204090C07E8030505113B0400FEB60006000013911200FF1100"
                          "0204090C07E8030505113B0400FEB60006000013911200FF1100")),          # profile block
    (False, bytes.fromhex("0F000001DB000922125A8591360000000049000000110000000A5A8513D0")),
]


def _glo(tag: int, body: bytes) -> bytes:
    n = len(body)
    return bytes([tag]) + (bytes([n]) if n < 0x80 else b"\x81" + bytes([n])) + body


def mix() -> list[tuple[bytes, bool]]:
    """(protected APDU, client->server) pairs."""
    out = []
    ic = 1
    for c2s, pt in PLAINS:
        title = CT if c2s else SV
        tag = pt[0] + 8 if pt[0] >= 0xC0 else None
        for sc in (0x30, 0x30, 0x30, 0x10, 0x20):
            body = dc.protect(sc, ic, title, EK, AK, pt)
            ic += 1
            out.append((_glo(tag, body) if tag else b"\xDB\x08" + title + _glo(0, body)[1:], c2s))
        if tag:
            body = dc.protect(0x30, ic, title, DK, AK, pt)
            ic += 1
            out.append((_glo(tag + 8, body), c2s))
    return out


def _assoc() -> Association:
    a = Association(1, ("bench",), "bench", "c", "s", 1, 0)
    a.client_title, a.server_title = CT, SV
    a.dedicated_key = Secret(DK)
    return a


def run(quick: bool = False) -> list[dict]:
    load_all()
    keys = load_keys(None, [f"ek={EK.hex()}", f"ak={AK.hex()}", f"system_title={SV.hex()}"])
    apdus = mix()
    a = _assoc()
    dispatch = table("dlms").dispatch
    # descriptors come from the dissector (stateless pass) as in the pipeline
    prepared = []
    for apdu, c2s in apdus:
        d = Dissection(apdu, False)
        dispatch("apdu", apdu, 0, len(apdu), d, None)
        prepared.append((apdu, d.ctx["dlms.ciphered"][0], "c2s" if c2s else "s2c"))
    rounds = 40 if quick else 200
    best = None
    total = bad = 0
    for _rep in range(3):              # best of three: the machine is shared
        t0 = time.process_time()
        n = 0
        for _ in range(rounds):
            for apdu, desc, direction in prepared:
                res = decrypt_one(keys, desc, apdu, a, direction)
                pt = res.plaintext
                if pt is None:
                    bad += 1
                    continue
                d = Dissection(pt, False)
                dispatch("apdu", pt, 0, len(pt), d, None)
                n += 1
        dt = time.process_time() - t0
        total += n
        best = n / dt if best is None else max(best, n / dt)
    core = best
    n = total
    # end to end through the pipeline (frames built once)
    from analyzer.packet import Record
    from analyzer.pipeline import Pipeline
    from dissectors.wrapper import build as wrap

    def frame(apdu: bytes, c2s: bool) -> bytes:
        src, dst = ((b"\x0a\x00\x00\x02", 40000, 16), (b"\x0a\x00\x00\x01", 4059, 1))
        if not c2s:
            src, dst = dst, src
        pl = wrap(src[2], dst[2], apdu)
        udp = struct.pack(">HHHH", src[1], dst[1], 8 + len(pl), 0) + pl
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, src[0], dst[0])
        return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp
    from analyzer.dlmscrypto import protect
    init = bytes.fromhex("010110") + DK + bytes.fromhex("0000065F1F0400007E1F04B0")
    gi = protect(0x30, 0, CT, EK, AK, init)
    aarq = (bytes.fromhex("6045A109060760857405080103A60A0408") + CT
            + b"\xBE" + bytes([len(gi) + 4, 0x04, len(gi) + 2, 0x21, len(gi)]) + gi)
    aarq = aarq[:1] + bytes([len(aarq) - 2]) + aarq[2:]
    aare = bytes.fromhex("6129A109060760857405080103A203020100A305A103020100A40A0408") + SV
    aare = aare[:1] + bytes([len(aare) - 2]) + aare[2:]
    frames = [frame(aarq, True), frame(aare, False)] + [frame(x, c) for x, c in apdus]
    pipe = Pipeline(keys=keys)
    prounds = 5 if quick else 40
    t0 = time.process_time()
    pn = 0
    for r in range(prounds):
        for i, fr in enumerate(frames):
            pipe.feed(Record(r * 10**9 + i, fr, 1, len(fr)))
            pn += 1
    pdt = time.process_time() - t0
    return [
        {"benchmark": "decrypt: ciphered APDUs/s, decrypt+dissect", "value": round(core), "unit": "APDU/s",
         "tshark": None, "ratio": None,
         "note": f"{len(prepared)}-APDU ciphered mix (A+E 60%, A 13%, E 13%, dedicated, general-glo), "
                 f"{n} APDUs, {bad} failed; best of 3 runs, CPU time, one core; target >= 50000"},
        {"benchmark": "decrypt: ciphered frames/s, whole pipeline", "value": round(pn / pdt), "unit": "frame/s",
         "tshark": None, "ratio": None,
         "note": "Ethernet/IPv4/UDP/wrapper frames: dissect, associations, decrypt, plaintext dissect"},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['benchmark']}: {row['value']} {row['unit']}  ({row['note']})")
