"""`lonscope audit CAPTURE [--keys FILE] [-T text|json]`: security findings; exit status 1
when any finding is high or critical."""
from __future__ import annotations

import json
import os
import sys

import click


class AuditError(click.ClickException):
    """A one-line error; exit status 2 (1 means: high/critical findings)."""
    exit_code = 2


def _keys(keys_path, key_items):
    if not keys_path and not key_items and not os.environ.get("LONSCOPE_KEYS"):
        return None
    from .keyring import KeyRingError, load_keys
    try:
        return load_keys(keys_path, extra=list(key_items))
    except KeyRingError as e:
        raise AuditError(str(e)) from None


def _text(findings, out, summary) -> None:
    if not findings:
        out.write("No findings.\n")
    for f in findings:
        frames = ", ".join(str(x) for x in f["frames"][:12])
        if f.get("evidence_count", 0) > 12 or len(f["frames"]) > 12:
            # evidence_count: every observation behind the finding (APDUs, messages or
            # incidents), of which `frames` lists the first ones
            frames += f", … ({max(f.get('evidence_count', 0), len(f['frames']))} in all)"
        out.write(f"[{f['severity'].upper()}] {f['id']} {f['rule']}: {f['title']}\n")
        if f.get("message"):
            out.write(f"    {f['message']}\n")
        if frames:
            out.write(f"    evidence frames: {frames}\n")
        if f.get("assoc_id") is not None:
            out.write(f"    association: {f['assoc_id']}\n")
        out.write(f"    why: {f['explanation']}\n")
        out.write(f"    fix: {f['recommendation']}\n\n")
    out.write(summary + "\n")


@click.command(name="audit")
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--keys", "keys_path", metavar="FILE", help="TOML key ring.")
@click.option("--key", "key_items", multiple=True, metavar="NAME=HEX", help="A key on the command line; repeatable.")
@click.option("-T", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output format.")
def command(captures, keys_path, key_items, fmt):
    """Security audit of a capture: rules with severity, explanation, recommendation and
    evidence frames.  Exit status 1 if any finding is high or critical."""
    from .audit import SEVERITIES, has_high
    from .capture import CaptureError, open_reader
    from .pipeline import Pipeline
    keys = _keys(keys_path, key_items)
    all_findings = []
    for path in captures:
        if not os.path.exists(path):
            raise AuditError(f"{path}: no such file")
        try:
            reader = open_reader(path)
        except (CaptureError, OSError, ValueError) as e:
            raise AuditError(str(e)) from None
        pipe = Pipeline(keys=keys)
        try:
            for rec in reader:
                pipe.feed(rec, path)
        except (CaptureError, OSError, ValueError) as e:
            click.echo(f"lonscope: {path}: {e}", err=True)
        if getattr(reader, "error", None):
            # a damaged capture is audited up to the damage
            click.echo(f"lonscope: {reader.error}", err=True)
        pipe.finish()
        st = pipe.stage("audit")
        found = st.findings() if st is not None else []
        for f in found:
            f = dict(f)
            if len(captures) > 1:
                f["file"] = os.path.basename(path)
            all_findings.append(f)
    counts = {s: sum(1 for f in all_findings if f["severity"] == s) for s in SEVERITIES}
    summary = "Findings: " + ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES))
    if fmt == "json":
        json.dump({"findings": all_findings, "counts": counts}, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        _text(all_findings, sys.stdout, summary)
    sys.stdout.flush()
    if has_high(all_findings):
        sys.exit(1)
