"""`lonscope sniff SOURCE`: live capture to pcapng and/or a decoded packet list."""
from __future__ import annotations

import signal
import sys

import click


def _ring_options(values) -> tuple[int | None, int | None]:
    filesize = files = None
    for v in values:
        key, _, num = v.partition(":")
        try:
            n = int(num)
        except ValueError:
            raise click.ClickException(f"-b {v}: expected filesize:KB or files:N") from None
        if n <= 0:
            raise click.ClickException(f"-b {v}: the number must be positive")
        if key == "filesize":
            filesize = n
        elif key == "files":
            files = n
        else:
            raise click.ClickException(f"-b {v}: expected filesize:KB or files:N")
    return filesize, files


@click.command("sniff")
@click.argument("source")
@click.option("-w", "write", metavar="OUT.pcapng", help="Write the raw frames to a pcapng file ('-' = stdout).")
@click.option("-c", "count", type=int, help="Stop after N packets.")
@click.option("-a", "--duration", type=float, help="Stop after this many seconds.")
@click.option("-b", "ring", multiple=True, metavar="filesize:KB|files:N", help="Ring buffer: new file after KB kilobytes; keep N files.")
@click.option("--for-wireshark", is_flag=True, help="Write raw LonTalk frames wrapped in UDP 1628/CN-IP so that stock Wireshark decodes them.")
@click.option("--keys", type=click.Path(), help="Key ring (TOML) for decoding the packet list.")
@click.option("-f", "--capture-filter", "cfilter", metavar="EXPR",
              help="Keep only frames matching this display-filter expression over lon.* fields, "
                   "e.g. 'lon.srcnet == 1 && lon.srcnode == 5 || lon.domain == 4c'.")
@click.option("-q", "quiet", is_flag=True, help="Do not print the packet list.")
@click.option("--framing", type=click.Choice(["u50", "u61"]), help="serial: NI wire framing (default u61).")
@click.option("--baud", type=int, help="serial: baud rate (default 115200 for u50, 460800 for u61).")
def command(source, write, count, duration, ring, for_wireshark, keys, cfilter, quiet, framing, baud):
    """Capture from SOURCE: serial:/dev/ttyUSB0 (NI in layer-2 mode), iface:eth0 (UDP/TCP
    of CN/IP, LON/IP, DLMS), lon:lon0 (lon-driver netdev), tshark:IFACE, file:PATH.

    With -w, frames go to a pcapng file (flushed every second; raw LonTalk frames as
    LINKTYPE_USER0 = 147, CRC included, with phase/SSI comments).  Without -q, each packet is also
    decoded and listed.  -f keeps only frames whose LonTalk layer matches (addresses,
    domain, PDU type: any lon.* field).  Ctrl-C stops cleanly (the interface is switched
    back to layer 5)."""
    from .live import LiveError, RingWriter, capture, capture_filter, open_source
    accept = None
    if cfilter:
        try:
            accept = capture_filter(cfilter)
        except LiveError as e:
            raise click.ClickException(str(e)) from None
    filesize, files = _ring_options(ring)
    if (filesize or files) and not write:
        raise click.ClickException("-b needs -w OUT.pcapng")
    if filesize is None and files:
        raise click.ClickException("-b files:N needs -b filesize:KB too")
    kw = {}
    if source.startswith("serial:"):
        kw = {"framing": framing, "baud": baud}
    try:
        src = open_source(source, **kw)
    except LiveError as e:
        raise click.ClickException(str(e)) from None
    except ImportError as e:
        raise click.ClickException(f"{source}: a required package is missing ({e.name})") from None
    out = None
    if write:
        out = RingWriter(write, filesize, files)
        if for_wireshark:
            from .pcapwriter import LINKTYPE_USER0, LINKTYPE_USER2, wrap_cnip
            inner = out.write
            seq = [0]

            def wrapped(rec):
                if rec.linktype in (LINKTYPE_USER0, LINKTYPE_USER2):
                    seq[0] += 1
                    outbound = "dir=tx" in rec.comments
                    data = wrap_cnip(rec.data, seq[0], rec.ts_ns // 1_000_000, outbound, seq[0])
                    rec = rec._replace(data=data, linktype=1, orig_len=len(data))
                inner(rec)
            out.write = wrapped
    on_record = None
    if not quiet and write != "-":
        from .pipeline import Pipeline
        keyring = None
        if keys:
            from .keyring import load_keys
            keyring = load_keys(keys)
        pipe = Pipeline(keys=keyring)

        def on_record(rec):
            pkt = pipe.feed(rec, source)
            click.echo(f"{pkt.number:>6} {pkt.time:.6f} {pkt.source or '-'} → {pkt.destination or '-'} "
                       f"{pkt.protocol} {pkt.info}")
    stopping = [False]

    def _sigint(signum, frame):
        stopping[0] = True
    old = signal.signal(signal.SIGINT, _sigint)
    old_term = signal.signal(signal.SIGTERM, _sigint)
    n = 0
    counters: dict = {}
    try:
        n = capture(src, out, count=count, duration=duration, on_record=on_record, stop=lambda: stopping[0],
                    accept=accept, counters=counters)
    except LiveError as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:     # a source failing mid-capture (device unplugged ...)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise click.ClickException(f"{source}: capture stopped: {msg}") from None
    finally:
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)
        src.close()
        if out is not None:
            out.close()
    stats = getattr(src, "stats", {})
    extra = ""
    if stats.get("rx_errors"):
        extra = f", {stats['rx_errors']} receive errors ({', '.join(f'{k} {v}' for k, v in stats['rx_error_kinds'].items())})"
    if stats.get("framing_errors"):
        extra += f", {stats['framing_errors']} framing errors"
    if accept is not None:
        extra += f", {counters.get('filtered', 0)} filtered out by -f"
    click.echo(f"{n} packets captured{extra}", err=True)
