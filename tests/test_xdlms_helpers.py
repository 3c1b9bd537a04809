"""Helpers for the DLMS tests: a minimal pcap/TCP/wrapper APDU extractor (independent of
the product's capture and TCP code) and a comparison of our decoded values with
gurux_dlms.GXDLMSTranslator's XML for the same bytes.

Gurux's XML is read as a token stream (tag, Value, Name) with a regular expression, not
with an XML parser, because some of its output is not well-formed (see GURUX_DEFECTS)."""
from __future__ import annotations

import html
import re
import struct
from pathlib import Path

from dissectors.core import Dissection
from dissectors import xdlms

TOKEN = re.compile(r'<(/?)([\w.]+)((?:\s+\w+="[^"]*")*)\s*/?>')
ATTR = re.compile(r'(\w+)="([^"]*)"')

GX_TYPES = {"None": "null-data", "Array": "array", "Structure": "structure", "Boolean": "boolean",
            "BitString": "bit-string", "Int32": "double-long", "UInt32": "double-long-unsigned",
            "OctetString": "octet-string", "String": "visible-string", "StringUTF8": "utf8-string",
            "Utf8String": "utf8-string", "Bcd": "bcd", "BCD": "bcd", "Int8": "integer", "Int16": "long",
            "UInt8": "unsigned", "UInt16": "long-unsigned", "CompactArray": "compact-array",
            "Int64": "long64", "UInt64": "long64-unsigned", "Enum": "enum", "Float32": "float32",
            "Float64": "float64", "DateTime": "date-time", "Date": "date", "Time": "time"}
GX_ROOTS = {"GetRequest": "get-request", "GetResponse": "get-response", "SetRequest": "set-request",
            "SetResponse": "set-response", "ActionRequest": "action-request",
            "ActionResponse": "action-response", "AssociationRequest": "aarq",
            "AssociationResponse": "aare", "ReleaseRequest": "rlrq", "ReleaseResponse": "rlre",
            "AccessRequest": "access-request", "AccessResponse": "access-response",
            "DataNotification": "data-notification", "EventNotificationRequest": "event-notification-request",
            "ExceptionResponse": "exception-response", "ConfirmedServiceError": "confirmed-service-error",
            "ReadRequest": "read-request", "ReadResponse": "read-response", "WriteRequest": "write-request",
            "WriteResponse": "write-response", "GeneralBlockTransfer": "general-block-transfer",
            "GeneralGloCiphering": "general-glo-ciphering", "GeneralDedCiphering": "general-ded-ciphering",
            "GeneralCiphering": "general-ciphering", "InitiateRequest": "initiate-request",
            "InformationReportRequest": "information-report-request",
            "UnconfirmedWriteRequest": "unconfirmed-write-request",
            "InitiateResponse": "initiate-response"}
GX_CONTEXT = {"LN": "LN", "SN": "SN", "LN_WITH_CIPHERING": "LN-ciphered", "SN_WITH_CIPHERING": "SN-ciphered"}
GX_MECH = {"None": "none", "Low": "LLS", "High": "HLS", "HighMd5": "HLS-MD5", "HighSha1": "HLS-SHA1",
           "HighGmac": "HLS-GMAC", "HighSha256": "HLS-SHA256", "HighEcdsa": "HLS-ECDSA"}
SIGNED = {"Int8": 8, "Int16": 16, "Int32": 32, "Int64": 64}
UNSIGNED = {"UInt8", "UInt16", "UInt32", "UInt64", "Enum", "Bcd", "BCD"}

# Defects of gurux_dlms 1.0.203 found while comparing (documented in README section:dlms)
GURUX_DEFECTS = {
    "tag0": "Gurux prints `<Data=\"…\" />` (not XML) for an APDU with tag 0x00, the tag its own "
            "server uses for ciphered access request/response",
    "rlre-conformance": "InitiateResponse inside RLRE: Gurux opens <ProposedConformance> and closes "
                        "</NegotiatedConformance> (mismatched, not well-formed XML)",
    "rlre-length": "the Gurux server in the captures encodes RLRE with the RLRE and user-information "
                   "lengths too short (63 11 … BE 0F 04 0E + 14 bytes); the translator accepts it "
                   "silently, we decode the same values and add a warning",
}


# --------------------------------------------------------------------------- pcap -> APDUs

