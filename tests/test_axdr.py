"""A-XDR Data: every type decoded from bytes that gurux_dlms encoded (independent encoder),
our encoder checked by gurux_dlms's decoder, date/time rendering with the deviation sign
convention, compact-array, bounds, and fuzzing."""
from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dissectors import axdr
from dissectors.core import Dissection, Truncated


def gx_encode(type_name: str, value) -> bytes:
    from gurux_dlms import GXByteBuffer
    from gurux_dlms.enums import DataType
    from gurux_dlms.internal._GXCommon import _GXCommon
    b = GXByteBuffer()
    _GXCommon.setData(None, b, getattr(DataType, type_name), value)
    return bytes(b.array())


def gx_decode(data: bytes):
    from gurux_dlms import GXByteBuffer
    from gurux_dlms.internal._GXCommon import _GXCommon
    from gurux_dlms.internal._GXDataInfo import _GXDataInfo
    info = _GXDataInfo()
    return _GXCommon.getData(None, GXByteBuffer(data), info)


GX_CASES = [
    ("UINT8", 200, "unsigned", 200), ("INT8", -5, "integer", -5), ("UINT16", 65000, "long-unsigned", 65000),
    ("INT16", -129, "long", -129), ("UINT32", 5009, "double-long-unsigned", 5009),
    ("INT32", -70000, "double-long", -70000), ("UINT64", 2 ** 63, "long64-unsigned", 2 ** 63),
    ("INT64", -2, "long64", -2), ("ENUM", 7, "enum", 7), ("BOOLEAN", True, "boolean", True),
    ("FLOAT32", 101.0, "float32", 101.0), ("FLOAT64", 100.5, "float64", 100.5),
    ("STRING", "abc", "visible-string", "abc"), ("OCTET_STRING", bytes(range(200)), "octet-string", bytes(range(200))),
    ("BITSTRING", "1010", "bit-string", "1010"), ("BITSTRING", "101100111", "bit-string", "101100111"),
    ("NONE", None, "null-data", None),
]


@pytest.mark.parametrize("gtype,value,ours_type,expected", GX_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(GX_CASES)])
def test_decode_gurux_encoded(gtype, value, ours_type, expected):
    pytest.importorskip("gurux_dlms")
    data = gx_encode(gtype, value)
    d = Dissection(data, True)
    end, v = axdr.dissect_data(data, 0, len(data), d, d.root)
    assert end == len(data)
    assert d.fields["dlms.data.type"] == [ours_type]
    assert v == expected and d.fields["dlms.data.value"] == [expected]


def test_long_form_length_octet_string():
    """Trap 2: 82 0109 / 82 03FB long-form lengths."""
    pytest.importorskip("gurux_dlms")
    data = gx_encode("OCTET_STRING", bytes(0x109))
    assert data[:4] == bytes.fromhex("09820109")
    assert axdr.decode(data) == bytes(0x109)


ENCODE_CASES = [
    ("double-long-unsigned", 5009), ("long", -2), ("long64-unsigned", 2 ** 64 - 1), ("integer", -128),
    ("enum", 3), ("boolean", False), ("octet-string", b"\x01\x02"), ("visible-string", "meter"),
    ("float32", 1.5), ("float64", -2.25), ("bit-string", "1100000001"), ("null-data", None),
    ("structure", [("unsigned", 1), ("octet-string", bytes(6))]), ("array", [("long-unsigned", 1), ("long-unsigned", 2)]),
]


@pytest.mark.parametrize("t,v", ENCODE_CASES, ids=[c[0] for c in ENCODE_CASES])
def test_our_encoder_checked_by_gurux(t, v):
    pytest.importorskip("gurux_dlms")
    data = axdr.encode((t, v))
    g = gx_decode(data)
    if t in ("structure", "array"):
        assert [x for x in g] == [x[1] for x in v]
    elif t == "octet-string":
        assert bytes(g) == v
    elif t == "bit-string":
        assert str(g) == v
    elif t == "float32":
        assert math.isclose(g, v)
    else:
        assert g == v


def test_datetime_rendering_and_status():
    b = bytes.fromhex("07E50118FF0E303950FFC400")
    assert axdr.datetime_iso(b) == "2021-01-24T14:48:57.80+01:00"     # dev -60 -> UTC+1
    assert axdr.looks_like_datetime(b)
    b = bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")
    assert axdr.datetime_iso(b) == "****-**-**T**:**:**"
    assert "deviation unspecified" in axdr.datetime_text(b) and "status unspecified" in axdr.datetime_text(b)
    b = bytes.fromhex("07E7040D04000000FFFEB681")
    t = axdr.datetime_text(b)
    assert "+05:30" in t and "Thu" in t and "invalid-value" in t and "daylight-saving-active" in t
    assert axdr.date_iso(bytes.fromhex("FFFF0CFEFF")) == "****-12-last"
    assert axdr.time_iso(bytes.fromhex("17003BFF")) == "23:00:59"
    assert not axdr.looks_like_datetime(bytes.fromhex("000102030405060708090A0B"))


