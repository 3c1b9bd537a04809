"""The seeded CN/IP oracle corpus shared by the tshark differential test and the fast-path
tests: N random valid LonTalk frames from `tests/longen.py` (every address format and PDU
kind), each wrapped in Ethernet/IPv4/UDP 1628/CN-IP data (sequence numbers 1..N) in one
classic pcap."""
from __future__ import annotations

import random

from longen import coverage_corpus, wrap_cnip_eth, write_pcap

N = 2000
SEED = 14908


def write_corpus(directory, n: int = N, seed: int = SEED) -> tuple:
    """(path of `directory`/lon_corpus.pcap, [(frame bytes, ground truth)])."""
    frames = coverage_corpus(random.Random(seed), n)
    path = directory / "lon_corpus.pcap"
    write_pcap(path, [wrap_cnip_eth(f, seqno=i + 1) for i, (f, _) in enumerate(frames)])
    return path, frames
