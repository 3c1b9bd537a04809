"""APDU reassembly stage (analyzer/reassembly.py): block transfer in the Gurux captures
(plain and decrypted), request context on responses, links between parts, re-dissection,
and synthetic runs for lost/duplicate blocks, GBT windows, per-flow separation and SN
name mapping."""
from __future__ import annotations

import pytest

from analyzer.packet import Packet, Record
from analyzer.reassembly import Reassembly
from dissectors import axdr, xdlms
from dissectors.core import Dissection

import test_xdlms_helpers as H

GB_EK = "000102030405060708090A0B0C0D0E0F"
GB_AK = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"


def _capture(path, keys=None):
    from analyzer import open_capture
    cap = open_capture(path, keys=keys)
    pkts = list(cap)
    return cap, pkts


def test_gurux_block_transfer_plain(pcaps):
    cap, pkts = _capture(pcaps / "htanwar922-wireshark-dlms" / "Output.pcap")
    by = {p.number: p for p in pkts}
    p6 = by[6]
    assert p6.fields["dlms.reassembled_length"] == [1601]
    assert p6.fields["dlms.fragment"] == [4, 6] and p6.fields["dlms.fragment.count"] == [2]
    assert by[4].fields["dlms.reassembled_in"] == [6]
    assert "[reassembled 1601 bytes from 2 blocks]" in p6.info
    # the get-response carries the request's object (no OBIS on the wire)
    assert by[4].fields["dlms.obis"] == ["0.0.40.0.0.255"] and by[4].fields["dlms.request_in"] == [3]
    assert by[4].fields["dlms.attribute_name"] == ["object_list"]
    assert by[4].info == "get-response with-datablock [invoke 1] 0.0.40.0.0.255 Current association attr 2: " \
                         "block 1, 1012 bytes"
    # reassembled value equals Gurux's decoding of the same bytes (see test_gurux_oracle)
    data = [s for s in p6.d.sources if s[0] == "Reassembled xDLMS"][0][1]
    assert H.compare(b"\xC4\x01\x81\x00" + data) == []
    # re-dissection with a full tree rebuilds the reassembled source from pkt.aux
    d = cap.pipeline.redissect(p6)
    assert d.info == p6.info
    assert [s[0] for s in d.sources].count("Reassembled xDLMS") == 1
    n = d.root.find("dlms.reassembled_length")
    assert n is not None and n.value == 1601 and n.source == len(d.sources) - 1
    assert [x.value for x in d.root.walk() if x.field == "dlms.fragment"] == [4, 6]


def test_response_filter_by_request_obis(pcaps):
    cap, pkts = _capture(pcaps / "htanwar922-wireshark-dlms" / "Output-EPRI.pcap")
    resp = [p for p in pkts if "get-response" in p.fields.get("dlms.apdu", ())
            and "0.0.1.0.0.255" in p.fields.get("dlms.obis", ())]
    assert [p.fields["dlms.attribute_id"][0] for p in resp] == list(range(1, 10))
    clock = [p for p in resp if p.fields["dlms.attribute_id"] == [2]][0]
    assert clock.fields["dlms.data.datetime"][0].startswith("2024-03-05T17:59:04")
    assert clock.fields["dlms.request_in"] == [clock.number - 1]
    assert clock.info == "get-response normal [invoke 1] 0.0.1.0.0.255 Clock attr 2: 2024-03-05T17:59:04.00+05:30"
    try:
        from analyzer.filters import compile_filter
    except ImportError:
        return
    m = compile_filter('dlms.obis == 0.0.1.0.0.255 && dlms.apdu == "get-response"')
    assert [p.number for p in pkts if m(p.fields)] == [p.number for p in resp]


def test_decrypted_block_transfer(pcaps):
    """The decryption stage dissects plaintext with the same dissector: its blocks are
    reassembled like plain ones."""
    from analyzer.keyring import load_keys
    keys = load_keys(extra=[f"ek={GB_EK}", f"ak={GB_AK}"])
    cap, pkts = _capture(pcaps / "htanwar922-wireshark-dlms" / "Output-Ciphered-HLS.pcap", keys)
    re = [p for p in pkts if p.fields.get("dlms.reassembled_length")]
    assert re, "the decrypted blocks were not reassembled"
    assert re[0].number == 8 and re[0].fields["dlms.reassembled_length"] == [1601]
    assert re[0].fields["dlms.fragment"] == [6, 8]
    op = [o for o in re[0].d.ctx["dlms.ops"] if o.get("reassembled")][0]
    assert op["class_id"] == 15 and op["obis"] == "0.0.40.0.0.255" and len(op["value"]) > 10


