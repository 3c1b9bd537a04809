"""Exports (CSV / Parquet / JSON lines, DataFrames, Dask) checked against tshark and the
documented content of the shared captures."""
from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

HT = "htanwar922-wireshark-dlms"
COLS = ["frame.number", "frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
        "tcp.seq_raw", "tcp.len", "frame.len"]


def tshark_table(tshark, path) -> pd.DataFrame:
    args = [tshark, "-r", str(path), "-T", "fields", "-E", "header=y"]
    for c in COLS:
        args += ["-e", c]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rows = [l.split("\t") for l in out.splitlines()]
    return pd.DataFrame(rows[1:], columns=rows[0])


def run(cmd, *args, check=True):
    p = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=180)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def check_against_tshark(df: pd.DataFrame, ref: pd.DataFrame, offset: int = 0):
    assert len(df) == len(ref)
    assert list(df["number"]) == [int(x) + offset for x in ref["frame.number"]]
    assert list(df["ip.src"]) == list(ref["ip.src"])
    assert list(df["ip.dst"]) == list(ref["ip.dst"])
    assert list(df["tcp.srcport"]) == [int(x) for x in ref["tcp.srcport"]]
    assert list(df["tcp.dstport"]) == [int(x) for x in ref["tcp.dstport"]]
    assert list(df["tcp.seq"]) == [int(x) for x in ref["tcp.seq_raw"]]
    assert list(df["tcp.len"]) == [int(x) for x in ref["tcp.len"]]
    assert list(df["length"]) == [int(x) for x in ref["frame.len"]]
    assert all(abs(a - float(b)) < 1e-6 for a, b in zip(df["time"], ref["frame.time_epoch"]))


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_packets_export_matches_tshark(lonscope_cmd, tshark, pcaps, tmp_path, ext):
    path = pcaps / HT / "Output.pcap"
    out = tmp_path / f"p.{ext}"
    p = run(lonscope_cmd, "export", path, "--what", "packets", "-o", out, "--chunk", "100")
    assert "wrote 264 packets rows" in p.stderr
    if ext == "parquet":
        df = pd.read_parquet(out)
        assert str(df["tcp.srcport"].dtype) == "int64"
        assert str(df["tcp.flags.push"].dtype) == "bool"
    elif ext == "csv":
        df = pd.read_csv(out)
    else:
        df = pd.DataFrame([json.loads(l) for l in out.read_text().splitlines()])
    check_against_tshark(df, tshark_table(tshark, path))
    assert list(df.columns[:9]) == ["number", "time", "file", "source", "destination", "protocols",
                                    "protocol", "length", "info"]
    if ext != "jsonl":           # JSON lines leave out missing values
        assert df.columns[9] == "status"
    assert set(df["file"]) == {"Output.pcap"}
    assert all(p.startswith("eth:ip:tcp") for p in df["protocols"])


def test_chunked_equals_single_chunk(lonscope_cmd, pcaps, tmp_path):
    """Later chunks add columns (new layers) and lists; the unified file is the same."""
    path = pcaps / HT / "Output-Ciphered.pcap"      # TCP, DNS and ICMP: differing columns
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    run(lonscope_cmd, "export", path, "-o", a, "--chunk", "100")
    run(lonscope_cmd, "export", path, "-o", b, "--chunk", "100000")
    da, db = pd.read_parquet(a), pd.read_parquet(b)
    assert list(da.columns) == list(db.columns) or set(da.columns) == set(db.columns)
    pd.testing.assert_frame_equal(da[db.columns], db)
    assert len(da) == 299


