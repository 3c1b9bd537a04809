"""TUI sort kept up to date incrementally: rows decoded (or matched by the filter) after
the sort are merged into the sorted order batch by batch.  After any number of merges the
order equals a full stable sort of the same rows (ties in capture order, both directions),
computed here independently with Python's sorted() over the texts/values put into the
store; and a merge keys only the new rows."""
from __future__ import annotations

import random
from array import array

import numpy as np
import pytest

from analyzer.tui import sorting
from analyzer.tui import store as store_mod
from analyzer.tui.session import SORT_COLUMNS, Session, natural_key

PROTOS = ["LON", "CNIP", "DLMS", "OSGP", "HDLC"]


def make_rows(n: int, seed: int, distinct_info: int) -> list[dict]:
    """Rows with many equal keys (ties) and values that first appear late (new distinct
    strings and addresses arrive with later batches)."""
    rng = random.Random(seed)
    rows = []
    ts = 1_700_000_000_000_000_000
    for i in range(n):
        ts += rng.choice([0, 1000, 5, 123456])      # equal timestamps too
        late = i > n // 2
        rows.append({
            "ts": ts, "len": rng.choice([20, 31, 31, 64, 200]),
            "proto": rng.choice(PROTOS[:3] if not late else PROTOS),
            "src": f"{rng.randint(1, 3 if not late else 12)}/{rng.randint(1, 40)}",
            "dst": rng.choice(["grp 3", "1/5", "1/12", f"10/{rng.randint(1, 99)}"]),
            "info": rng.choice([f"ACKD [tid {rng.randint(0, 15)}] get-request 1.0.{rng.randint(0, distinct_info)}.8.0.255",
                                "read", "read\x00", "", "réponse é", "Zzz", f"x{rng.randint(0, distinct_info)}"]),
        })
    return rows


def fill(s: Session, rows: list[dict], upto: int, start: int = 0) -> None:
    """The decoder's work for rows [start, upto): summary columns into the store."""
    st = s.store
    for i in range(start, upto):
        r = rows[i]
        st.set_summary(i, r["proto"], r["src"], r["dst"], "x:" + r["proto"].lower(), r["info"], 0, 0)
    s.n_decoded = upto


def session_for(rows: list[dict]) -> Session:
    s = Session([])
    n = len(rows)
    s.store.append_index(np.array([r["ts"] for r in rows]), np.arange(n), np.array([r["len"] for r in rows]),
                         np.array([r["len"] for r in rows]), np.full(n, 147), 0)
    return s


def value(r: dict, i: int, column: str):
    return {"No.": i + 1, "Time": r["ts"], "Length": r["len"], "Protocol": r["proto"],
            "Source": natural_key(r["src"]), "Destination": natural_key(r["dst"]),
            "Info": r["info"]}[column]


def expected(rows, column, desc, subset) -> list[int]:
    """Full stable sort: by value, equal values in capture order (also descending)."""
    key = (lambda i: value(rows[i], i, column))
    groups: dict = {}
    for i in subset:
        groups.setdefault(repr(key(i)), []).append(i)
    ordered = sorted(groups.values(), key=lambda g: key(g[0]), reverse=desc)
    return [i for g in ordered for i in g]


def shown(s: Session) -> list[int]:
    return [s.row_of(y) for y in range(s.visible_count())]


@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("column, intern_max", [(c, 65536) for c in SORT_COLUMNS] + [("Info", 12)])
def test_merges_equal_a_full_sort(column, intern_max, desc, monkeypatch):
    """Sort at 150 decoded rows, then merge batches of uneven size; after each merge the
    order is the full sort's.  intern_max=12: Info texts go to the arena part-way through
    (the Info sort switches from interned ids to texts between merges)."""
    monkeypatch.setattr(store_mod, "INFO_INTERN_MAX", intern_max)
    rows = make_rows(900, seed=hash((column, desc)) & 0xFFFF, distinct_info=40)
    s = session_for(rows)
    fill(s, rows, 150)
    s.set_sort(column, desc)
    upto = len(rows) if column in ("No.", "Time", "Length") else 150
    assert shown(s)[:upto] == expected(rows, column, desc, range(upto))
    for end in (151, 160, 300, 301, 640, 900):
        fill(s, rows, end, s.n_decoded)
        s.update_sort(force=True)
        if column in ("No.", "Time", "Length"):     # index columns: every row sorted at once
            assert shown(s) == expected(rows, column, desc, range(len(rows)))
        else:                                       # rows not decoded yet follow in capture order
            assert shown(s) == expected(rows, column, desc, range(end)) + list(range(end, len(rows)))
    if intern_max == 12:
        assert len(s.store._info_ends) > 100
    s.stop()


@pytest.mark.parametrize("bisect_max", [1e9, 0.0])      # always re-rank / always binary search
@pytest.mark.parametrize("desc", [False, True])
@pytest.mark.parametrize("column", ["Info", "Source", "Length"])
def test_merges_with_a_filter(column, desc, bisect_max, monkeypatch):
    """With a display filter the sort covers the filter's view; the view grows between
    merges.  For Info past the interning limit both ways of placing new rows (binary
    search over the sorted texts, or ranking all texts again) give the full sort."""
    monkeypatch.setattr(store_mod, "INFO_INTERN_MAX", 20)
    monkeypatch.setattr(sorting.InfoSort, "BISECT_MAX", bisect_max)
    monkeypatch.setattr(sorting.TextTable, "PY_RANKS", 50)     # small batches in Python, the rest numpy
    rows = make_rows(700, seed=7, distinct_info=300)
    s = session_for(rows)
    match = [i for i in range(len(rows)) if i % 3 != 1]
    s.view = array("q")
    fill(s, rows, 100)
    s.view.extend(i for i in match if i < 100)
    s.set_sort(column, desc)
    for end in (101, 250, 500, 700):
        fill(s, rows, end, s.n_decoded)
        s.view.extend(i for i in match if len(s.view) == 0 or s.view[-1] < i < end)
        s.update_sort(force=True)
        assert shown(s) == expected(rows, column, desc, [i for i in match if i < end])
    s.stop()


