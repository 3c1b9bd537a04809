"""Hypothesis fuzz of the LonTalk, CN/IP, LON/IP and NI dissectors: random bytes and
mutated valid frames.  No exception escapes; damage becomes a malformed expert item with
the layer and an offset inside the data; the layers before the damage are kept."""
from __future__ import annotations

import random
import re

from hypothesis import given, strategies as st

from dissectors import dissect_frame, load_all
from dissectors.cnip import dissect_cnip
from dissectors.core import Dissection
from dissectors.lon import dissect_frame as lon_frame
from dissectors.lonip import dissect_lonip
from dissectors.ni import dissect_sicb

from longen import gen_frame, wrap_cnip_eth

load_all()

PY_ERR = re.compile(r"\b(Index|Type|Key|Value|Attribute|ZeroDivision|Overflow|Unbound|Name)Error\b")


def _check(d: Dissection, n: int) -> None:
    for e in d.expert:
        assert not PY_ERR.search(e.message), e.message      # only expected damage reports
        assert 0 <= e.offset <= n, (e.offset, n, e.message)
        assert e.layer


def _run(fn, b: bytes, tree: bool) -> Dissection:
    d = Dissection(b, tree)
    fn(b, 0, len(b), d, d.root)
    _check(d, len(b))
    return d


_seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _valid(seed: int) -> tuple[bytes, dict]:
    return gen_frame(random.Random(seed))


@given(st.binary(max_size=64), st.booleans())
def test_lon_random_bytes(b, tree):
    d = _run(lambda *a: lon_frame(*a, None), b, tree)
    assert d.protocols[0] == "lon"
    if not b:
        assert any(e.group == "malformed" and e.layer == "lon" for e in d.expert)


@given(_seeds, st.integers(min_value=0, max_value=80), st.booleans())
def test_lon_truncated_valid_frame_keeps_header(seed, cut, tree):
    frame, t = _valid(seed)
    body = frame[:len(frame) - len(t["_crc_bytes"])]
    cut = min(cut, len(body))
    b = body[:cut]
    d = _run(lambda *a: lon_frame(*a, False), b, tree)
    if cut >= 1:
        assert d.fields["lon.ppdu"] == [t["lon.ppdu"]]
    if cut >= 4:
        assert d.fields["lon.npdu"] == [t["lon.npdu"]]
        assert d.fields["lon.srcnet"] == [t["lon.srcnet"]]
    if cut < len(body):
        # either malformed (damage reported inside the data) or the cut fell on an optional tail
        mal = [e for e in d.expert if e.group == "malformed"]
        assert all(e.offset <= cut for e in mal)    # (layers handed the APDU may report too)
    elif t.get("_apdu_kind") not in ("nm", "nd"):   # NM/ND arguments are random bytes here
        assert not [e for e in d.expert if e.group == "malformed" and e.layer == "lon"]


@given(_seeds, st.lists(st.tuples(st.integers(0, 79), st.integers(0, 255)), max_size=4), st.booleans())
def test_lon_mutated_frame(seed, muts, tree):
    frame, _ = _valid(seed)
    b = bytearray(frame)
    for pos, val in muts:
        if pos < len(b):
            b[pos] = val
    d = _run(lambda *a: lon_frame(*a, True), bytes(b), tree)
    assert d.fields["lon.ppdu"] == [b[0]]
    assert d.fields["lon.crc.status"][0] in ("good", "bad")


@given(st.binary(max_size=96), st.booleans())
def test_cnip_random_bytes(b, tree):
    d = _run(dissect_cnip, b, tree)
    assert d.protocols[:1] == (["cnip"] if b else [])
    if 0 < len(b) < 20:
        assert [e.offset for e in d.expert if e.layer == "cnip"] == [0]