def test_dataframe_api(tshark, pcaps):
    import analyzer
    path = pcaps / HT / "Output-EPRI.pcap"
    df = analyzer.open_capture(path).to_dataframe()
    check_against_tshark(df, tshark_table(tshark, path))
    assert str(df["tcp.srcport"].dtype) == "Int64"
    assert str(df["number"].dtype) == "Int64"
    # no keys: no decryption status; missing values are NA, not 0 or ""
    assert df["status"].isna().all()
    assert isinstance(df["ip.src"].dtype, pd.StringDtype)
    wr = [c for c in df.columns if c.startswith("wrapper.") and str(df[c].dtype) == "Int64"]
    for c in wr:       # frames without a TCP payload carry no wrapper fields
        assert df.loc[df["tcp.len"] == 0, c].isna().all()


def test_sessions_and_objects(lonscope_cmd, pcaps, tmp_path):
    """Output-EPRI.pcap: one plain LN association, 23 get-request/response-normal pairs and
    one access-request/response pair, released (../shared/pcaps/README.md)."""
    path = pcaps / HT / "Output-EPRI.pcap"
    s = tmp_path / "s.parquet"
    run(lonscope_cmd, "export", path, "--what", "sessions", "-o", s)
    df = pd.read_parquet(s)
    assert len(df) == 1
    row = df.iloc[0]
    assert row["context"] == "LN"
    assert row["state"] == "released"
    assert row["requests"] == 24 and row["responses"] == 24
    assert row["security"] == "none"
    o = tmp_path / "o.csv"
    run(lonscope_cmd, "export", path, "--what", "objects", "-o", o)
    ob = pd.read_csv(o)
    gets = ob[(ob["service"] == "get") & (ob["dir"] == "request")]
    assert len(gets) == 23
    # every response names the requested object (values are checked against Gurux in
    # test_export_gurux.py); the first get reads the association's object list
    resp = ob[(ob["service"] == "get") & (ob["dir"] == "response")]
    assert len(resp) == 23
    assert list(resp["obis"]) == list(gets["obis"])
    assert list(resp["request_frame"]) == list(gets["frame"])
    assert (resp["class_name"].notna() & resp["attribute_name"].notna()).all()


def test_objects_scaler_unit_per_association():
    """captures/demo.pcapng: each association reads 1.0.1.8.0.255 attr 2 and then its
    scaler_unit (attr 3) = {0, 30 (Wh)}, 1.0.32.7.0.255 with {-1, 35 (V)}: the value rows get
    scaler/unit/scaled value from the same association only; the load profile read with
    datablocks is one row with the reassembled rows."""
    import analyzer
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    cap = root / "captures" / "demo.pcapng"
    assert cap.exists()
    ob = analyzer.open_capture(str(cap), keys=str(root / "keys" / "demo.toml")).objects()
    resp = ob[ob["dir"] == "response"]
    su = resp[(resp["obis"] == "1.0.1.8.0.255") & (resp["attribute_id"] == 3)]
    assert len(su) >= 2 and set(su["value"]) == {"[0,30]"}
    for _, r in resp[(resp["obis"] == "1.0.1.8.0.255") & (resp["attribute_id"] == 2)].iterrows():
        read_su = ((su["assoc_id"] == r["assoc_id"])).any()
        if read_su:
            assert r["scaler"] == 0 and r["unit"] == "Wh" and r["scaled_value"] == float(r["value"])
        else:
            assert pd.isna(r["scaler"]) and pd.isna(r["scaled_value"])
        assert r["obis_name"].startswith("Active energy import") and r["class_name"] == "Register"
    volts = resp[(resp["obis"] == "1.0.32.7.0.255") & (resp["attribute_id"] == 2) & resp["scaler"].notna()]
    assert len(volts) >= 2
    for _, r in volts.iterrows():
        assert r["unit"] == "V" and r["scaled_value"] == pytest.approx(int(r["value"]) / 10)
    prof = resp[(resp["class_id"] == 7) & (resp["attribute_id"] == 2)]
    assert len(prof) >= 1
    rows = json.loads(prof.iloc[0]["value"])
    assert len(rows) == 24 and all(len(x) == 3 for x in rows)
    assert prof.iloc[0]["attribute_name"] == "buffer"