# --------------------------------------------------------------------------- synthetic

class _Feed:
    """Feeds APDUs through the stage as packets of given flows."""

    def __init__(self):
        self.stage = Reassembly(None)
        self.n = 0
        self.pkts = []

    def __call__(self, apdu: bytes, flow=("tcp", "a", "b"), src="a", decrypted=False) -> Packet:
        self.n += 1
        pkt = Packet(self.n, Record(self.n * 1000, apdu, 147, len(apdu)))
        d = Dissection(apdu, True)
        d.ctx["dlms.transport"] = (flow, src, "b" if src == "a" else "a")
        if decrypted:
            d.new_source("Decrypted xDLMS", apdu)
        xdlms.dissect_apdu(apdu, 0, len(apdu), d, d.root)
        d.source = 0
        self.stage.process(pkt, d, True)
        pkt.d = d
        self.pkts.append(pkt)
        return pkt


def _value_blocks(value_spec, size):
    raw = axdr.encode(value_spec)
    return raw, [raw[i:i + size] for i in range(0, len(raw), size)]


def test_get_blocks_lost_and_duplicate():
    feed = _Feed()
    raw, parts = _value_blocks(("array", [("double-long-unsigned", i) for i in range(40)]), 50)
    assert len(parts) == 5
    feed(xdlms.build_get_request(7, "1.0.99.1.0.255", 2, invoke_id=3))
    feed(xdlms.build_get_response_block(parts[0], 1, False, invoke_id=3))
    feed(xdlms.build_get_response_block(parts[0], 1, False, invoke_id=3))          # duplicate
    feed(xdlms.build_get_response_block(parts[1], 2, False, invoke_id=3))
    # block 3 lost
    feed(xdlms.build_get_response_block(parts[3], 4, False, invoke_id=3))
    last = feed(xdlms.build_get_response_block(parts[4], 5, True, invoke_id=3))
    msgs = [e.message for p in feed.pkts for e in p.d.expert]
    assert any("Duplicate get block 1" in m for m in msgs)
    assert any("Lost get block(s) 3..3" in m for m in msgs)
    assert any("incomplete: block(s) [3] missing" in m for m in msgs)
    assert last.fields["dlms.fragment"] == [2, 4, 5, 6]
    assert last.fields["dlms.obis"] == ["1.0.99.1.0.255"]


def test_get_blocks_complete_value_and_links():
    feed = _Feed()
    spec = ("array", [("structure", [("octet-string", axdr.encode_datetime(2024, 1, 2, 2, 3, 4, 5, 0, -60, 0)),
                                     ("double-long-unsigned", i)]) for i in range(30)])
    raw, parts = _value_blocks(spec, 100)
    feed(xdlms.build_get_request(7, "1.0.99.1.0.255", 2, invoke_id=1))
    for i, part in enumerate(parts):
        feed(xdlms.build_get_response_block(part, i + 1, i == len(parts) - 1, invoke_id=1))
    last = feed.pkts[-1]
    op = [o for o in last.d.ctx["dlms.ops"] if o.get("reassembled")][0]
    assert op["value"][29][1] == 29 and op["value"][0][0][:2] == b"\x07\xe8"
    assert last.fields["dlms.data.datetime"][0] == "2024-01-02T03:04:05.00+01:00"
    assert all(p.fields.get("dlms.reassembled_in") == [last.number] for p in feed.pkts[1:-1])
    assert not any(e.group == "sequence" for p in feed.pkts for e in p.d.expert)


def test_flows_and_associations_are_separate():
    feed = _Feed()
    r1, p1 = _value_blocks(("octet-string", bytes(range(200))), 80)
    r2, p2 = _value_blocks(("visible-string", "x" * 150), 80)
    f1, f2 = ("tcp", "a", "b"), ("tcp", "c", "d")
    feed(xdlms.build_get_request(1, "0.0.96.1.0.255", 2, invoke_id=1), f1)
    feed(xdlms.build_get_request(1, "0.0.42.0.0.255", 2, invoke_id=1), f2)
    for i in range(3):
        if i < len(p1):
            feed(xdlms.build_get_response_block(p1[i], i + 1, i == len(p1) - 1, invoke_id=1), f1)
        if i < len(p2):
            feed(xdlms.build_get_response_block(p2[i], i + 1, i == len(p2) - 1, invoke_id=1), f2)
    done = [p for p in feed.pkts if p.fields.get("dlms.reassembled_length")]
    vals = {p.fields["dlms.obis"][0]: [o for o in p.d.ctx["dlms.ops"] if o.get("reassembled")][0]["value"]
            for p in done}
    assert vals == {"0.0.96.1.0.255": bytes(range(200)), "0.0.42.0.0.255": "x" * 150}


