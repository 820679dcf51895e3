"""The export writers, read back by independent readers (csv, openpyxl, zipfile)."""
import csv
import io
import json
import sqlite3
import zipfile
from datetime import datetime, time

import openpyxl
import pytest
from hypothesis import given, settings, strategies as st
from openpyxl.utils.escape import unescape

from server import exports

BIRTH = {
    "id": "pregnancy_outcome", "version": 2, "title": "Pregnancy outcome", "restricted_to": None,
    "fields": [
        {"name": "pregnancy_id", "type": "ref", "ref": "pregnancy", "required": True},
        {"name": "outcome_date", "type": "date", "required": True},
        {"name": "outcome_time", "type": "time"},
        {"name": "mother_name", "type": "string"},
        {"name": "weight_kg", "type": "decimal"},
        {"name": "n_babies", "type": "integer"},
        {"name": "danger_signs", "type": "multi_choice",
         "choices": [{"value": "bleeding"}, {"value": "fever"}, {"value": "none"}]},
        {"name": "reported_at", "type": "datetime"},
        {"name": "breastfed", "type": "boolean"},
        {"name": "gps", "type": "geopoint"},
        {"name": "baby", "type": "repeat", "fields": [
            {"name": "sex", "type": "choice", "choices": [{"value": "male"}, {"value": "female"}]},
            {"name": "birth_weight_g", "type": "integer"},
            {"name": "birth_length_cm", "type": "decimal"},
            {"name": "name", "type": "string"}]},
        {"name": "ga_weeks", "type": "computed", "compute": {"fn": "ga_weeks"}},
        {"name": "nutrition_class", "type": "computed", "compute": {"fn": "x"}},
    ]}
BIRTH_V1 = {"id": "pregnancy_outcome", "version": 1, "title": "old", "restricted_to": None,
            "fields": [{"name": "old_only", "type": "string"},
                       {"name": "outcome_date", "type": "date", "required": True}]}

HEADER = ["id", "area", "pregnancy_id", "outcome_date", "outcome_time", "mother_name",
          "weight_kg", "n_babies", "danger_signs", "reported_at", "breastfed", "gps", "baby",
          "old_only", "ga_weeks", "nutrition_class",
          "created_by", "created_at", "updated_at", "device", "flags", "warnings"]

INJECTIONS = ["=cmd|' /C calc'!A0", "+1", "-x", "@a", "\tTAB", "\rCR", "'quoted", "-3.5"]


def record(n, **data):
    base = {"pregnancy_id": f"p-{n}", "outcome_date": "2025-03-01", "outcome_time": "10:30",
            "mother_name": "Nguyễn Thị Hoa", "weight_kg": 52.5, "n_babies": 2,
            "danger_signs": ["bleeding", "fever"], "reported_at": "2025-03-01T10:30:00+07:00",
            "breastfed": True, "gps": {"lat": 21.25, "lon": 107.5, "accuracy_m": 5},
            "baby": [{"sex": "female", "birth_weight_g": 2900, "birth_length_cm": 49.5,
                      "name": "Triệu Thị Mai"},
                     {"sex": "male", "birth_weight_g": 2450, "name": "Bàn Văn Quý"}]}
    base.update(data)
    return {"id": f"0193-{n:04d}", "form": "pregnancy_outcome", "form_version": 2,
            "area": "QN.LM.03", "data": base,
            "computed": {"ga_weeks": 39, "nutrition_class": None},
            "created_by": "hoa", "created_at": "2025-03-01T03:00:00.000Z",
            "updated_at": "2025-03-02T04:05:06.789Z", "device": "dev-7f3a",
            "flags": ["invalid_merge"] if n % 2 else [],
            "warnings": {"weight_kg": ["Low weight."], "baby": {"1": {"birth_weight_g": ["LBW."]}}}
            if n % 2 else None, "deleted": False}


@pytest.fixture
def lay():
    return exports.layout([BIRTH, BIRTH_V1])


def read_csv(data, bom=False):
    text = data.decode("utf-8")
    if bom:
        assert text.startswith("\ufeff")
        text = text[1:]
    else:
        assert not text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text, newline="")))


