"""`lonscope fields`: the field registry, like `tshark -G fields`."""
from __future__ import annotations

import sys

import click


def registry_rows(prefix: str = "") -> list[tuple[str, str, str]]:
    """(name, type, description) of every registered field, sorted by name."""
    from dissectors import load_all
    from dissectors.core import REGISTRY
    load_all()
    import analyzer.filters  # noqa: F401  (registers frame.* / _ws.* names)
    try:
        from .pipeline import _load_stage_modules
        _load_stage_modules()          # stages register their fields too
    except Exception:                  # a broken stage must not hide the registry
        pass
    return [(f.name, f.type, f.desc) for name, f in sorted(REGISTRY.items())
            if name.startswith(prefix)]


@click.command("fields")
@click.option("--prefix", default="", metavar="PREFIX", help="Only fields whose name starts with PREFIX (e.g. lon.).")
@click.option("--labels", is_flag=True, help="Also print value labels (name, value, label).")
def command(prefix, labels):
    """Print the field registry: name, type, description (tab separated)."""
    from dissectors.core import REGISTRY
    out = []
    for name, ftype, desc in registry_rows(prefix):
        out.append(f"{name}\t{ftype}\t{desc}")
        if labels:
            f = REGISTRY[name]
            for k, v in (f.labels or {}).items():
                out.append(f"\t{k}\t{v}")
    try:
        sys.stdout.write("\n".join(out) + ("\n" if out else ""))
        sys.stdout.flush()
    except BrokenPipeError:
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
