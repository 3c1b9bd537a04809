"""Sessions and objects exports of the 7 public Gurux/EPRI captures checked against an
independent decoder: every object row's value is compared with what
`gurux_dlms.GXDLMSTranslator` shows for the same APDU bytes (the TCP payload from tshark for
plain APDUs, the decrypted plaintext for ciphered ones, the reassembled bytes for block
transfers); the sessions' mechanism, titles and request counts are compared with the
AARQ/AARE as Gurux translates them and with the request PDUs counted from tshark's TCP
payloads."""
from __future__ import annotations

import json
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HT = "htanwar922-wireshark-dlms"
KEYS = str(Path(__file__).resolve().parent.parent / "keys" / "gurux-captures.toml")
CAPTURES = ["Output.pcap", "Output-EPRI.pcap", "Output-Ciphered.pcap", "Output-Ciphered-Director.pcap",
            "Output-Ciphered-HLS.pcap", "Output-Ciphered-HLS-AuthEnc.pcap", "Output-Ciphered-Simple-Key.pcap"]
# Gurux's mechanism names -> ours
MECHANISMS = {"None": "none", "Low": "LLS", "High": "HLS", "HighMD5": "HLS-MD5",
              "HighSHA1": "HLS-SHA1", "HighGMAC": "HLS-GMAC", "HighGmac": "HLS-GMAC", "HighSHA256": "HLS-SHA256",
              "HighECDSA": "HLS-ECDSA"}


def translator():
    gurux = pytest.importorskip("gurux_dlms")
    from gurux_dlms.enums import TranslatorOutputType
    return gurux.GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML)


def wrapper_pdus(tshark, path):
    """(frame, tcp.srcport, APDU bytes) of every wrapper PDU, from tshark's TCP payloads
    (each direction's bytes joined, so a PDU split over segments is whole; the frame is the
    one carrying its last byte)."""
    out = subprocess.run([tshark, "-r", str(path), "-T", "fields", "-e", "frame.number",
                          "-e", "tcp.srcport", "-e", "tcp.payload"],
                         capture_output=True, text=True, check=True).stdout
    pdus = []
    pend: dict[int, bytes] = {}
    for line in out.splitlines():
        n, port, hexp = (line.split("\t") + ["", ""])[:3]
        if not hexp:
            continue
        port = int(port)
        b = pend.get(port, b"") + bytes.fromhex(hexp.replace(":", ""))
        off = 0
        while off + 8 <= len(b) and b[off:off + 2] == b"\x00\x01":
            ln = int.from_bytes(b[off + 6:off + 8], "big")
            if off + 8 + ln > len(b):
                break
            pdus.append((int(n), port, b[off + 8:off + 8 + ln]))
            off += 8 + ln
        pend[port] = b[off:]
    return pdus


_SIGNED = {"Int8": 8, "Int16": 16, "Int32": 32, "Int64": 64}
_UNSIGNED = {"UInt8", "UInt16", "UInt32", "UInt64", "Enum"}


def gx_value(e: ET.Element):
    """A Gurux XML data element as the export's JSON value (bytes as lowercase hex)."""
    tag, v = e.tag, e.get("Value")
    if tag in ("Array", "Structure", "CompactArray"):
        return [gx_value(c) for c in e]
    if tag in _SIGNED:
        x = int(v, 16)
        bits = _SIGNED[tag]
        return x - (1 << bits) if x >> (bits - 1) else x
    if tag in _UNSIGNED:
        return int(v, 16)
    if tag == "OctetString":
        return v.lower()
    if tag == "Boolean":
        return v.lower() in ("true", "1", "01")
    if tag in ("String", "Utf8String", "VisibleString"):
        return v
    if tag == "Float32":
        return struct.unpack(">f", bytes.fromhex(v))[0]
    if tag == "Float64":
        return struct.unpack(">d", bytes.fromhex(v))[0]
    if tag in ("NullData", "None"):
        return None
    return v


def gx_data_values(xml: str) -> list:
    """Values of every <Data> element (outermost ones, document order)."""
    root = ET.fromstring(xml)
    vals = []

    def walk(e):
        for c in e:
            if c.tag in ("Data", "AccessResponseListOfData", "AccessRequestListOfData",
                         "MethodInvocationParameters"):
                vals.extend(gx_value(x) for x in c)
            else:
                walk(c)
    walk(root)
    return vals


def pd_na():
    import pandas as pd
    return pd.NA


def our_value(v):
    """The export's value cell as a JSON value (text that is not JSON stays text)."""
    if v is None or v is pd_na():
        return None
    try:
        return json.loads(v)
    except ValueError:
        return v


def same(cells: list, ref: list) -> bool:
    """Export value cells equal Gurux's values: an octet/visible string is exported as its
    text (hex for octet strings), anything else as JSON."""
    if len(cells) != len(ref):
        return False
    return all(c == r if isinstance(r, str) else our_value(c) == r for c, r in zip(cells, ref))