def unquote(cell):
    """Undo the documented CSV formula escape: strip one leading apostrophe."""
    return cell[1:] if cell.startswith("'") else cell


def test_header_follows_the_issue_order_newest_version_first(lay):
    assert [c.name for c in lay.columns] == HEADER
    assert [c.name for c in lay.repeats[0].columns] == [
        "parent_id", "index", "sex", "birth_weight_g", "birth_length_cm", "name"]
    assert lay.repeats[0].name == "pregnancy_outcome.baby"


def test_include_deleted_adds_a_deleted_column():
    assert exports.layout([BIRTH], include_deleted=True).columns[-1].name == "deleted"


def test_csv_reads_back_exactly_with_vietnamese_text_and_bom(lay):
    records = [record(1), record(2, mother_name="Triệu Thị Mai", weight_kg=-3.5,
                               danger_signs=[], gps=None, breastfed=False, old_only="x")]
    rows = read_csv(b"".join(exports.csv_chunks(iter(records), lay, bom=True)), bom=True)
    assert rows[0] == HEADER
    first = dict(zip(HEADER, rows[1]))
    assert first["id"] == "0193-0001" and first["area"] == "QN.LM.03"
    assert first["mother_name"] == "Nguyễn Thị Hoa"
    assert first["weight_kg"] == "52.5" and first["n_babies"] == "2"
    assert first["danger_signs"] == "bleeding;fever"
    assert first["gps"] == "21.25 107.5 5"
    assert first["baby"] == "2" and first["ga_weeks"] == "39" and first["nutrition_class"] == ""
    assert first["breastfed"] == "yes" and first["flags"] == "invalid_merge"
    assert first["warnings"] == "weight_kg: Low weight. | baby[1].birth_weight_g: LBW."
    assert first["reported_at"] == "2025-03-01T03:30:00Z"        # UTC, labelled
    assert first["created_at"] == "2025-03-01T03:00:00.000Z"
    second = dict(zip(HEADER, rows[2]))
    assert second["mother_name"] == "Triệu Thị Mai"
    assert second["weight_kg"] == "-3.5"          # a number: never escaped
    assert second["danger_signs"] == "" and second["gps"] == "" and second["old_only"] == "x"
    assert second["breastfed"] == "no" and second["flags"] == "" and second["warnings"] == ""
    assert len(rows) == 3


def test_csv_repeat_file_is_keyed_by_parent_and_index(lay):
    data = b"".join(exports.csv_chunks(iter([record(1), record(2, baby=[])]), lay,
                                       repeat=lay.repeats[0]))
    rows = read_csv(data)
    assert rows == [["parent_id", "index", "sex", "birth_weight_g", "birth_length_cm", "name"],
                    ["0193-0001", "1", "female", "2900", "49.5", "Triệu Thị Mai"],
                    ["0193-0001", "2", "male", "2450", "", "Bàn Văn Quý"]]


@pytest.mark.parametrize("text", INJECTIONS)
def test_csv_text_cells_are_neutralised_and_reversible(lay, text):
    rows = read_csv(b"".join(exports.csv_chunks(iter([record(1, mother_name=text)]), lay)))
    cell = rows[1][HEADER.index("mother_name")]
    assert cell[0] == "'"                    # no spreadsheet runs it as a formula
    assert unquote(cell) == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20))
@settings(max_examples=200, deadline=None)
def test_csv_escape_is_always_undone_by_stripping_one_apostrophe(text):
    escaped = exports.neutralise(text)
    assert escaped[:1] not in ("=", "+", "-", "@", "\t", "\r")
    assert unquote(escaped) == text


def test_negative_numbers_stay_numbers(lay):
    rec = record(1, weight_kg=-3.5, n_babies=-1)
    rows = read_csv(b"".join(exports.csv_chunks(iter([rec]), lay)))
    assert rows[1][HEADER.index("weight_kg")] == "-3.5"
    assert rows[1][HEADER.index("n_babies")] == "-1"


