"""`lonscope open`: the terminal UI (filter bar, packet list, details, hex, views)."""
from __future__ import annotations

import os
import sys

import click


def _has_tty() -> bool:
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _check_capture(path: str) -> None:
    if not os.path.exists(path):
        raise click.ClickException(f"{path}: no such file")
    if os.path.isdir(path):
        raise click.ClickException(f"{path}: is a directory")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise click.ClickException(f"{path}: {e.strerror or e}") from None


@click.command("open")
@click.argument("captures", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--keys", "keys_path", metavar="FILE", help="TOML key ring.")
@click.option("--key", "key_items", metavar="NAME=HEX", multiple=True,
              help="Extra key, e.g. ek=000102… (repeatable).")
@click.option("-Y", "--display-filter", "display_filter", metavar="FILTER",
              help="Display filter applied on opening.")
@click.option("--profile", metavar="FILE", help="Adaptation-layer profile (TOML).")
@click.option("--live", metavar="SOURCE",
              help="Live source: file:PATH tails a growing pcap/pcapng; serial:DEV, iface:NAME, lon:NAME, "
                   "tshark:NAME as for `lonscope sniff` (auto-scroll, pause with Space).")
def command(captures, keys_path, key_items, display_filter, profile, live):
    """Open captures in the terminal UI (several files are merged by time)."""
    if not captures and not live:
        raise click.ClickException("give a capture file (lonscope open CAPTURE) or --live SOURCE")
    for p in captures:
        _check_capture(p)
    live_source = None
    if live:
        if live.startswith("file:") or ":" not in live:
            src = live[5:] if live.startswith("file:") else live
            if not os.path.exists(src):
                raise click.ClickException(f"{src}: no such file (start the capture writing to it first)")
            live = "file:" + src
        elif not _has_tty():
            raise click.ClickException("lonscope open needs an interactive terminal (no TTY); "
                                       "use `lonscope sniff` for non-interactive capture")
        else:
            try:
                from .live import LiveError, open_source
            except ImportError:
                raise click.ClickException("this build has no live sources (analyzer.live)") from None
            try:
                live_source = open_source(live)
            except LiveError as e:
                raise click.ClickException(str(e)) from None
            except OSError as e:
                raise click.ClickException(f"{live}: {e.strerror or e}") from None
    from .cmd_decode import load_keyring, load_profile
    keys = load_keyring(keys_path, key_items)
    prof = load_profile(profile)
    if display_filter:
        from .filters import FilterError, compile_filter
        try:
            compile_filter(display_filter)
        except FilterError as e:
            raise click.ClickException(f"invalid display filter: {e}") from None
    if not _has_tty():
        raise click.ClickException("lonscope open needs an interactive terminal (no TTY); "
                                   "use `lonscope decode` for non-interactive output")
    from .tui.app import LonscopeApp
    from .tui.session import Session
    session = Session(list(captures), keys=keys, profile=prof, display_filter=display_filter,
                      live=live, key_path=keys_path, key_extra=list(key_items), live_source=live_source)
    app = LonscopeApp(session, keyring=keys, live=bool(live))
    try:
        app.run()
    finally:
        session.stop()
