"""Dask engine for exports: one partition per capture file, decoded on the workers.

Each file is decoded by `dask.delayed` on a worker (a `LocalCluster` when no scheduler
address is given, `Client(ADDR)` otherwise); the worker returns its Arrow tables, and the
client concatenates them in file order with one unified schema, renumbering frames so the
result equals the local engine's (except that stateful stages see each file on its own).
Keys travel to the workers as the key-ring path and `--key` items, never as decoded
secrets in the task graph's results.
"""
from __future__ import annotations

import os
from typing import Iterable

import pyarrow as pa


def _decode_file(what: str, path: str, keys_path: str | None, key_items: tuple, profile_path: str | None):
    """Runs on a worker: (tables, packet count, damage messages)."""
    from .export import export_tables
    keys = None
    if keys_path or key_items:
        from .keyring import load_keys
        keys = load_keys(keys_path, extra=list(key_items))
    profile = None
    if profile_path:
        from .cmd_decode import load_profile
        profile = load_profile(profile_path)
    errors: list[str] = []
    tables = list(export_tables(what, [path], keys, profile, errors))
    count = 0
    if what == "packets":
        count = sum(t.num_rows for t in tables)
    else:
        from .capture import open_reader
        r = open_reader(path)
        try:
            count = sum(1 for _ in r)
        finally:
            r.close()
    return tables, count, errors


def make_client(scheduler: str | None, workers: int | None = None):
    from distributed import Client, LocalCluster
    if scheduler:
        return Client(scheduler), None
    n = workers or min(len(os.sched_getaffinity(0)), 4)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def dask_tables(what: str, paths: Iterable[str], keys_path=None, key_items=(), profile_path=None,
                scheduler: str | None = None, workers: int | None = None,
                errors: list | None = None, client=None):
    """Yield the export's tables, file by file in order, frame numbers made global."""
    import dask
    from .export import shift_frames
    paths = [os.path.abspath(p) for p in paths]
    own = client is None
    cluster = None
    if own:
        client, cluster = make_client(scheduler, workers)
    try:
        parts = [dask.delayed(_decode_file, pure=False)(what, p, keys_path, tuple(key_items), profile_path)
                 for p in paths]
        futures = client.compute(parts)
        offset = 0
        for fut in futures:
            tables, count, errs = fut.result()
            fut.release()
            if errors is not None:
                errors.extend(errs)
            for t in tables:
                yield shift_frames(t, offset)
            offset += count
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