def tcp_streams(path: Path) -> dict:
    """{(src, sport, dst, dport): [(seq, payload, frame)]} from a classic pcap (Ethernet or
    NULL/loopback, IPv4/TCP only)."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    off = 24
    frame = 0
    streams: dict = {}
    while off + 16 <= len(data):
        _ts, _us, incl, _orig = struct.unpack_from(endian + "IIII", data, off)
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        frame += 1
        if linktype == 1:
            if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
        elif linktype == 0:
            ip = pkt[4:]
        else:
            continue
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        tot = struct.unpack_from(">H", ip, 2)[0]
        tcp = ip[ihl:tot]
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
        doff = (tcp[12] >> 4) * 4
        payload = bytes(tcp[doff:])
        if not payload:
            continue
        key = (bytes(ip[12:16]), sport, bytes(ip[16:20]), dport)
        streams.setdefault(key, []).append((seq, payload, frame))
    return streams


def wrapper_apdus(path: Path) -> list[tuple[int, bytes]]:
    """(frame of the last segment, APDU) for every wrapper PDU, in per-stream order."""
    out = []
    for key, segs in tcp_streams(path).items():
        segs.sort(key=lambda s: s[0])
        buf = b""
        nxt = None
        frames = []
        for seq, payload, frame in segs:
            if nxt is not None and seq < nxt:      # retransmission / overlap
                payload = payload[nxt - seq:]
                if not payload:
                    continue
            buf += payload
            nxt = seq + len(payload) if nxt is None or seq >= nxt else nxt + len(payload)
            frames.append(frame)
            while len(buf) >= 8:
                ver, _s, _d, ln = struct.unpack_from(">HHHH", buf, 0)
                if ver != 1:
                    buf = b""
                    break
                if len(buf) < 8 + ln:
                    break
                out.append((frame, buf[8:8 + ln]))
                buf = buf[8 + ln:]
    out.sort(key=lambda x: x[0])
    return out


# --------------------------------------------------------------------------- comparison

def gurux_xml(apdu: bytes) -> str:
    from gurux_dlms import GXByteBuffer, GXDLMSTranslator
    from gurux_dlms.enums import TranslatorOutputType
    t = GXDLMSTranslator(TranslatorOutputType.SIMPLE_XML)
    return t.pduToXml(GXByteBuffer(apdu))


def tokens(xml: str) -> list[tuple[str, dict]]:
    out = []
    for m in TOKEN.finditer(xml):
        if m.group(1):
            continue
        out.append((m.group(2), {k: html.unescape(v) for k, v in ATTR.findall(m.group(3))}))
    return out


def _gx_value(tag: str, v: str):
    if tag in UNSIGNED:
        return int(v, 16)
    if tag in SIGNED:
        n = int(v, 16)
        bits = SIGNED[tag]
        return n - (1 << bits) if n >> (bits - 1) else n
    if tag == "Float32":
        return struct.unpack(">f", bytes.fromhex(v))[0]
    if tag == "Float64":
        return struct.unpack(">d", bytes.fromhex(v))[0]
    if tag == "OctetString":
        return bytes.fromhex(v)
    if tag == "Boolean":
        return v.lower() in ("1", "01", "true")
    if tag in ("StringUTF8", "Utf8String") and re.fullmatch(r"([0-9A-Fa-f]{2} ?)+", v):
        return bytes.fromhex(v.replace(" ", "")).decode("utf-8")
    if tag == "DateTime" and re.fullmatch(r"[0-9A-Fa-f]{24}", v):
        return _iso(bytes.fromhex(v))
    return v


def _iso(b: bytes) -> str:
    """Independent rendering of a 12-byte COSEM date-time (deviation = UTC - local, so the
    ISO offset is its negation) used to compare with Gurux's hex."""
    year = b[0] << 8 | b[1]
    parts = ["****" if year == 0xFFFF else f"{year:04d}"]
    parts += ["**" if x == 0xFF else f"{x:02d}" for x in (b[2], b[3])]
    t = ":".join("**" if x == 0xFF else f"{x:02d}" for x in (b[5], b[6], b[7]))
    s = "-".join(parts) + "T" + t + ("" if b[8] == 0xFF else f".{b[8]:02d}")
    dev = int.from_bytes(b[9:11], "big", signed=True)
    if dev != -0x8000:
        off = -dev
        s += ("+" if off >= 0 else "-") + f"{abs(off) // 60:02d}:{abs(off) % 60:02d}"
    return s


