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
    """Load an adaptation-layer profile and make it the active one (dissectors are pure:
    the profile is a module-level setting of dissectors.adaptation)."""
    if not path:
        return None
    if not os.path.exists(path):
        raise CliError(f"{path}: no such profile file")
    try:
        from dissectors import adaptation
    except ImportError:
        raise CliError("--profile needs the adaptation layer (dissectors/adaptation.py)") from None
    try:
        prof = adaptation.load_profile(path)
        adaptation.use_profile(prof)
    except Exception as e:   # a bad profile is a user error, shown in one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CliError(msg if path in msg else f"{path}: {msg}") from None
    return prof


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


def _report_errors(errors: list, read: int) -> None:
    """The readers' damage messages on stderr; exit status 2 when nothing could be read."""
    for msg in errors:
        click.echo(f"lonscope: {msg}", err=True)
    if errors and read == 0:
        sys.exit(2)


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
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=None,
              help="Worker processes for -T fields when every field is stateless (0 = one per CPU; "
                   "default: one per CPU for captures of 8 MiB or more, else 1; 1 = one process).")
def command(captures, keys_path, key_items, profile, display_filter, verbose, fmt, field_names,
            eopts, count, hexdump, jobs):
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
        from .filters import _load_fields
        _load_fields()
        bad = [n for n in field_names if not O.known_field(n)]
        if bad:
            raise CliError(f"unknown field(s) for -e: {', '.join(bad)} (see `lonscope fields`)")
    keys = load_keyring(keys_path, key_items)
    prof = load_profile(profile)
    readers = open_readers(captures)

    want_tree = verbose
    lower_only = False
    if fmt == "fields" and keys is None and not verbose and not hexdump:
        used = set(field_names) | set(getattr(match, "fields", ()) if match is not None else ())
        if parallel_eligible(used):
            lower_only = enable_lower_layers_only(readers[0][0], field_names, eo, match, prof)
            if jobs is None:
                jobs = auto_jobs(readers, count)
            if jobs != 1:
                try:
                    run_parallel(readers, field_names, eo, match, count, jobs or usable_cpus(), prof,
                                 lower_only)
                except BrokenPipeError:
                    _quiet_exit_on_broken_pipe()
                return
    from .pipeline import Pipeline
    pipe = Pipeline(keys=keys, profile=prof, want_tree=want_tree)
    if lower_only:
        pipe.stages = [s for s in pipe.stages if s.name in KEEP_STAGES]
    feed = _fields_feed(pipe, field_names, match) if fmt == "fields" else pipe.feed
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
    filter_virtual = bool(match is not None and getattr(match, "fields", ()) & O.VIRTUAL_NAMES)
    need_virtual = filter_virtual or (ff is not None and ff.needs_virtual)
    # -T fields with only frame numbers/times/lengths: build just those, no merged dict
    light = O.virtual_subset(ff.names) if ff is not None and not filter_virtual else None
    shown = 0
    read = 0
    t0 = None
    prev = None
    first_json = True
    errors: list[str] = []
    plain = ff is not None and match is None and count is None and not need_virtual
    if plain:
        # plain -T fields: the shortest loop (no filter, no virtual fields, no count)
        line = ff.line
        fields_of = _fields_of(feed)
    try:
        if fmt == "json":
            out.write("[")
        for path, reader in readers:
            try:
                if plain:
                    for rec in reader:
                        add(line(fields_of(rec, path)))
                        if len(buf) >= 2048:
                            out.write("\n".join(buf) + "\n")
                            buf.clear()
                            progress.tick(pipe.count)
                    read += reader.count
                    continue
                for rec in reader:
                    read += 1
                    pkt = feed(rec, path)
                    if t0 is None:
                        t0 = pkt.ts_ns
                    fields = pkt.d.fields
                    extra = None
                    if light is not None:
                        extra = light(pkt, t0, prev)
                    elif need_virtual:
                        fields = O.with_virtual(pkt, t0, prev)
                    prev = pkt.ts_ns
                    if match is not None and not match(fields):
                        continue
                    shown += 1
                    if ff is not None:
                        add(ff.line(fields, extra))
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
    _report_errors(errors, read)


