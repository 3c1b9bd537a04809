"""`lonscope simulate SCENARIO -o OUT.pcapng [--seed N] [--packets N | --duration T]`."""
from __future__ import annotations

import click


@click.command("simulate")
@click.argument("scenario", required=False)
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), help="capture to write (pcapng)")
@click.option("--seed", type=int, default=1, show_default=True, help="random seed (same seed, same bytes)")
@click.option("--packets", type=click.IntRange(min=1), default=None, help="stop after N packets")
@click.option("--duration", type=float, default=None, help="simulated seconds of traffic")
@click.option("--meters", type=click.IntRange(1, 200), default=None, help="number of meters in the fleet")
@click.option("--no-truth", is_flag=True, help="do not write OUT.truth.json")
@click.option("--wireshark", "for_wireshark", is_flag=True,
              help="also write OUT.wireshark.pcapng: power-line frames wrapped in CN/IP for stock Wireshark")
@click.option("--list", "list_", is_flag=True, help="list the scenarios and exit")
def command(scenario, output, seed, packets, duration, meters, no_truth, for_wireshark, list_):
    """Generate realistic traffic with ground truth: OUT.pcapng, OUT.truth.json, OUT.keys.toml."""
    from analyzer.simulate import list_scenarios, simulate
    if list_:
        for name, desc in list_scenarios():
            click.echo(f"{name:<12} {desc}")
        return
    if not scenario:
        raise click.UsageError("missing SCENARIO (see --list)")
    names = [n for n, _ in list_scenarios()]
    if scenario not in names:
        raise click.ClickException(f"unknown scenario {scenario!r} (one of: {', '.join(names)})")
    if not output:
        raise click.UsageError("missing -o OUT.pcapng")
    if packets is not None and duration is not None:
        raise click.UsageError("--packets and --duration are exclusive")
    if duration is not None and duration <= 0:
        raise click.UsageError("--duration must be positive")
    try:
        res = simulate(scenario, output, seed=seed, packets=packets, duration=duration, meters=meters,
                       truth=not no_truth)
    except OSError as e:
        raise click.ClickException(f"cannot write {output}: {e.strerror}")
    click.echo(f"{res['capture']}: {res['packets']} packets, {res['findings']} expected findings"
               + (f"; truth {res['truth']}" if res["truth"] else "") + f"; keys {res['keys']}")
    if for_wireshark:
        from analyzer.capture import read_capture
        from analyzer.pcapwriter import export_for_wireshark
        from analyzer.simulate import out_paths
        cap = out_paths(output)[0]
        ws = cap.with_name(cap.name[:-len(".pcapng")] + ".wireshark.pcapng" if cap.name.endswith(".pcapng")
                           else cap.stem + ".wireshark.pcapng")
        n = export_for_wireshark(read_capture(str(cap)), str(ws))
        click.echo(f"{ws}: {n} packets for Wireshark (raw LonTalk frames wrapped in CN/IP, UDP 1628)")
