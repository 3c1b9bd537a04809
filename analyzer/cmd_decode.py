"""`lonscope decode`: decode captures to text, JSON, JSON lines or tshark-style fields."""
from __future__ import annotations

import os
import sys
import time

import click

from .output import CliError

FORMATS = ("text", "json", "jsonl", "fields")


def load_keyring(keys_path: str | None, key_items: tuple[str, ...]):
    """KeyRing from --keys/--key (or LONSCOPE_KEYS); None when no keys are given."""
    if not keys_path and not key_items and not os.environ.get("LONSCOPE_KEYS"):
        return None
    try:
        from .keyring import KeyRingError, load_keys
    except ImportError:
        raise CliError("keys were given but this build has no key ring support (analyzer.keyring)") from None
    try:
        return load_keys(keys_path, extra=list(key_items))
    except KeyRingError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError(f"{keys_path}: {e.strerror or e}") from None


def load_profile(path: str | None):
    if not path:
        return None
    if not os.path.exists(path):
        raise CliError(f"{path}: no such profile file")
    try:
        from dissectors import adaptation
    except ImportError:
        return path
    loader = getattr(adaptation, "load_profile", None)
    if loader is None:
        return path
    try:
        return loader(path)
    except Exception as e:   # a bad profile is a user error, shown in one line
        raise CliError(f"{path}: bad profile: {e}") from None


def open_readers(paths):
    """Open every capture before any output, so that a missing or foreign file is one
    clear line and exit status 2."""
    from .capture import CaptureError, open_reader
    readers = []
    for p in paths:
        try:
            readers.append((p, open_reader(p)))
        except CaptureError as e:
            for _, r in readers:
                r.close()
            raise CliError(str(e)) from None
        except OSError as e:
            for _, r in readers:
                r.close()
            raise CliError(f"{p}: {e.strerror or e}") from None
        except Exception as e:    # a reader bug on a foreign file is still one line
            for _, r in readers:
                r.close()
            raise CliError(f"{p}: not a readable capture file ({type(e).__name__}: {e})") from None
    return readers


def compile_display_filter(text: str | None):
    if not text:
        return None
    from .filters import FilterError, compile_filter
    try:
        return compile_filter(text)
    except FilterError as e:
        raise CliError(str(e)) from None


class Progress:
    """Packet count on stderr for long runs (only when stderr is a terminal and stdout
    is not the same terminal)."""

    def __init__(self):
        self.on = sys.stderr.isatty() and not sys.stdout.isatty()
        self.start = time.monotonic()
        self.shown = False

    def tick(self, n: int) -> None:
        if self.on and time.monotonic() - self.start > 2.0:
            sys.stderr.write(f"\rlonscope: {n} packets read …")
            sys.stderr.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _quiet_exit_on_broken_pipe() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    sys.exit(0)


@click.command("decode")
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--keys", "keys_path", metavar="FILE", help="TOML key ring.")
@click.option("--key", "key_items", multiple=True, metavar="NAME=HEX",
              help="A key on the command line (ek=, ak=, system_title=, ...); repeatable.")
@click.option("--profile", metavar="FILE", help="Adaptation-layer profile (TOML).")
@click.option("-Y", "--display-filter", "display_filter", metavar="FILTER",
              help="Display filter (Wireshark syntax subset).")
@click.option("-V", "verbose", is_flag=True, help="Print the full details tree.")
@click.option("-T", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default text; -e implies fields).")
@click.option("-e", "field_names", multiple=True, metavar="FIELD", help="Field for -T fields; repeatable.")
@click.option("-E", "eopts", multiple=True, metavar="KEY=VALUE",
              help="-T fields options: header=y|n separator=/t|/s|C occurrence=f|l|a aggregator=C quote=d|s|n")
@click.option("-c", "count", type=click.IntRange(min=1), default=None,
              help="Stop after COUNT displayed packets.")