# --------------------------------------------------------------------------- parallel -T fields
#
# The capture is cut into ranges decoded by worker processes (fork), each with its own
# pipeline.  Stateful stages would see each range on its own, so this mode is used only
# when every requested field (-e and -Y) is a per-frame field of the lower layers, registered
# by a dissector (not by a stage), and each range starts with a warm-up of earlier records
# (decoded, not printed) so that IP fragments and short LonTalk/TCP exchanges that cross a
# range boundary still come out as in a single pass.
#
# Classic pcap files are cut by bytes, and the workers find their own records: phase 1 —
# each worker finds the first record header of its range (a plausibility guess,
# `CaptureReader.pcap_sync`) and walks the record headers to the end of the range; the
# parent checks that every range starts where the walk of the one before it ended (a wrong
# guess is walked again from the right offset) and numbers the records.  Phase 2 — the
# workers decode their ranges (warm-up: the last WARMUP_BYTES of the range before) and the
# parent writes their text in order.  Other formats (pcapng, logs) use a record index.
#
# Without -j, -T fields decodes in parallel by itself when that is safe and worth it
# (`auto_jobs`): frame-level fields only (as above), no keys, no -V/-x/-c, a capture of at
# least AUTO_MIN_BYTES, and more than one usable CPU.  `-j 1` forces one process.

SAFE_PREFIXES = ("frame.", "eth.", "vlan.", "sll.", "null.", "ip.", "ipv6.", "udp.", "tcp.",
                 "cnip.", "lon.", "lonip.", "ni.")
SAFE_PROTOCOLS = frozenset(["eth", "vlan", "sll", "null", "ip", "ipv6", "udp", "tcp", "cnip", "lon",
                            "lonip", "ni"])
SAFE_VIRTUAL = frozenset(["frame.number", "frame.time_epoch", "frame.time_relative", "frame.time_delta",
                          "frame.len", "frame.cap_len"])
WARMUP = 256                 # records (indexed formats)
WARMUP_BYTES = 1 << 17       # bytes before a range (classic pcap): more than one 64 KiB IP datagram
CHUNK = 50000                # records per range at most (indexed formats)
RANGES_PER_JOB = 8
MIN_RANGE = 1 << 20
MAX_RANGE = 16 << 20
AUTO_MIN_BYTES = 8 << 20


def parallel_eligible(names) -> bool:
    from . import filters
    filters._load_fields()
    from dissectors.core import REGISTRY
    dissector_fields = filters.DISSECTOR_FIELDS
    if dissector_fields is None:          # stage fields cannot be told apart: be safe
        return False
    for n in names:
        if n in SAFE_VIRTUAL or n in SAFE_PROTOCOLS:
            continue
        if n not in dissector_fields or n not in REGISTRY or not n.startswith(SAFE_PREFIXES):
            return False
        if n.startswith(("lon.nm.", "lon.nd.")):    # also decoded by lontrack on responses
            return False
    return True


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_jobs(readers, count) -> int:
    """Worker processes for -T fields without -j (the caller has checked the fields)."""
    if count is not None or os.environ.get("LONSCOPE_FULL_DECODE"):
        return 1
    cpus = usable_cpus()
    if cpus < 2:
        return 1
    size = 0
    for _, r in readers:
        buf = getattr(r, "buf", None)
        size += len(buf) if buf is not None else 0
    return min(cpus, 8) if size >= AUTO_MIN_BYTES else 1


_PAR: dict = {}


def _fields_feed(pipe, names, match):
    """pipe.feed, or the CN/IP + LonTalk fast feed when every requested field is one of
    theirs (analyzer.fastfields.fast_feed: lower layers and stages skipped for plain CN/IP
    datagrams, identical values)."""
    if match is not None and not hasattr(match, "fields"):
        return pipe.feed
    try:
        from .fastfields import fast_feed
    except ImportError:
        return pipe.feed
    return fast_feed(pipe, names, getattr(match, "fields", ()) if match is not None else ()) or pipe.feed


