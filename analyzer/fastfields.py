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

    def feed(rec, file=""):
        data = rec.data
        end = len(data)
        # Ethernet II, IPv4 (no fragment), UDP: the exact checks and byte range of the
        # full dissectors; anything unusual takes the full path
        if rec.linktype != 1 or end < 42 or data[12] != 8 or data[13] != 0:
            return feed_full(rec, file)
        vihl, tlen, frag, proto, s, t, sport, dport, ulen = ip_udp(data, 14)
        hlen = (vihl & 15) * 4
        if vihl >> 4 != 4 or hlen != 20 or proto != 17 or frag & 0x3FFF or tlen < hlen:
            return feed_full(rec, file)
        pend = 14 + tlen
        if pend > end:
            pend = end
        if pend - 34 < 8:
            return feed_full(rec, file)
        uend = pend
        if ulen >= 8 and 34 + ulen <= pend:
            uend = 34 + ulen
        if uend <= 42:
            return feed_full(rec, file)
        lo, hi = (sport, dport) if sport <= dport else (dport, sport)
        e = udp.get(lo)
        if e is None:
            e = udp.get(hi)
        if e is None or e[0] != "cnip":
            return feed_full(rec, file)
        pipe.count += 1
        pkt = Packet(pipe.count, rec, file)
        d = D(data)
        if kept is not None:
            d.fields = kept()
        else:
            d.ctx = {"packet": pkt, "pipeline": pipe, "ip.src": ntoa(s), "ip.dst": ntoa(t), "ip.version": 4,
                     "udp.srcport": sport, "udp.dstport": dport}
        call("cnip", e[1], data, 42, uend, d, None)
        pkt.d = d
        return pkt

    return feed
