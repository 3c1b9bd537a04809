"""`lonscope extcap`: the Wireshark extcap entry point for LonTalk network interfaces.

Wireshark runs an extcap program with `--extcap-interfaces`, `--extcap-dlts`,
`--extcap-config` and finally `--capture --fifo PATH --extcap-interface NAME [options]`;
the program writes a capture stream into the FIFO until it is terminated.  Install the
wrapper once with `lonscope extcap --install` (writes `~/.local/lib/wireshark/extcap/lonscope`,
the personal extcap folder of Wireshark 4.2+; `--install-dir` for another one).
"""
from __future__ import annotations

import os
import signal
import stat
import sys
import time

import click

INTERFACES = {
    "lonscope-serial": "LonTalk: USB/serial network interface in layer-2 mode (lonscope)",
    "lonscope-netdev": "LonTalk: Linux lon-driver netdev, SICB messages (lonscope)",
}
EXTCAP_VERSION = "0.1.0"


def _print_interfaces() -> None:
    click.echo(f"extcap {{version={EXTCAP_VERSION}}}{{help=https://example.invalid/lonscope}}")
    for name, display in INTERFACES.items():
        click.echo(f"interface {{value={name}}}{{display={display}}}")


def _print_dlts(iface: str) -> None:
    click.echo("dlt {number=1}{name=EN10MB}{display=Ethernet (LonTalk frames in CN/IP, UDP 1628)}")
    click.echo("dlt {number=147}{name=USER0}{display=Raw LonTalk frames with CRC-16 (with --raw-user0)}")


def _print_config(iface: str) -> None:
    if iface == "lonscope-serial":
        click.echo("arg {number=0}{call=--device}{display=Serial device}{type=string}"
                   "{default=/dev/ttyUSB0}{tooltip=The tty of the U10/U20/U60/U70 interface}{required=true}")
        click.echo("arg {number=1}{call=--framing}{display=Wire framing}{type=selector}"
                   "{tooltip=U61 for U10 rev A/B, U20, U60 TP-1250, U70; U50 for U10 rev C, U60 FT}")
        click.echo("value {arg=1}{value=u61}{display=U61}{default=true}")
        click.echo("value {arg=1}{value=u50}{display=U50}{default=false}")
        click.echo("arg {number=2}{call=--baud}{display=Baud rate (0 = framing default)}{type=integer}"
                   "{range=0,921600}{default=0}")
    else:
        click.echo("arg {number=0}{call=--netdev}{display=Network device}{type=string}{default=lon0}"
                   "{tooltip=The lon-driver network interface}{required=true}")
    n = 3 if iface == "lonscope-serial" else 1
    click.echo(f"arg {{number={n}}}{{call=--raw-user0}}{{display=Write raw frames as LINKTYPE_USER0 (147) "
               f"instead of CN/IP}}{{type=boolflag}}{{default=false}}"
               f"{{tooltip=Stock Wireshark decodes LonTalk only inside CN/IP (UDP 1628)}}")


def sicb_to_record(rec):
    """A lon-netdev SICB record (link type 0x950) as a raw LonTalk record, or None."""
    from .live.serial_ni import frame_record
    data = rec.data
    if len(data) < 2:
        return None
    cmd, ln = data[0], data[1]
    off = 2
    if ln == 0xFF and len(data) >= 4:
        ln = data[2] << 8 | data[3]
        off = 4
    payload = data[off:off + ln]
    return frame_record(cmd, payload, rec.ts_ns)