def gurux_facts(xml: str) -> dict:
    """What Gurux says about an APDU, as comparable facts."""
    toks = tokens(xml)
    f: dict = {"data": [], "iid": [], "class_id": [], "obis": [], "attr": [], "method": [],
               "conformance": set(), "results": []}
    if not toks:
        return f
    root = toks[0][0]
    f["root"] = root
    if root.startswith("glo_") or root.startswith("ded_"):
        f["ciphered"] = (root[:3], bytes.fromhex(toks[0][1].get("Value", "")))
    header_time = root in ("DataNotification", "AccessRequest", "AccessResponse", "EventNotificationRequest")
    for tag, a in toks:
        v = a.get("Value")
        if tag in ("DateTime", "Time") and header_time:
            header_time = False      # the APDU's own date-time field, not a Data element
            f["date_time"] = v
            continue
        if tag in GX_TYPES and (v is not None or tag in ("None", "Array", "Structure")):
            f["data"].append((GX_TYPES[tag], _gx_value(tag, v) if v is not None else None))
        elif tag == "InvokeIdAndPriority":
            f["iid"].append(int(v, 16) & 0x0F)
        elif tag == "LongInvokeIdAndPriority":
            f["iid"].append(int(v, 16) & 0xFFFFFF)
        elif tag == "ClassId":
            f["class_id"].append(int(v, 16))
        elif tag == "InstanceId":
            f["obis"].append(".".join(str(b) for b in bytes.fromhex(v)))
        elif tag == "AttributeId":
            f["attr"].append(int(v, 16))
        elif tag == "MethodId":
            f["method"].append(int(v, 16))
        elif tag == "ConformanceBit":
            f["conformance"].add(a["Name"])
        elif tag in ("ApplicationContextName", "MechanismName", "CallingAPTitle", "RespondingAPTitle",
                     "CallingAuthentication", "RespondingAuthentication", "AssociationResult",
                     "ACSEServiceUser", "Reason", "ProposedMaxPduSize", "NegotiatedMaxPduSize", "VaaName",
                     "ProposedDlmsVersionNumber", "NegotiatedDlmsVersionNumber", "BlockNumber",
                     "LastBlock", "RawData", "SystemTitle", "CipheredService", "DataAccessResult",
                     "StateError", "ServiceError"):
            f.setdefault(tag, []).append(v)
        elif tag in ("Result", "DataAccessError") and v is not None:
            f["results"].append(v)
    return f


def _norm(s: str) -> str:
    return s.replace("-", "").replace("_", "").lower()


def ours(apdu: bytes, tree: bool = False) -> Dissection:
    d = Dissection(apdu, tree)
    xdlms.dissect_apdu(apdu, 0, len(apdu), d, d.root)
    return d


def our_data(d: Dissection) -> list:
    types = d.fields.get("dlms.data.type", [])
    values = iter(d.fields.get("dlms.data.value", []))
    out = []
    for t in types:
        if t in ("array", "structure"):
            out.append((t, None))
        elif t == "compact-array":
            out.append((t, None))
        else:
            out.append((t, next(values, "<missing>")))
    return out


def _same_value(t: str, a, b) -> bool:
    if t in ("float32", "float64") and isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    if t in ("null-data", "array", "structure"):
        return True
    return a == b


