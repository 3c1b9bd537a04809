"""End to end: a LonTalk capture (raw frames, LINKTYPE_USER0 = 147) carrying DLMS in
IEC 62056-8-8 adaptation PDUs through two repeaters, its relayed response, proxy uplinks,
OSGP table services and a protected PDU — decoded by the real `lonscope decode` command.
The xDLMS APDUs are checked against Gurux's translation of the same bytes; the LonTalk
headers against tshark's lon dissector (frames re-wrapped in CN/IP)."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from analyzer.pcapwriter import PcapWriter
from dissectors import adaptation, lon, osgp, proxy

GET = bytes.fromhex("C001C100080000010000FF0200")                     # GET 0.0.1.0.0.255 attr 2
GET_RSP = bytes.fromhex("C401C100090C07EA0B150608000000FF800000")      # date-time octet string
MEP_REQ = bytes.fromhex("3F0017000000002C01020304") + bytes.fromhex("74861F6D7658DD56")


def _frame(apdu, src, dst, tid, kind="tpdu", typ=0):
    kw = dict(pdu=kind)
    kw["tpdu_type" if kind == "tpdu" else "spdu_type"] = typ
    return lon.build_frame(src_subnet=src[0], src_node=src[1], dst_subnet=dst[0], dst_node=dst[1],
                           domain=b"\x01", tid=tid, apdu=apdu, **kw)


def _capture():
    adp_get = adaptation.build_pdu(GET)
    return [
        # 1: source 1/5 -> repeater 1/10 -> repeater 1/11 (agent) -> target 1/20, REQUEST service
        _frame(proxy.build_proxy([(1, 11)], (1, 20), adp_get, service="REQUEST"), (1, 5), (1, 10), 1, "spdu", 0),
        # 2: first repeater forwards (count 0) to the agent 1/11
        _frame(proxy.build_proxy([], (1, 20), adp_get, service="REQUEST"), (1, 10), (1, 11), 2, "spdu", 0),
        # 3: the agent talks to the target directly
        _frame(adp_get, (1, 11), (1, 20), 3, "spdu", 0),
        # 4: the target's response, relayed unchanged
        _frame(adaptation.build_pdu(GET_RSP, client_sap=0x10, server_sap=0x01), (1, 20), (1, 5), 1, "spdu", 2),
        # 5/6: proxy uplinks
        _frame(proxy.build_success(), (1, 10), (1, 5), 5, "spdu", 2),
        _frame(proxy.build_failure(1), (1, 10), (1, 5), 6, "spdu", 2),
        # 7/8: OSGP partial read (MEP vector) and its invalid-sequence response
        _frame(MEP_REQ, (1, 5), (1, 20), 7, "spdu", 0),
        _frame(bytes.fromhex("0C77635B9035863C1DF5B91482"), (1, 20), (1, 5), 7, "spdu", 2),
        # 9: protected adaptation PDU (ciphertext opaque)
        _frame(adaptation.build_pdu(b"\x11" * 13, protected=True, key_id=1, counter=9, mac=b"\x22" * 8),
               (1, 5), (1, 20), 8),
    ]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("lon") / "lon-dlms.pcap"
    w = PcapWriter(str(path), linktype=147)
    for i, fr in enumerate(_capture()):
        w.write((i * 1_000_000, fr, 147))
    w.close()
    return path


@pytest.fixture(scope="module")
def decoded(capture, lonscope_cmd):
    p = subprocess.run([*lonscope_cmd, "decode", str(capture), "-T", "jsonl"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def _gurux(apdu):
    from gurux_dlms import GXByteBuffer, GXDLMSTranslator
    from gurux_dlms.enums import TranslatorOutputType
    return GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML).pduToXml(GXByteBuffer(apdu))


def test_proxy_two_hops_target_get(decoded):
    f = decoded[0]["fields"]
    assert decoded[0]["protocols"].split(":")[:3] == ["lon", "lonproxy", "adp"]
    assert f["lonproxy.path"] == "1/5 -> 1/10 -> 1/11 -> 1/20"
    assert f["lonproxy.hop"] == "1/11" and f["lonproxy.count"] == 1 and f["lonproxy.target"] == "1/20"
    assert f["lonproxy.sicb.service"] == 3
    xml = _gurux(GET)
    assert f["dlms.apdu"] == "get-request"
    assert f["dlms.class_id"] == int(re.search(r'ClassId Value="([0-9A-F]+)"', xml).group(1), 16)
    inst = bytes.fromhex(re.search(r'InstanceId Value="([0-9A-F]+)"', xml).group(1))
    assert f["dlms.obis"] == ".".join(map(str, inst))
    assert f["adp.inferred"] is True
    info = decoded[0]["info"]
    assert "1/5 -> 1/10 -> 1/11 -> 1/20" in info and "get-request" in info and "0.0.1.0.0.255" in info
    # the hop the first repeater forwards: count 0, path from its own view
    f2 = decoded[1]["fields"]
    assert f2["lonproxy.path"] == "1/10 -> 1/11 -> 1/20" and f2["dlms.apdu"] == "get-request"
    # the agent's direct message to the target: plain adaptation PDU
    f3 = decoded[2]["fields"]
    assert "lonproxy" not in f3 and f3["dlms.obis"] == "0.0.1.0.0.255"


def test_relayed_response_and_uplinks(decoded):
    f = decoded[3]["fields"]
    assert f["dlms.apdu"] == "get-response" and f["adp.sap.client"] == 16
    assert "<GetResponse>" in _gurux(GET_RSP)
    assert decoded[4]["fields"]["lonproxy.kind"] == "success"
    assert decoded[5]["fields"]["lonproxy.kind"] == "failure"
    assert decoded[5]["fields"]["lonproxy.failure_count"] == 1


def test_osgp_and_protected(decoded):
    f = decoded[6]["fields"]
    assert f["osgp.service"] == "partial-read" and f["osgp.table"] == 0x17
    assert f["osgp.count"] == 0x2C and f["osgp.seq"] == 0x01020304 and f["osgp.digest"] == "74861f6d7658dd56"
    f = decoded[7]["fields"]
    assert f["osgp.response"] == "invalid-sequence-number" and f["osgp.expected_seq"] == 0x77635B90
    f = decoded[8]["fields"]
    assert f["adp.protected"] is True and f["adp.key_id"] == 1 and f["adp.counter"] == 9
    assert f["adp.mac"] == "22" * 8 and "dlms" not in f


def test_lontalk_headers_match_tshark(tmp_path, tshark):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap
    from dissectors.cnip import build_cnip
    frames = _capture()
    # tshark's CN/IP path takes frames without the L2 CRC
    pkts = [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1628, dport=1628) / build_cnip(fr[:-2], seqno=i)
            for i, fr in enumerate(frames)]
    path = tmp_path / "cnip.pcap"
    wrpcap(str(path), pkts)
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-E", "separator=,", "-e", "lon.srcnode",
                          "-e", "lon.dstnode", "-e", "lon.code"], capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    got = [tuple(int(x, 0) for x in line.split(",")) for line in out]
    assert [g[:2] for g in got] == [(5, 10), (10, 11), (11, 20), (20, 5), (10, 5), (10, 5), (5, 20), (20, 5), (5, 20)]
    assert [g[2] for g in got] == [0x0D, 0x0D, 0x01, 0x01, 0x0D, 0x0C, 0x3F, 0x0C, 0x01]


def test_profile_option(capture, lonscope_cmd, tmp_path):
    """--profile FILE: a corrected profile that moves ADP_DATA elsewhere changes the decode."""
    text = open(adaptation.DEFAULT_PROFILE_PATH, encoding="utf-8").read()
    path = tmp_path / "moved.toml"
    path.write_text(text.replace("adp = [0x41]", "adp = [0x42]"))
    p = subprocess.run([*lonscope_cmd, "decode", str(capture), "-T", "jsonl", "--profile", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    # 0x41 is no longer a profile code: the heuristic still finds the GET, marked as such
    f = rows[2]["fields"]
    assert f.get("adp.heuristic") is True and f["dlms.apdu"] == "get-request"
    bad = tmp_path / "bad.toml"
    bad.write_text("[codes]\nadp = [0x99]\n")
    p = subprocess.run([*lonscope_cmd, "decode", str(capture), "--profile", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "0x99" in p.stderr
