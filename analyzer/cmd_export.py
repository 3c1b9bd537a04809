"""`lonscope export`: packets, sessions, COSEM objects or findings to CSV, Parquet or
JSON lines, streamed in chunks (local engine) or decoded per file on Dask workers."""
from __future__ import annotations

import os

import click

from .output import CliError


@click.command("export")
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--keys", "keys_path", metavar="FILE", help="TOML key ring.")
@click.option("--key", "key_items", multiple=True, metavar="NAME=HEX", help="A key on the command line; repeatable.")
@click.option("--profile", metavar="FILE", help="Adaptation-layer profile (TOML).")
@click.option("--what", type=click.Choice(["packets", "sessions", "objects", "findings"]), default="packets",
              show_default=True, help="What to export.")
@click.option("-o", "--output", "out", required=True, metavar="OUT",
              help="OUT.csv, OUT.parquet or OUT.jsonl; or DIR/ or an existing directory: a Parquet "
                   "dataset (one part per 1M rows; with --engine dask one part per capture file, "
                   "written by the workers).")
@click.option("-Y", "--display-filter", "display_filter", metavar="FILTER",
              help="Only packets matching the filter (packets/objects).")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", metavar="ADDR", help="Dask scheduler address (default: a LocalCluster).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="LocalCluster workers.")
@click.option("--chunk", "chunk_rows", type=click.IntRange(min=100), default=5000, show_default=True,
              help="Rows per chunk (memory use).")
def command(captures, keys_path, key_items, profile, what, out, display_filter, engine, scheduler,
            workers, chunk_rows):
    """Export CAPTURE files (packets, sessions, objects, findings) to a file."""
    from .cmd_decode import compile_display_filter, load_keyring, load_profile, open_readers
    from .export import ExportError, export_tables, is_dataset, output_format, write_tables

    dataset = is_dataset(out)
    try:
        fmt = "parquet" if dataset else output_format(out)
    except ExportError as e:
        raise CliError(str(e)) from None
    if scheduler and engine != "dask":
        raise CliError("--scheduler needs --engine dask")
    if display_filter and what in ("sessions", "findings"):
        raise CliError("-Y applies to --what packets or objects")
    if what in ("sessions", "findings"):
        import importlib.util
        mod = "analyzer.associations" if what == "sessions" else "analyzer.audit"
        if importlib.util.find_spec(mod) is None:
            raise CliError(f"--what {what} needs the {mod.split('.')[1]} stage "
                           f"({mod.replace('.', '/')}.py), which is not available in this build")
    compile_display_filter(display_filter)          # one-line error before any work
    keys = load_keyring(keys_path, key_items)
    prof = load_profile(profile)
    for _, r in open_readers(captures):              # missing / foreign files: one line, exit 2
        r.close()
    outdir = os.path.dirname(os.path.abspath(out.rstrip("/" + os.sep) if dataset else out))
    if not os.path.isdir(outdir):
        raise CliError(f"{out}: directory {outdir} does not exist")
    errors: list[str] = []
    try:
        if engine == "dask":
            from .dask_engine import dask_export
            n = dask_export(what, captures, out, fmt, keys_path, key_items, profile, display_filter,
                            scheduler, workers, errors, chunk_rows=chunk_rows)
        else:
            from .export import gc_tuned
            with gc_tuned():
                tables = export_tables(what, captures, keys, prof, errors, chunk_rows, display_filter)
                n = write_tables(tables, out, fmt, tmpdir=outdir, what=what)
    except ExportError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{out}: {e.strerror or e}") from None
    for msg in errors:
        click.echo(f"lonscope: {msg}", err=True)
    where = out
    if dataset:
        where += " (Parquet dataset, one part per " + ("capture file)" if engine == "dask" else "1M rows)")
    click.echo(f"lonscope: wrote {n} {what} rows to {where}", err=True)