def test_jsonl_carries_the_stored_values_exactly(lay):
    records = [record(1, mother_name="=cmd"), record(2)]
    lines = b"".join(exports.jsonl_chunks(iter(records), lay)).decode("utf-8").splitlines()
    back = [json.loads(line) for line in lines]
    assert [b["data"] for b in back] == [r["data"] for r in records]
    assert back[0]["data"]["mother_name"] == "=cmd"
    assert back[0]["form_version"] == 2 and back[0]["flags"] == ["invalid_merge"]
    assert back[0]["warnings"] == records[0]["warnings"] and back[1]["warnings"] is None
    assert "Nguyễn" in lines[1]                   # UTF-8, not \\u escapes


def xlsx_rows(path, sheet):
    book = openpyxl.load_workbook(path, read_only=False)
    rows = [[c.value for c in row] for row in book[sheet].iter_rows()]
    return book, rows


def test_xlsx_has_typed_cells_and_child_sheets(tmp_path, lay):
    path = tmp_path / "out.xlsx"
    records = [record(1), record(2, weight_kg=-3.5, mother_name="=cmd", outcome_time="07:05:09")]
    tally = exports.write_xlsx(str(path), [(lay, iter(records))])
    assert tally.rows == {"pregnancy_outcome": 2, "pregnancy_outcome.baby": 4}
    book, rows = xlsx_rows(path, "pregnancy_outcome")
    assert book.sheetnames == ["pregnancy_outcome", "pregnancy_outcome.baby"]
    assert rows[0] == HEADER
    first = dict(zip(HEADER, rows[1]))
    assert first["outcome_date"] == datetime(2025, 3, 1)      # a real date cell
    assert first["outcome_time"] == time(10, 30)
    assert first["reported_at"] == datetime(2025, 3, 1, 3, 30)   # in UTC, as CSV
    assert first["updated_at"] == datetime(2025, 3, 2, 4, 5, 6, 789000)
    sheet = book["pregnancy_outcome"]
    for name in ("reported_at", "created_at", "updated_at"):   # every moment says UTC
        assert sheet.cell(row=2, column=HEADER.index(name) + 1).number_format.endswith('"UTC"')
    assert first["weight_kg"] == 52.5 and first["n_babies"] == 2 and first["ga_weeks"] == 39
    assert first["breastfed"] == "yes" and first["mother_name"] == "Nguyễn Thị Hoa"
    assert first["danger_signs"] == "bleeding;fever" and first["baby"] == 2
    second = dict(zip(HEADER, rows[2]))
    assert second["weight_kg"] == -3.5
    assert second["outcome_time"] == time(7, 5, 9)
    cell = book["pregnancy_outcome"].cell(row=3, column=HEADER.index("mother_name") + 1)
    assert cell.value == "=cmd" and cell.data_type == "s" and cell.quotePrefix
    _, babies = xlsx_rows(path, "pregnancy_outcome.baby")
    assert babies[1] == ["0193-0001", 1, "female", 2900, 49.5, "Triệu Thị Mai"]
    assert babies[2] == ["0193-0001", 2, "male", 2450, None, "Bàn Văn Quý"]
    assert len(babies) == 5


@pytest.mark.parametrize("text", INJECTIONS)
def test_xlsx_text_cells_are_strings_never_formulas(tmp_path, lay, text):
    path = tmp_path / "inj.xlsx"
    exports.write_xlsx(str(path), [(lay, iter([record(1, mother_name=text)]))])
    book = openpyxl.load_workbook(path)
    cell = book.active.cell(row=2, column=HEADER.index("mother_name") + 1)
    assert cell.data_type == "s" and cell.quotePrefix
    # Control characters travel as OOXML's _xHHHH_ escapes, which Excel decodes.
    assert unescape(cell.value) == text


