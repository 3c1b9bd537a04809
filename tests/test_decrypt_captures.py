"""The five ciphered Gurux captures of ../shared/pcaps with keys/gurux-captures.toml: every
ciphered APDU decrypts, the plaintexts match the published vectors and gurux_dlms's own
decoding (GXDLMSTranslator on the plaintext), the HLS passes verify; wrong keys fail cleanly;
the real console script shows decrypted values in -T jsonl."""
from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import analyzer
from analyzer.keyring import load_keys

ROOT = Path(__file__).resolve().parent.parent
RING = ROOT / "keys" / "gurux-captures.toml"
HT = "htanwar922-wireshark-dlms"
CIPHERED = {   # capture -> (expected status of every ciphered APDU, minimum ciphered APDU count)
    "Output-Ciphered-HLS.pcap": ("decrypted", 264),
    "Output-Ciphered-HLS-AuthEnc.pcap": ("decrypted", 264),
    "Output-Ciphered.pcap": ("unauthenticated", 262),
    "Output-Ciphered-Simple-Key.pcap": ("decrypted", 274),
    "Output-Ciphered-Director.pcap": ("decrypted", 3),
}
_cache: dict = {}


def _ring(tmp_path_factory=None):
    return load_keys(RING)


def decode(pcaps, name, keys="ring"):
    k = (name, keys)
    if k not in _cache:
        ring = load_keys(RING) if keys == "ring" else keys
        cap = analyzer.open_capture(pcaps / HT / name, keys=ring)
        pkts = list(cap)
        _cache[k] = (pkts, cap.pipeline)
    return _cache[k]


@pytest.mark.parametrize("name", sorted(CIPHERED))
def test_every_ciphered_apdu_decrypts(pcaps, name):
    status, count = CIPHERED[name]
    pkts, pipe = decode(pcaps, name)
    statuses = [s for p in pkts for s in p.fields.get("dlms.sec.status", [])]
    ics = [x for p in pkts for x in p.fields.get("dlms.sec.ic", [])]
    assert len(statuses) == len(ics) >= count
    assert set(statuses) == {status}
    names = {s for p in pkts for s in p.fields.get("dlms.sec.keyset", [])}
    assert names == ({"gurux-simple-key"} if "Simple" in name else {"greenbook"})


def test_plaintexts_match_published_vectors(pcaps, vectors):
    checked = 0
    for v in vectors:
        m = re.search(r"(Output-Ciphered[-A-Za-z]*\.pcap)", v["source"])
        pt = v["expected"].get("plaintext") or v["expected"].get("user_information_plaintext")
        if not m or not pt or m.group(1) not in CIPHERED:
            continue
        pkts, _ = decode(pcaps, m.group(1))
        got = {x.get("plaintext") for p in pkts for x in p.aux.get("decrypt", [])}
        assert bytes.fromhex(pt) in got, v["name"]
        checked += 1
    assert checked >= 12


