"""Enhanced proxy (IEC 62056-8-8 Annex E / LTEP): hop lists (uniform and non-uniform), SICB
address types, alternate key (length only), nested target PDU, uplink success/failure;
the outer LonTalk bytes checked by tshark's lon dissector; fuzzing."""
from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, strategies as st

from analyzer.packet import Record
from analyzer.pipeline import Pipeline
from dissectors import adaptation, load_all, lon, proxy
from dissectors.core import Dissection

load_all()

GET = bytes.fromhex("C001C100080000010000FF0200")     # GET clock.time, invoke 1
ADP_GET = adaptation.build_pdu(GET)                     # the target APDU: code 0x41 + ADP header + GET


def _dissect(apdu: bytes, lonctx: dict | None = None, tree=True) -> Dissection:
    d = Dissection(apdu, tree)
    d.ctx["lon"] = lonctx if lonctx is not None else {
        "src_subnet": 1, "src_node": 5, "dst_type": "unicast", "dst_subnet": 1, "dst_node": 10}
    proxy.dissect_proxy(apdu, 0, len(apdu), d, d.root)
    return d


def test_two_hops_non_uniform_with_adp_get():
    apdu = proxy.build_proxy([(1, 11)], (1, 20), adaptation.build_pdu(GET))
    d = _dissect(apdu)
    f = d.fields
    assert f["lonproxy.kind"] == ["request"]
    assert f["lonproxy.count"] == [1] and f["lonproxy.hop"] == ["1/11"]
    assert f["lonproxy.retry"] == [3] and f["lonproxy.timer"] == [0]
    assert f["lonproxy.sicb.addr_type"] == [1] and f["lonproxy.sicb.service"] == [0]
    assert f["lonproxy.target"] == ["1/20"]
    assert f["lonproxy.path"] == ["1/5 -> 1/10 -> 1/11 -> 1/20"] and f["lonproxy.source"] == ["1/5"]
    assert d.info.startswith("Proxy 1/5 -> 1/10 -> 1/11 -> 1/20")
    # the nested PDU is dissected as if sent to the target directly
    assert f["adp.sap.client"] == [16] and f["dlms.apdu"] == ["get-request"]
    assert f["dlms.obis"] == ["0.0.1.0.0.255"] and f["dlms.class_id"] == [8] and f["dlms.attribute_id"] == [2]
    assert d.ctx["lon"]["dst_node"] == 10      # the outer addressing is restored afterwards


def test_uniform_hops():
    # uniform_by_dest: each hop's subnet is the receiving repeater's own subnet
    apdu = proxy.build_proxy([(2, 11), (2, 12)], (2, 20), ADP_GET, uniform="dest", addr_type=7)
    ctx = {"src_subnet": 1, "src_node": 5, "dst_type": "unicast", "dst_subnet": 2, "dst_node": 10}
    f = _dissect(apdu, ctx).fields
    assert f["lonproxy.uniform_by_dest"] == [True]
    assert f["lonproxy.hop"] == ["2/11", "2/12"]
    assert f["lonproxy.path"] == ["1/5 -> 2/10 -> 2/11 -> 2/12 -> 2/20"]
    # uniform_by_src: the subnet is that of the node the repeater received the message from
    apdu = proxy.build_proxy([(0, 11)], 20, ADP_GET, uniform="src", addr_type=5)
    ctx = {"src_subnet": 3, "src_node": 5, "dst_type": "unicast", "dst_subnet": 3, "dst_node": 10}
    f = _dissect(apdu, ctx).fields
    assert f["lonproxy.uniform_by_src"] == [True]
    assert f["lonproxy.hop"] == ["3/11"] and f["lonproxy.target"] == ["3/20"]
    assert f["dlms.apdu"] == ["get-request"]


@pytest.mark.parametrize("atype,target,expect", [
    (0, (7, 12), "grp 7"),
    (2, (4, bytes.fromhex("010203040506")), "010203040506"),
    (3, (0, 2), "bcast"),
    (4, 9, "grp 9"),
    (6, bytes.fromhex("a1a2a3a4a5a6"), "a1a2a3a4a5a6"),
])
def test_sicb_address_types(atype, target, expect):
    apdu = proxy.build_proxy([], target, ADP_GET, addr_type=atype, service="REQUEST")
    f = _dissect(apdu).fields
    assert f["lonproxy.count"] == [0] and "lonproxy.txctrl" not in f
    assert f["lonproxy.sicb.addr_type"] == [atype] and f["lonproxy.sicb.service"] == [3]
    assert f["lonproxy.target"] == [expect]
    assert f["dlms.apdu"] == ["get-request"]


