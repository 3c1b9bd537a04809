"""Dask engine for exports: one partition per capture file, decoded on the workers.

Each file is one task on a `dask.distributed` cluster (a `LocalCluster` of single-threaded
worker processes when no scheduler address is given, `Client(ADDR)` otherwise).  The task
decodes its file with the local engine and writes its own Parquet part, so the client never
receives DataFrames: it only learns each part's schema, row/frame counts and errors.  The
client then merges the parts in file order into the output with one unified schema (every
column has the same type in every partition; no categoricals), adding the frame numbers
and association numbers of the files before (findings: also to the numbers their messages
name, and their ids "F1"... count on over the files), so the result equals the local
engine's except that stateful stages (TCP streams, associations, decryption state, audit)
see each file on its own.

Parts go to a temporary directory next to the output when the workers can see it (always
for a LocalCluster, or a shared file system); a worker that cannot see it (a remote cluster
without shared storage) sends its part's bytes back instead.  Keys travel to the workers as
the key-ring path and `--key` items, never as decoded secrets in the task graph's results.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from typing import Iterable, Iterator

import pyarrow as pa

MARKER = ".lonscope-parts"


def warm() -> float:
    """Import everything a task needs (dissectors, stages, Arrow/Parquet) once per worker
    process; returns the seconds it took (0 once warm)."""
    t = time.perf_counter()
    import pyarrow.parquet  # noqa: F401
    import dissectors
    from . import export  # noqa: F401
    from .pipeline import Pipeline
    dissectors.load_all()
    Pipeline()                 # imports and registers the analyzer stages
    return time.perf_counter() - t


def _part_file(part_dir: str, token: str, index: int) -> str | None:
    """The part's path in the client's directory if this worker sees that directory."""
    try:
        with open(os.path.join(part_dir, MARKER)) as f:
            if f.read().strip() == token:
                from .export import dataset_part
                return dataset_part(part_dir, index)
    except OSError:
        pass
    return None


def export_part(what: str, path: str, index: int, part_dir: str, token: str, keys_path: str | None = None,
                key_items: tuple = (), profile_path: str | None = None, display_filter: str | None = None,
                chunk_rows: int | None = None) -> dict:
    """Runs on a worker: export one capture file to a Parquet part.  Returns the part's
    path (or its bytes), schema, row count, frame count, association count and errors."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    warm_s = warm()
    import pyarrow.parquet as pq
    from .export import CHUNK_ROWS, export_tables, gc_tuned, write_tables
    keys = None
    if keys_path or key_items:
        from .keyring import load_keys
        keys = load_keys(keys_path, extra=list(key_items))
    profile = None
    if profile_path:
        from .cmd_decode import load_profile
        profile = load_profile(profile_path)
    target = _part_file(part_dir, token, index)
    local_dir = None
    if target is None:
        local_dir = tempfile.mkdtemp(prefix="lonscope-part-")
        target = os.path.join(local_dir, "part.parquet")
    errors: list[str] = []
    stats: dict = {}
    try:
        with gc_tuned():
            tables = export_tables(what, [path], keys, profile, errors, chunk_rows or CHUNK_ROWS, display_filter,
                                   stats)
            rows = write_tables(tables, target, "parquet", tmpdir=os.path.dirname(target), what=what)
        schema = pq.read_schema(target).remove_metadata()
        out = {"index": index, "path": target, "data": None, "schema": schema, "rows": rows,
               "records": stats.get("records", 0),
               # the association stage's own count (every association numbered, also
               # those no exported row names): the next file's numbers start after it
               "associations": stats.get("associations", 0),
               "errors": errors, "seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
               "warm": warm_s, "pid": os.getpid()}
        if local_dir is not None:
            with open(target, "rb") as f:
                out["data"] = f.read()
            out["path"] = None
        return out
    finally:
        if local_dir is not None:
            shutil.rmtree(local_dir, ignore_errors=True)


def make_client(scheduler: str | None = None, workers: int | None = None):
    """(client, cluster): a client of the scheduler at ADDR, or of a new LocalCluster of
    `workers` single-threaded processes (default: the usable CPUs, at most 4).  Processes,
    not threads: decoding is pure Python and holds the GIL."""
    from distributed import Client, LocalCluster
    from .export import ExportError
    if scheduler:
        try:
            return Client(scheduler, timeout=20), None
        except (OSError, TimeoutError, ValueError) as e:
            raise ExportError(f"cannot connect to the Dask scheduler {scheduler}: {e}") from None
    n = workers or min(len(os.sched_getaffinity(0)), 4)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def _merge_parts(results: list[dict], what: str):
    """(unified schema, [(part path, frame offset, association offset, finding offset)]);
    the finding offset (findings of the files before) is None unless `what` is findings."""
    from .export import empty_table, unify_schema
    schemas = [r["schema"] for r in results if r["rows"]]
    schema = unify_schema(schemas) if schemas else empty_table(what).schema
    plan = []
    frames = assoc = found = 0
    for r in results:
        if r["rows"]:
            plan.append((r["path"], frames, assoc, found if what == "findings" else None))
        frames += r["records"]
        assoc += r["associations"]
        found += r["rows"]
    return schema, plan