def test_octet_string_clock_recognised():
    data = bytes.fromhex("090C07E8030505113B0400FEB600")
    d = Dissection(data, True)
    axdr.dissect_data(data, 0, len(data), d, d.root)
    assert d.fields["dlms.data.datetime"] == ["2024-03-05T17:59:04.00+05:30"]
    assert d.fields["dlms.data.deviation"] == [-330]
    assert "date-time" in d.root.children[0].text


def test_compact_array_with_type_description():
    # structure{unsigned, long-unsigned} x 2, then array[3] of long
    data = bytes.fromhex("13 0202 1112 06 01000A 02000B".replace(" ", ""))
    d = Dissection(data, True)
    end, v = axdr.dissect_data(data, 0, len(data), d, d.root)
    assert end == len(data) and v == [[1, 10], [2, 11]]
    assert d.fields["dlms.data.type_description"] == ["structure{unsigned, long-unsigned}"]
    data = bytes.fromhex("13 01 0003 10 06 0001FFFF0002".replace(" ", ""))
    assert axdr.decode(data) == [[1, -1, 2]]
    data = bytes.fromhex("13 01 0002 09 05 0201AA0100".replace(" ", ""))     # variable-length elements
    assert axdr.decode(data) == [[b"\x01\xaa", b"\x00"]]


def test_bounds_never_allocate_from_unchecked_lengths():
    with pytest.raises(Truncated):
        axdr.decode(b"\x09\x84\xff\xff\xff\xff")
    with pytest.raises(Truncated):
        axdr.decode(b"\x01\x84\xff\xff\xff\xff\x00")
    with pytest.raises(Truncated):
        axdr.decode(b"\x04\x84\x7f\xff\xff\xff")
    with pytest.raises(Truncated):
        axdr.decode(b"\x02\x01" * (axdr.MAX_DEPTH + 2) + b"\x00")
    # a compact array of 65535 x 65535 elements with 2 content bytes: refused before looping
    with pytest.raises(Truncated):
        axdr.decode(b"\x13\x01\xff\xff\x01\xff\xff\x11\x02\x01\x02")
    assert axdr.decode(b"\x13\x01\xff\xff\x01\xff\xff\x11\x00") == []
    # structure{unsigned, array[65535] of array[65535] of null}: the empty part is not expanded
    assert axdr.decode(b"\x13\x02\x02\x11\x01\xff\xff\x01\xff\xff\x00\x01\x07") == [[7, []]]
    with pytest.raises(Truncated):
        axdr.decode(b"\x07")                                                # unused tag
    assert axdr.decode(b"\x02\x02\x11\x01\x11\x02") == [1, 2]


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random(data):
    for tree in (False, True):
        d = Dissection(data, tree)
        try:
            axdr.dissect_data(data, 0, len(data), d, d.root)
        except Truncated:
            pass


_leaf = st.one_of(
    st.tuples(st.just("double-long-unsigned"), st.integers(0, 2 ** 32 - 1)),
    st.tuples(st.just("long"), st.integers(-2 ** 15, 2 ** 15 - 1)),
    st.tuples(st.just("octet-string"), st.binary(max_size=16)),
    st.tuples(st.just("visible-string"), st.text(alphabet="abcXYZ09 ", max_size=20)),
    st.tuples(st.just("boolean"), st.booleans()),
    st.tuples(st.just("bit-string"), st.text(alphabet="01", max_size=30)),
    st.tuples(st.just("float64"), st.floats(allow_nan=False)),
    st.just(("null-data", None)),
)
_spec = st.recursive(_leaf, lambda inner: st.tuples(st.sampled_from(["structure", "array"]),
                                                     st.lists(inner, max_size=4)), max_leaves=10)


def _plain(spec):
    t, v = spec
    if t in ("structure", "array"):
        return [_plain(x) for x in v]
    return v


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_spec, st.integers(0, 1000), st.integers(0, 255))
def test_fuzz_roundtrip_and_mutations(spec, pos, val):
    data = axdr.encode(spec)
    assert axdr.decode(data) == _plain(spec)
    b = bytearray(data)
    b[pos % len(b)] = val
    d = Dissection(bytes(b), True)
    try:
        axdr.dissect_data(bytes(b), 0, len(b), d, d.root)
    except Truncated:
        pass