def test_xlsx_interleaved_puts_each_form_on_its_sheet_even_empty_ones(tmp_path, lay):
    other = exports.layout([{"id": "household", "version": 1, "restricted_to": None,
                             "fields": [{"name": "head_name", "type": "string"}]}])
    hh = {"id": "h1", "form": "household", "form_version": 1, "area": "QN.LM.03",
          "data": {"head_name": "Bàn Thị Dao"}, "computed": {}, "flags": [], "deleted": False}
    empty = exports.layout([{"id": "cp_report", "version": 1, "restricted_to": None,
                             "fields": [{"name": "note", "type": "text"}]}])
    path = tmp_path / "all.xlsx"
    tally = exports.write_xlsx_interleaved(str(path), [lay, other, empty],
                                           iter([record(1), hh, record(2)]))
    assert tally.total == 3
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["pregnancy_outcome", "pregnancy_outcome.baby", "household",
                               "cp_report"]
    assert [c.value for c in book["household"][2]] == ["h1", "QN.LM.03", "Bàn Thị Dao",
                                                      None, None, None, None, None, None]
    assert book["cp_report"].max_row == 1


def test_zip_holds_one_csv_per_form_and_repeat(lay):
    other = exports.layout([{"id": "household", "version": 1, "restricted_to": None,
                             "fields": [{"name": "head_name", "type": "string"}]}])
    hh = {"id": "h1", "form": "household", "form_version": 1, "area": "QN.LM.03",
          "data": {"head_name": "Lý Thị Sáu"}, "computed": {}, "flags": [], "deleted": False}
    calls = []

    def births():
        calls.append(1)
        return iter([record(1), record(2)])

    data = b"".join(exports.zip_chunks([(lay, births), (other, lambda: iter([hh]))], bom=True))
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert archive.namelist() == ["pregnancy_outcome.csv", "pregnancy_outcome.baby.csv",
                                  "household.csv"]
    assert len(calls) == 2
    births_rows = read_csv(archive.read("pregnancy_outcome.csv"), bom=True)
    assert len(births_rows) == 3 and births_rows[0] == HEADER
    assert len(read_csv(archive.read("pregnancy_outcome.baby.csv"), bom=True)) == 5
    assert read_csv(archive.read("household.csv"), bom=True)[1][:3] == ["h1", "QN.LM.03",
                                                                        "Lý Thị Sáu"]


def test_sheet_names_are_valid_and_unique():
    taken = set()
    long = "a_very_long_form_name_that_goes_on.and_a_repeat"
    first, second = exports.sheet_name(long, taken), exports.sheet_name(long, taken)
    assert len(first) <= 31 and len(second) <= 31 and first != second
    assert exports.sheet_name("a/b[c]", taken) == "a_b_c_"


# ---------------------------------------------------------------- snapshot

SCHEMA = """CREATE TABLE records (id TEXT PRIMARY KEY, form TEXT, form_version INT, area TEXT,
state TEXT, data TEXT, computed TEXT, deleted INT, hlc TEXT, seq INT UNIQUE, created_at TEXT,
updated_at TEXT, created_by TEXT, updated_by TEXT, device TEXT, flags TEXT,
warnings TEXT)"""


def insert(conn, n, seq, form="pregnancy_outcome", area="QN.LM.03", deleted=0,
           updated_at="2025-03-02T00:00:00.000Z"):
    rec = record(n)
    # Columns named: a migrated database has more (e.g. `wire`, migration 4).
    conn.execute("INSERT INTO records (id, form, form_version, area, state, data, computed, "
                 "deleted, hlc, seq, created_at, updated_at, created_by, updated_by, device, "
                 "flags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
        rec["id"], form, 2, area, "{}", json.dumps(rec["data"]), json.dumps(rec["computed"]),
        deleted, "h", seq, rec["created_at"], updated_at, "hoa", "hoa", "dev-1",
        json.dumps(rec["flags"])])