def test_findings_export(lonscope_cmd, pcaps, tmp_path):
    """Output-EPRI.pcap is a public (no security) association; Output-Ciphered-Director.pcap
    authenticates with LLS and an empty password (../shared/pcaps/README.md)."""
    out = tmp_path / "f.jsonl"
    run(lonscope_cmd, "export", pcaps / HT / "Output-EPRI.pcap", "--what", "findings", "-o", out)
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    plain = [r for r in rows if r["rule"] == "plaintext-public"]
    assert len(plain) == 1 and plain[0]["assoc_id"] == 1
    assert plain[0]["severity"] in ("info", "low")
    assert json.loads(plain[0]["frames"])[0] == plain[0]["frame"] == 3
    out = tmp_path / "f.parquet"
    run(lonscope_cmd, "export", pcaps / HT / "Output-Ciphered-Director.pcap", "--what", "findings", "-o", out)
    df = pd.read_parquet(out)
    lls = df[df["rule"] == "lls-cleartext"]
    assert len(lls) == 1 and lls.iloc[0]["frame"] == 1
    assert list(df.columns[:5]) == ["id", "rule", "severity", "title", "message"]


def test_dask_local_cluster(pcaps, tshark, tmp_path):
    from analyzer.dask_engine import dask_tables
    from analyzer.export import write_tables
    files = [pcaps / HT / "Output-EPRI.pcap", pcaps / HT / "Output-Ciphered-Director.pcap",
             pcaps / HT / "Output-EPRI.pcap"]
    out = tmp_path / "d.parquet"
    errors: list = []
    n = write_tables(dask_tables("packets", [str(f) for f in files], workers=2, errors=errors), str(out))
    assert n == 52 + 3 + 52 and errors == []
    df = pd.read_parquet(out)
    assert list(df["number"]) == list(range(1, n + 1))
    off = 0
    for f in files:
        ref = tshark_table(tshark, f)
        part = df.iloc[off:off + len(ref)].reset_index(drop=True)
        check_against_tshark(part, ref, offset=off)
        off += len(ref)