def test_set_and_action_blocks_decrypted_source():
    feed = _Feed()
    raw, parts = _value_blocks(("octet-string", bytes(300)), 128)
    feed(xdlms.build_set_request_first_block(18, "0.0.44.0.0.255", 2, parts[0], invoke_id=2), decrypted=True)
    feed(xdlms.build_set_response_block(1, invoke_id=2))
    feed(xdlms.build_set_request_block(parts[1], 2, False, invoke_id=2), decrypted=True)
    last = feed(xdlms.build_set_request_block(parts[2], 3, True, invoke_id=2), decrypted=True)
    op = [o for o in last.d.ctx["dlms.ops"] if o.get("reassembled")][0]
    assert op["service"] == "set" and op["class_id"] == 18 and op["attribute_id"] == 2
    assert op["value"] == bytes(300)
    assert last.fields["dlms.fragment"] == [1, 3, 4]
    # action with pblocks: method descriptor from the first block
    feed2 = _Feed()
    # action-request-with-first-pblock: iip, method descriptor (no selection), DataBlock-SA
    feed2(b"\xC3\x04\xC1" + bytes.fromhex("001200002C0000FF02") + b"\x00" + (1).to_bytes(4, "big")
          + axdr.encode_length(len(parts[0])) + parts[0])
    feed2(b"\xC3\x06\xC1\x00" + (2).to_bytes(4, "big") + axdr.encode_length(len(parts[1])) + parts[1])
    last = feed2(b"\xC3\x06\xC1\x01" + (3).to_bytes(4, "big") + axdr.encode_length(len(parts[2])) + parts[2])
    op = [o for o in last.d.ctx["dlms.ops"] if o.get("reassembled")][0]
    assert op["service"] == "action" and op["method_id"] == 2 and op["value"] == bytes(300)


def test_gbt_windows_and_streaming():
    feed = _Feed()
    inner = xdlms.build_get_response(("octet-string", bytes(range(256)) * 2), invoke_id=5)
    parts = [inner[i:i + 200] for i in range(0, len(inner), 200)]
    feed(xdlms.build_get_request(1, "0.0.96.1.0.255", 2, invoke_id=5), src="a")
    for i, part in enumerate(parts):
        feed(xdlms.build_gbt(part, i + 1, ack=0, last=i == len(parts) - 1, streaming=i < len(parts) - 1,
                             window=3), src="b")
    last = feed.pkts[-1]
    assert last.fields["dlms.reassembled_length"] == [len(inner)]
    assert "get-response" in last.fields["dlms.apdu"]
    assert [s[0] for s in last.d.sources][-1] == "Reassembled xDLMS"
    ops = last.d.ctx["dlms.ops"]
    assert any(o["service"] == "get" and o["dir"] == "response" and o["value"] == bytes(range(256)) * 2
               and o["obis"] == "0.0.96.1.0.255" for o in ops)
    # a lost GBT block is reported
    feed = _Feed()
    feed(xdlms.build_gbt(parts[0], 1, last=False), src="b")
    feed(xdlms.build_gbt(parts[2], 3, last=True), src="b")
    assert any("Lost gbt block(s) 2..2" in e.message for p in feed.pkts for e in p.d.expert)


def test_sn_object_list_maps_short_names():
    feed = _Feed()
    objlist = ("array", [("structure", [("long", 0x2000), ("long-unsigned", 8), ("unsigned", 0),
                                        ("octet-string", bytes([0, 0, 1, 0, 0, 255]))]),
                         ("structure", [("long", 0x2100), ("long-unsigned", 3), ("unsigned", 0),
                                        ("octet-string", bytes([1, 0, 1, 8, 0, 255]))])])
    feed(bytes.fromhex("050102FA08"))
    feed(b"\x0C\x01\x00" + axdr.encode(objlist))
    p = feed(bytes.fromhex("0502 022008 022110".replace(" ", "")))   # clock time, register scaler_unit
    assert p.fields["dlms.obis"] == ["0.0.1.0.0.255", "1.0.1.8.0.255"]
    assert p.fields["dlms.attribute_id"] == [2, 3] and p.fields["dlms.class_id"] == [8, 3]
    r = feed(b"\x0C\x02\x00" + axdr.encode(("octet-string", bytes(12))) + b"\x00" + axdr.encode(("unsigned", 1)))
    assert r.fields["dlms.obis"][-2:] == ["0.0.1.0.0.255", "1.0.1.8.0.255"]
    # SN method: Association SN reply_to_HLS_authentication at 0xFA58
    from dissectors.cosem_names import SNMap
    m = SNMap()
    m.add(0xFA00, 12, "0.0.40.0.0.255")
    assert m.lookup(0xFA58) == {"class_id": 12, "obis": "0.0.40.0.0.255", "method_id": 8}
    assert m.lookup(0xFA08) == {"class_id": 12, "obis": "0.0.40.0.0.255", "attribute_id": 2}