def apdu_sources(path):
    """frame -> (decrypted APDUs, reassembled data) from the pipeline's data sources, and the
    objects DataFrame of the same run."""
    import analyzer
    cap = analyzer.open_capture(str(path), keys=KEYS)
    src = {}
    for pkt in cap:
        dec = [b for name, b in pkt.d.sources if name == "Decrypted xDLMS"]
        rea = [b for name, b in pkt.d.sources if name == "Reassembled xDLMS"]
        if dec or rea:
            src[pkt.number] = (dec, rea)
    return src


@pytest.mark.parametrize("name", CAPTURES)
def test_objects_values_match_gurux(name, pcaps, tshark):
    import analyzer
    from gurux_dlms import GXByteBuffer
    t = translator()
    path = pcaps / HT / name
    objs = analyzer.open_capture(str(path), keys=KEYS).objects()
    assert len(objs) > 0
    sources = apdu_sources(path)
    by_frame: dict[int, list] = {}
    for n, _port, apdu in wrapper_pdus(tshark, path):
        by_frame.setdefault(n, []).append(apdu)
    checked = 0
    for frame, grp in objs.groupby("frame", sort=True):
        ours = [v for v in grp["value"] if our_value(v) is not None]
        dec, rea = sources.get(frame, ([], []))
        apdus = dec if dec else by_frame.get(frame, [])
        ref = []
        for a in apdus:
            ref.extend(gx_data_values(t.pduToXml(a)))
        for r in rea:
            ref.append(gx_value(ET.fromstring(t.dataToXml(GXByteBuffer(r)))))
        ref = [v for v in ref if v is not None]
        assert same(ours, ref), f"{name} frame {frame}: {ours} != {ref}"
        checked += len(ours)
    # every request/response carrying data was compared
    assert checked == objs["value"].notna().sum()
    if name == "Output-Ciphered-Director.pcap":     # only the request, no response captured
        assert len(objs) == 6 and set(objs["obis"]) == {"0.0.94.91.10.255"}
        assert set(objs["class_name"]) == {"Profile generic"}
    else:
        assert checked > 0
    # every row names its object: class, OBIS and attribute or method
    acc = objs[objs["obis"].notna()]
    assert acc["class_name"].notna().all()
    assert (acc["attribute_name"].notna() | acc["method_name"].notna()).all()


def _frame_rows(name, pcaps):
    import analyzer
    return analyzer.open_capture(str(pcaps / HT / name), keys=KEYS).objects()


def test_output_known_values(pcaps, tshark):
    """Output.pcap: a clock, register values with scaler_unit, and a profile buffer
    reassembled from get-response-with-datablock, each equal to Gurux's translation."""
    from gurux_dlms import GXByteBuffer
    t = translator()
    objs = _frame_rows("Output.pcap", pcaps)
    resp = objs[objs["dir"] == "response"]
    clock = resp[(resp["class_id"] == 8) & (resp["attribute_id"] == 2)]
    assert len(clock) >= 1 and clock.iloc[0]["obis"] == "0.0.1.0.0.255"
    assert clock.iloc[0]["obis_name"] == "Clock" and clock.iloc[0]["attribute_name"] == "time"
    f = int(clock.iloc[0]["frame"])
    apdus = [a for n, _p, a in wrapper_pdus(tshark, pcaps / HT / "Output.pcap") if n == f]
    assert clock.iloc[0]["value"] == gx_data_values(t.pduToXml(apdus[0]))[0]
    assert len(our_value(clock.iloc[0]["value"])) == 24        # 12-byte date-time
    # registers: values as Gurux shows them; scaler/unit when the association read attr 3
    regs = resp[resp["class_id"] == 3]
    assert len(regs[regs["attribute_id"] == 2]) >= 1
    for _, su in regs[regs["attribute_id"] == 3].iterrows():
        sc, unit = our_value(su["value"])
        assert su["scaler"] == sc
        assert su["unit"] == ("Wh" if unit == 30 else "V" if unit == 35 else "A" if unit == 33
                              else su["unit"])
        vals = regs[(regs["attribute_id"] == 2) & (regs["obis"] == su["obis"])
                    & (regs["assoc_id"] == su["assoc_id"])]
        for _, v in vals[vals["value"].notna()].iterrows():
            assert v["scaler"] == sc and isinstance(v["unit"], str)
            raw = our_value(v["value"])
            if isinstance(raw, (int, float)):
                assert v["scaled_value"] == pytest.approx(raw * 10 ** sc)
    # profile rows after datablock reassembly: one row on the completing packet
    src = apdu_sources(pcaps / HT / "Output.pcap")
    prof = resp[(resp["class_id"] == 7) & (resp["attribute_id"] == 2)]
    reassembled = [int(fr) for fr in prof["frame"] if src.get(int(fr), ([], []))[1]]
    assert reassembled, "no reassembled profile buffer"
    for fr in reassembled:
        row = prof[prof["frame"] == fr].iloc[0]
        data = src[fr][1][0]
        ref = gx_value(ET.fromstring(t.dataToXml(GXByteBuffer(data))))
        assert our_value(row["value"]) == ref
        assert isinstance(ref, list) and all(isinstance(r, list) for r in ref)


