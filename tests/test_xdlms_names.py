"""COSEM naming: class/attribute/method tables (facts from docs/xdlms-and-security.md §6),
OBIS names and user CSVs (API and LONSCOPE_OBIS_CSV), SN mapping, and fuzzing of the
reassembly stage with random block sequences."""
from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import HealthCheck, given, settings, strategies as st

from dissectors import cosem_names as cn
from dissectors import xdlms


def test_class_tables_follow_the_docs():
    assert cn.class_name(8) == "Clock" and cn.class_name(15) == "Association LN"
    assert cn.attribute_name(8, 2) == "time" and cn.attribute_name(8, 3) == "time_zone"
    assert cn.method_name(8, 6) == "shift_time"
    assert cn.attribute_name(7, 2) == "buffer" and cn.method_name(7, 2) == "capture"
    assert cn.method_name(15, 1) == "reply_to_HLS_authentication"
    assert cn.method_name(12, 8) == "reply_to_HLS_authentication"
    assert cn.attribute_name(70, 3) == "control_state" and cn.method_name(70, 1) == "remote_disconnect"
    assert cn.method_name(18, 4) == "image_activate"
    # Security setup must not carry the Clock method names (Gurux copy-paste bug, trap 8)
    assert cn.method_name(64, 1) == "security_activate" and cn.method_name(64, 2) == "key_transfer"
    for cid in (130, 131, 132, 133):
        assert "14908" in cn.class_name(cid)
        assert cn.attribute_name(cid, 1) == "logical_name"
    assert cn.attribute_name(9999, 1) == "logical_name" and cn.class_name(9999) is None


def test_obis_names_and_normalisation():
    assert cn.obis_name("0.0.1.0.0.255") == "Clock"
    assert cn.obis_name("1.0.1.8.0.255") == "Active energy import (+A) total"
    assert cn.obis_name("0.0.43.1.3.255") == "Invocation counter 3"
    assert cn.obis_name("1.0.1.8.0.101") == "Active energy import (+A) total (F=101)"
    assert cn.obis_name("1.1.1.8.0.255") == "Active energy import (+A) total (channel 1)"
    assert cn.obis_name("9.9.9.9.9.9") is None
    assert cn.normalize_obis("1-0:1.8.0*255") == "1.0.1.8.0.255"
    assert cn.normalize_obis("0100010800FF") == "1.0.1.8.0.255"
    assert cn.normalize_obis("1.0.1.8.0") == "1.0.1.8.0.255"
    assert cn.normalize_obis("1.0.1.8.0.256") is None and cn.normalize_obis("x") is None


def test_user_csv_api(tmp_path):
    p = tmp_path / "names.csv"
    p.write_text("# my names\nobis,name\n1-0:99.97.9*255,My event log\n0.0.96.99.0.255,Site code\nbad\n")
    assert cn.load_obis_csv(p) == 2
    from dissectors.core import Dissection
    a = xdlms.build_get_request(1, "0.0.96.99.0.255", 2)
    d = Dissection(a, False)
    xdlms.dissect_apdu(a, 0, len(a), d, None)
    assert d.fields["dlms.obis_name"] == ["Site code"]
    assert "Site code" in d.info


def test_user_csv_env(tmp_path):
    p = tmp_path / "env.csv"
    p.write_text("0.0.96.98.0.255,From the environment\n")
    code = ("from dissectors.cosem_names import obis_name; print(obis_name('0.0.96.98.0.255'))")
    env = dict(os.environ, LONSCOPE_OBIS_CSV=str(p))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "From the environment", out.stderr


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_obis_csv_lines(raw):
    cn.normalize_obis(raw.decode("latin-1"))
    m = cn.SNMap()
    m.add_object_list([[int.from_bytes(raw[:2] or b"\0", "big"), 3, 0, bytes(6)], raw, None])
    m.lookup(int.from_bytes(raw[:2] or b"\0", "big") + 8)


_blocks = st.lists(st.tuples(st.sampled_from(["get", "set", "gbt", "sn"]), st.integers(0, 6), st.booleans(),
                             st.integers(0, 3), st.binary(max_size=24)), max_size=12)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_blocks)
def test_fuzz_reassembly_stage(seq):
    """Random interleavings of block APDUs (duplicates, gaps, garbage data) never raise and
    every completed run is dissected in its own source."""
    from analyzer.packet import Packet, Record
    from analyzer.reassembly import Reassembly
    from dissectors.core import Dissection
    stage = Reassembly(None)
    for n, (kind, bn, last, iid, data) in enumerate(seq, 1):
        if kind == "get":
            a = xdlms.build_get_response_block(data, bn, last, invoke_id=iid)
        elif kind == "set":
            a = xdlms.build_set_request_block(data, bn, last, invoke_id=iid)
        elif kind == "gbt":
            a = xdlms.build_gbt(data, bn, last=last)
        else:
            a = b"\x0C\x01\x02" + bytes([last, 0, bn, len(data)]) + data
        pkt = Packet(n, Record(n, a, 147, len(a)))
        d = Dissection(a, n % 2 == 0)
        d.ctx["dlms.transport"] = (("t", iid % 2), "a", "b")
        xdlms.dissect_apdu(a, 0, len(a), d, d.root)
        stage.process(pkt, d, True)
        pkt.d = d
        for e in d.expert:
            assert "stage failed" not in e.message
        if d.fields.get("dlms.reassembled_length"):
            assert any(s[0] == "Reassembled xDLMS" for s in d.sources)