def _kebab(tag: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", tag).lower()


_INT_TAGS = {"Int8": (1, True), "UInt8": (1, False), "Int16": (2, True), "UInt16": (2, False),
             "Int32": (4, True), "UInt32": (4, False), "Int64": (8, True), "UInt64": (8, False),
             "Enum": (1, False)}


def _gurux_facts(xml: str):
    root = ET.fromstring(xml)
    apdu = _kebab(root.tag)
    iids, obis, ints = set(), [], collections.Counter()
    for el in root.iter():
        val = el.attrib.get("Value")
        if val is None:
            continue
        if el.tag == "InvokeIdAndPriority":
            iids.add(int(val, 16) & 0x0F)
        elif el.tag == "LongInvokeIdAndPriority":
            iids.add(int(val, 16) & 0xFFFFFF)
        elif el.tag == "InstanceId" and len(val) == 12:
            obis.append(".".join(str(b) for b in bytes.fromhex(val)))
        elif el.tag in _INT_TAGS and val:
            n, signed = _INT_TAGS[el.tag]
            ints[int.from_bytes(bytes.fromhex(val), "big", signed=signed)] += 1
    return apdu, iids, obis, ints


@pytest.mark.parametrize("name", sorted(CIPHERED))
def test_decrypted_apdus_match_gurux_translator(pcaps, name):
    gurux = pytest.importorskip("gurux_dlms")
    tr = gurux.GXDLMSTranslator()
    pkts, _ = decode(pcaps, name)
    compared = 0
    for p in pkts:
        for item in p.aux.get("decrypt", []):
            pt = item.get("plaintext")
            if not pt or pt[0] in (0x01, 0x08):      # initiate: checked against the vectors
                continue
            xml = tr.pduToXml(gurux.GXByteBuffer(pt))
            apdu, iids, obis, ints = _gurux_facts(xml)
            f = p.fields
            assert apdu in f["dlms.apdu"], (p.number, apdu, f["dlms.apdu"])
            ours_iid = set(f.get("dlms.invoke_id", [])) | set(f.get("dlms.long_invoke_id", []))
            assert iids <= ours_iid, (p.number, iids, ours_iid)
            assert obis == [o for o in f.get("dlms.obis", []) if o in obis] or \
                collections.Counter(obis) <= collections.Counter(f.get("dlms.obis", [])), (p.number, obis)
            ours_ints = collections.Counter(f.get("dlms.data.int", []))
            assert not (ints - ours_ints), (p.number, ints - ours_ints)
            compared += 1
    assert compared >= CIPHERED[name][1] - 4


@pytest.mark.parametrize("name", ["Output-Ciphered-HLS.pcap", "Output-Ciphered-HLS-AuthEnc.pcap"])
def test_hls_passes_verify(pcaps, name):
    pkts, pipe = decode(pcaps, name)
    p3 = [s for p in pkts for s in p.fields.get("dlms.sec.hls_pass3", [])]
    p4 = [s for p in pkts for s in p.fields.get("dlms.sec.hls_pass4", [])]
    assert p3 == ["verified"] and p4 == ["verified"]
    a = pipe.stage("associations").records[0]
    assert a.mechanism == (5 if name == "Output-Ciphered-HLS.pcap" else 2)
    assert a.state == "released" and a.hls_pass3 == a.hls_pass4 == "verified"
    assert a.client_title == bytes.fromhex("4D4D4D0000BC614E") and a.server_title == b"ABCDEFGH"
    assert a.requests == a.responses == 131


def test_simple_key_hls_secret_unknown(pcaps):
    pkts, pipe = decode(pcaps, "Output-Ciphered-Simple-Key.pcap")
    recs = pipe.stage("associations").records
    assert [r.context for r in recs] == [1, 3]
    assert recs[1].hls_pass3 == recs[1].hls_pass4 == "no-key"


@pytest.mark.parametrize("name", sorted(CIPHERED))
def test_wrong_key_fails_cleanly(pcaps, name):
    wrong = load_keys(None, ["ek=" + "A5" * 16, "ak=" + "5A" * 16, "hls_secret_text=nope"])
    pkts, _ = decode(pcaps, name, wrong)
    status, count = CIPHERED[name]
    statuses = collections.Counter(s for p in pkts for s in p.fields.get("dlms.sec.status", []))
    want = "unauthenticated" if status == "unauthenticated" else "auth-failed"
    assert set(statuses) == {want} and sum(statuses.values()) >= count
    assert not any("stage failed" in e.message for p in pkts for e in p.d.expert)
    for p in pkts:
        for s in p.fields.get("dlms.sec.hls_pass3", []) + p.fields.get("dlms.sec.hls_pass4", []):
            assert s in ("failed", "no-key")


@pytest.mark.parametrize("name", sorted(CIPHERED))
def test_cli_jsonl_shows_decrypted_values(lonscope_cmd, pcaps, name, tmp_path):
    ring = tmp_path / "ring.toml"
    shutil.copy(RING, ring)
    ring.chmod(0o600)
    out = subprocess.run(lonscope_cmd + ["decode", str(pcaps / HT / name), "--keys", str(ring), "-T", "jsonl"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    dec = [r for r in rows if "dlms.sec.status" in r["fields"]]
    assert dec
    status = CIPHERED[name][0]
    for r in dec:
        assert r["fields"]["dlms.sec.status"] in (status, [status])
    if name == "Output-Ciphered-Director.pcap":
        r = dec[-1]["fields"]
        assert r["dlms.obis"] == ["0.0.94.91.10.255"] * 6
        assert r["dlms.class_id"] == [7] * 6
        assert "access-request" in r["dlms.apdu"]
    else:
        assert any("0.0.40.0.0.255" in (r["fields"].get("dlms.obis") or []) for r in dec)
        assert any("dlms.data.int" in r["fields"] for r in dec)