@given(_seeds, st.integers(0, 60), st.integers(0, 255), st.booleans())
def test_cnip_mutated(seed, pos, val, tree):
    frame, t = _valid(seed)
    pkt = bytearray(wrap_cnip_eth(frame)[42:])
    if pos < len(pkt):
        pkt[pos] = val
    d = _run(dissect_cnip, bytes(pkt), tree)
    assert d.protocols[0] == "cnip"
    if pos >= 20:      # header intact: kept whatever happens to the frame
        assert d.fields["cnip.len"] == [20 + len(frame)]


@given(st.binary(max_size=64), st.booleans())
def test_ni_random_bytes(b, tree):
    d = _run(dissect_sicb, b, tree)
    assert d.protocols[0] == "ni"


@given(_seeds, st.sampled_from([0x1A, 0x1B, 0x1C, 0x12, 0x31]), st.integers(0, 40), st.booleans())
def test_ni_truncated(seed, cmd, cut, tree):
    frame, _ = _valid(seed)
    payload = (b"\x01" if cmd in (0x1B, 0x1C) else b"") + frame + (b"\x00\x10" if cmd == 0x1C else b"")
    b = (bytes([cmd, len(payload)]) + payload)[:cut + 2]
    d = _run(dissect_sicb, b, tree)
    assert d.fields["ni.cmd"] == [cmd]


@given(st.binary(max_size=48), st.sampled_from(["10.1.2.3", "192.168.1.1", "239.192.1.4", "1.2.3.4", None]),
       st.booleans())
def test_lonip_random_bytes(b, ip, tree):
    def fn(buf, off, end, d, parent):
        d.ctx["ip.src"] = ip
        d.ctx["ip.dst"] = ip
        dissect_lonip(buf, off, end, d, parent)
    d = _run(fn, b, tree)
    assert d.protocols[:1] == ["lonip"]


@given(st.binary(min_size=0, max_size=120))
def test_full_stack_user0_and_cnip(b):
    for lt, data in ((147, b), (1, wrap_cnip_eth(b))):
        d = dissect_frame(data, lt)
        _check(d, len(data))


@given(st.lists(_seeds, min_size=1, max_size=3))
def test_fast_pass_equals_tree_pass(seeds):
    """The fast pass (no tree) records exactly the field values of the tree pass, also
    with several CN/IP packets (hence several LonTalk frames) in one datagram."""
    from dissectors.cnip import build_cnip
    b = b"".join(build_cnip(_valid(s)[0], seqno=i) for i, s in enumerate(seeds))
    fast = _run(dissect_cnip, b, False)
    tree = _run(dissect_cnip, b, True)
    assert fast.fields == tree.fields
    assert (fast.info, fast.src, fast.dst) == (tree.info, tree.src, tree.dst)


_LONIP_VALID = [bytes.fromhex(h.replace(" ", "")) for h in (
    "0010 03 812300ca", "004d 05 09 02 6101", "1110 09 85 01 33 0a bc 812300ca",
    "0000 112233445566 03 812300ca", "0050 05 02 21 0102", "0070 04 07 03 812300ca")]


@given(st.sampled_from(_LONIP_VALID), st.integers(0, 20), st.integers(0, 255), st.integers(0, 20))
def test_lonip_mutated(payload, pos, val, cut):
    b = bytearray(payload)
    if pos < len(b):
        b[pos] = val
    b = bytes(b[:max(cut, 2)] if cut < len(b) else b)

    def fn(buf, off, end, d, parent):
        d.ctx["ip.src"], d.ctx["ip.dst"] = "10.1.2.3", "10.1.4.5"
        dissect_lonip(buf, off, end, d, parent)
    d = _run(fn, b, False)
    assert d.fields["lonip.udpver"] == [b[0] >> 4]
    if "lon.srcnet" in d.fields:
        assert d.fields["lon.srcnet"][:1] == [2] or b[0] & 1    # from 10.1.2.3 unless arbitrary source
    else:                                                        # cut before the addresses
        assert any(e.layer == "lonip" and e.group == "malformed" for e in d.expert)