def compare(apdu: bytes) -> list[str]:
    """Differences between our decoding and Gurux's for one APDU ([] = agreement)."""
    xml = gurux_xml(apdu)
    g = gurux_facts(xml)
    d = ours(apdu)
    f = d.fields
    diffs: list[str] = []
    if any(e.group == "malformed" and e.severity == "error" for e in d.expert):
        diffs.append(f"we report malformed: {[e.message for e in d.expert]}")
    root = g.get("root")
    apdus = f.get("dlms.apdu", [])
    if root in GX_ROOTS:
        if GX_ROOTS[root] != apdus[0]:
            diffs.append(f"apdu: gurux {root} ours {apdus[0]}")
    elif "ciphered" in g:
        kind, body = g["ciphered"]
        if not apdus[-1].startswith(kind + "-"):
            diffs.append(f"apdu: gurux {root} ours {apdus}")
        if body and f.get("dlms.sec.sc", [None])[-1] != body[0]:
            diffs.append("security control differs")
        if len(body) >= 5 and f.get("dlms.sec.ic", [None])[-1] != int.from_bytes(body[1:5], "big"):
            diffs.append("invocation counter differs")
    else:
        diffs.append(f"unknown gurux root {root!r}")
    for gk, ok in (("iid", "dlms.invoke_id"), ("class_id", "dlms.class_id"), ("obis", "dlms.obis"),
                   ("attr", "dlms.attribute_id"), ("method", "dlms.method_id")):
        ov = f.get(ok, [])
        if gk == "iid" and "dlms.long_invoke_id" in f:
            ov = f["dlms.long_invoke_id"]
        if g[gk] != ov:
            diffs.append(f"{ok}: gurux {g[gk]} ours {ov}")
    gd, od = g["data"], our_data(d)
    if len(gd) != len(od):
        diffs.append(f"data element count: gurux {len(gd)} ours {len(od)}")
    for i, ((gt, gv), (ot, ov)) in enumerate(zip(gd, od)):
        if gt != ot or not _same_value(gt, gv, ov):
            diffs.append(f"data[{i}]: gurux {gt}={gv!r} ours {ot}={ov!r}")
            break
    # ACSE and initiate
    if "ApplicationContextName" in g:
        want = GX_CONTEXT.get(g["ApplicationContextName"][0])
        if f.get("dlms.acse.context", [None])[0] != want:
            diffs.append(f"context: gurux {g['ApplicationContextName']} ours {f.get('dlms.acse.context')}")
    if "MechanismName" in g:
        want = GX_MECH.get(g["MechanismName"][0])
        if f.get("dlms.acse.mechanism", [None])[0] != want:
            diffs.append(f"mechanism: gurux {g['MechanismName']} ours {f.get('dlms.acse.mechanism')}")
    for gk, ok in (("CallingAPTitle", "cosem.calling_AP_title"), ("RespondingAPTitle", "cosem.responding_AP_title"),
                   ("CallingAuthentication", "cosem.calling_authentication_value"),
                   ("RespondingAuthentication", "cosem.responding_authentication_value"),
                   ("SystemTitle", "dlms.sec.system_title")):
        if gk in g and [bytes.fromhex(x) for x in g[gk]] != f.get(ok, []):
            diffs.append(f"{ok}: gurux {g[gk]} ours {f.get(ok)}")
    for gk, ok in (("AssociationResult", "cosem.result"), ("ACSEServiceUser", "cosem.acse_service_user"),
                   ("ProposedMaxPduSize", "dlms.client_max_receive_pdu_size"),
                   ("NegotiatedMaxPduSize", "dlms.server_max_receive_pdu_size"), ("VaaName", "dlms.vaa_name"),
                   ("ProposedDlmsVersionNumber", "dlms.dlms_version"),
                   ("NegotiatedDlmsVersionNumber", "dlms.dlms_version"), ("BlockNumber", "dlms.block_number")):
        if gk in g and [int(x, 16) for x in g[gk]] != f.get(ok, []):
            diffs.append(f"{ok}: gurux {g[gk]} ours {f.get(ok)}")
    if "Reason" in g and [_norm(x) for x in g["Reason"]] != [_norm(x) for x in f.get("dlms.acse.reason", [])]:
        diffs.append(f"reason: gurux {g['Reason']} ours {f.get('dlms.acse.reason')}")
    if "RawData" in g and [bytes.fromhex(x) for x in g["RawData"]] != f.get("dlms.raw_data", []):
        diffs.append("raw data differs")
    if "LastBlock" in g and [int(x, 16) != 0 for x in g["LastBlock"]] != f.get("dlms.last_block", []):
        diffs.append(f"last block: gurux {g['LastBlock']} ours {f.get('dlms.last_block')}")
    if g["conformance"]:
        ours_bits = set()
        for n in (f.get("dlms.conformance_name") or [""])[0].split(","):
            if n:
                ours_bits.add(_norm(n))
        if {_norm(x) for x in g["conformance"]} != ours_bits:
            diffs.append(f"conformance: gurux {sorted(g['conformance'])} ours {sorted(ours_bits)}")
    if g["results"]:
        ores = [_norm(x) for x in f.get("dlms.result", [])]
        gres = [_norm(x) for x in g["results"]]
        if gres != ores:
            diffs.append(f"results: gurux {g['results']} ours {f.get('dlms.result')}")
    return diffs


def defect_of(apdu: bytes, xml: str) -> str | None:
    """The documented Gurux defect that explains a difference on this APDU, if any."""
    if apdu[:1] == b"\x00" and xml.lstrip().startswith("<Data="):
        return "tag0"
    if "<ProposedConformance>" in xml and "</NegotiatedConformance>" in xml:
        return "rlre-conformance"
    return None