def test_ciphered_hls_decrypted_values(pcaps, tshark):
    """Output-Ciphered-HLS.pcap: values of the decrypted responses equal Gurux's translation
    of the decrypted plaintext, and Gurux itself (given the Green Book keys) decrypts the
    ciphered wrapper PDU to the same plaintext."""
    from gurux_dlms import GXByteBuffer
    t = translator()
    path = pcaps / HT / "Output-Ciphered-HLS.pcap"
    objs = _frame_rows("Output-Ciphered-HLS.pcap", pcaps)
    src = apdu_sources(path)
    resp = objs[(objs["dir"] == "response") & objs["value"].notna()]
    assert len(resp) >= 100
    wire = {}
    for n, port, a in wrapper_pdus(tshark, path):
        wire.setdefault(n, []).append((port, a))
    compared = 0
    for fr in sorted(set(int(x) for x in resp["frame"]))[:20]:
        dec = src[fr][0]
        assert dec, f"frame {fr} not decrypted"
        ours = list(resp[resp["frame"] == fr]["value"])
        ref = gx_data_values(t.pduToXml(dec[0]))
        ref += [gx_value(ET.fromstring(t.dataToXml(GXByteBuffer(r)))) for r in src[fr][1]]
        assert same(ours, [v for v in ref if v is not None]), f"frame {fr}"
        # the plaintext is what AES-GCM (Green Book keys) gives for the ciphered wire bytes
        port, apdu = wire[fr][-1]
        title = CLIENT_TITLE if port != 4063 else SERVER_TITLE
        assert gcm_decrypt(apdu, title) == dec[0], f"frame {fr}"
        compared += 1
    assert compared == 20


CLIENT_TITLE = bytes.fromhex("4D4D4D0000BC614E")
SERVER_TITLE = bytes.fromhex("4142434445464748")
GB_EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
GB_AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")


def gcm_decrypt(apdu: bytes, title: bytes) -> bytes:
    """glo-/ded- ciphered APDU (tag, length, SC, IC, ciphertext, 12-byte tag) decrypted with
    the cryptography package (security control 0x30: authenticated and encrypted)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    off = 1
    ln = apdu[off]
    off += 1
    if ln & 0x80:
        k = ln & 0x7F
        ln = int.from_bytes(apdu[off:off + k], "big")
        off += k
    sc, ic = apdu[off], apdu[off + 1:off + 5]
    body = apdu[off + 5:off + ln]
    ct, tag = body[:-12], body[-12:]
    assert sc == 0x30
    dec = Cipher(algorithms.AES(GB_EK), modes.GCM(title + ic, tag, min_tag_length=12)).decryptor()
    dec.authenticate_additional_data(bytes([sc]) + GB_AK)
    return dec.update(ct) + dec.finalize()


def _assoc_reference(t, pdus):
    """Per AARQ: (mechanism, calling title, responding title, requests counted on the wire)."""
    refs = []
    server_port = None
    for _n, port, apdu in pdus:
        if not apdu:
            continue
        tag = apdu[0]
        if tag == 0x60:
            root = ET.fromstring(t.pduToXml(apdu))
            mech = root.find("MechanismName")
            title = root.find("CallingAPTitle")
            refs.append({"mechanism": MECHANISMS[mech.get("Value")] if mech is not None else None,
                         "client_title": title.get("Value").lower() if title is not None else None,
                         "server_title": None, "requests": 0})
            server_port = None
            client_port = port
            continue
        if not refs:
            continue
        if tag == 0x61:
            root = ET.fromstring(t.pduToXml(apdu))
            title = root.find("RespondingAPTitle")
            refs[-1]["server_title"] = title.get("Value").lower() if title is not None else None
            server_port = port
        elif port == client_port and tag not in (0x60, 0x62):
            # after the AARQ every APDU of the client is a request (the captures also
            # carry a ciphered access-request whose tag byte is 0x00)
            refs[-1]["requests"] += 1
    return refs


@pytest.mark.parametrize("name", CAPTURES)
def test_sessions_match_wire(name, pcaps, tshark):
    import analyzer
    t = translator()
    path = pcaps / HT / name
    ref = _assoc_reference(t, wrapper_pdus(tshark, path))
    s = analyzer.open_capture(str(path), keys=KEYS).sessions()
    assert len(s) == len(ref) >= 1
    for (_, row), r in zip(s.sort_values("first_frame").iterrows(), ref):
        mech = None if row["mechanism"] is pd_na() else row["mechanism"]
        assert mech == r["mechanism"], name
        for k in ("client_title", "server_title"):
            v = None if row[k] is pd_na() else row[k]
            assert v == r[k], (name, k)
        assert row["requests"] == r["requests"], name
