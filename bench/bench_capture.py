"""Capture reader throughput: plain iteration of a classic pcap / pcapng, the offset index,
compared with `tshark -r FILE -T fields -e frame.number` on the same file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from analyzer.capture import index_capture, read_capture  # noqa: E402
from analyzer.pcapwriter import LINKTYPE_ETHERNET, PcapngWriter, PcapWriter  # noqa: E402


def make_pcap(path: str, n: int) -> None:
    """n x 74-byte Ethernet/IPv4/UDP/CN-IP frames (one LonTalk frame each), written with
    the project's classic-pcap writer."""
    head = bytes.fromhex("0011223344556677889900aa0800" "4500003c000040004011" "0000c0a80001c0a80002"
                         "065c065c00280000")
    body = bytes.fromhex("002001000000000000000000") + bytes(20)
    frame = (head + body)[:74]
    t0 = 1_700_000_000 * 1_000_000_000
    with PcapWriter(path, LINKTYPE_ETHERNET, snaplen=65535) as w:
        for i in range(n):
            w.write((t0 + i * 1_000_000, frame))


def _time(fn) -> float:
    """CPU time of fn (the host is shared: wall time mostly measures the neighbours)."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def run(quick: bool = False) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    tmp = tempfile.mkdtemp(prefix="bench_capture_")
    try:
        pcap = os.path.join(tmp, "b.pcap")
        make_pcap(pcap, n)

        def iterate(path=pcap):
            k = 0
            for _ in read_capture(path):
                k += 1
            assert k == n

        iterate()                                   # warm the page cache
        t_iter = min(_time(iterate) for _ in range(3))
        t_index = min(_time(lambda: index_capture(pcap)) for _ in range(2))
        ng = os.path.join(tmp, "b.pcapng")
        with PcapngWriter(ng) as w:
            for r in read_capture(pcap):
                w.write(r)
        t_ng = min(_time(lambda: iterate(ng)) for _ in range(2))
        tshark = shutil.which("tshark")
        t_ts = None
        if tshark:
            import resource
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([tshark, "-r", pcap, "-T", "fields", "-e", "frame.number"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t_ts = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        rate = n / t_iter
        ts_rate = n / t_ts if t_ts else None
        rows = [
            {"benchmark": "capture.pcap_iterate", "value": rate, "unit": "records/s",
             "tshark": ts_rate, "ratio": rate / ts_rate if ts_rate else None,
             "note": f"{n} x 74-byte records, read_capture(), CPU time; tshark -T fields -e frame.number, CPU time"},
            {"benchmark": "capture.pcapng_iterate", "value": n / t_ng, "unit": "records/s",
             "tshark": None, "ratio": None, "note": "same records as pcapng (EPB, ns resolution)"},
            {"benchmark": "capture.pcap_index", "value": n / t_index, "unit": "records/s",
             "tshark": None, "ratio": None, "note": "index_capture(): numpy offsets/ts/lengths"},
        ]
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
