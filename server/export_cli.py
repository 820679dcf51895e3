"""`fieldsync-server export FORM|all --format csv|xlsx|jsonl|zip [--area A] [--out FILE]`.

The same export as the API, run on the server itself with an admin's view
(every area, every form), audited as user `cli`. With `--out` the file is
written next to its final name as `FILE.part` and renamed only once whole, so
an interrupted export never leaves a file that looks complete.
"""
import os
import sys

import click

from . import exports
from .auth import audit
from .catalog import Catalog
from .db import write_transaction

CLI_USER = {"username": "cli", "role": "admin", "areas": []}


@click.command()
@click.argument("target", metavar="FORM|all")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx", "jsonl", "zip"]),
              default=None, help="csv, xlsx or jsonl for a form; xlsx or zip for all "
              "[default: csv for a form, xlsx for all].")
@click.option("--area", help="Only this area and its sub-areas, e.g. QN.LM.")
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="Write to FILE (default: standard output, CSV and JSONL only).")
@click.option("--since", help="Only records committed at or after this ISO 8601 time.")
@click.option("--until", help="Only records committed before this ISO 8601 time.")
@click.option("--version", "version", type=click.IntRange(1), help="Only this form version.")
@click.option("--include-deleted", is_flag=True,
              help="Add deleted records (and a deleted column).")
@click.option("--bom", is_flag=True, help="Start CSV files with a UTF-8 BOM (for Excel).")
@click.option("--repeat", help="CSV of one form: the entries of this repeat field instead.")
@click.pass_context
def export_command(ctx, target, fmt, area, out, since, until, version, include_deleted, bom,
                   repeat):
    """Export the current state of FORM (or all forms) from the server's database."""
    from .cli import _open
    fmt = fmt or ("xlsx" if target == "all" else "csv")
    if out is None and fmt in ("xlsx", "zip") and sys.stdout.isatty():
        raise click.ClickException(f"A {fmt} file cannot go to a terminal; add --out FILE.")
    db = _open(ctx)
    try:
        job = exports.open_export(
            ctx.obj["db_path"], Catalog(db), CLI_USER, target, fmt, area=area, since=since,
            until=until, version=version, include_deleted=include_deleted, bom=bom,
            repeat=repeat, tmpdir=os.path.dirname(os.path.abspath(out)) if out else None)
    except exports.ExportError as exc:
        raise click.ClickException(str(exc))
    try:
        with write_transaction(db):
            audit(db, CLI_USER["username"], "export", job.details)
            if job.restricted:
                audit(db, CLI_USER["username"], "restricted_read",
                      {"forms": job.restricted, "via": "export", "rows": job.count})
        if out is None:
            stream = sys.stdout.buffer
            for data in job.chunks:
                stream.write(data)
            stream.flush()
        else:
            _write_file(job, out)
    finally:
        job.close()
    if out is not None:
        click.echo(f"Exported {job.count} {target} records to {out}.", err=True)


def _write_file(job, out):
    """Write the export to `out` atomically, with a progress bar on a terminal."""
    part = out + ".part"
    show = sys.stderr.isatty()
    try:
        with open(part, "wb") as handle, click.progressbar(
                length=max(job.count, 1), label="Exporting", file=sys.stderr,
                hidden=not show) as bar:
            done = 0
            for data in job.chunks:
                handle.write(data)
                rows = job.tally.total
                bar.update(rows - done)
                done = rows
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, out)
    except BaseException:
        try:
            os.unlink(part)
        except FileNotFoundError:
            pass
        raise