def test_alternate_key_shows_length_only():
    key = bytes.fromhex("5a17c3e901b2d4f6a8c0e2f4")
    apdu = proxy.build_proxy([(1, 11)], (1, 20), ADP_GET, alt_key=key, alt_key_type=1)
    d = _dissect(apdu)
    f = d.fields
    assert f["lonproxy.sicb.mode"] == [2]
    assert f["lonproxy.altkey.type"] == [1] and f["lonproxy.altkey.length"] == [12]
    assert f["lonproxy.target"] == ["1/20"] and f["dlms.apdu"] == ["get-request"]
    for name, vals in f.items():
        for v in vals:
            assert not (isinstance(v, bytes) and key[:6] in v), name
    texts = " ".join(n.text for n in d.root.walk())
    assert key.hex() not in texts and key.hex(" ") not in texts and key[:6].hex(" ") not in texts


def test_uplink_success_and_failure():
    f = _dissect(proxy.build_success()).fields
    assert f["lonproxy.kind"] == ["success"]
    d = _dissect(proxy.build_failure(2))
    assert d.fields["lonproxy.kind"] == ["failure"] and d.fields["lonproxy.failure_count"] == [2]
    assert d.info == "Proxy failure (2 hops remaining)"


def test_truncations_are_malformed_not_exceptions():
    full = proxy.build_proxy([(1, 11), (1, 12)], (1, 20), ADP_GET, alt_key=bytes(6))
    for cut in range(2, len(full)):
        d = _dissect(full[:cut])
        assert d.fields["lonproxy.kind"] == ["request"]


def test_outer_lontalk_bytes_match_tshark(tmp_path, tshark):
    """tshark's lon dissector reads our frames' addressing and code the same way."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap
    from dissectors.cnip import build_cnip
    apdu = proxy.build_proxy([(1, 11)], (1, 20), adaptation.build_pdu(GET))
    fr = lon.build_frame(pdu="tpdu", tpdu_type=0, src_subnet=1, src_node=5, dst_subnet=1, dst_node=10,
                         domain=b"\x01", tid=3, apdu=apdu, crc=False)
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1628, dport=1628) / build_cnip(fr)
    path = tmp_path / "p.pcap"
    wrpcap(str(path), [pkt])
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "lon.srcnet", "-e", "lon.srcnode",
                          "-e", "lon.dstnet", "-e", "lon.dstnode", "-e", "lon.code", "-e", "data.data"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip().split("\t")
    assert [int(x, 0) for x in out[:5]] == [1, 5, 1, 10, 0x0D]
    assert bytes.fromhex(out[5]) == apdu[1:]          # tshark stops after the code byte
    pipe = Pipeline()
    p = pipe.feed(Record(0, bytes(pkt), 1, len(pkt)))
    assert p.fields["lonproxy.path"] == ["1/5 -> 1/10 -> 1/11 -> 1/20"]
    assert p.fields["dlms.obis"] == ["0.0.1.0.0.255"]


@given(st.binary(max_size=60))
def test_fuzz_random(data):
    b = b"\x4d" + data
    for tree in (False, True):
        _dissect(b, tree=tree)
        _dissect(b"\x4c" + data, tree=tree)


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 127)), max_size=4), st.integers(0, 7),
       st.sampled_from([None, "dest", "src"]), st.integers(0, 200), st.integers(0, 255), st.integers(0, 40))
def test_fuzz_mutated(hops, atype, uniform, pos, val, cut):
    targets = {0: (1, 2), 1: (1, 20), 2: (1, bytes(6)), 3: (1, 0), 4: 3, 5: 4, 6: bytes(6), 7: 9}
    b = bytearray(proxy.build_proxy(hops, targets[atype], ADP_GET, addr_type=atype, uniform=uniform))
    b[pos % len(b)] = val
    b = bytes(b[:max(1, len(b) - cut)])
    for tree in (False, True):
        _dissect(b, tree=tree)