def run_parts(what: str, paths: Iterable[str], part_dir: str, keys_path=None, key_items=(), profile_path=None,
              display_filter: str | None = None, chunk_rows: int | None = None, client=None,
              timings: dict | None = None) -> list[dict]:
    """Export each file to a part on the cluster; returns the parts' descriptions in file
    order (bytes sent back by workers that cannot see `part_dir` are written there)."""
    from distributed import as_completed
    paths = [os.path.abspath(str(p)) for p in paths]
    token = secrets.token_hex(8)
    with open(os.path.join(part_dir, MARKER), "w") as f:
        f.write(token)
    # biggest files first: the last tasks to start are the short ones (less idle time)
    order = sorted(range(len(paths)), key=lambda i: -_size(paths[i]))
    futures = [client.submit(export_part, what, paths[i], i, part_dir, token, keys_path, tuple(key_items),
                             profile_path, display_filter, chunk_rows, key=f"lonscope-export-{token}-{i}",
                             pure=False, priority=len(paths) - k)
               for k, i in enumerate(order)]
    results: list = [None] * len(paths)
    try:
        done = list(_completed(as_completed(futures, with_results=True), futures, paths))
    except BaseException:
        client.cancel(futures)
        raise
    for fut, res in done:
        res["shared"] = res["data"] is None
        if res["data"] is not None:
            from .export import dataset_part
            res["path"] = dataset_part(part_dir, res["index"])
            with open(res["path"], "wb") as f:
                f.write(res["data"])
            res["data"] = None
        results[res["index"]] = res
        fut.release()
    if timings is not None:
        timings["tasks"] = [{"file": paths[r["index"]], "seconds": r["seconds"], "cpu": r["cpu"], "warm": r["warm"],
                             "pid": r["pid"]} for r in results]
    return results


