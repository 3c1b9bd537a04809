"""The decryption and audit stages keep bounded state: after a long stream of associations
with ciphered traffic, replays, plaintext and HLS, their state is no larger after twice as
many packets (the bounds are made small here so that a few thousand packets reach them),
while the counts behind the findings still cover every packet."""
from __future__ import annotations

from collections import deque

import pytest

from analyzer import audit as audit_mod
from analyzer import bounded as bounded_mod
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
    # the windows and group caps shared by both stages live in analyzer/bounded.py
    monkeypatch.setattr(bounded_mod, "WINDOW", 96)
    monkeypatch.setattr(bounded_mod, "MAX_GROUPS", 12)
    monkeypatch.setattr(audit_mod, "LIVE_ASSOCS", 24)
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
    assert len(merged[0]["frames"]) <= bounded_mod.MAX_EVIDENCE
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


def _many_associations(n: int, spool_at: int, monkeypatch):
    """n associations over 3 client transports (each AARQ replaces the transport's previous
    association), fed with the association stage spooling past `spool_at` closed ones; the
    first association gets a dedicated key."""
    from analyzer import associations as assoc_mod
    from analyzer.keyring import Secret
    monkeypatch.setattr(assoc_mod, "SPOOL_AT", spool_at)
    pipe = Pipeline()
    ast = pipe.stage("associations")
    t = 1_700_000_000 * 10**9
    key = Secret(bytes.fromhex("00112233445566778899AABBCCDDEEFF"))
    most = 0
    for k in range(n):
        client = (f"10.0.0.{k % 3 + 1}", 41000 + k % 3, 16)
        frames = [c2s(aarq(b"CL" + k.to_bytes(6, "big"), mechanism=1, auth_value=b"pw%06d" % k), client),
                  s2c(aare(SV), client), c2s(GET, client), s2c(RSP, client)]
        if k % 5 == 0:
            frames.append(c2s(GET2, client))          # unanswered: a pending request
        for fr in frames:
            t += 10_000_000
            pipe.feed(Record(t, fr, 1, len(fr)))
        if k == 0:
            ast.current[next(iter(ast.current))].dedicated_key = key
        most = max(most, len(ast.by_id))
    pipe.finish()
    return pipe, ast, key, most


def test_closed_associations_are_spooled_and_read_back(monkeypatch):
    """Past SPOOL_AT closed associations, the oldest go to the spool file: memory holds a
    bounded number of association objects, and every reader (rows, get, the sessions
    export, the audit) sees the same summaries as without spooling; the dedicated key is
    not written to the spool, only that there was one."""
    from analyzer.export import session_tables
    n = 120
    pipe, ast, key, most = _many_associations(n, 8, monkeypatch)
    ref_pipe, ref, _, ref_most = _many_associations(n, 10**6, monkeypatch)
    assert ref_most == n and most <= 8 + 3 + 1       # SPOOL_AT closed + the 3 current (+ the new one)
    assert len(ast.spool.offsets) == n and sum(o >= 0 for o in ast.spool.offsets) >= n - 12
    rows, ref_rows = ast.list(), ref.list()
    assert len(rows) == n and rows == ref_rows
    assert [r["assoc_id"] for r in rows] == list(range(1, n + 1))
    assert rows[0]["dedicated_key"] is True and not any(r["dedicated_key"] for r in rows[1:])
    assert [(r["state"], r["requests"], r["responses"]) for r in rows[:4]] == \
        [("replaced", 2, 1), ("replaced", 1, 1), ("replaced", 1, 1), ("replaced", 1, 1)]
    assert rows[-1]["state"] == "associated"
    first = ast.get(1)                                 # read back from the spool
    assert first is not ast.by_id.get(1) and first.lls_password == b"pw000000" and first.pending == {}
    assert repr(first.dedicated_key) == "<dedicated key not kept>" and bytes(first.dedicated_key) == b""
    ast.spool.f.seek(0)
    blob = ast.spool.f.read()
    assert blob and key not in blob and key.hex().encode() not in blob
    assert ast.next_id == n + 1
    (table,) = session_tables(pipe, "x.pcap", chunk_rows=1000)
    assert table.num_rows == n and table.column("client_title").to_pylist()[119] == (b"CL" + (119).to_bytes(6, "big")).hex()
    assert len(list(session_tables(pipe, "", chunk_rows=50))) == 3
    strip = lambda fs: sorted((f["rule"], tuple(f["frames"]), f["message"]) for f in fs)  # noqa: E731
    assert strip(pipe.stage("audit").findings()) == strip(ref_pipe.stage("audit").findings())
    assert sum(f["rule"] == "lls-cleartext" for f in pipe.stage("audit").findings()) > 0


def test_spooled_associations_read_while_another_thread_decodes(monkeypatch):
    """The TUI decodes in a worker thread while the UI thread lists associations: a reader
    never misses an association (it is on disk before it leaves memory) nor reads a torn
    record (positional reads and writes)."""
    import threading
    from analyzer import associations as assoc_mod
    monkeypatch.setattr(assoc_mod, "SPOOL_AT", 4)
    pipe = Pipeline()
    ast = pipe.stage("associations")
    stop = threading.Event()
    seen: list = []
    errors: list = []

    def reader():
        while not stop.is_set():
            try:
                n = ast.next_id - 1
                ids = [r["assoc_id"] for r in ast.rows()][:n]
                if ids != list(range(1, n + 1)):
                    errors.append((n, ids))
                seen.append(n)
            except Exception as e:       # pragma: no cover - the failure being tested
                errors.append(repr(e))

    th = threading.Thread(target=reader)
    th.start()
    t = 1_700_000_000 * 10**9
    try:
        for k in range(300):
            client = (f"10.0.1.{k % 2 + 1}", 42000 + k % 2, 16)
            for fr in (c2s(aarq(b"CL" + k.to_bytes(6, "big")), client), s2c(aare(SV), client), c2s(GET, client)):
                t += 10_000_000
                pipe.feed(Record(t, fr, 1, len(fr)))
    finally:
        stop.set()
        th.join()
    assert not errors, errors[:3]
    assert seen and max(seen) > 100
    assert [r["assoc_id"] for r in ast.rows()] == list(range(1, 301))
    assert sum(o >= 0 for o in ast.spool.offsets) >= 290


def test_spool_unwritable_keeps_associations_in_memory(monkeypatch):
    """A temporary directory that cannot take the spool (full, read-only) does not stop the
    decode: the closed associations simply stay in memory and every reader still sees them."""
    import tempfile as tf
    def refuse(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(tf, "TemporaryFile", refuse)
    pipe, ast, _, most = _many_associations(40, 4, monkeypatch)
    assert ast.spool.failed and ast.spool.f is None and most == 40
    rows = ast.list()
    assert [r["assoc_id"] for r in rows] == list(range(1, 41)) and rows[0]["dedicated_key"] is True
