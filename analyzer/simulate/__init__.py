"""Traffic simulator with ground truth (`lonscope simulate`).

`simulate(name, out, seed=1)` writes `out` (pcapng: interface 0 raw LonTalk frames,
LINKTYPE_USER0 with phase/SSI comments; interface 1 Ethernet with CN/IP on UDP 1628),
`<out stem>.truth.json` (per-frame ground truth, key-set names only, never key bytes) and
`<out stem>.keys.toml` (the key ring that decodes it).  Output is a pure function of the
scenario name, the seed and the size options: no wall clock, fixed start time.

Truth file (JSON; the header on the first line, then one frame per line):

- header: `version`, `scenario`, `seed`, `packets`, `start_ns`, `keys` (key-ring file name),
  `key_sets` (names), `nodes` (name, address, role, neuron_id, system_title, medium, route,
  ip), `associations` (name, client, server, profile, mechanism, keyset, route), `findings`
  (expected audit findings: `rule` = an `analyzer.audit` rule id, association/command),
  `stats` (crc_errors, retries, duplicates), `builders` (which builder made each layer).
- `frames[i]`: `number`, `time_ns`, `iface`, `linktype`, `length`, `medium` ("pl"|"ip"),
  `layers`; `lon` {src, dst, src_subnet, src_node, dst_subnet, dst_node, group, nid,
  dst_type, pdu, type, tid, auth, domain, pdufmt, addrfmt, code, crc_ok}; optional `cnip`
  {seqno, session, src_ip, dst_ip}, `routed`, `retry`, `duplicate`, `proxy` {role
  ("request"|"agent-to-target"|"response"|"relay"), hops, hops_left, target}, `nv`, `nd`,
  `nm`, `lon_auth` + `challenge`/`reply`, `osgp` {service, table, seq, code, digest},
  `findings` (rule ids this frame is evidence for);
  `dlms` {association, client, server, direction, profile, keyset, apdu (as on the wire),
  plain_apdu, plaintext (hex), wire (hex), protection {kind, sc, ic, system_title, tag},
  decryption ("decrypted"|"auth-ok"|"unauthenticated"|"auth-failed"|null), ops [{service,
  dir, invoke_id, class_id, obis, attribute_id|method_id, value, type, result, block, last,
  hls}], initiate {protection, plaintext, decryption}, gbt, reassembled}.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .scenarios import DEMO_BK, DOMAIN_KEY, GB_AK, GB_EK, OMA_KEY, SCENARIOS, World, fleet_keys

TRUTH_VERSION = 1


def list_scenarios() -> list[tuple[str, str]]:
    return [(n, SCENARIOS[n][0]) for n in SCENARIOS]


def out_paths(out: str | os.PathLike) -> tuple[Path, Path, Path]:
    p = Path(out)
    stem = p.name[:-len(".pcapng")] if p.name.endswith(".pcapng") else p.stem
    return p, p.with_name(stem + ".truth.json"), p.with_name(stem + ".keys.toml")


def run(name: str, seed: int = 1, packets: int | None = None, duration: float | None = None,
        meters: int | None = None, fast: bool = False) -> World:
    """Run a scenario and return the World (frames in `w.net.rec`)."""
    if name not in SCENARIOS:
        raise KeyError(name)
    desc, fn = SCENARIOS[name]
    from . import wire
    wire.SOURCES.clear()          # the truth lists the builders this run used
    n = meters or {"fleet": 12, "demo": 13, "bench": 13}.get(name, 4)
    w = World(seed, n_meters=n, fast=fast or name == "bench")
    fn(w, packets)
    # a size larger than the scenario's own story is filled with fleet polling
    from .scenarios import FLEET_PROFILES, _fleet_run
    while packets is not None and len(w.net.rec.frames) < packets:
        _fleet_run(w, FLEET_PROFILES)
    if duration is not None:
        end = w.net.rec.sorted()[0][0] + int(duration * 1e9) if w.net.rec.frames else 0
        while w.net.t < end:
            _fleet_run(w, FLEET_PROFILES)
    return w


def _frames(w: World, packets: int | None, duration: float | None):
    frames = w.net.rec.sorted()
    if duration is not None and frames:
        end = frames[0][0] + int(duration * 1e9)
        frames = [f for f in frames if f[0] < end]
    if packets is not None:
        frames = frames[:packets]
    return frames


def keyring_toml(pem_dir: str) -> str:
    """The key ring (TOML) that decodes every scenario's traffic."""
    k = fleet_keys()
    return f'''# lonscope simulator key ring: demo keys only (Green Book test keys), never real ones.
public_test_keys = true
[[dlms]]
name = "fleet"
ek = "{GB_EK.hex().upper()}"
ak = "{GB_AK.hex().upper()}"
bk = "{DEMO_BK.hex().upper()}"
lls_password_text = "{k.lls_password.decode()}"
hls_secret_text = "{k.hls_secret.decode()}"
client_private_key = "{pem_dir}/demo-client.pem"
server_private_key = "{pem_dir}/demo-server.pem"

[[lon]]
name = "osgp-legacy"
oma_key = "{OMA_KEY.hex().upper()}"

[[lon]]
name = "domain-4c"
domain = "4C"
auth_key = "{DOMAIN_KEY.hex().upper()}"
'''


