"""The streamed writers: CSV, JSON Lines and zip (a CSV per form and per
repeat), each yielding byte chunks as the records are read, so memory stays
flat however many there are. XLSX is built in a file instead: see xlsx.py."""
import codecs
import csv
import io
import json
import zipfile

from .cells import csv_cell
from .columns import TRAILING, Tally, repeat_rows, row_values


class _Buffer:
    """A file-like sink whose contents are taken out between rows."""

    def __init__(self):
        self.parts = []
        self.size = 0

    def write(self, data):
        self.parts.append(data)
        self.size += len(data)
        return len(data)

    def flush(self):
        pass

    def take(self):
        data = b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in self.parts)
        self.parts.clear()
        self.size = 0
        return data


def csv_chunks(records, lay, *, bom=False, repeat=None, tally=None, chunk_bytes=64 * 1024):
    """Stream one form (or one of its repeats) as UTF-8 CSV, in byte chunks.

    :param records: an iterator of record dicts (deleted ones already filtered).
    :param lay: the form's `Layout`.
    :param bom: start with a UTF-8 byte order mark (Excel on Windows needs it
        to read Vietnamese text as UTF-8).
    :param repeat: a `RepeatLayout` of `lay` to write its entries instead.
    :param tally: a `Tally` counting the rows written.
    """
    tally = tally if tally is not None else Tally()
    sink = _Buffer()
    writer = csv.writer(sink, lineterminator="\r\n")   # RFC 4180
    if bom:
        sink.write(codecs.BOM_UTF8)
    columns = repeat.columns if repeat else lay.columns
    writer.writerow([c.name for c in columns])
    name = repeat.name if repeat else lay.form
    tally.rows.setdefault(name, 0)
    for record in records:
        rows = repeat_rows(record, repeat) if repeat else [row_values(record, lay)]
        for values in rows:
            writer.writerow([csv_cell(v, c) for v, c in zip(values, columns)])
            tally.add(name)
        if sink.size >= chunk_bytes:
            yield sink.take()
    tail = sink.take()
    if tail:
        yield tail


def jsonl_record(record):
    """One record as a JSONL object: the stored values exactly."""
    out = {"id": record["id"], "form": record["form"],
           "form_version": record["form_version"], "area": record["area"],
           "data": record.get("data") or {}, "computed": record.get("computed") or {}}
    for name in TRAILING:
        out[name] = record.get(name)
    out["deleted"] = bool(record.get("deleted"))
    return out


def jsonl_chunks(records, lay=None, *, tally=None, chunk_bytes=64 * 1024):
    """Stream records as JSON Lines (UTF-8, one object per line)."""
    tally = tally if tally is not None else Tally()
    name = lay.form if lay else "records"
    tally.rows.setdefault(name, 0)
    parts, size = [], 0
    for record in records:
        line = json.dumps(jsonl_record(record), ensure_ascii=False,
                          separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        parts.append(data)
        size += len(data)
        tally.add(name)
        if size >= chunk_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


class _ZipSink(io.RawIOBase):
    """A write-only, unseekable sink: zipfile then writes data descriptors,
    which is what lets a zip be streamed without knowing sizes upfront."""

    def __init__(self):
        self.buffer = _Buffer()

    def writable(self):
        return True

    def write(self, data):
        return self.buffer.write(bytes(data))


def zip_chunks(parts, *, bom=False, tally=None):
    """Stream a zip holding one CSV per form and one per repeat.

    :param parts: (Layout, records_factory) pairs; `records_factory()` gives a
        fresh iterator of the form's records and is called once for the form
        file and once per repeat (inside one read snapshot, so they agree).
    """
    tally = tally if tally is not None else Tally()
    sink = _ZipSink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED)
    for lay, records_factory in parts:
        targets = [(f"{lay.form}.csv", None)]
        targets += [(f"{r.name}.csv", r) for r in lay.repeats]
        for filename, repeat in targets:
            with archive.open(filename, "w", force_zip64=True) as member:
                for data in csv_chunks(records_factory(), lay, bom=bom, repeat=repeat,
                                       tally=tally):
                    member.write(data)
                    out = sink.buffer.take()
                    if out:
                        yield out
            out = sink.buffer.take()
            if out:
                yield out
    archive.close()
    out = sink.buffer.take()
    if out:
        yield out
