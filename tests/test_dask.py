"""The Dask engine: per-file partitions decoded on LocalCluster worker processes, merged
into one file (or a Parquet dataset) that equals the local engine's export of each file,
with global frame and association numbers and one dtype per column in every partition."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "captures" / "demo.pcapng"
DEMO_KEYS = ROOT / "keys" / "demo.toml"
HT = "htanwar922-wireshark-dlms"


@pytest.fixture(scope="module")
def client():
    from analyzer.dask_engine import make_client
    c, cluster = make_client(None, 2)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def files(pcaps):
    return [str(DEMO), str(pcaps / HT / "Output-EPRI.pcap"), str(pcaps / HT / "Output-Ciphered-Director.pcap")]


def local_parts(what: str, files: list[str]):
    """Each file exported alone by the local engine: (table, frames read, associations)."""
    from analyzer.export import export_tables, unify_schema, conform
    from analyzer.keyring import load_keys
    keys = load_keys(str(DEMO_KEYS))
    out = []
    for f in files:
        stats: dict = {}
        tables = list(export_tables(what, [f], keys, None, [], 5000, None, stats))
        t = pa.concat_tables([conform(x, unify_schema([x.schema for x in tables])) for x in tables]) \
            if len(tables) > 1 else tables[0]
        out.append((t, stats["records"], stats["associations"]))
    return out


# columns holding frame numbers: the tables' own and the fields that name another frame
FRAME_COLUMNS = ("number", "frame", "first_frame", "last_frame", "aarq_frame", "aare_frame", "request_frame",
                 "dlms.response_in", "dlms.response_to", "dlms.request_in", "dlms.fragment",
                 "dlms.reassembled_in", "lon.response_in", "lon.response_to", "lon.retransmission",
                 "tcp.reassembled_in", "ip.reassembled_in")


def back(v, off):
    if v is None:
        return None
    return [x - off for x in v] if isinstance(v, list) else v - off


@pytest.mark.parametrize("what", ["packets", "objects", "sessions", "findings"])
def test_dask_equals_local_engine_per_file(client, files, tmp_path, what):
    """Each file's rows equal the local engine's export of that file alone, typed with the
    merged file's schema (a field with several values in another file is a list column
    everywhere), frame numbers offset by the frames of the files before it and association
    numbers by their associations."""
    from analyzer.dask_engine import dask_export
    from analyzer.export import conform
    out = tmp_path / f"{what}.parquet"
    errors: list = []
    timings: dict = {}
    n = dask_export(what, files, str(out), keys_path=str(DEMO_KEYS), client=client, errors=errors,
                    timings=timings)
    assert errors == []
    # both workers took part (one task per file, biggest file first)
    assert len(timings["tasks"]) == 3 and len({t["pid"] for t in timings["tasks"]}) == 2
    merged = pq.read_table(out)
    assert merged.num_rows == n
    parts = local_parts(what, files)
    assert n == sum(t.num_rows for t, _, _ in parts)
    row = frames = assoc = 0
    for table, records, assocs in parts:
        got = merged.slice(row, table.num_rows)
        # columns this file does not have are all null in its rows
        for c in set(merged.column_names) - set(table.column_names):
            assert got.column(c).null_count == table.num_rows, c
        sub = pa.schema([merged.schema.field(c) for c in table.column_names])
        ref = conform(table, sub).to_pydict()
        g = got.select(table.column_names).to_pydict()
        for cols, off in ((FRAME_COLUMNS, frames), (("assoc_id", "dlms.assoc_id"), assoc)):
            for c in cols:
                if c in ref:
                    assert [back(v, off) for v in g[c]] == ref[c], c
                    ref[c] = g[c]
        if "frames" in ref:
            assert [[x - frames for x in json.loads(v)] for v in g["frames"]] == [json.loads(v) for v in ref["frames"]]
            ref["frames"] = g["frames"]
        if what == "findings":
            # ids count on over the files; the numbers the messages name move with the columns
            assert g["id"] == [f"F{int(v[1:]) + row}" for v in ref["id"]]
            ref["id"] = g["id"]
            for mine, theirs in zip(g["message"], ref["message"]):
                assert re.sub(r"\d+", "#", mine) == re.sub(r"\d+", "#", theirs)
                for word, off in (("association ", assoc), ("frame ", frames)):
                    assert [int(x) - off for x in re.findall(word + r"(\d+)", mine)] == \
                        [int(x) for x in re.findall(word + r"(\d+)", theirs)]
            ref["message"] = g["message"]
        assert g == ref
        row += table.num_rows
        frames += records
        assoc += assocs
    df = merged.to_pandas()
    if what == "packets":
        assert list(df["number"]) == list(range(1, n + 1))
        assert frames == n
        # the demo capture's ciphered APDUs were decrypted on the workers (key ring path)
        assert (df["status"] == "decrypted").sum() > 10
    if what == "sessions":
        assert df["assoc_id"].is_unique and len(df) >= 3
        assert assoc == df["assoc_id"].max()


def test_packets_match_tshark_in_every_partition(client, files, tshark, tmp_path):
    """The merged file's rows of each capture carry tshark's frame length and time, with
    frame numbers continuing across files."""
    from analyzer.dask_engine import dask_export
    out = tmp_path / "p.csv"
    dask_export("packets", files[1:], str(out), client=client)
    df = pd.read_csv(out)
    off = 0
    for f in files[1:]:
        ref = subprocess.run([tshark, "-r", f, "-T", "fields", "-e", "frame.number", "-e", "frame.len",
                              "-e", "ip.src", "-e", "tcp.srcport"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
        part = df.iloc[off:off + len(ref)]
        rows = [r.split("\t") for r in ref]
        assert list(part["number"]) == [int(r[0]) + off for r in rows]
        assert list(part["length"]) == [int(r[1]) for r in rows]
        assert list(part["ip.src"]) == [r[2] for r in rows]
        assert list(part["tcp.srcport"]) == [int(r[3]) for r in rows]
        off += len(ref)
    assert off == len(df) == 52 + 3


def test_dataframe_partitions_share_dtypes(client, files, tmp_path):
    """One partition per file; every column has one dtype in every partition (no
    per-partition categoricals), and the data equals the single merged file."""
    from analyzer.dask_engine import dask_dataframe, dask_export
    ddf = dask_dataframe("packets", files, keys_path=str(DEMO_KEYS), client=client, directory=str(tmp_path))
    assert ddf.npartitions == 3
    parts = [ddf.get_partition(i).compute() for i in range(3)]
    for p in parts:
        assert list(p.dtypes.astype(str)) == list(ddf.dtypes.astype(str))
    assert not any(isinstance(t, pd.CategoricalDtype) for t in ddf.dtypes)
    # nullable integer columns stay integers where a partition has no value
    assert str(ddf.dtypes["tcp.srcport"]) == "Int64" and parts[0]["tcp.srcport"].isna().all()
    assert str(ddf.dtypes["number"]) == "Int64"
    schemas = [pq.read_schema(p) for p in sorted((tmp_path / "packets").glob("part-*.parquet"))]
    assert len(schemas) == 3 and all(s.equals(schemas[0]) for s in schemas)
    one = tmp_path / "one.parquet"
    dask_export("packets", files, str(one), keys_path=str(DEMO_KEYS), client=client)
    whole = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(whole, pd.read_parquet(one, dtype_backend="numpy_nullable"))
    assert len(parts[1]) == 52 and len(parts[2]) == 3


def test_part_bytes_when_worker_cannot_see_the_directory(files, tmp_path):
    """A worker without the client's directory (no marker file) returns the part's bytes."""
    from analyzer.dask_engine import MARKER, export_part
    from analyzer.export import export_tables
    d = tmp_path / "parts"
    d.mkdir()
    res = export_part("packets", files[1], 0, str(d), "token")
    assert res["path"] is None and res["data"][:4] == b"PAR1" and res["records"] == 52
    assert list(d.iterdir()) == []
    (d / MARKER).write_text("token")
    res2 = export_part("packets", files[1], 7, str(d), "token")
    assert res2["data"] is None and res2["path"] == str(d / "part-00007.parquet")
    got = pq.read_table(pa.BufferReader(res["data"]))
    ref = pa.concat_tables(export_tables("packets", [files[1]]))
    assert got.column("number").to_pylist() == ref.column("number").to_pylist() == list(range(1, 53))
    assert got.column("info").to_pylist() == ref.column("info").to_pylist()
    assert pq.read_table(res2["path"]).equals(got)


def test_failed_task_is_one_line(client, files, tmp_path):
    from analyzer.dask_engine import dask_export
    from analyzer.export import ExportError
    missing = str(tmp_path / "gone.pcap")
    with pytest.raises(ExportError, match="gone.pcap: export task failed on the cluster"):
        dask_export("packets", [files[1], missing], str(tmp_path / "x.parquet"), client=client)
    assert not (tmp_path / "x.parquet").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".lonscope-parts-")] == []


def test_cli_dask_engine(lonscope_cmd, files, tmp_path):
    """`--engine dask` (own LocalCluster) writes the same CSV as the local engine for one
    file, and a directory output is a dataset with one part per capture."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    p = subprocess.run([*lonscope_cmd, "export", files[1], "--what", "objects", "-o", str(a)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*lonscope_cmd, "export", files[1], "--what", "objects", "--engine", "dask",
                        "--workers", "1", "-o", str(b)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert a.read_text() == b.read_text()
    assert "wrote 48 objects rows" in p.stderr
    ds = tmp_path / "ds"
    p = subprocess.run([*lonscope_cmd, "export", *files[1:], "--engine", "dask", "--workers", "1",
                        "-o", str(ds) + "/"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    parts = sorted(ds.glob("part-*.parquet"))
    assert [pq.read_metadata(x).num_rows for x in parts] == [52, 3]
    assert pq.read_table(parts[1]).column("number").to_pylist() == [53, 54, 55]
    # the local engine writes a dataset too (parts of 1M rows: one here), replacing the parts;
    # an existing directory is a dataset without the trailing slash too (the API's rule)
    for target in (str(ds) + "/", str(ds)):
        p = subprocess.run([*lonscope_cmd, "export", *files[1:], "-o", target], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and "(Parquet dataset, one part per 1M rows)" in p.stderr, p.stderr
        (part,) = sorted(ds.glob("part-*.parquet"))
        assert pq.read_table(part).column("number").to_pylist() == list(range(1, 56))


def test_dataset_rule_shared_by_cli_and_api(client, files, tmp_path):
    """One rule decides a dataset output for the CLI and `dask_export`: a trailing
    separator or an existing directory; anything else is a file named by its extension."""
    from analyzer.dask_engine import dask_export
    from analyzer.export import is_dataset
    d = tmp_path / "existing"
    d.mkdir()
    assert is_dataset(str(tmp_path / "new") + "/") and is_dataset(d) and is_dataset(str(d))
    assert not is_dataset(tmp_path / "x.parquet") and not is_dataset(str(tmp_path / "new"))
    n = dask_export("packets", files[1:], str(d), "csv", client=client)
    parts = sorted(d.glob("part-*.parquet"))
    assert n == 55 and [pq.read_metadata(x).num_rows for x in parts] == [52, 3]
    assert pq.read_table(parts[1]).column("number").to_pylist() == [53, 54, 55]


def test_cli_remote_scheduler(lonscope_cmd, client, files, tmp_path):
    """`--scheduler ADDR` uses an existing cluster unchanged (here the fixture's scheduler,
    reached over TCP like a remote one): same findings as the local engine, numbered on."""
    addr = client.scheduler.address
    assert addr.startswith("tcp://")
    out = tmp_path / "f.jsonl"
    p = subprocess.run([*lonscope_cmd, "export", *files[1:], "--what", "findings", "--engine", "dask",
                        "--scheduler", addr, "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # Output-EPRI.pcap: a public association (plaintext-public, frame 3); Ciphered-Director
    # (52 frames later): LLS with the password in clear in its first frame
    plain = [r for r in rows if r["rule"] == "plaintext-public"]
    lls = [r for r in rows if r["rule"] == "lls-cleartext"]
    assert len(plain) == 1 and plain[0]["frame"] == 3 and plain[0]["assoc_id"] == 1
    assert len(lls) == 1 and lls[0]["frame"] == 53 and lls[0]["assoc_id"] == 2
    assert json.loads(lls[0]["frames"])[0] == 53
    # ids count on over the files (each file's findings in the audit's order), and the
    # messages name the same association numbers as the assoc_id column
    assert [r["id"] for r in rows] == ["F1", "F2"] and rows[0] is plain[0]
    assert plain[0]["message"].startswith("association 1 (127.0.0.1:49932/w16 -> 127.0.0.1:4059/w1): 48 plaintext")
    assert lls[0]["message"] == "association 2 (127.0.0.1:59269/w32 -> 127.0.0.1:4059/w1): password (empty)"
    assert [p.name for p in tmp_path.iterdir()] == ["f.jsonl"]


def test_display_filter_on_workers(client, files, tshark, tmp_path):
    """-Y runs on the workers; frame numbers stay those of the whole files (tshark's)."""
    from analyzer.dask_engine import dask_export
    out = tmp_path / "y.parquet"
    flt = "tcp.len > 100"
    dask_export("packets", files[1:], str(out), display_filter=flt, client=client)
    df = pd.read_parquet(out)
    want, off = [], 0
    for f in files[1:]:
        nums = subprocess.run([tshark, "-r", f, "-Y", flt, "-T", "fields", "-e", "frame.number"],
                              capture_output=True, text=True, check=True).stdout.split()
        want += [int(x) + off for x in nums]
        off += int(subprocess.run([tshark, "-r", f, "-T", "fields", "-e", "frame.number"], capture_output=True,
                                  text=True, check=True).stdout.split()[-1])
    assert list(df["number"]) == want == [4, 10, 55]
    assert (df["tcp.len"] > 100).all()