def _completed(it, futures, paths):
    from .export import ExportError
    while True:
        try:
            fut, res = next(it)
        except StopIteration:
            return
        except Exception as e:       # the task's own exception, re-raised on the client
            bad = [f for f in futures if f.status == "error"]
            i = int(bad[0].key.rsplit("-", 1)[1]) if bad else None
            where = paths[i] if i is not None else "a worker"
            raise ExportError(f"{where}: export task failed on the cluster: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        yield fut, res


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _part_tables(schema: pa.Schema, plan, batch_rows: int) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq
    from .export import conform, shift_frames
    for path, frames, assoc, found in plan:
        pf = pq.ParquetFile(path)
        try:
            for batch in pf.iter_batches(batch_size=batch_rows):
                yield conform(shift_frames(pa.Table.from_batches([batch]), frames, assoc, found), schema)
        finally:
            pf.close()


def conform_part(src: str, dest: str, schema: pa.Schema, frames: int, assoc: int, found: int | None,
                 batch_rows: int) -> int:
    """Runs on a worker (or the client): one part rewritten with the unified schema and
    the global frame/association (and finding) numbers; returns its row count."""
    from .export import TableWriter
    w = TableWriter(dest, "parquet", schema)
    try:
        for t in _part_tables(schema, [(src, frames, assoc, found)], batch_rows):
            w.write(t)
    finally:
        w.close()
    return w.rows


def _dataset(results, what, out_dir, part_dir, client, batch_rows) -> int:
    """Parts -> OUT_DIR/part-NNNNN.parquet, one per capture file, conformed on the workers
    (by the client for parts whose bytes came back)."""
    from .export import TableWriter, clear_dataset, dataset_part
    schema, plan = _merge_parts(results, what)
    clear_dataset(out_dir)
    jobs = []
    shared = {r["path"] for r in results if r.get("shared")}
    for k, (path, frames, assoc, found) in enumerate(plan):
        dest = dataset_part(out_dir, k)
        if path in shared:
            jobs.append(client.submit(conform_part, path, dest, schema, frames, assoc, found, batch_rows,
                                      pure=False))
        else:
            jobs.append(conform_part(path, dest, schema, frames, assoc, found, batch_rows))
    if not plan:        # nothing exported: one empty part keeps the columns
        TableWriter(dataset_part(out_dir, 0), "parquet", schema).close()
    return sum(j if isinstance(j, int) else j.result() for j in jobs)


class _Session:
    """A client (own LocalCluster unless one is given) and a part directory."""

    def __init__(self, directory: str, scheduler=None, workers=None, client=None):
        self.own = client is None
        self.cluster = None
        self.client = client
        self.directory = directory
        self.part_dir = None

    def __enter__(self):
        self.part_dir = tempfile.mkdtemp(prefix=".lonscope-parts-", dir=self.directory)
        return self

    def start(self, scheduler, workers):
        if self.own:
            self.client, self.cluster = make_client(scheduler, workers)
        return self.client

    def __exit__(self, *exc):
        shutil.rmtree(self.part_dir, ignore_errors=True)
        if self.own and self.client is not None:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()


def dask_export(what: str, paths: Iterable[str], out: str, fmt: str | None = None, keys_path=None, key_items=(),
                profile_path=None, display_filter: str | None = None, scheduler: str | None = None,
                workers: int | None = None, errors: list | None = None, client=None,
                chunk_rows: int | None = None, timings: dict | None = None) -> int:
    """Export `what` from capture files to OUT (.parquet/.csv/.jsonl, or a Parquet dataset
    directory: see `export.is_dataset`) on a Dask cluster; returns the row count.  `timings` (optional dict) receives "start" (cluster start),
    "tasks" (per file: wall and CPU seconds on the worker, import warm-up, worker pid),
    "compute" and "merge" seconds."""
    from .export import CHUNK_ROWS, TableWriter, is_dataset, output_format
    dataset = is_dataset(out)
    if dataset:
        fmt = "parquet"
    fmt = fmt or output_format(out)
    outdir = os.path.dirname(os.path.abspath(out))
    t0 = time.perf_counter()
    with _Session(outdir, client=client) as s:
        c = s.start(scheduler, workers)
        t1 = time.perf_counter()
        results = run_parts(what, paths, s.part_dir, keys_path, key_items, profile_path, display_filter,
                            chunk_rows, c, timings)
        t2 = time.perf_counter()
        for r in results:
            if errors is not None:
                errors.extend(r["errors"])
        if dataset:
            n = _dataset(results, what, os.path.abspath(out), s.part_dir, c, chunk_rows or CHUNK_ROWS)
            if timings is not None:
                timings.update(start=t1 - t0, compute=t2 - t1, merge=time.perf_counter() - t2)
            return n
        schema, plan = _merge_parts(results, what)
        w = TableWriter(out, fmt, schema)
        try:
            for t in _part_tables(schema, plan, chunk_rows or CHUNK_ROWS):
                w.write(t)
        finally:
            w.close()
        if timings is not None:
            timings.update(start=t1 - t0, compute=t2 - t1, merge=time.perf_counter() - t2)
        return w.rows


def dask_tables(what: str, paths: Iterable[str], keys_path=None, key_items=(), profile_path=None,
                scheduler: str | None = None, workers: int | None = None,
                errors: list | None = None, client=None, display_filter: str | None = None,
                chunk_rows: int | None = None, tmpdir: str | None = None) -> Iterator[pa.Table]:
    """The export's tables, file by file in order, all with one schema, frame and
    association numbers made global (the parts are computed first, then read back)."""
    from .export import CHUNK_ROWS
    with _Session(tmpdir or tempfile.gettempdir(), client=client) as s:
        c = s.start(scheduler, workers)
        results = run_parts(what, paths, s.part_dir, keys_path, key_items, profile_path, display_filter,
                            chunk_rows, c)
        for r in results:
            if errors is not None:
                errors.extend(r["errors"])
        schema, plan = _merge_parts(results, what)
        yield from _part_tables(schema, plan, chunk_rows or CHUNK_ROWS)


def dask_dataframe(what: str, paths: Iterable[str], keys_path=None, key_items=(), profile_path=None,
                   scheduler: str | None = None, workers: int | None = None, client=None, directory: str = None):
    """A `dask.dataframe` of the export (one partition per file that has rows, identical
    dtypes in every partition), backed by a Parquet dataset (one file per capture) the
    workers write to `directory` (default: a new temporary directory that the caller may
    delete when done; a remote cluster needs a directory the client and workers share)."""
    import glob
    import dask.dataframe as dd
    directory = directory or tempfile.mkdtemp(prefix="lonscope-dask-")
    out = os.path.join(directory, what) + os.sep
    dask_export(what, paths, out, "parquet", keys_path, key_items, profile_path, scheduler=scheduler,
                workers=workers, client=client)
    # nullable dtypes: an integer column is Int64 in every partition (numpy would make it
    # float64 only where a partition has a missing value)
    return dd.read_parquet(sorted(glob.glob(os.path.join(out, "part-*.parquet"))), split_row_groups=False,
                           dtype_backend="numpy_nullable")


__all__ = ["dask_export", "dask_tables", "dask_dataframe", "make_client", "export_part", "warm"]
