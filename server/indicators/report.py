"""`fieldsync-server report indicators|worklist`: the API's figures as files.

The command runs with the database file, so with an operator's (admin's)
scope: every area, cp_report counts included. Formats:
- json: the API's answer, as it is;
- csv: one row per indicator and breakdown group (`breakdown`, `group`
  empty on the headline row), counts beside the percentage;
- xlsx: a sheet "indicators" with the headline figures, then one sheet per
  breakdown (ethnicity, mother_age, sex, area, ...), counts beside percentages
  (DOMAIN §2: small numbers).
A work list: json, or csv/xlsx with one row per person.
"""
import csv
import io
import json
import os

import click
import xlsxwriter

from ..catalog import Catalog
from ..db import connect
from .. import migrations, worklists
from . import query

OPERATOR = {"username": "cli", "role": "admin", "areas": []}
HEAD = ("id", "label", "numerator", "denominator", "value_percent_or_count")


def _db(ctx):
    path = ctx.find_root().obj["db_path"]
    db = connect(path)
    if migrations.current_version(db) < migrations.latest_version():
        raise click.ClickException(f"The database {path} is not initialised (or is older "
                                   "than this server); run `fieldsync-server init` first.")
    return db


def _fail(exc):
    raise click.BadParameter(str(exc), param_hint=f"--{exc.field}")


def indicator_rows(answer):
    """(breakdown, group, id, label, numerator, denominator, value) rows."""
    for ind in answer["indicators"]:
        yield ("", "", ind["id"], ind["label"], ind["numerator"], ind["denominator"],
               ind["value"])
        for name, groups in ind["by"].items():
            for group, cell in groups.items():
                yield (name, group, ind["id"], ind["label"], cell["numerator"],
                       cell["denominator"], cell["value"])


def write_indicators(answer, fmt, out):
    if fmt == "json":
        out.write(json.dumps(answer, ensure_ascii=False, indent=1).encode())
        return
    rows = list(indicator_rows(answer))
    if fmt == "csv":
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(("breakdown", "group", *HEAD))
        w.writerows(rows)
        out.write(text.getvalue().encode("utf-8"))
        return
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sheets = {}
    for row in rows:
        name = row[0] or "indicators"
        sheet = sheets.get(name)
        if sheet is None:
            sheet = sheets[name] = [book.add_worksheet(name[:31]), 1]
            head = HEAD if name == "indicators" else ("group", *HEAD)
            sheet[0].write_row(0, 0, head)
        values = row[2:] if name == "indicators" else (row[1], *row[2:])
        sheet[0].write_row(sheet[1], 0, [v if v is not None else "" for v in values])
        sheet[1] += 1
    book.close()


WORKLIST_HEAD = ("person_id", "name", "area", "fact", "date", "days_overdue", "details")


def write_worklist(answer, fmt, out):
    if fmt == "json":
        out.write(json.dumps(answer, ensure_ascii=False, indent=1).encode())
        return
    rows = [(r["person"]["id"], r["person"]["name"] or "", r["area"], r["fact"], r["date"],
             r["days_overdue"], json.dumps(r.get("details") or {}, ensure_ascii=False))
            for r in answer["rows"]]
    if fmt == "csv":
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(WORKLIST_HEAD)
        w.writerows(rows)
        out.write(text.getvalue().encode("utf-8"))
        return
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = book.add_worksheet(answer["name"][:31])
    sheet.write_row(0, 0, WORKLIST_HEAD)
    for i, row in enumerate(rows, start=1):
        sheet.write_row(i, 0, row)
    book.close()


def _emit(writer, answer, fmt, path):
    if path is None:
        buf = io.BytesIO()
        writer(answer, fmt, buf)
        click.get_binary_stream("stdout").write(buf.getvalue())
        return
    part = path + ".part"
    with open(part, "wb") as fh:
        writer(answer, fmt, fh)
    os.replace(part, path)
    click.echo(f"Wrote {path}", err=True)


@click.group()
def report():
    """Indicator tables and work lists (DOMAIN.md §2, issue 15)."""


FORMAT = click.option("--format", "fmt", type=click.Choice(["csv", "xlsx", "json"]),
                      default="json", show_default=True)
OUT = click.option("--out", "out", default=None, help="Write to this file (default stdout).")


@report.command("indicators")
@click.option("--area", default=None, help="An area code (default: every area).")
@click.option("--from", "start", required=True, help="First day, YYYY-MM-DD.")
@click.option("--to", "end", required=True, help="Last day, YYYY-MM-DD.")
@click.option("--lang", type=click.Choice(["vi", "en"]), default="vi", show_default=True)
@FORMAT
@OUT
@click.pass_context
def indicators_cmd(ctx, area, start, end, lang, fmt, out):
    """The indicator table for an area and a period."""
    db = _db(ctx)
    try:
        answer = query.indicator_report(db, OPERATOR, Catalog(db), query.parse_area(area),
                                        query.parse_date(start, "from"),
                                        query.parse_date(end, "to"), lang)
    except query.BadParameter as exc:
        _fail(exc)
    _emit(write_indicators, answer, fmt, out)


@report.command("worklist")
@click.argument("name", type=click.Choice(worklists.NAMES))
@click.option("--area", default=None, help="An area code (default: every area).")
@click.option("--on", default=None, help="Reference date, YYYY-MM-DD (default today).")
@FORMAT
@OUT
@click.pass_context
def worklist_cmd(ctx, name, area, on, fmt, out):
    """One work list for an area."""
    db = _db(ctx)
    try:
        answer = worklists.worklist(db, OPERATOR, name, query.parse_area(area),
                                    query.parse_date(on, "on", required=False))
    except query.BadParameter as exc:
        _fail(exc)
    _emit(write_worklist, answer, fmt, out)
