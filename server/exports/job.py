"""One export: `open_export` checks the request against the user's role,
areas and readable forms, opens its `Snapshot`, and attaches the body in the
asked format; the caller audits `Export.details` and streams `Export.chunks`.
"""
import functools
import os
import tempfile
from dataclasses import dataclass, field

from .cells import TextTooLong
from .columns import Tally, _definition, layout
from .query import (CHUNK, ExportError, Filters, Snapshot, area_clause, narrowed_areas,
                    parse_after, parse_moment)
from .writers import csv_chunks, jsonl_chunks, zip_chunks
from .xlsx import file_chunks, write_xlsx, write_xlsx_interleaved

FORMATS = ("csv", "xlsx", "jsonl")
ALL_FORMATS = ("xlsx", "zip")


class ExportDenied(ExportError):
    """The user may not export this (403)."""


class ExportNotFound(ExportError):
    """No such form, version or repeat (404)."""


CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "zip": "application/zip",
}


@dataclass
class Export:
    """A prepared export: its snapshot is open, its body not yet produced.

    `chunks` yields the body; `close()` ends the snapshot and removes any
    temporary file (call it whether or not `chunks` was consumed).
    """
    filename: str
    content_type: str
    count: int                    # main rows (records) in the export
    next_since: str | None        # the newest commit time in the snapshot
    next_after: int               # pass as `after` to continue exactly (Snapshot.next_after)
    forms: list
    restricted: list              # restricted forms included (audited as reads)
    details: dict                 # what the audit log records
    chunks: object = None
    length: int | None = None
    tally: Tally = field(default_factory=Tally)
    _cleanup: list = field(default_factory=list)

    def close(self):
        while self._cleanup:
            self._cleanup.pop()()


def _readable_forms(catalog, user):
    """{form_id: [CompiledForm, ...]} of every form the user may read."""
    hidden = set(catalog.unreadable_forms(user))
    forms = {}
    for compiled in catalog.all():
        forms.setdefault(compiled.id, []).append(compiled)
    return {fid: versions for fid, versions in sorted(forms.items()) if fid not in hidden}