def pem_files() -> dict[str, bytes]:
    from cryptography.hazmat.primitives import serialization
    k = fleet_keys()
    out = {}
    for nm, key in (("demo-client.pem", k.client_key), ("demo-server.pem", k.server_key)):
        out[nm] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    return out


def truth_document(name: str, seed: int, w: World, frames, keyfile: str | None) -> dict:
    from . import wire
    nodes = [{"name": n.name, "address": n.addr, "role": n.role, "neuron_id": n.nid.hex(),
              "system_title": n.system_title.hex() if n.system_title else None,
              "medium": n.medium, "route": [r.addr for r in n.route],
              "ip": ".".join(map(str, n.ip)) if n.ip else None}
             for n in w.net.nodes.values()]
    per = []
    for i, (ts, iface, data, lt, comments, truth) in enumerate(frames, 1):
        t = {"number": i, "time_ns": ts, "iface": iface, "linktype": lt, "length": len(data)}
        t.update(truth)
        per.append(t)
    return {"version": TRUTH_VERSION, "scenario": name, "seed": seed, "packets": len(per),
            "start_ns": frames[0][0] if frames else None, "keys": keyfile,
            "key_sets": ["fleet", "osgp-legacy", "domain-4c"], "nodes": nodes, "associations": w.associations,
            "findings": w.findings, "stats": w.net.stats, "builders": dict(sorted(wire.SOURCES.items())),
            "frames": per}


def dump_truth(doc: dict) -> str:
    """JSON with one frame per line (diff-friendly, compact)."""
    head = {k: v for k, v in doc.items() if k != "frames"}
    lines = [json.dumps(head, separators=(",", ":"))[:-1] + ',"frames":[']
    fr = doc["frames"]
    for i, f in enumerate(fr):
        lines.append(json.dumps(f, separators=(",", ":")) + ("," if i < len(fr) - 1 else ""))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def simulate(name: str, out: str | os.PathLike, seed: int = 1, packets: int | None = None,
             duration: float | None = None, meters: int | None = None, truth: bool = True,
             pem_dir: str | None = None) -> dict[str, Any]:
    """Write the capture, its ground truth and its key ring; returns a summary."""
    from analyzer.pcapwriter import PcapngWriter
    from analyzer.packet import Record
    w = run(name, seed, packets, duration, meters)
    frames = _frames(w, packets, duration)
    cap, truth_path, keys_path = out_paths(out)
    cap.parent.mkdir(parents=True, exist_ok=True)
    with PcapngWriter(str(cap)) as wr:
        for ts, iface, data, lt, comments, _ in frames:
            wr.write(Record(ts, data, lt, len(data), iface, comments))
    if pem_dir is None:
        pem_dir = str(cap.parent.resolve())
        for nm, b in pem_files().items():
            (cap.parent / nm).write_bytes(b)
            os.chmod(cap.parent / nm, 0o600)
    keys_path.write_text(keyring_toml(pem_dir))
    os.chmod(keys_path, 0o600)
    if truth:
        doc = truth_document(name, seed, w, frames, keys_path.name)
        truth_path.write_text(dump_truth(doc))
    return {"capture": str(cap), "truth": str(truth_path) if truth else None, "keys": str(keys_path),
            "packets": len(frames), "findings": len(w.findings)}


__all__ = ["SCENARIOS", "list_scenarios", "run", "simulate", "out_paths", "keyring_toml"]
