"""Key bytes never appear in any output: every format of `lonscope decode` (text, -V, json,
jsonl, fields), exports (CSV, Parquet, JSONL; packets, sessions, findings), the audit (text,
json), and error messages — checked for every key of the ring in upper and lower case hex,
on decoded ciphered captures."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from analyzer.keyring import KeyRingError, load_keys

ROOT = Path(__file__).resolve().parent.parent
HT = "htanwar922-wireshark-dlms"
CAPS = ["Output-Ciphered-HLS-AuthEnc.pcap", "Output-Ciphered-Director.pcap"]


def _needles(ring) -> list[bytes]:
    out = []
    for s in ring.all_secrets():
        h = s.hex()
        out += [h.encode(), h.upper().encode()]
    return out


@pytest.fixture(scope="module")
def ring_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("keys") / "ring.toml"
    shutil.copy(ROOT / "keys" / "gurux-captures.toml", p)
    p.chmod(0o600)
    return p


def _invoke(args):
    """The CLI in-process (click's runner): exit code, stdout, stderr (bytes)."""
    from click.testing import CliRunner
    from analyzer.cli import cli
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    try:
        err = r.stderr_bytes or b""
    except ValueError:          # older click: stderr mixed into stdout
        err = b""
    return r.exit_code, r.stdout_bytes, err


def _check(blob: bytes, needles, what: str) -> None:
    for n in needles:
        assert n not in blob, f"key material in {what}"
        # hex dumps and trees write bytes separated by spaces
        spaced = b" ".join(n[i:i + 2] for i in range(0, len(n), 2))
        assert spaced not in blob, f"key material (spaced hex) in {what}"


@pytest.mark.parametrize("cap", CAPS)
def test_no_key_bytes_in_any_output(lonscope_cmd, pcaps, ring_file, tmp_path, cap):
    ring = load_keys(ring_file)
    needles = _needles(ring)
    assert needles
    path = str(pcaps / HT / cap)
    # a meter may itself send a secret as data (Output-Ciphered-HLS-AuthEnc reads the
    # association's "secret" attribute): bytes present in the traffic are not a leak
    import analyzer
    c = analyzer.open_capture(path, keys=ring)
    traffic = b"".join(p.data.hex().encode() + b"".join((x.get("plaintext") or b"").hex().encode()
                                                        for x in p.aux.get("decrypt", [])) for p in c)
    in_traffic = [n for n in needles if n.lower() in traffic]
    assert len(in_traffic) <= 2, "only the HLS secret may be in the traffic"
    needles = [n for n in needles if n.lower() not in traffic]
    assert len(needles) >= 8
    runs = [
        ["decode", path],
        ["decode", path, "-V"],
        ["decode", path, "-V", "-x", "-c", "12"],
        ["decode", path, "-T", "json"],
        ["decode", path, "-T", "jsonl"],
        ["decode", path, "-T", "fields", "-e", "dlms.sec.status", "-e", "dlms.sec.keyset", "-e",
         "dlms.sec.key", "-e", "dlms.sec.iv_title", "-e", "dlms.obis", "-e", "dlms.sec.hls_value"],
        ["audit", path],
        ["audit", path, "-T", "json"],
    ]
    decrypted_seen = False
    for i, args in enumerate(runs):
        if i == 0:      # once through the real console script
            out = subprocess.run(lonscope_cmd + args + ["--keys", str(ring_file)], capture_output=True, timeout=180)
            code, stdout, stderr = out.returncode, out.stdout, out.stderr
        else:
            code, stdout, stderr = _invoke(args + ["--keys", str(ring_file)])
        assert code in (0, 1), (args, stderr[-500:])
        _check(stdout + stderr, needles, " ".join(args[:3]))
        decrypted_seen |= b"decrypted" in stdout
    assert decrypted_seen
    full = cap == "Output-Ciphered-Director.pcap"      # 3 packets: every export combination
    for what in (("packets", "sessions", "findings") if full else ("packets",)):
        for ext in (("csv", "parquet", "jsonl") if full else ("csv", "parquet")):
            o = tmp_path / f"{what}.{ext}"
            code, stdout, stderr = _invoke(["export", path, "--keys", str(ring_file), "--what", what, "-o", str(o)])
            assert code == 0, stderr[-800:]
            _check(stdout + stderr, needles, f"export {what} messages")
            _check(o.read_bytes(), needles, f"export {what}.{ext}")
            if ext == "parquet" and what == "packets":
                import pyarrow.parquet as pq
                t = pq.read_table(o)
                text = str(t.to_pylist()).encode()
                _check(text, needles, "parquet values")
                assert "dlms.sec.status" in t.column_names


def test_reprs_and_errors_hide_keys(pcaps, ring_file):
    import analyzer
    ring = load_keys(ring_file)
    needles = _needles(ring)
    cap = analyzer.open_capture(pcaps / HT / "Output-Ciphered-HLS.pcap", keys=ring)
    pkts = list(cap)
    ast = cap.pipeline.stage("associations")
    blob = (repr(ring) + repr(ast.records) + repr(ast.list()) + repr(cap.pipeline.stage("decrypt").events)
            + repr(cap.pipeline.stage("audit").findings()) + repr([p.aux for p in pkts[:20]])).encode()
    _check(blob, needles, "reprs")
    with pytest.raises(KeyRingError) as ei:
        load_keys(None, ["ek=000102030405060708090A0B0C0D0E"])   # 15 bytes
    assert "0001020304" not in str(ei.value)