def open_export(path, catalog, user, target, fmt, *, area=None, since=None, until=None,
                after=None, version=None, include_deleted=False, bom=False, repeat=None,
                tz="Asia/Ho_Chi_Minh", tmpdir=None, chunk=CHUNK):
    """Check an export request and open its snapshot.

    :param path: the SQLite database file.
    :param catalog: the published forms (`server.catalog.Catalog`).
    :param user: {username, role, areas}; a health worker may not export.
    :param target: a form id, or "all".
    :param fmt: csv/xlsx/jsonl for a form; xlsx/zip for "all".
    :param since, until: ISO 8601 strings (inclusive / exclusive, commit time).
    :param after: a token (str or int) from an earlier export's `next_after`:
        only the records changed since that export.
    :param repeat: CSV of one form only: export that repeat's entries.
    :param chunk: records read from the database per query.
    :raises ExportError, ExportDenied, ExportNotFound: with a clear message.
    """
    if user["role"] not in ("supervisor", "admin"):
        raise ExportDenied("role", "Only supervisors and admins may export records.")
    if area is not None:
        from schemas.wire import AREA_RE
        if not AREA_RE.match(area):
            raise ExportError("area", "area must be an area code like QN.LM.03, "
                              f"not {area[:40]!r}.")
    scopes = narrowed_areas(user.get("areas") or [], area, user["role"] == "admin")
    if scopes == []:
        raise ExportDenied("area", f"Area {area} is outside your areas.")
    readable = _readable_forms(catalog, user)
    if target == "all":
        if fmt not in ALL_FORMATS:
            raise ExportError("format", f"all.{fmt} is not offered; use all.xlsx or all.zip.")
        if version is not None or repeat is not None:
            raise ExportError("version" if version is not None else "repeat",
                              "version and repeat apply to a single form's export.")
        chosen = readable
    else:
        if fmt not in FORMATS:
            raise ExportError("format", f"A form exports as csv, xlsx or jsonl, not {fmt!r}.")
        versions = [f for f in catalog.all() if f.id == target]
        if not versions:
            raise ExportNotFound("form", f"No published form {target!r}.")
        if target not in readable:
            raise ExportDenied("form", f"Records of {target} are restricted to "
                               f"{_definition(versions[-1]).get('restricted_to')}.")
        if version is not None:
            versions = [f for f in versions if f.version == version]
            if not versions:
                raise ExportNotFound("version", f"{target} has no published version {version}.")
        chosen = {target: versions}
    layouts = [layout(v, include_deleted) for v in chosen.values()]
    repeat_layout = None
    if repeat is not None:
        if fmt != "csv":
            raise ExportError("repeat", "repeat= applies to CSV; XLSX has a sheet per repeat "
                              "and JSONL nests the entries.")
        repeat_layout = next((r for r in layouts[0].repeats if r.field == repeat), None)
        if repeat_layout is None:
            raise ExportNotFound("repeat", f"{target} has no repeat field {repeat!r}.")
    where, params = area_clause(scopes)
    filters = Filters(where, params,
                      since=parse_moment(since, tz, "since") if since else None,
                      until=parse_moment(until, tz, "until") if until else None,
                      after=(parse_after(str(after)) if after is not None and after != ""
                             else None),
                      version=version, include_deleted=include_deleted)
    restricted = [fid for fid, v in chosen.items() if _definition(v[-1]).get("restricted_to")]
    details = {"target": target, "format": fmt, "forms": list(chosen),
               "filters": {"area": area, "since": filters.since, "until": filters.until,
                           "after": filters.after,
                           "version": version, "include_deleted": include_deleted,
                           "repeat": repeat}}
    snapshot, job = Snapshot(path), None
    try:
        if filters.after is not None and filters.after > snapshot.last_seq:
            # A token no export of this database gave: one from another
            # server, or from before a restore. Exporting "nothing new"
            # would silently skip every change since.
            raise ExportError("after", f"after={filters.after} is past the newest change "
                              f"on this server ({snapshot.last_seq}): was the database "
                              "restored from a backup? Export everything (no after) once.")
        count = snapshot.count(list(chosen), filters)
        details["rows"] = count
        name = target if repeat is None else f"{target}.{repeat}"
        job = Export(export_filename(name, fmt), CONTENT_TYPES[fmt], count,
                     snapshot.last_updated_at, snapshot.next_after(filters), list(chosen), restricted, details)
        job._cleanup.append(snapshot.close)
        read = functools.partial(snapshot.records, chunk=chunk)
        _attach_body(job, snapshot, read, layouts, filters, fmt, bom, repeat_layout,
                     tmpdir)
    except BaseException:
        if job is not None:
            job.close()            # the snapshot, and a half-built XLSX file
        snapshot.close()
        raise
    return job


def export_filename(form, fmt):
    """The download name: `<form>.<fmt>` (`all.xlsx`, `all.zip`)."""
    return f"{form}.{fmt}"


def _closing(chunks, job):
    """Yield `chunks`, then close the job, also when the client goes away."""
    try:
        yield from chunks
    finally:
        job.close()


def _attach_body(job, snapshot, read, layouts, filters, fmt, bom, repeat_layout, tmpdir):
    if fmt == "xlsx":
        # Built now, in constant memory, into a temporary file: XLSX is a zip
        # whose directory comes last, so it cannot be sent before it is whole.
        handle, path = tempfile.mkstemp(suffix=".xlsx", prefix="fieldsync-export-", dir=tmpdir)
        os.close(handle)
        job._cleanup.append(lambda: _unlink(path))
        try:
            if len(layouts) == 1:
                write_xlsx(path, [(layouts[0], read(layouts[0].form, filters))],
                           tally=job.tally)
            else:
                records = read([lay.form for lay in layouts], filters)
                write_xlsx_interleaved(path, layouts, records, tally=job.tally)
        except TextTooLong as exc:
            raise ExportError("format", f"{exc}; export this form as CSV or JSONL.") from None
        snapshot.close()
        job.length = os.path.getsize(path)
        job.chunks = _closing(file_chunks(path), job)
    elif fmt == "zip":
        parts = [(lay, (lambda form=lay.form: read(form, filters)))
                 for lay in layouts]
        job.chunks = _closing(zip_chunks(parts, bom=bom, tally=job.tally), job)
    elif fmt == "csv":
        lay = layouts[0]
        job.chunks = _closing(csv_chunks(read(lay.form, filters), lay, bom=bom,
                                         repeat=repeat_layout, tally=job.tally), job)
    else:
        lay = layouts[0]
        job.chunks = _closing(jsonl_chunks(read(lay.form, filters), lay,
                                           tally=job.tally), job)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
