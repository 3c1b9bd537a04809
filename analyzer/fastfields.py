"""`-T fields` fast feed for CN/IP + LonTalk fields (see `fast_feed`)."""
from __future__ import annotations

from dissectors.core import Dissection

#
# `lonscope decode -T fields -e lon.* / cnip.*` needs neither the lower layers' fields nor
# any stage: when every requested field is a per-frame field of the CN/IP or LonTalk
# dissectors (the stages add only `lon.response_*`, `lon.nm.*`/`lon.nd.*` response fields
# and, with key-ring secrets, `cnip.md5.status`), a plain Ethernet/IPv4/UDP datagram whose
# UDP port belongs to CN/IP is handed to the CN/IP dissector directly, with the same byte
# range the Ethernet/IPv4/UDP dissectors would give it.  Anything else (VLAN tags, IPv6,
# fragments, TCP, IP options beyond the captured bytes, damaged headers, other ports) goes
# through the full pipeline, so stage state (IP defragmentation, TCP) sees every packet it
# would act on.  tests/test_fastpath.py checks that the output is identical.

STAGE_LON_PREFIXES = ("lon.nm.", "lon.nd.", "lon.response_")
STAGE_LON_FIELDS = frozenset(["lon.auth_check", "cnip.md5.status"])    # decrypt, lontrack
FAST_VIRTUAL = frozenset(["frame.number", "frame.time_epoch", "frame.time_relative",
                          "frame.time_delta", "frame.len", "frame.cap_len"])


def frame_only_field(name: str) -> bool:
    """True for CN/IP and LonTalk fields that only the stateless dissectors produce."""
    from dissectors.core import REGISTRY

    from . import filters
    if name in ("lon", "cnip"):
        return True
    if name in STAGE_LON_FIELDS or not name.startswith(("lon.", "cnip.")) \
            or name.startswith(STAGE_LON_PREFIXES) or name not in REGISTRY:
        return False
    filters._load_fields()
    dissector_fields = filters.DISSECTOR_FIELDS      # registered by dissectors, not stages
    return dissector_fields is None or name in dissector_fields


class LeanDissection(Dissection):
    """A Dissection whose Info/address columns and ctx hand-offs nobody reads (the field
    values are recorded as always): the dissectors skip building them."""
    __slots__ = ()
    lean = True


def fast_feed(pipe, names, filter_fields=()):
    """A `feed(rec, file) -> Packet` for `-T fields` that skips the lower layers and the
    stages for plain CN/IP datagrams, or None when the requested fields (`names`, plus the
    display filter's `filter_fields`) need more than the CN/IP/LonTalk dissectors give."""
    import os
    import socket
    import struct

    from dissectors.core import call, table

    from .packet import Packet

    if os.environ.get("LONSCOPE_FULL_DECODE") or pipe.want_tree:
        return None
    keys = getattr(pipe, "keys", None)
    if keys is not None and getattr(keys, "cnip_secrets", None):
        return None
    names = list(names)
    if not names or not any(frame_only_field(n) for n in names):
        return None
    if not all(frame_only_field(n) or n in FAST_VIRTUAL for n in names):
        return None
    if not all(frame_only_field(n) for n in filter_fields):
        return None
    udp = table("udp.port").entries
    # Nothing reads the Info/address columns or ctx hand-offs in this mode, unless a layer
    # above LonTalk is still registered (a payload dissector reads ctx["lon"] and d.info)
    apdu = table("lon.apdu")
    lean = not apdu.entries and not apdu.heuristics and \
        all(p == "lon" for p, _ in table("cnip.protocol").entries.values())
    D = LeanDissection if lean else Dissection
    # ... and only the requested fields (and the display filter's) are read: the layers'
    # recorders record just those (dissectors.lon.keep_fields)
    kept = None
    if lean:
        from dissectors.lon import keep_fields

        from .filters import ALIASES
        want = set(names) | set(filter_fields)
        for n in list(want):
            want.update(ALIASES.get(n, ()))
        kept = keep_fields(want)
    feed_full = pipe.feed
    ip_udp = struct.Struct("!BxHxxHxBxx4s4sHHH").unpack_from
    ntoa = socket.inet_ntoa

    def dissect(rec, d=None):
        """The Dissection of a plain CN/IP datagram, or None (then: the full path); `d`: a
        lean Dissection to use again (its fields dict, protocols, expert items and ctx are
        new ones)."""
        data = rec.data
        end = len(data)
        # Ethernet II, IPv4 (no fragment), UDP: the exact checks and byte range of the
        # full dissectors; anything unusual takes the full path
        if rec.linktype != 1 or end < 42 or data[12] != 8 or data[13] != 0:
            return None
        vihl, tlen, frag, proto, s, t, sport, dport, ulen = ip_udp(data, 14)
        if vihl != 0x45 or proto != 17 or frag & 0x3FFF or tlen < 20:
            return None
        pend = 14 + tlen
        if pend > end:
            pend = end
        if pend - 34 < 8:
            return None
        uend = pend
        if ulen >= 8 and 34 + ulen <= pend:
            uend = 34 + ulen
        if uend <= 42:
            return None
        e = udp.get(sport if sport <= dport else dport)
        if e is None:
            e = udp.get(dport if sport <= dport else sport)
        if e is None or e[0] != "cnip":
            return None
        pipe.count += 1
        if d is not None:
            d.fields = kept()
            d.protocols = []
            if d.expert:
                d.expert = []
            if d.ctx:
                d.ctx = {}
            d.sources[:] = [("Frame", data)]
            d.source = 0
        elif kept is not None:
            d = D(data)
            d.fields = kept()
        else:
            d = D(data)
            d.ctx = {"pipeline": pipe, "ip.src": ntoa(s), "ip.dst": ntoa(t), "ip.version": 4,
                     "udp.srcport": sport, "udp.dstport": dport}
        call("cnip", e[1], data, 42, uend, d, None)
        return d

    def feed(rec, file=""):
        d = dissect(rec)
        if d is None:
            return feed_full(rec, file)
        pkt = Packet(pipe.count, rec, file)
        pkt.d = d
        if kept is None:
            d.ctx["packet"] = pkt
        return pkt

    scratch = D(b"") if kept is not None else None

    def fields_of(rec, file=""):
        """`feed(rec, file).d.fields` without the Packet when it is not needed (a lean
        Dissection is used again for the next packet: only its fields dict is returned)."""
        d = dissect(rec, scratch)
        return feed_full(rec, file).d.fields if d is None else d.fields

    feed.fields_of = fields_of
    return feed