def _fields_of(feed):
    """`fields_of(rec, path)` -> the record's flat fields: the fast feed's own (no Packet
    kept) or those of `feed`'s packet."""
    return getattr(feed, "fields_of", None) or (lambda rec, path: feed(rec, path).d.fields)


def _worker_feed():
    """The worker's pipeline and feed: made once, in the parent before the workers are
    forked (each worker has its own copy); the stages start afresh for every range (as in a
    new pipeline)."""
    from .pipeline import _STAGES, Pipeline
    p = _PAR
    w = p.get("worker")
    if w is None:
        pipe = Pipeline(profile=p["profile"])
        w = p["worker"] = (pipe, _fields_feed(pipe, p["ff"].names, p["match"]))
    pipe = w[0]
    stages = [f(pipe) for _, f in sorted(_STAGES.values(), key=lambda x: x[0])]
    if p.get("lower_only"):
        stages = [s for s in stages if s.name in KEEP_STAGES]
    pipe.stages = stages
    return pipe, w[1]


def _emit(pkt, prev, lines, p):
    """Append the packet's line (if the filter shows it); returns the packet's time."""
    from . import output as O
    match = p["match"]
    extra = None
    fields = pkt.d.fields
    if p["light"] is not None:
        extra = p["light"](pkt, p["t0"], prev)
    elif p["virtual"]:
        fields = O.with_virtual(pkt, p["t0"], prev)
    if match is None or match(fields):
        lines.append(p["ff"].line(fields, extra))
    return pkt.ts_ns


def _par_chunk(job):
    """Worker (indexed formats): decode records [start, end) of the current file; returns
    (text, shown)."""
    start, end = job
    p = _PAR
    idx, path = p["idx"], p["path"]
    pipe, feed = _worker_feed()
    warm = max(0, start - WARMUP)
    pipe.count = p["base"] + warm
    prev = int(idx.ts_ns[warm - 1]) if warm > 0 else None
    lines = []
    for i in range(warm, end):
        pkt = feed(idx.record(i), path)
        if i < start:
            prev = pkt.ts_ns
            continue
        prev = _emit(pkt, prev, lines, p)
    return ("\n".join(lines) + "\n") if lines else "", len(lines)


def _pcap_scan(job):
    """Worker, phase 1 (classic pcap): walk the record headers of byte range [a, b) from
    `start` (None: find the first record at or after a).  Returns (first record, offset
    after the range's records, record count, offsets of the records in the last
    WARMUP_BYTES of the range (at least the last record), damaged)."""
    from bisect import bisect_left
    a, b, start = job
    reader = _PAR["reader"]
    if start is None:
        start = reader.pcap_sync(a)
        if start is None:
            start = len(reader.buf)
    offs, nxt, damaged = reader.pcap_walk(start, b)
    k = min(bisect_left(offs, b - WARMUP_BYTES), len(offs) - 1)
    return start, nxt, len(offs), offs[max(k, 0):], damaged


def _pcap_decode(job):
    """Worker, phase 2 (classic pcap): decode the records from `first` up to `stop` after
    a warm-up of `nwarm` records from `warm`; `base` records come before `first`."""
    from itertools import islice
    first, stop, warm, nwarm, base = job
    p = _PAR
    reader, path = p["reader"], p["path"]
    pipe, feed = _worker_feed()
    pipe.count = p["base"] + base - nwarm
    prev = None
    records = reader.pcap_range(warm, stop)
    for rec in islice(records, nwarm):
        prev = feed(rec, path).ts_ns
    lines = []
    if p["match"] is None and not p["virtual"]:
        line = p["ff"].line
        fields_of = _fields_of(feed)
        lines = [line(fields_of(rec, path)) for rec in records]
    else:
        for rec in records:
            prev = _emit(feed(rec, path), prev, lines, p)
    return ("\n".join(lines) + "\n") if lines else "", len(lines)


