"""Command line entry point (`lonscope`).  Sub-commands live in analyzer/cmd_<name>.py,
each defining a click command named `command`; they are loaded lazily so that
`lonscope decode` does not import the TUI."""
from __future__ import annotations

import importlib
import sys

import click

COMMANDS = {
    "open": "analyzer.cmd_open",
    "decode": "analyzer.cmd_decode",
    "audit": "analyzer.cmd_audit",
    "export": "analyzer.cmd_export",
    "sniff": "analyzer.cmd_sniff",
    "simulate": "analyzer.cmd_simulate",
    "fields": "analyzer.cmd_fields",
    "extcap": "analyzer.cmd_extcap",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [n for n, m in COMMANDS.items() if importlib.util.find_spec(m) is not None]

    def get_command(self, ctx, name):
        mod = COMMANDS.get(name)
        if mod is None or importlib.util.find_spec(mod) is None:
            return None
        return importlib.import_module(mod).command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lonscope")
def cli():
    """lonscope: DLMS/COSEM over ISO/IEC 14908 (LonWorks, OSGP) and IP protocol analyzer."""


class UserError(click.ClickException):
    """A one-line error for the user (no traceback)."""


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="lonscope", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
