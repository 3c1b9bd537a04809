"""DLMS lower-layer stage (pipeline order 22: after TCP reassembly and the 14908 transaction
stage, which flags retransmissions; before association tracking and decryption).

- Registers the IEC 62056-47 wrapper and HDLC (62056-46) as PDU protocols of the TCP
  stage (`analyzer.tcpstage.register_stream_protocol`), limited to the DLMS ports 4059 and
  4060-4069: one PDU over several segments and several PDUs per segment both work.
- Reassembles segmented HDLC I-frames per direction (flow + HDLC address pair) and
  segmented IEC 62056-8-8 adaptation PDUs per (medium, LonTalk source, destination, SAP
  pair) -- the CN/IP and the power-line copies of routed segments reassemble separately, a
  14908 retransmission of a segment is not taken twice and a frame with a bad CRC gives no
  segment;
  the reassembled APDU is dissected in a new data source ("Reassembled HDLC" /
  "Reassembled ADP") on the packet holding the last segment.  What a packet needs for a
  later re-dissection is kept in `pkt.aux["dlms_streams"]`.
- Applies the adaptation profile given to the pipeline (`Pipeline(profile=PATH or
  Profile)`), so that `--profile FILE` reaches the pure dissectors once.
"""
from __future__ import annotations

from dissectors.core import FT_BYTES, FT_UINT, Dissection, field, table
from dissectors import hdlc as _hdlc
from dissectors import wrapper as _wrapper
from dissectors import adaptation as _adp

from .associations import ip_flow
from .lontrack import crc_bad, medium_of
from .pipeline import Stage, register_stage

try:
    from .tcpstage import register_stream_protocol
except ImportError:  # pragma: no cover - the TCP stage is part of the product
    register_stream_protocol = None

field("hdlc.reassembled.length", FT_UINT, "Length of the reassembled HDLC information field")
field("hdlc.reassembled.frames", FT_UINT, "Number of HDLC segments reassembled")
field("adp.reassembled.length", FT_UINT, "Length of the reassembled adaptation APDU")
field("adp.reassembled.segments", FT_UINT, "Number of adaptation segments reassembled")
field("hdlc.reassembled.data", FT_BYTES, "Reassembled information field (no xDLMS dissector)")

_PROFILE_FROM_PIPELINE = False
MAX_REASSEMBLY = 1 << 20     # bytes kept per direction before giving up
MAX_OPEN = 1024              # unfinished reassemblies kept (the oldest are dropped)
LLC_LEN = 3

if register_stream_protocol is not None:
    register_stream_protocol("wrapper", _wrapper.stream_detect, _wrapper.stream_pdu_len,
                             _wrapper.stream_dissect, ports=_wrapper.DLMS_PORTS)
    register_stream_protocol("hdlc", _hdlc.stream_detect, _hdlc.stream_pdu_len,
                             _hdlc.stream_dissect, ports=_wrapper.DLMS_PORTS)


def _flow_key(d: Dissection) -> tuple:
    """The packet's IP flow in its own direction (HDLC reassembly is per direction)."""
    return ip_flow(d) or ("",)


class _Pending:
    __slots__ = ("data", "frames", "count")

    def __init__(self):
        self.data = bytearray()
        self.frames: list[int] = []
        self.count = 0