def _pcap_jobs(pool, reader, jobs: int) -> tuple:
    """Phase 1 in the pool: ([(first, stop, warm, nwarm, base)], records, damage offset or
    None).  The warm-up of a range: the records of the WARMUP_BYTES before it, and at least
    the record just before it (frame.time_delta)."""
    n = len(reader.buf)
    size = max(MIN_RANGE, min(MAX_RANGE, (n - 24) // (jobs * RANGES_PER_JOB) + 1))
    if os.environ.get("LONSCOPE_RANGE_BYTES"):       # tests: many small ranges
        size = max(64, int(os.environ["LONSCOPE_RANGE_BYTES"]))
    ranges = [(a, min(a + size, n), 24 if a == 24 else None) for a in range(24, n, size)]
    scans = pool.map(_pcap_scan, ranges, chunksize=1) if len(ranges) > 1 else [_pcap_scan(r) for r in ranges]
    out = []
    expect = 24
    total = 0
    recent: list = []          # offsets of the latest records before the current range
    for (a, b, _), r in zip(ranges, scans):
        if r[0] != expect:               # a wrong guess: walk again from the true record
            r = _pcap_scan((a, b, expect))
        first, nxt, cnt, tail, damaged = r
        warm = [o for o in recent if o >= first - WARMUP_BYTES] or recent[-1:]
        out.append((first, nxt, warm[0] if warm else first, len(warm), total))
        total += cnt
        expect = nxt
        recent = warm + tail
        keep = [o for o in recent if o >= nxt - WARMUP_BYTES]
        recent = keep or recent[-1:]
        if damaged:
            return out, total, nxt
    return out, total, None


def _ordered(pool, fn, jobs, window: int):
    """fn(job) for every job, in order, with at most `window` jobs submitted and not yet
    consumed (the text of a huge capture is never all held in memory)."""
    from collections import deque
    it = iter(jobs)
    pending: deque = deque()
    for job in it:
        pending.append(pool.apply_async(fn, (job,)))
        if len(pending) >= window:
            break
    while pending:
        res = pending.popleft().get()
        job = next(it, None)
        if job is not None:
            pending.append(pool.apply_async(fn, (job,)))
        yield res


def _write_ordered(pool, fn, jobs_list, jobs: int, count, shown: int, out) -> tuple[int, bool]:
    """Write the workers' text in order, stopping (and terminating the pool) once `count`
    packets have been shown.  Returns (packets shown, count reached)."""
    for text, k in _ordered(pool, fn, jobs_list, 2 * jobs):
        if count is not None and shown + k >= count:
            keep = count - shown
            out.write("".join(text.splitlines(True)[:keep]))
            pool.terminate()
            return shown + keep, True
        out.write(text)
        shown += k
    return shown, False


def run_parallel(readers, field_names, eo, match, count, jobs: int, profile, lower_only: bool = False) -> None:
    import multiprocessing as mp
    from . import output as O
    from .capture import index_capture
    ff = O.FieldsFormatter(list(field_names), eo["separator"], eo["occurrence"], eo["aggregator"],
                           eo["quote"], eo["header"])
    out = sys.stdout
    if ff.header:
        out.write(ff.header_line() + "\n")
    filter_virtual = bool(match is not None and getattr(match, "fields", ()) & O.VIRTUAL_NAMES)
    need_virtual = filter_virtual or ff.needs_virtual
    light = O.virtual_subset(ff.names) if not filter_virtual else None
    shown = 0
    base = 0
    t0 = None
    errors = []
    read = 0
    ctx = mp.get_context("fork")
    if os.environ.get("LONSCOPE_DEBUG_PARALLEL"):
        click.echo(f"lonscope: decoding with {jobs} worker processes", err=True)
    _PAR.update(ff=ff, match=match, virtual=need_virtual, light=light, profile=profile, lower_only=lower_only)
    _PAR.pop("worker", None)
    _worker_feed()               # inherited by the workers
    for path, reader in readers:
        done = False
        if reader.format == "pcap":
            first = next(reader.pcap_range(24, 25), None)
            if t0 is None and first is not None:
                t0 = first.ts_ns
            _PAR.update(reader=reader, path=path, t0=t0, base=base, idx=None)
            with ctx.Pool(jobs) as pool:
                todo, n, damage = _pcap_jobs(pool, reader, jobs)
                shown, done = _write_ordered(pool, _pcap_decode, todo, jobs, count, shown, out)
            err = reader.pcap_error(damage, n) if damage is not None else None
            gz = getattr(reader, "_gzerr", None)
            if gz:
                err = f"{err}; {gz}" if err else f"{gz}; read {n} packets"
            reader.close()
        else:
            reader.close()
            _, idx = index_capture(path)
            n = len(idx)
            if t0 is None and n:
                t0 = int(idx.ts_ns[0])
            _PAR.update(idx=idx, path=path, t0=t0, base=base, reader=None)
            size = max(500, min(CHUNK, n // (jobs * 4) + 1))
            ranges = [(a, min(a + size, n)) for a in range(0, n, size)]
            if ranges:
                with ctx.Pool(min(jobs, len(ranges))) as pool:
                    shown, done = _write_ordered(pool, _par_chunk, ranges, jobs, count, shown, out)
            err = idx.error
            idx.close()
        read += n
        base += n
        if err:
            errors.append(err)
        if done:
            break
    out.flush()
    _report_errors(errors, read)


# --------------------------------------------------------------------------- lower layers only
#
# When every requested field belongs to the frame/Ethernet/IP/UDP/TCP/CN-IP/LonTalk layers
# (see parallel_eligible), the layers above LonTalk and TCP/UDP payloads (adaptation, OSGP,
# proxy, xDLMS, wrapper, HDLC) and the stateful stages other than IP defragmentation cannot
# change those fields, so they are switched off for this run.  A self-check decodes the
# first records both ways and keeps the full decode if any requested value differs.

KEEP_STAGES = frozenset(["ipdefrag"])
UPPER_TABLES = ("lon.apdu", "dlms", "tcp.port")
TRANSPORT_TABLES = ("udp.port",)
SELF_CHECK = 400


def _prune_tables() -> None:
    from dissectors.core import TABLES
    for name in UPPER_TABLES:
        t = TABLES.get(name)
        if t is not None:
            t.entries.clear()
            t.heuristics.clear()
    for name in TRANSPORT_TABLES:
        t = TABLES.get(name)
        if t is not None:
            for k in [k for k, (proto, _) in t.entries.items() if proto not in SAFE_PROTOCOLS]:
                del t.entries[k]
            t.heuristics[:] = [h for h in t.heuristics if h[0] in SAFE_PROTOCOLS]


def _sample_lines(path, ff, match, profile, lower_only: bool) -> list:
    from . import output as O
    from .capture import open_reader
    from .pipeline import Pipeline
    pipe = Pipeline(profile=profile)
    if lower_only:
        pipe.stages = [s for s in pipe.stages if s.name in KEEP_STAGES]
    out = []
    reader = open_reader(path)
    t0 = prev = None
    try:
        for i, rec in enumerate(reader):
            if i >= SELF_CHECK:
                break
            pkt = pipe.feed(rec, path)
            if t0 is None:
                t0 = pkt.ts_ns
            fields = O.with_virtual(pkt, t0, prev)
            prev = pkt.ts_ns
            out.append((match(fields) if match is not None else True, ff.line(fields)))
    finally:
        reader.close()
    return out


def enable_lower_layers_only(path, field_names, eo, match, profile) -> bool:
    """Switch off the upper layers for this process when the self-check agrees."""
    if os.environ.get("LONSCOPE_FULL_DECODE"):
        return False
    from . import output as O
    ff = O.FieldsFormatter(list(field_names), eo["separator"], eo["occurrence"], eo["aggregator"],
                           eo["quote"], False)
    try:
        full = _sample_lines(path, ff, match, profile, False)
        from dissectors.core import TABLES
        saved = {n: (dict(t.entries), list(t.heuristics)) for n, t in TABLES.items()}
        _prune_tables()
        fast = _sample_lines(path, ff, match, profile, True)
    except Exception:
        return False
    if fast != full:
        for n, (entries, heur) in saved.items():
            TABLES[n].entries.clear()
            TABLES[n].entries.update(entries)
            TABLES[n].heuristics[:] = heur
        return False
    return True
