"""The decryption and audit stages keep bounded state: after a long stream of associations
with ciphered traffic, replays, plaintext and HLS, their state is no larger after twice as
many packets (the bounds are made small here so that a few thousand packets reach them),
while the counts behind the findings still cover every packet."""
from __future__ import annotations

from collections import deque

import pytest

from analyzer import audit as audit_mod
from analyzer import decrypt as decrypt_mod
from analyzer import dlmscrypto as dc
from analyzer.associations import Association
from analyzer.keyring import load_keys
from analyzer.packet import Record
from analyzer.pipeline import Pipeline

from _dlms_frames import aare, aarq, c2s, glo, s2c

EK, AK = bytes(range(16)), bytes(range(16, 32))
SV = b"SERVER01"
GET = bytes.fromhex("C001C1000F0000280000FF0200")
GET2 = bytes.fromhex("C001C2000800000100FF0200")
RSP = bytes.fromhex("C401C1000600001391")


def association_frames(k: int) -> list[bytes]:
    """One client association (its own UDP port): HLS-GMAC AARQ/AARE with fresh challenges,
    four ciphered requests with increasing invocation counters, one replay of the first,
    one encryption-only APDU and one plaintext request."""
    client = (f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}", 20000 + k % 40000, 16)
    ct = b"CL" + k.to_bytes(6, "big")
    ctos, stoc = b"C" + k.to_bytes(7, "big"), b"S" + k.to_bytes(7, "big")
    reqs = [glo(0xC8, dc.protect(0x30, 10 + i, ct, EK, AK, GET if i % 2 else GET2)) for i in range(4)]
    out = [c2s(aarq(ct, mechanism=5, auth_value=ctos, context=3), client),
           s2c(aare(SV, mechanism=5, stoc=stoc, context=3), client)]
    for i, r in enumerate(reqs):
        out += [c2s(r, client), s2c(glo(0xCC, dc.protect(0x30, 100 + 10 * k + i, SV, EK, AK, RSP)), client)]
    out += [c2s(reqs[0], client), c2s(glo(0xC8, dc.protect(0x20, 20, ct, EK, AK, GET)), client),
            c2s(GET2, client)]
    return out


def footprint(obj, seen=None) -> int:
    """Number of container entries reachable from a stage's state (association objects,
    which belong to the association stage, count as one)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, (int, float, str, bytes, bool, Association)):
        return 1
    seen.add(id(obj))
    if isinstance(obj, dict):
        return len(obj) + sum(footprint(k, seen) + footprint(v, seen) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset, deque)):
        return len(obj) + sum(footprint(x, seen) for x in obj)
    slots = getattr(type(obj), "__slots__", None)
    if slots:
        return sum(footprint(getattr(obj, s, None), seen) for s in slots)
    return 1


def stage_state(stage) -> int:
    seen: set = set()
    return sum(footprint(v, seen) for k, v in vars(stage).items() if k not in ("pipeline", "events"))


@pytest.fixture
def small_bounds(monkeypatch):
    monkeypatch.setattr(audit_mod, "WINDOW", 96)
    monkeypatch.setattr(audit_mod, "LIVE_ASSOCS", 24)
    monkeypatch.setattr(audit_mod, "MAX_GROUPS", 12)
    monkeypatch.setattr(decrypt_mod, "REPLAY_WINDOW", 96)


def test_decrypt_and_audit_state_does_not_grow(small_bounds):
    keys = load_keys(None, [f"ek={EK.hex()}", f"ak={AK.hex()}"])
    pipe = Pipeline(keys=keys)
    dec, aud = pipe.stage("decrypt"), pipe.stage("audit")
    t = 1_700_000_000 * 10**9
    # state sizes sampled after each association of two spans: the bounded windows fill and
    # empty in cycles, so the largest sample of each span is compared
    sizes: dict[str, list] = {"first": [], "second": []}
    for n_assoc in range(1, 401):
        for fr in association_frames(n_assoc):
            t += 20_000_000
            pipe.feed(Record(t, fr, 1, len(fr)))
        span = "first" if 100 < n_assoc <= 200 else "second" if 300 < n_assoc <= 400 else None
        if span:
            sizes[span].append((stage_state(dec), stage_state(aud), len(aud.findings())))
    assert pipe.count == 400 * 13
    (d1, a1, f1), (d2, a2, f2) = ([max(x[i] for x in sizes[s]) for i in range(3)] for s in ("first", "second"))
    assert d2 <= d1 * 1.05 + 20, (d1, d2)
    assert a2 <= a1 * 1.05 + 20, (a1, a2)
    assert f2 == f1, (f1, f2)                     # findings per rule are capped (and merged)
    # every packet still counts: one replay, one IC going back and one encryption-only APDU
    # per association, over the whole stream
    total = {rule: sum(e[0] for e in t_.groups.values()) for rule, t_ in dec.incidents.items()}
    assert total == {"replayed-apdu": 400, "ic-backwards": 400}, total
    assert sum(e[0] for e in dec.stats["enc-only"].groups.values()) == 400
    fs = aud.findings()
    by_rule: dict[str, list] = {}
    for f in fs:
        by_rule.setdefault(f["rule"], []).append(f)
    replays = by_rule["replayed-apdu"]
    assert len(replays) == 12 + 1                # MAX_GROUPS associations, then one merged finding
    first = min(replays, key=lambda f: f["frame"])
    assert first["frames"] == [3, 11] and first["assoc_id"] == 1   # request of frame 3 resent as 11
    merged = [f for f in replays if f["assoc_id"] is None]
    assert len(merged) == 1 and "388 " in merged[0]["message"]
    assert len(merged[0]["frames"]) <= audit_mod.MAX_EVIDENCE
    # per-association rules of associations that left the window are kept (merged beyond the cap)
    weak = by_rule["hls-weak-mechanism"]
    assert len(weak) == 12 + 2 and sum(f["evidence_count"] for f in weak) == 400
    plain = by_rule["plaintext-after-association"]
    assert sum(f["evidence_count"] for f in plain) == 400
    assert "hls-challenge-relay" not in by_rule and "mitm-client-relay" not in by_rule


def test_an_association_seen_again_after_it_was_settled(monkeypatch):
    """With room for two tracked associations, the first one is settled when the third
    appears; seen again later, its AARQ-time findings are not reported twice and its later
    plaintext still counts."""
    from _dlms_frames import run
    monkeypatch.setattr(audit_mod, "LIVE_ASSOCS", 2)
    cl = [(f"10.0.0.{i}", 41000 + i, 16) for i in (1, 2, 3)]
    frames = [c2s(aarq(b"CLIENT01", mechanism=1, auth_value=b"secret01"), cl[0]), s2c(aare(SV), cl[0]),
              c2s(GET, cl[0]),
              c2s(aarq(b"CLIENT02"), cl[1]), s2c(aare(SV), cl[1]), c2s(aarq(b"CLIENT03"), cl[2]),
              s2c(aare(SV), cl[2]), c2s(GET2, cl[0]), s2c(RSP, cl[0])]
    _, pipe = run(frames)
    fs = pipe.stage("audit").findings()
    (lls,) = [f for f in fs if f["rule"] == "lls-cleartext"]
    assert lls["frames"] == [1] and "'secret01'" in lls["message"]
    plain = sorted((f["frames"], f["evidence_count"]) for f in fs if f["rule"] == "plaintext-after-association")
    assert plain == [([3], 1), ([8, 9], 2)]