@pytest.fixture
def dbfile(tmp_path):
    path = str(tmp_path / "r.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(SCHEMA)
    conn.close()
    return path


def test_snapshot_reads_in_chunks_with_filters(dbfile):
    conn = sqlite3.connect(dbfile, isolation_level=None)
    for n in range(1, 12):
        insert(conn, n, seq=n, area="QN.LM.03" if n % 3 else "QN.LMX",
               deleted=1 if n == 4 else 0, updated_at=f"2025-03-{n:02d}T00:00:00.000Z")
    from server import scope
    sql, params = scope.area_sql({"role": "supervisor", "areas": ["QN.LM"]})
    snap = exports.Snapshot(dbfile)
    try:
        filters = exports.Filters(sql, params)
        got = [r["id"] for r in snap.records("pregnancy_outcome", filters, chunk=2)]
        assert got == [f"0193-{n:04d}" for n in (1, 2, 5, 7, 8, 10, 11)]
        assert snap.count("pregnancy_outcome", filters) == 7
        window = exports.Filters(sql, params, since="2025-03-05T00:00:00.000Z",
                                 until="2025-03-10T00:00:00.000Z", include_deleted=True)
        assert [r["id"][-2:] for r in snap.records(None, window, chunk=3)] == ["05", "07", "08"]
    finally:
        snap.close()


def test_snapshot_is_not_torn_by_concurrent_writes(dbfile):
    """Rows committed while an export streams never appear in it, nor do
    updates change rows it has not reached yet."""
    writer = sqlite3.connect(dbfile, isolation_level=None)
    for n in range(1, 101):
        insert(writer, n, seq=n)
    snap = exports.Snapshot(dbfile)
    seen = []
    try:
        stream = snap.records("pregnancy_outcome", exports.Filters(), chunk=10)
        seen.append(next(stream))
        # Another connection commits a batch mid-export (readers never block
        # the writer in WAL mode: this would time out otherwise).
        writer.execute("BEGIN IMMEDIATE")
        for n in range(101, 151):
            insert(writer, n, seq=n)
        writer.execute("UPDATE records SET data = '{\"mother_name\": \"torn\"}'")
        writer.execute("COMMIT")
        seen.extend(stream)
    finally:
        snap.close()
    assert len(seen) == 100
    assert all(r["data"]["mother_name"] == "Nguyễn Thị Hoa" for r in seen)
    fresh = exports.Snapshot(dbfile)
    try:
        assert fresh.count("pregnancy_outcome", exports.Filters()) == 150
    finally:
        fresh.close()


def test_dates_outside_iso_stay_text_in_xlsx(tmp_path, lay):
    path = tmp_path / "bad.xlsx"
    exports.write_xlsx(str(path), [(lay, iter([record(1, outcome_date="01/03/2025")]))])
    book = openpyxl.load_workbook(path)
    assert book.active.cell(row=2, column=4).value == "01/03/2025"


def test_repeat_index_and_parent_cover_every_entry_exactly(lay):
    recs = [record(n, baby=[{"sex": "male", "birth_weight_g": n * 100 + i} for i in range(n % 4)])
            for n in range(1, 9)]
    rows = read_csv(b"".join(exports.csv_chunks(iter(recs), lay, repeat=lay.repeats[0])))[1:]
    expected = [[r["id"], str(i + 1), "male", str(n * 100 + i), "", ""]
                for n, r in enumerate(recs, start=1) for i in range(n % 4)]
    assert rows == expected


def test_a_full_sheet_continues_on_a_new_one_never_dropping_rows(tmp_path, lay):
    path = tmp_path / "big.xlsx"
    records = [record(n) for n in range(1, 6)]
    exports.write_xlsx(str(path), [(lay, iter(records))], max_rows=3)
    book = openpyxl.load_workbook(path)
    assert book.sheetnames[:2] == ["pregnancy_outcome", "pregnancy_outcome.baby"]
    assert {"pregnancy_outcome (2)", "pregnancy_outcome (3)",
            "pregnancy_outcome.baby (5)"} <= set(book.sheetnames)
    ids = [row[0] for name in book.sheetnames if "baby" not in name
           for row in list(book[name].values)[1:]]
    assert ids == [r["id"] for r in records]
    babies = [row[:2] for name in book.sheetnames if "baby" in name
              for row in list(book[name].values)[1:]]
    assert len(babies) == 10 and all(book[n]["A1"].value in ("id", "parent_id")
                                     for n in book.sheetnames)


def test_chunks_walk_the_seq_index_with_or_without_a_form_seq_index(dbfile):
    conn = sqlite3.connect(dbfile, isolation_level=None)
    conn.execute("CREATE INDEX idx_form_area ON records (form, area)")
    for n in range(1, 30):
        insert(conn, n, seq=n, form="pregnancy_outcome" if n % 2 else "household")
    wanted = [f"0193-{n:04d}" for n in range(1, 30, 2)]
    for with_index in (False, True):
        if with_index:
            conn.execute("CREATE INDEX idx_form_seq ON records (form, seq)")
        snap = exports.Snapshot(dbfile)
        try:
            assert snap._form_seq_index() is with_index
            got = [r["id"] for r in snap.records("pregnancy_outcome", exports.Filters(), chunk=4)]
            plan = " ".join(str(r) for r in snap.conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM records WHERE "
                + ("form" if with_index else "+form") + " = 'x' AND seq > 0 ORDER BY seq"))
        finally:
            snap.close()
        assert got == wanted
        assert "TEMP B-TREE" not in plan


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(st.lists(TEXT, min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_any_text_survives_csv_exactly(names):
    lay = exports.layout([BIRTH])
    records = [record(n, mother_name=name) for n, name in enumerate(names)]
    rows = read_csv(b"".join(exports.csv_chunks(iter(records), lay)))[1:]
    assert [unquote(r[HEADER.index("mother_name")]) for r in rows] == names


# Field values: decimals with a few places (Excel keeps 15 significant digits).
DECIMALS = st.integers(-10 ** 9, 10 ** 9).map(lambda n: n / 1000)


@given(st.lists(TEXT, min_size=1, max_size=8), st.lists(DECIMALS, min_size=1, max_size=8))
@settings(max_examples=40, deadline=None)
def test_any_text_and_number_survives_xlsx_exactly(tmp_path_factory, names, weights):
    lay = exports.layout([BIRTH])
    records = [record(n, mother_name=name, weight_kg=weights[n % len(weights)])
               for n, name in enumerate(names)]
    path = tmp_path_factory.mktemp("xlsx") / "p.xlsx"
    exports.write_xlsx(str(path), [(lay, iter(records))])
    rows = list(openpyxl.load_workbook(path, read_only=True)["pregnancy_outcome"].values)[1:]
    name_at, weight_at = HEADER.index("mother_name"), HEADER.index("weight_kg")
    # An empty text is an empty cell; everything else comes back exactly.
    assert [unescape(r[name_at]) if r[name_at] is not None else "" for r in rows] == names
    assert [r[weight_at] for r in rows] == [r["data"]["weight_kg"] for r in records]


def test_a_migrated_database_exports_along_the_form_seq_index(db_path):
    """`init` creates records(form, seq) (migration 2) and the export's chunk
    query, exactly as sent with a supervisor's area and a `since`, walks it:
    one index range in seq order, no sort per chunk."""
    from server import scope
    conn = sqlite3.connect(db_path, isolation_level=None)
    for n in range(1, 6):
        insert(conn, n, seq=n, form="household" if n % 2 else "pregnancy_outcome")
    conn.close()
    sql, params = scope.area_sql({"role": "supervisor", "areas": ["QN.LM"]})
    filters = exports.Filters(sql, params, since="2025-01-01T00:00:00.000Z")
    snap = exports.Snapshot(db_path)
    sent = []
    try:
        assert snap._form_seq_index()
        snap.conn.set_trace_callback(sent.append)   # the SQL with its values bound
        got = [r["id"] for r in snap.records("household", filters, chunk=2)]
        snap.conn.set_trace_callback(None)
        query = next(s for s in sent if s.startswith("SELECT"))   # the first chunk's
        plan = " ".join(str(r[-1]) for r in snap.conn.execute("EXPLAIN QUERY PLAN " + query))
    finally:
        snap.close()
    assert got == ["0193-0001", "0193-0003", "0193-0005"]
    assert "USING INDEX idx_records_form_seq (form=? AND seq>?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