def _install(target: str | None) -> str:
    d = target or os.path.expanduser("~/.local/lib/wireshark/extcap")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "lonscope")
    exe = sys.executable
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec "{exe}" -m analyzer extcap "$@"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@click.command("extcap", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--extcap-interfaces", is_flag=True, help="List the interfaces (Wireshark).")
@click.option("--extcap-dlts", is_flag=True, help="List the link types of --extcap-interface.")
@click.option("--extcap-config", is_flag=True, help="List the options of --extcap-interface.")
@click.option("--extcap-interface", help="Interface name (lonscope-serial or lonscope-netdev).")
@click.option("--extcap-version", help="Wireshark's version (ignored).")
@click.option("--extcap-capture-filter", help="Capture filter: a display-filter expression over lon.* fields.")
@click.option("--extcap-control-in", hidden=True)
@click.option("--extcap-control-out", hidden=True)
@click.option("--capture", is_flag=True, help="Capture into --fifo.")
@click.option("--fifo", help="Where Wireshark reads the capture stream.")
@click.option("--device", default="/dev/ttyUSB0", help="Serial device (lonscope-serial).")
@click.option("--framing", type=click.Choice(["u50", "u61"]), default="u61")
@click.option("--baud", type=int, default=0)
@click.option("--netdev", default="lon0", help="lon-driver network interface (lonscope-netdev).")
@click.option("--raw-user0", is_flag=True, help="Write LINKTYPE_USER0 frames instead of CN/IP-wrapped ones.")
@click.option("--install", "install", is_flag=True, help="Install the Wireshark extcap wrapper.")
@click.option("--install-dir", help="Directory for --install (default ~/.local/lib/wireshark/extcap).")
@click.pass_context
def command(ctx, extcap_interfaces, extcap_dlts, extcap_config, extcap_interface, extcap_version,
            extcap_capture_filter, extcap_control_in, extcap_control_out, capture, fifo, device,
            framing, baud, netdev, raw_user0, install, install_dir):
    """Wireshark extcap interface: live LonTalk capture in Wireshark from a serial NI or
    the lon netdev.  Run `lonscope extcap --install`, restart Wireshark, then pick the
    "LonTalk: ..." interfaces."""
    if install:
        click.echo(f"installed {_install(install_dir)}")
        return
    if extcap_interfaces:
        _print_interfaces()
        return
    if extcap_interface and extcap_interface not in INTERFACES:
        raise click.ClickException(f"unknown extcap interface {extcap_interface!r} "
                                   f"({', '.join(INTERFACES)})")
    if extcap_dlts:
        _print_dlts(extcap_interface or "")
        return
    if extcap_config:
        if not extcap_interface:
            raise click.ClickException("--extcap-config needs --extcap-interface")
        _print_config(extcap_interface)
        return
    accept = None
    if extcap_capture_filter:
        from .live import LiveError, capture_filter
        try:
            accept = capture_filter(extcap_capture_filter)
        except LiveError as e:
            if not capture:        # Wireshark's filter check: an error line on stdout = invalid
                click.echo(str(e))
                return
            raise click.ClickException(str(e)) from None
        if not capture:
            return                 # valid: nothing on stdout
    if not capture:
        click.echo(ctx.get_help())
        return
    if not fifo or not extcap_interface:
        raise click.ClickException("--capture needs --fifo and --extcap-interface")
    _run_capture(extcap_interface, fifo, device, framing, baud, netdev, raw_user0, accept)


def _run_capture(iface, fifo, device, framing, baud, netdev, raw_user0, accept=None) -> None:
    from .live import LiveError, open_source
    from .pcapwriter import LINKTYPE_USER0, LINKTYPE_USER2, PcapngWriter, wrap_cnip
    if iface == "lonscope-serial":
        spec = f"serial:{device}"
        kw = {"framing": framing, "baud": baud or None}
    else:
        spec = f"lon:{netdev}"
        kw = {}
    try:
        src = open_source(spec, **kw)
    except LiveError as e:
        # Wireshark shows extcap stderr to the user
        raise click.ClickException(str(e)) from None
    stopping = [False]

    def _stop(signum, frame):
        stopping[0] = True
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    seq = 0
    try:
        with open(fifo, "wb", buffering=0) as fh:
            w = PcapngWriter(fh, linktype=LINKTYPE_USER0 if raw_user0 else 1)
            w.flush()
            while not stopping[0]:
                recs = src.poll()
                if not recs and getattr(src, "closed", False):
                    break
                for rec in recs:
                    if rec.linktype == 0x950:
                        rec = sicb_to_record(rec)
                        if rec is None:
                            continue
                    if accept is not None and not accept(rec):
                        continue
                    if not raw_user0 and rec.linktype in (LINKTYPE_USER0, LINKTYPE_USER2):
                        seq += 1
                        data = wrap_cnip(rec.data, seq, rec.ts_ns // 1_000_000, False, seq)
                        rec = rec._replace(data=data, linktype=1, orig_len=len(data))
                    w.write(rec)
                if recs:
                    w.flush()
    except BrokenPipeError:
        pass            # Wireshark closed the pipe: stop quietly
    except LiveError as e:
        raise click.ClickException(str(e)) from None
    finally:
        src.close()