def test_redissect_replays_fields_without_state():
    feed = _Feed()
    raw, parts = _value_blocks(("octet-string", bytes(120)), 70)
    feed(xdlms.build_get_request(1, "0.0.96.1.0.255", 2, invoke_id=9))
    feed(xdlms.build_get_response_block(parts[0], 1, False, invoke_id=9))
    last = feed(xdlms.build_get_response_block(parts[1], 2, True, invoke_id=9))
    d = Dissection(last.data, True)
    xdlms.dissect_apdu(last.data, 0, len(last.data), d, d.root)
    fresh = Reassembly(None)           # no flow state: only pkt.aux
    fresh.process(last, d, False)
    assert d.fields["dlms.reassembled_length"] == [len(raw)]
    assert d.fields["dlms.obis"][-1] == "0.0.96.1.0.255"
    assert d.sources[-1] == ("Reassembled xDLMS", raw)


def _udp_wrapper_frame(payload: bytes, sport=4059, dport=40000) -> bytes:
    import struct
    w = struct.pack(">HHHH", 1, 1, 1, len(payload)) + payload
    udp = struct.pack(">HHHH", sport, dport, 8 + len(w), 0) + w
    hdr = bytearray(bytes([0x45, 0]) + struct.pack(">H", 20 + len(udp)) + b"\0\0\0\0\x40\x11\0\0"
                    + bytes([10, 0, 0, 1, 10, 0, 0, 2]))
    s = sum(struct.unpack(">10H", bytes(hdr)))
    s = (s & 0xFFFF) + (s >> 16)
    hdr[10:12] = struct.pack(">H", ~s & 0xFFFF)
    return b"\0" * 6 + b"\x02" * 6 + b"\x08\x00" + bytes(hdr) + udp


def test_gbt_around_ciphered_apdu_is_decrypted(vectors):
    """GBT carrying a general-glo-ciphering APDU (the published dlms-cosem vector, key
    'MYDUMMYGLOBALKEY'): the reassembled APDU is handed back to the decryption stage, and
    re-dissection rebuilds both sources."""
    from analyzer.keyring import load_keys
    from analyzer.pipeline import Pipeline
    e = {v["name"]: v for v in vectors}["dlmscosem_udp_general_glo_ciphering_data_notification"]
    apdu = bytes.fromhex(e["hex"])[8:]
    keys = load_keys(extra=["ek=4D5944554D4D59474C4F42414C4B4559", "ak=4D5944554D4D59474C4F42414C4B4559"])
    pipe = Pipeline(keys=keys)
    parts = [apdu[i:i + 30] for i in range(0, len(apdu), 30)]
    for i, part in enumerate(parts):
        g = xdlms.build_gbt(part, i + 1, last=i == len(parts) - 1, streaming=i < len(parts) - 1)
        pkt = pipe.feed(Record(i * 1000, _udp_wrapper_frame(g), 1, 0))
    assert [s[0] for s in pkt.d.sources] == ["Frame", "Reassembled xDLMS", "Decrypted xDLMS"]
    assert pkt.fields["dlms.sec.status"] == ["decrypted"]
    plain = bytes.fromhex(e["expected"]["plaintext"])
    assert pkt.d.sources[-1][1] == plain
    assert "data-notification" in pkt.fields["dlms.apdu"]
    assert pkt.fields["dlms.long_invoke_id"] == [0x1DB]
    d = pipe.redissect(pkt)
    assert [s[0] for s in d.sources] == ["Frame", "Reassembled xDLMS", "Decrypted xDLMS"]
    assert d.fields["dlms.data.value"] == pkt.fields["dlms.data.value"]