class DlmsStreamStage(Stage):
    name = "dlms_streams"

    def __init__(self, pipeline):
        super().__init__(pipeline)
        # A profile given to a pipeline stays active for that pipeline; a later pipeline
        # without one goes back to the default, unless the profile was set directly
        # through dissectors.adaptation.use_profile.
        global _PROFILE_FROM_PIPELINE
        prof = getattr(pipeline, "profile", None)
        if prof is not None:
            _adp.use_profile(prof)
            _PROFILE_FROM_PIPELINE = True
        elif _PROFILE_FROM_PIPELINE:
            _adp.use_profile(None)
            _PROFILE_FROM_PIPELINE = False
        self.hdlc: dict[tuple, _Pending] = {}
        self.adp: dict[tuple, dict] = {}

    # ---------------------------------------------------------------- first pass
    def _hdlc_first(self, pkt, d: Dissection, out: list) -> None:
        flow = _flow_key(d)
        for f in d.ctx.get("hdlc.frames", ()):
            key = flow + (f["dst"], f["src"])
            data = d.sources[f["source"]][1][f["offset"]:f["offset"] + f["length"]]
            st = self.hdlc.get(key)
            if f["segmented"]:
                if st is None or f["llc"]:
                    if st is not None and st.data:
                        out.append(("note", "hdlc", "segmented HDLC message restarted before its last segment"))
                    if st is None and len(self.hdlc) >= MAX_OPEN:
                        self.hdlc.pop(next(iter(self.hdlc)))
                    st = self.hdlc[key] = _Pending()
                st.data += data
                st.count += 1
                st.frames.append(pkt.number)
                if len(st.data) > MAX_REASSEMBLY:
                    del self.hdlc[key]
                    out.append(("note", "hdlc", "HDLC reassembly abandoned (too long)"))
                continue
            if st is not None:
                del self.hdlc[key]
                if f.get("pending"):
                    full = bytes(st.data) + bytes(data)
                    out.append(("hdlc", full, st.count + 1, st.frames + [pkt.number]))
                else:
                    out.append(("note", "hdlc", "segmented HDLC message not finished (new message started)"))
            elif f.get("pending"):
                # an I-frame without LLC and no segment before it: dissect as it is
                out.append(("hdlc", bytes(data), 1, [pkt.number]))

    def _adp_first(self, pkt, d: Dissection, out: list) -> None:
        if crc_bad(d):
            return          # damaged bytes: no segment
        medium = medium_of(pkt, d)
        repeat = d.ctx.get("lon.retransmission") is not None
        for s in d.ctx.get("adp.segments", ()):
            key = medium + (s["src"], s["dst"], s["client"], s["server"])
            data = d.sources[s["source"]][1][s["offset"]:s["offset"] + s["length"]]
            st = self.adp.get(key)
            if repeat and (st is None or st["parts"].get(s["number"]) == bytes(data)):
                continue    # the 14908 transport repeated a segment already taken
            if st is None or s["number"] == 0:
                if len(self.adp) >= MAX_OPEN:
                    self.adp.pop(next(iter(self.adp)))
                st = self.adp[key] = {"parts": {}, "frames": []}
            st["parts"][s["number"]] = bytes(data)
            st["frames"].append(pkt.number)
            if sum(len(x) for x in st["parts"].values()) > MAX_REASSEMBLY:
                del self.adp[key]
                continue
            if s["last"]:
                del self.adp[key]
                nums = sorted(st["parts"])
                if nums != list(range(len(nums))):
                    out.append(("note", "adp", f"adaptation segments missing (have {nums})"))
                    continue
                full = b"".join(st["parts"][n] for n in nums)
                out.append(("adp", full, len(nums), st["frames"]))

    # ---------------------------------------------------------------- every pass
    def process(self, pkt, d: Dissection, first_pass: bool) -> None:
        if first_pass:
            if not d.ctx.get("hdlc.frames") and not d.ctx.get("adp.segments"):
                return
            out: list = []
            self._hdlc_first(pkt, d, out)
            self._adp_first(pkt, d, out)
            if out:
                pkt.aux["dlms_streams"] = out
        items = pkt.aux.get("dlms_streams")
        if not items:
            return
        parent = d.root
        for it in items:
            if it[0] == "note":
                d.note("note", "sequence", it[1], 0, it[2], parent)
                continue
            kind, data, count, frames = it
            old = d.source
            apdu_off = 0
            if kind == "hdlc":
                apdu_off = LLC_LEN if len(data) >= LLC_LEN and data[0] == 0xE6 and data[1] in (0xE6, 0xE7) else 0
                if count > 1:
                    _reassembled_source(d, parent, "HDLC", "HDLC segments", "hdlc.reassembled.frames",
                                        data, count, frames)
                else:
                    d.new_source("HDLC information", data)
            elif kind == "adp":
                _reassembled_source(d, parent, "ADP", "adaptation segments", "adp.reassembled.segments",
                                    data, count, frames)
            else:
                continue
            try:
                if kind == "adp":
                    table("dlms").dispatch("apdu", data, 0, len(data), d, parent)
                elif apdu_off < len(data) and not table("dlms").dispatch("apdu", data, apdu_off, len(data), d, parent):
                    d.add(parent, "hdlc.reassembled.data", data[apdu_off:], apdu_off, len(data) - apdu_off)
            finally:
                d.source = old


def _reassembled_source(d: Dissection, parent, what: str, unit: str, count_field: str, data: bytes,
                        count: int, frames: list) -> None:
    """Switch to the "Reassembled <what>" source and label it with its segments' frames."""
    d.new_source(f"Reassembled {what}", data)
    lbl = d.label(parent, f"[{count} {unit} ({len(data)} bytes): " + " ".join(f"#{n}" for n in frames) + "]",
                  0, len(data))
    d.add(lbl, f"{count_field.split('.')[0]}.reassembled.length", len(data), 0, len(data))
    d.add(lbl, count_field, count, 0, len(data))


class OsgpContextStage(Stage):
    """After LonTalk transaction tracking (order 20): a RESPONSE whose request was a
    network-management or diagnostic command carries an NM/ND status code, not an OSGP
    one (both use 0x00..0x0C), so the OSGP reading of that byte is withdrawn."""
    name = "osgp_context"

    def process(self, pkt, d: Dissection, first_pass: bool) -> None:
        if "osgp" not in d.fields:
            return
        rc = (pkt.aux.get("lon") or {}).get("request_code")
        if rc is None or not 0x50 <= rc <= 0x7F or "osgp.response" not in d.fields:
            return
        for name in [k for k in d.fields if k == "osgp" or k.startswith("osgp.")]:
            del d.fields[name]
        d.protocols[:] = [p for p in d.protocols if p != "osgp"]
        if d.root is not None:
            d.root.children[:] = [n for n in d.root.children if n.field != "osgp"]
        d.expert[:] = [e for e in d.expert if e.layer != "osgp"]


register_stage(22, "dlms_streams", DlmsStreamStage)
register_stage(21, "osgp_context", OsgpContextStage)