@click.option("-x", "hexdump", is_flag=True, help="Add a hex dump of each data source.")
def command(captures, keys_path, key_items, profile, display_filter, verbose, fmt, field_names,
            eopts, count, hexdump):
    """Decode CAPTURE files: one line per packet (like tshark), -V trees, JSON, fields."""
    from . import output as O

    if fmt is None:
        fmt = "fields" if field_names else "text"
    if fmt == "fields" and not field_names:
        raise CliError("-T fields needs at least one -e FIELD")
    if field_names and fmt != "fields":
        raise CliError("-e needs -T fields")
    try:
        eo = O.parse_E(eopts)
    except ValueError as e:
        raise CliError(str(e)) from None
    match = compile_display_filter(display_filter)
    if field_names:
        from dissectors import load_all
        load_all()
        import analyzer.filters  # noqa: F401  (registers the frame/_ws names)
        bad = [n for n in field_names if not O.known_field(n)]
        if bad:
            raise CliError(f"unknown field(s) for -e: {', '.join(bad)} (see `lonscope fields`)")
    keys = load_keyring(keys_path, key_items)
    prof = load_profile(profile)
    readers = open_readers(captures)

    want_tree = verbose
    from .pipeline import Pipeline
    pipe = Pipeline(keys=keys, profile=prof, want_tree=want_tree)
    out = sys.stdout
    buf: list[str] = []
    add = buf.append
    progress = Progress()
    ff = None
    if fmt == "fields":
        ff = O.FieldsFormatter(list(field_names), eo["separator"], eo["occurrence"], eo["aggregator"],
                               eo["quote"], eo["header"])
        if ff.header:
            add(ff.header_line())
    need_virtual = bool(match is not None and getattr(match, "fields", ()) & O.VIRTUAL_NAMES) or \
        (ff is not None and ff.needs_virtual)
    shown = 0
    read = 0
    t0 = None
    prev = None
    first_json = True
    errors: list[str] = []
    try:
        if fmt == "json":
            out.write("[")
        for path, reader in readers:
            try:
                for rec in reader:
                    read += 1
                    pkt = pipe.feed(rec, path)
                    if t0 is None:
                        t0 = pkt.ts_ns
                    fields = pkt.d.fields
                    if need_virtual:
                        fields = O.with_virtual(pkt, t0, prev)
                    prev = pkt.ts_ns
                    if match is not None and not match(fields):
                        continue
                    shown += 1
                    if ff is not None:
                        add(ff.line(fields))
                    elif fmt == "text":
                        if verbose:
                            add("\n".join(O.tree_lines(pkt.d, pkt)))
                        else:
                            add(O.summary_line(pkt, t0))
                        if hexdump:
                            add("")
                            add("\n".join(O.hexdump_sources(pkt.d, pkt.data)))
                        if verbose or hexdump:
                            add("")
                    else:
                        obj = O.packet_object(pkt, tree=verbose)
                        if hexdump:
                            obj["raw"] = pkt.data.hex()
                        if fmt == "jsonl":
                            add(O.dumps(obj))
                        else:
                            add(("\n  " if first_json else ",\n  ") + O.dumps(obj))
                            first_json = False
                    if len(buf) >= 512:
                        out.write("\n".join(buf) if fmt == "json" else "\n".join(buf) + "\n")
                        buf.clear()
                    if count is not None and shown >= count:
                        break
                    if not (read & 0x3FFF):
                        progress.tick(read)
            finally:
                if reader.error:
                    errors.append(reader.error)
                reader.close()
            if count is not None and shown >= count:
                break
        pipe.finish()
        if buf:
            out.write("\n".join(buf) if fmt == "json" else "\n".join(buf) + "\n")
            buf.clear()
        if fmt == "json":
            out.write("\n]\n" if not first_json else "]\n")
        out.flush()
    except BrokenPipeError:
        _quiet_exit_on_broken_pipe()
    finally:
        progress.done()
    for msg in errors:
        click.echo(f"lonscope: {msg}", err=True)
    if errors and read == 0:
        sys.exit(2)