def test_export_errors(lonscope_cmd, pcaps, tmp_path):
    path = pcaps / HT / "Output.pcap"
    p = run(lonscope_cmd, "export", path, "-o", tmp_path / "x.xlsx", check=False)
    assert p.returncode == 2 and p.stderr.startswith("lonscope: ") and ".parquet" in p.stderr
    p = run(lonscope_cmd, "export", tmp_path / "missing.pcap", "-o", tmp_path / "x.csv", check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    p = run(lonscope_cmd, "export", path, "-o", tmp_path / "nodir" / "x.csv", check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = run(lonscope_cmd, "export", path, "-o", tmp_path / "x.csv", "-Y", "tcp.port ==", check=False)
    assert p.returncode == 2 and "column 12" in p.stderr


def test_filtered_export(lonscope_cmd, tshark, pcaps, tmp_path):
    path = pcaps / HT / "Output.pcap"
    out = tmp_path / "f.csv"
    run(lonscope_cmd, "export", path, "-Y", "tcp.srcport == 4063 && tcp.len > 100", "-o", out)
    df = pd.read_csv(out)
    ref = subprocess.run([tshark, "-r", str(path), "-Y", "tcp.srcport == 4063 && tcp.len > 100",
                          "-T", "fields", "-e", "frame.number"], capture_output=True, text=True).stdout
    assert list(df["number"]) == [int(x) for x in ref.split()]


GB_KEYS = ["--key", "ek=000102030405060708090A0B0C0D0E0F", "--key", "ak=D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"]


def test_export_with_keys(lonscope_cmd, pcaps, tmp_path):
    """Output-Ciphered-Director.pcap with the Green Book keys: client title "CPS-LT10", server
    "ABCDEFGH", LLS, glo-initiate, then a ciphered access-request of 6 gets of class 7,
    0.0.94.91.10.255 (../shared/pcaps/README.md).  No key byte ends up in any export."""
    path = pcaps / HT / "Output-Ciphered-Director.pcap"
    s = tmp_path / "s.jsonl"
    run(lonscope_cmd, "export", path, *GB_KEYS, "--what", "sessions", "-o", s)
    rows = [json.loads(l) for l in s.read_text().splitlines()]
    assert len(rows) == 1
    r = rows[0]
    assert bytes.fromhex(r["client_title"]) == b"CPS-LT10"
    assert bytes.fromhex(r["server_title"]) == b"ABCDEFGH"
    assert r["mechanism"] == "LLS" and r["security"] == "auth+enc"
    o = tmp_path / "o.csv"
    run(lonscope_cmd, "export", path, *GB_KEYS, "--what", "objects", "-o", o)
    ob = pd.read_csv(o)
    acc = ob[ob["service"] == "access"]
    assert len(acc) == 6 and set(acc["class_id"]) == {7} and set(acc["obis"]) == {"0.0.94.91.10.255"}
    p = tmp_path / "p.csv"
    run(lonscope_cmd, "export", path, *GB_KEYS, "-o", p)
    assert list(pd.read_csv(p)["status"]) == ["decrypted"] * 3
    for f in (s, o, p):
        text = f.read_text().lower()
        assert "000102030405060708090a0b0c0d0e0f" not in text and "d0d1d2d3d4d5d6d7d8d9dadbdcdddedf" not in text


def test_mapped_pages_released_output_unchanged(pcaps, tshark, monkeypatch):
    """The export gives back the mapped capture pages the reader has passed (madvise
    DONTNEED every RELEASE_STEP bytes), fed the reader's real offset: after each record the
    end of that record in the file (from tshark's captured lengths); pages read again come
    back from the file, so the rows are the same."""
    import mmap
    import subprocess
    from analyzer import capture as C
    from analyzer import export as E
    path = str(pcaps / HT / "Output-Ciphered.pcap")
    ref = pa_rows(E.export_tables("packets", [path]))
    offsets, done = [], []
    orig = C.PageRelease.upto

    def upto(self, buf, offset):
        before = self.done
        orig(self, buf, offset)
        offsets.append(offset)
        if self.done != before:
            assert isinstance(buf, mmap.mmap) and self.done % mmap.PAGESIZE == 0
            assert self.done - before >= 2 * mmap.PAGESIZE and offset - self.done < mmap.PAGESIZE
            done.append(self.done)
    monkeypatch.setattr(E.PacketSource, "RELEASE_STEP", 2 * mmap.PAGESIZE)
    monkeypatch.setattr(C.PageRelease, "upto", upto)
    got = pa_rows(E.export_tables("packets", [path]))
    caps = subprocess.run([tshark, "-r", path, "-T", "fields", "-e", "frame.cap_len"], capture_output=True,
                          text=True, check=True).stdout.split()
    ends, end = [], 24
    for c in caps:
        end += 16 + int(c)
        ends.append(end)
    assert offsets == ends and len(done) >= 3 and got == ref and len(ref) == 299


def pa_rows(tables):
    import pyarrow as pa
    from analyzer.export import conform, unify_schema
    tables = list(tables)
    schema = unify_schema(t.schema for t in tables)
    return pa.concat_tables([conform(t, schema) for t in tables]).to_pylist()


def test_object_scalers_bounded():
    """The objects export remembers scaler_units for the most recently active associations
    only (a long capture has millions of associations)."""
    from analyzer.export import ObjectState
    st = ObjectState()
    st.MAX_ASSOCIATIONS = 3
    st.registers(("a",))["1.0.1.8.0.255"] = (0, 30)
    for k in ("b", "c", "a", "d"):      # "a" used again: "b" is the oldest when "d" arrives
        st.registers((k,))
    assert list(st.scalers) == [("c",), ("a",), ("d",)]
    assert st.registers(("a",)) == {"1.0.1.8.0.255": (0, 30)}


def test_parquet_row_groups_gather_chunks(pcaps, tmp_path, monkeypatch):
    """Chunks are written in row groups of at least ROW_GROUP_ROWS rows (a Parquet writer
    keeps each row group's metadata until the end: few big groups keep memory flat)."""
    import pyarrow.parquet as pq
    from analyzer import export as E
    path = str(pcaps / HT / "Output-Ciphered.pcap")
    monkeypatch.setattr(E.TableWriter, "ROW_GROUP_ROWS", 250)
    out = tmp_path / "g.parquet"
    n = E.write_tables(E.export_tables("packets", [path], chunk_rows=100), str(out))
    md = pq.read_metadata(out)
    assert n == md.num_rows == 299
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [299]
    out2 = tmp_path / "h.parquet"
    monkeypatch.setattr(E.TableWriter, "ROW_GROUP_ROWS", 150)
    E.write_tables(E.export_tables("packets", [path], chunk_rows=100), str(out2))
    md2 = pq.read_metadata(out2)
    assert [md2.row_group(i).num_rows for i in range(md2.num_row_groups)] == [200, 99]
    assert pq.read_table(out2).equals(pq.read_table(out))
    # min/max statistics (kept in memory per row group until the footer) only where readers
    # filter: frame number, time, length
    rg = md2.row_group(0)
    stats = {rg.column(i).path_in_schema: rg.column(i).statistics for i in range(rg.num_columns)
             if rg.column(i).is_stats_set}
    assert set(stats) == {"number", "time", "length"}
    assert (stats["number"].min, stats["number"].max) == (1, 200)


def test_spool_schema_is_unify_schema(tmp_path):
    """The spool of a streamed export and the Dask merge (`unify_schema`) type a column
    the same way: int + float -> float, int + text -> text, scalar + list -> list, all-null
    -> text, columns in first-seen order."""
    import pyarrow as pa
    from analyzer.export import Spool, unify_schema
    chunks = [pa.table({"a": pa.array([1], pa.int64()), "b": pa.array([1], pa.int64()),
                        "c": pa.array([None], pa.null())}),
              pa.table({"a": pa.array([1.5]), "b": pa.array(["x"]), "d": pa.array([[1]], pa.list_(pa.int64()))}),
              pa.table({"d": pa.array([2], pa.int64()), "e": pa.array([True])})]
    want = pa.schema([("a", pa.float64()), ("b", pa.string()), ("c", pa.string()),
                      ("d", pa.list_(pa.int64())), ("e", pa.bool_())])
    assert unify_schema(t.schema for t in chunks) == want
    spool = Spool(str(tmp_path))
    try:
        for t in chunks:
            spool.add(t)
        assert spool.schema() == want and spool.rows == 3
        back = list(spool.tables())
        assert [t.schema for t in back] == [want] * 3
        assert back[1].column("b").to_pylist() == ["x"] and back[0].column("b").to_pylist() == ["1"]
        assert back[2].column("d").to_pylist() == [[2]]
    finally:
        spool.close()


def test_shift_frames_findings_ids_and_messages():
    """Per-file findings moved into a multi-file export (Dask merge): ids count on, the
    frame and association numbers the audit's messages name move with the `frame`,
    `frames` and `assoc_id` columns; counts, IC values, node addresses and quoted
    passwords stay as they are."""
    import pyarrow as pa
    from analyzer.export import FINDING_SCHEMA, rows_table, shift_frames
    msgs = [
        ("10 incident(s); first: IC 20 reused with different content (key set ?, frames 55 and 253)",
         "10 incident(s); first: IC 20 reused with different content (key set ?, frames 155 and 353)"),
        ("IC went from 47 (frame 114) back to 9 (frame 414)",
         "IC went from 47 (frame 214) back to 9 (frame 514)"),
        ("association 2 (1/1 -> 1/11): password 'frame 7 association 3'",
         "association 7 (1/1 -> 1/11): password 'frame 7 association 3'"),
        ("associations 4, 12 use the same dedicated key", "associations 9, 17 use the same dedicated key"),
        ("3 requests of association 1 (10.0.0.2:40000/w16) repeated in association 2 (10.0.0.3:40000/w16) "
         "within 1 s",
         "3 requests of association 6 (10.0.0.2:40000/w16) repeated in association 7 (10.0.0.3:40000/w16) "
         "within 1 s"),
        ("protected APDU of frame 12 (association 1) forwarded in association 2 (frame 30)",
         "protected APDU of frame 112 (association 6) forwarded in association 7 (frame 130)"),
        ("2 more incident(s) in further associations; first: frame 8 repeats the protected APDU of frame 3",
         "2 more incident(s) in further associations; first: frame 108 repeats the protected APDU of frame 103"),
        ("1/123 -> 1/10: update key without 14908 authentication (3 message(s))",
         "1/123 -> 1/10: update key without 14908 authentication (3 message(s))"),
        ("12 APDU(s) in association 11", "12 APDU(s) in association 16"),
        (None, None),
    ]
    rows = [{"id": f"F{i}", "rule": "r", "severity": "high", "message": m, "frame": i, "frames": f"[{i},{i + 1}]",
             "assoc_id": 1} for i, (m, _) in enumerate(msgs, 1)]
    t = shift_frames(rows_table(rows, FINDING_SCHEMA), 100, 5, findings=7)
    assert t.column("message").to_pylist() == [want for _, want in msgs]
    assert t.column("id").to_pylist() == [f"F{i + 7}" for i in range(1, len(msgs) + 1)]
    assert t.column("frame").to_pylist() == [i + 100 for i in range(1, len(msgs) + 1)]
    assert t.column("frames").to_pylist()[0] == "[101,102]"
    assert set(t.column("assoc_id").to_pylist()) == {6}
    # the first file's findings keep their numbers; a packets table never has its text touched
    assert shift_frames(rows_table(rows, FINDING_SCHEMA), 0, 0, findings=0).equals(rows_table(rows, FINDING_SCHEMA))
    p = pa.table({"number": [1], "message": ["frame 1"], "id": ["F1"]})
    assert shift_frames(p, 10, 2).to_pylist() == [{"number": 11, "message": "frame 1", "id": "F1"}]


def test_row_group_size_follows_rows_and_columns():
    """The Parquet row-group size minimises footer metadata (per row group and column) plus
    the rows gathered for one group: sqrt(rows x columns), within its bounds."""
    from analyzer.export import TableWriter as W
    assert W.group_rows_for(None, 262) == W.group_rows_for(1_000_000, 262) == 20_000
    assert W.group_rows_for(10_000_000, 262) == 51_185
    assert W.group_rows_for(10**9, 262) == W.MAX_GROUP_ROWS


def test_local_dataset_parts(pcaps, tmp_path, monkeypatch):
    """A directory output with the local engine: parts of PART_ROWS rows, one schema, the
    rows in order (the same table as the single-file export); old parts are replaced."""
    import pyarrow.parquet as pq
    from analyzer import export as E
    path = str(pcaps / HT / "Output-Ciphered.pcap")
    monkeypatch.setattr(E, "PART_ROWS", 120)
    one = tmp_path / "one.parquet"
    E.write_tables(E.export_tables("packets", [path], chunk_rows=50), str(one))
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "part-00007.parquet").write_bytes(b"old")
    n = E.write_tables(E.export_tables("packets", [path], chunk_rows=50), str(ds))
    parts = sorted(ds.glob("part-*.parquet"))
    assert n == 299 and [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.read_metadata(p).num_rows for p in parts] == [120, 120, 59]
    assert len({pq.read_schema(p) for p in parts}) == 1
    import pyarrow as pa
    assert pa.concat_tables([pq.read_table(p) for p in parts]).equals(pq.read_table(one))
    empty = tmp_path / "empty"
    assert E.write_tables(iter(()), str(empty) + "/") == 0
    assert pq.read_metadata(empty / "part-00000.parquet").num_rows == 0
