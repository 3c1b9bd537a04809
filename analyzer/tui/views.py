"""Data behind the analysis views (associations, follow, objects, findings, statistics),
computed from the session's column store and what the pipeline stages collected."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from .store import F_DECODED, ST_AUTHFAIL, ST_AUTHOK, ST_CIPHERED, ST_DECRYPTED, ST_NOKEY, ST_PLAIN


def _short(v: Any, n: int = 48) -> str:
    if v is None:
        return ""
    if isinstance(v, (bytes, bytearray, memoryview)):
        s = bytes(v).hex()
    elif isinstance(v, float):
        s = f"{v:g}"
    else:
        s = str(v)
    s = s.replace("\n", " ")
    return s if len(s) <= n else s[:n - 1] + "…"


def obis_label(obis: Any) -> str:
    if not obis:
        return ""
    try:
        from dissectors.cosem_names import obis_name
        name = obis_name(str(obis))
    except Exception:
        name = None
    return f"{obis} ({name})" if name else str(obis)


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(obj, dict):
            if n in obj and obj[n] is not None:
                return obj[n]
        else:
            v = getattr(obj, n, None)
            if v is not None:
                return v
    return default


# --------------------------------------------------------------------------- associations

ASSOC_ROWS = 10_000     # the Associations view lists the latest ones (`export --what sessions`: all)


def _assoc_stage(session):
    return session.pipeline.stage("associations") if session.pipeline is not None else None


def _assoc_column(session) -> np.ndarray:
    """The association number of each decoded packet (0: none)."""
    nd = session.n_decoded
    return np.asarray(session.store.assoc[:nd]) if nd else np.zeros(0, np.int32)


def association_total(session) -> int:
    stage = _assoc_stage(session)
    return stage.next_id - 1 if stage is not None else 0


def _assoc_row(a, counts) -> dict:
    d = a.to_dict()
    aid = d["assoc_id"]
    first, last = d.get("first_time"), d.get("last_time")
    return {
        "id": aid,
        "client": _short(d.get("client")),
        "server": _short(d.get("server")),
        "mechanism": _short(d.get("mechanism")),
        "security": _short(d.get("security")),
        "state": _short(d.get("state")),
        "requests": d.get("requests"),
        "responses": d.get("responses"),
        "packets": int(counts[aid]) if aid < len(counts) else 0,
        "frames": None,                       # on demand: association_frames()
        "duration": (last - first) if first is not None and last is not None else 0.0,
        "filter": f"dlms.assoc_id == {aid}",
        "raw": d,
    }


def _assoc_counts(session) -> np.ndarray:
    """Decoded packets per association number (the store's association column)."""
    col = _assoc_column(session)
    return np.bincount(col[col > 0]) if len(col) else np.zeros(1, np.int64)


def associations(session, limit: int = ASSOC_ROWS) -> list[dict]:
    """The latest `limit` associations, one dict each: id, client, server, mechanism,
    security, state, requests, responses, packets (decoded so far), duration, filter text.
    Reads only those from the association stage (older ones may be spooled to disk) and
    counts packets with one pass over the association column, whatever the capture size."""
    stage = _assoc_stage(session)
    if stage is None:
        return []
    n = stage.next_id - 1
    counts = _assoc_counts(session)
    out = []
    for aid in range(max(1, n - limit + 1), n + 1):
        a = stage.get(aid)
        if a is not None:
            out.append(_assoc_row(a, counts))
    return out


def association_frames(session, a: dict) -> list[int]:
    """The packet numbers of one association (computed once, when it is followed)."""
    if a.get("frames") is None:
        a["frames"] = [int(x) + 1 for x in np.flatnonzero(_assoc_column(session) == a["id"])]
    return a["frames"]


def association_filter(a: dict) -> str:
    """A display filter selecting an association's packets."""
    return a["filter"]


def association_of_row(session, row: int) -> dict | None:
    """The association of a packet (the store's association column)."""
    aid = int(session.store.assoc[row]) if row < session.store.n else 0
    stage = _assoc_stage(session)
    a = stage.get(aid) if aid > 0 and stage is not None else None
    return _assoc_row(a, _assoc_counts(session)) if a is not None else None


def follow_lines(session, a: dict | None, row: int | None = None) -> list[tuple[str, str]]:
    """The dialogue of one association: (direction, text) per decoded operation, like
    Follow Stream.  Direction is "→" for requests (client to server) and "←" for
    responses.  Without an association, the packets between the selected packet's two
    addresses are used."""
    st = session.store
    frames: list[int]
    if a is not None:
        frames = association_frames(session, a)
    elif row is not None and st.decoded(row):
        s, d = int(st.src[row]), int(st.dst[row])
        n = session.n_decoded
        src, dst = st.src[:n], st.dst[:n]
        m = ((src == s) & (dst == d)) | ((src == d) & (dst == s))
        frames = [int(i) + 1 for i in np.nonzero(m)[0][:5000]]
    else:
        return []
    ops_by_row: dict[int, list] = defaultdict(list)
    fs = set(frames)
    for r, op in session.objects:
        if r + 1 in fs:
            ops_by_row[r].append(op)
    out = []
    for num in frames:
        r = num - 1
        if r >= st.n:
            continue
        ops = ops_by_row.get(r)
        proto, src, dst, info, status, _ = session.summary(r)
        mark = {ST_DECRYPTED: " [decrypted]", ST_AUTHOK: " [authenticated]", ST_AUTHFAIL: " [auth failed]",
                ST_NOKEY: " [no key]",
                ST_CIPHERED: " [ciphered]"}.get(status, "")
        if ops:
            for op in ops:
                arrow = "←" if _get(op, "dir") == "response" else "→"
                out.append((arrow, f"#{num} {describe_op(op)}{mark}"))
        else:
            arrow = "→" if a is None or not a.get("server") or dst == a.get("server") else "←"
            out.append((arrow, f"#{num} {src} → {dst} {proto} {info}{mark}"))
    return out


def describe_op(op: dict) -> str:
    svc = _get(op, "service", default="?")
    dirn = _get(op, "dir", default="")
    parts = [f"{svc}-{dirn}" if dirn else str(svc)]
    inv = _get(op, "invoke_id")
    if inv is not None:
        parts.append(f"[{inv}]")
    cid = _get(op, "class_id")
    obis = _get(op, "obis")
    if obis:
        parts.append(f"{cid}/{obis_label(obis)}" if cid is not None else obis_label(obis))
    att = _get(op, "attribute_id")
    meth = _get(op, "method_id")
    if att is not None:
        parts.append(f"attr {att}")
    if meth is not None:
        parts.append(f"method {meth}")
    if "value" in op and op.get("value") is not None:
        parts.append("= " + _short(op["value"], 60))
    if op.get("result") not in (None, "", "success", 0):
        parts.append(f"({op['result']})")
    return " ".join(parts)


# --------------------------------------------------------------------------- objects

OBJECT_COLUMNS = ("No.", "Service", "Dir", "Class", "OBIS", "Attr/Meth", "Value", "Result")


def object_rows(session, limit: int = 20000) -> list[tuple]:
    rows = []
    for r, op in session.objects[:limit]:
        att = _get(op, "attribute_id")
        meth = _get(op, "method_id")
        rows.append((r + 1, str(_get(op, "service", default="")), str(_get(op, "dir", default="")),
                     "" if _get(op, "class_id") is None else str(op.get("class_id")),
                     obis_label(_get(op, "obis")),
                     f"a{att}" if att is not None else (f"m{meth}" if meth is not None else ""),
                     _short(op.get("value") if isinstance(op, dict) else None, 50),
                     _short(_get(op, "result", default=""), 20)))
    return rows


# --------------------------------------------------------------------------- findings

FINDING_COLUMNS = ("Severity", "Rule", "Finding", "Frames")
SEV_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


def finding_rows(session) -> list[tuple]:
    from .session import finding_frames
    rows = []
    for f in sorted(session.findings, key=lambda f: SEV_ORDER.get(str(f.get("severity", "info")).lower(), 5)):
        frames = finding_frames(f)
        fr = ", ".join(str(x) for x in frames[:8]) + (" …" if len(frames) > 8 else "")
        rows.append((str(f.get("severity", "")), str(f.get("rule") or f.get("id") or ""),
                     _short(f.get("message") or f.get("title") or f.get("description") or "", 90), fr))
    return rows


# --------------------------------------------------------------------------- statistics

def protocol_hierarchy(session) -> list[tuple[str, int, int, float]]:
    """(indented protocol, packets, bytes, % of packets) from the per-packet stacks."""
    st = session.store
    n = session.n_decoded
    if not n:
        return []
    stacks = st.stack[:n]
    lens = st.origlen[:n].astype(np.int64)
    cnt = np.bincount(stacks, minlength=len(st.stacks))
    byt = np.bincount(stacks, weights=lens, minlength=len(st.stacks))
    tree_p: Counter = Counter()
    tree_b: Counter = Counter()
    for sid in np.nonzero(cnt)[0]:
        parts = st.stacks[int(sid)].split(":") if st.stacks[int(sid)] else ["(none)"]
        for k in range(1, len(parts) + 1):
            key = tuple(parts[:k])
            tree_p[key] += int(cnt[sid])
            tree_b[key] += int(byt[sid])
    rows = []
    for key in sorted(tree_p):
        rows.append(("  " * (len(key) - 1) + key[-1], tree_p[key], tree_b[key], 100.0 * tree_p[key] / n))
    return rows


def conversations(session, top: int = 20) -> list[tuple[str, str, int, int]]:
    """Top talkers: (address A, address B, packets, bytes) between address pairs."""
    st = session.store
    n = session.n_decoded
    if not n:
        return []
    a = st.src[:n].astype(np.int64)
    b = st.dst[:n].astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * (len(st.addrs) + 1) + hi
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    byt = np.bincount(inv, weights=st.origlen[:n].astype(np.int64))
    order = np.argsort(-counts, kind="stable")[:top]
    out = []
    for k in order:
        kk = int(uniq[k])
        x, y = divmod(kk, len(st.addrs) + 1)
        out.append((st.addrs[x] or "-", st.addrs[y] or "-", int(counts[k]), int(byt[k])))
    return out


def channel_load(session, bins: int = 20) -> list[tuple[float, float, int, int]]:
    """(start s, end s, packets, bytes) per time bin over the whole capture."""
    st = session.store
    n = st.n
    if not n:
        return []
    ts = st.ts[:n]
    t0, t1 = int(ts.min()), int(ts.max())
    span = max(t1 - t0, 1)
    edges = np.linspace(0, span, bins + 1)
    rel = (ts - t0).astype(np.float64)
    idx = np.minimum(np.searchsorted(edges, rel, side="right") - 1, bins - 1)
    pk = np.bincount(idx, minlength=bins)
    by = np.bincount(idx, weights=st.origlen[:n].astype(np.int64), minlength=bins)
    return [(edges[k] / 1e9, edges[k + 1] / 1e9, int(pk[k]), int(by[k])) for k in range(bins)]


def security_summary(session) -> list[tuple[str, int]]:
    st = session.store
    n = session.n_decoded
    c = np.bincount(st.status[:n].astype(np.int64), minlength=7) if n else np.zeros(7, int)
    return [("plaintext DLMS", int(c[ST_PLAIN])), ("ciphered (not decrypted)", int(c[ST_CIPHERED])),
            ("decrypted", int(c[ST_DECRYPTED])), ("authenticated (tag verified)", int(c[ST_AUTHOK])),
            ("no key", int(c[ST_NOKEY])),
            ("auth failed", int(c[ST_AUTHFAIL]))]


def statistics_text(session) -> str:
    lines = ["Protocol hierarchy", f"  {'protocol':<34} {'packets':>9} {'bytes':>11} {'%':>6}"]
    for name, p, b, pct in protocol_hierarchy(session):
        lines.append(f"  {name:<34} {p:>9} {b:>11} {pct:>5.1f}%")
    lines += ["", "Conversations / top talkers (by LON or IP address)",
              f"  {'address A':<22} {'address B':<22} {'packets':>9} {'bytes':>11}"]
    for a, b, p, by in conversations(session):
        lines.append(f"  {a:<22} {b:<22} {p:>9} {by:>11}")
    lines += ["", "Channel load over time"]
    load = channel_load(session)
    peak = max((p for _, _, p, _ in load), default=0) or 1
    for s, e, p, by in load:
        bar = "█" * int(round(30 * p / peak))
        lines.append(f"  {s:9.3f}–{e:9.3f} s {p:>8} pk {by:>10} B {bar}")
    lines += ["", "Security status"]
    for name, c in security_summary(session):
        lines.append(f"  {name:<30} {c:>9}")
    lines += ["", "Repeater paths"]
    if session.paths_seen:
        for path, c in session.paths_seen.most_common(20):
            lines.append(f"  {c:>7}  {path}")
    else:
        lines.append("  (no repeated frames)")
    return "\n".join(lines)
