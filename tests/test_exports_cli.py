"""`fieldsync-server export`: the same exports on the server, to a file or stdout."""
import csv
import io
import json
import zipfile

import openpyxl
import pytest
from click.testing import CliRunner

from server.cli import cli
from tests.test_exports_api import Api, Device, birth, household


@pytest.fixture
def stocked(client, db_path):
    hw = Device(Api(client=client), "hw", "dev-cli-1")
    hw2 = Device(Api(client=client), "hw2", "dev-cli-2")
    ids = [hw.create("household", "QN.LM.03", household()),
           hw2.create("household", "QN.TB.01", household("Lý Văn Sáu")),
           hw.create("pregnancy_outcome", "QN.LM.03", birth())]
    return ids


def run(db_path, *args):
    return CliRunner().invoke(cli, ["--db", str(db_path), "export", *args],
                              catch_exceptions=False)


def test_export_to_a_file_is_written_whole_then_named(stocked, db_path, tmp_path):
    out = tmp_path / "hh.csv"
    result = run(db_path, "household", "--format", "csv", "--area", "QN.LM", "--bom",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Exported 1 household records" in result.output
    assert not (tmp_path / "hh.csv.part").exists()
    text = out.read_text("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:], newline="")))
    assert [(r["id"], r["head_name"]) for r in rows] == [(stocked[0], "Nguyễn Thị Hoa")]


def test_export_to_stdout_covers_every_area(stocked, db_path):
    result = run(db_path, "household", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert {x["area"] for x in lines} == {"QN.LM.03", "QN.TB.01"}


def test_export_all_as_zip_and_xlsx(stocked, db_path, tmp_path):
    out = tmp_path / "all.zip"
    assert run(db_path, "all", "--format", "zip", "--out", str(out)).exit_code == 0
    names = zipfile.ZipFile(out).namelist()
    assert "household.csv" in names and "pregnancy_outcome.baby.csv" in names
    out = tmp_path / "all.xlsx"
    assert run(db_path, "all", "--out", str(out)).exit_code == 0
    book = openpyxl.load_workbook(out, read_only=True)
    assert book["household"].max_row == 3 and book["pregnancy_outcome.baby"].max_row == 3


@pytest.mark.parametrize("args,message", [
    (["nosuch", "--format", "csv"], "No published form 'nosuch'"),
    (["all", "--format", "csv"], "all.csv is not offered"),
    (["household", "--since", "soon"], "since must be an ISO 8601"),
    (["household", "--area", "qn"], "area must be an area code"),
])
def test_bad_exports_fail_with_one_clear_line(stocked, db_path, tmp_path, args, message):
    out = tmp_path / "x.out"
    result = CliRunner().invoke(cli, ["--db", str(db_path), "export", *args, "--out", str(out)])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "x.out.part").exists()