def test_merge_keys_only_the_new_rows(monkeypatch):
    """Each merge computes sort keys for the new rows only (counted at the key functions);
    the natural-order key of an address is computed once per distinct address."""
    rows = make_rows(2000, seed=3, distinct_info=30)
    s = session_for(rows)
    fill(s, rows, 500)
    seen: list = []
    orig_codes = sorting.CodeSort.codes
    orig_keys = sorting.NumericSort.row_keys

    def codes(self, new):
        seen.append((self.column, new.copy()))
        return orig_codes(self, new)

    def row_keys(self, new):
        seen.append((self.column, new.copy()))
        return orig_keys(self, new)

    monkeypatch.setattr(sorting.CodeSort, "codes", codes)
    monkeypatch.setattr(sorting.NumericSort, "row_keys", row_keys)
    calls: list = []

    def counting_key(text):
        calls.append(text)
        return natural_key(text)

    monkeypatch.setattr(sorting, "natural_key", counting_key)
    for column in ("Source", "Info", "Time"):
        s.n_decoded = 500
        seen.clear()
        s.set_sort(column)
        for end in range(600, 2001, 100):
            fill(s, rows, end, max(s.n_decoded, 500))
            s.update_sort(force=True)
        keyed = np.concatenate([r for c, r in seen if c == column])
        assert sorted(keyed.tolist()) == list(range(len(keyed)))        # each row keyed once
        if column == "Time":                                            # index column: all at once
            assert [len(r) for _, r in seen] == [2000]
        else:
            assert [len(r) for _, r in seen] == [500] + [100] * 15      # only the new rows
        assert shown(s) == expected(rows, column, False, range(2000))
    distinct = len(s.store.addrs)
    assert len(calls) == distinct and sorted(set(calls)) == sorted(s.store.addrs.values)
    s.stop()


def test_text_merge_reads_log_n_texts(monkeypatch):
    """Past the interning limit a merge compares each new row with O(log N) sorted rows
    (a binary search for the whole batch at once) — not with every sorted row."""
    monkeypatch.setattr(store_mod, "INFO_INTERN_MAX", 8)
    rows = make_rows(3000, seed=11, distinct_info=5000)
    s = session_for(rows)
    fill(s, rows, 2000)
    s.set_sort("Info", True)
    srt = s._sorter
    assert srt.text_mode
    for end in (2010, 2050, 2100):
        before, words = srt.probes, srt.words_read
        b = end - s.n_decoded
        fill(s, rows, end, s.n_decoded)
        s.update_sort(force=True)
        n = len(s.order) - b
        assert srt.probes - before <= b * (int(np.log2(n)) + 2)
        longest = max(len(r["info"].encode()) for r in rows)
        assert srt.words_read - words <= (srt.probes - before) * (longest // 7 + 1)
    assert shown(s)[:2100] == expected(rows, "Info", True, range(2100))
    s.stop()


@pytest.mark.parametrize("py_ranks", [0, 100])      # numpy over the bytes / Python strings
def test_info_ranks_match_python_order(py_ranks, monkeypatch):
    """Text ranks computed over the bytes (numpy) order texts like Python's str order:
    prefixes first, NUL characters, non-ASCII, equal texts equal rank; interned texts and
    arena texts ranked together."""
    monkeypatch.setattr(store_mod, "INFO_INTERN_MAX", 4)
    monkeypatch.setattr(sorting.TextTable, "PY_RANKS", py_ranks)
    st = store_mod.ColumnStore()
    texts = ["b", "a", "a\x00", "é", "z" * 30, "z" * 29 + "y", "aa", "\U0001F600", "a\x00", "€", "a",
             "", "z" * 30, "b" * 15, "b" * 14 + "\x00"]
    codes = [st.info_code(t) for t in texts]
    assert sum(c < 0 for c in codes) == 9 and [st.info_text(c) for c in codes] == texts
    ranks = sorting.info_ranks(st, np.array(codes))
    distinct = sorted(set(texts))
    assert ranks.tolist() == [distinct.index(t) for t in texts]


@pytest.mark.parametrize("column", ["Info", "Source"])
def test_decoding_again_under_a_sort(column, monkeypatch):
    """New keys: the decoder forgets every summary and starts again while the list is
    sorted.  A merge that runs in between does not fail; once the new decoding is under
    way the sort is rebuilt from the new summaries."""
    monkeypatch.setattr(store_mod, "INFO_INTERN_MAX", 10)
    rows = make_rows(400, seed=5, distinct_info=200)
    s = session_for(rows)
    fill(s, rows, 300)
    s.set_sort(column)
    s.decode_gen += 1                      # reload_keys(): the worker will start again ...
    s.store.forget_summaries()             # ... it has reset the store, not the counters yet
    fill(s, rows, 320, 300)
    s.update_sort(force=True)              # must not raise
    s.n_decoded = 0
    s.decode_epoch += 1                    # the worker's restart is complete
    again = list(reversed(rows))           # different summaries this time
    fill(s, again, 250)
    s.update_sort(force=True)
    assert shown(s) == expected(again, column, False, range(250)) + list(range(250, 400))
    s.stop()
