"""Tests written to kill mutants of server/scope.py (docs/mutation.md,
"Second run").

tests/test_privacy_matrix.py asks `scope.covers` and `scope.can_read_form`
what the answer should be, so a mutant of either changes the oracle and the
code alike and survives there. Here every expectation is written out by
hand, and `area_sql` is run in SQLite against a fixed set of areas.
"""
import sqlite3

import pytest

from server.scope import ROLES, area_sql, can_read_form, can_write_form, covers

HW = {"username": "hw", "role": "health_worker", "areas": ["QN.LM.03"]}
SUP = {"username": "sup", "role": "supervisor", "areas": ["QN.LM", "QN.TB.01"]}
ADMIN = {"username": "admin", "role": "admin", "areas": []}
NOBODY = {"username": "nobody", "role": "supervisor", "areas": []}

AREAS = ["QN", "QN.LM", "QN.LM.03", "QN.LM.03.7", "QN.LM.04", "QN.LMX", "QN.LM/",
         "QN.LM-", "QN.TB.01", "QN.TB.011", "QN.TB", "HN.LM"]
# Which of AREAS each user may read and write, written out by hand.
COVERED = {
    "hw": {"QN.LM.03", "QN.LM.03.7"},
    "sup": {"QN.LM", "QN.LM.03", "QN.LM.03.7", "QN.LM.04", "QN.TB.01"},
    "admin": set(AREAS),
    "nobody": set(),
}
USERS = {"hw": HW, "sup": SUP, "admin": ADMIN, "nobody": NOBODY}


@pytest.mark.parametrize("name", sorted(USERS))
def test_covers_is_exactly_the_written_out_table(name):
    user = USERS[name]
    assert {a for a in AREAS if covers(user, a)} == COVERED[name]


@pytest.mark.parametrize("name", sorted(USERS))
def test_area_sql_selects_exactly_the_covered_areas(name):
    """Run in SQLite: the ranges keep dot boundaries ('QN.LMX', 'QN.LM/' and
    'QN.TB.011' are not covered) and an admin sees every row."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE r (area TEXT, place TEXT)")
    conn.executemany("INSERT INTO r VALUES (?, ?)", [(a, a) for a in AREAS])
    user = USERS[name]
    where, params = area_sql(user)
    rows = {r[0] for r in conn.execute(f"SELECT area FROM r WHERE {where}", params)}
    assert rows == COVERED[name]
    # The column argument is honoured: here it names the other column.
    where, params = area_sql(user, column="place")
    assert ("place" in where) == bool(COVERED[name] and user["role"] != "admin")
    rows = {r[0] for r in conn.execute(f"SELECT area FROM r WHERE {where}", params)}
    assert rows == COVERED[name]
    conn.close()


def test_area_sql_fragments_are_the_documented_ones():
    assert area_sql(ADMIN) == ("1", [])
    assert area_sql(NOBODY) == ("0", [])
    where, params = area_sql(HW, column="+area")
    assert where == "((+area = ? OR (+area >= ? AND +area < ?)))"
    assert params == ["QN.LM.03", "QN.LM.03.", "QN.LM.03/"]
    where, params = area_sql(SUP)
    assert where == ("((area = ? OR (area >= ? AND area < ?)) OR "
                     "(area = ? OR (area >= ? AND area < ?)))")
    assert params == ["QN.LM", "QN.LM.", "QN.LM/", "QN.TB.01", "QN.TB.01.", "QN.TB.01/"]


# restricted_to as stored in a definition -> who may read its records.
READERS = [
    (None, {"health_worker", "supervisor", "admin"}),
    ([], {"admin"}),
    ("supervisor", {"supervisor", "admin"}),
    ("health_worker", {"health_worker", "admin"}),  # a string is one role, not letters
    (["supervisor", "admin"], {"supervisor", "admin"}),
    (["health_worker"], {"health_worker", "admin"}),
    (("admin",), {"admin"}),
]


@pytest.mark.parametrize("restricted_to,readers", READERS)
def test_can_read_form_is_exactly_the_written_out_table(restricted_to, readers):
    for role in ROLES:
        user = {"username": "u", "role": role, "areas": ["QN"]}
        assert can_read_form(user, {"id": "f", "restricted_to": restricted_to}) \
            is (role in readers), role
    # A definition without the key is open to every role.
    assert can_read_form(HW, {"id": "f"}) is True


def test_the_roles_are_the_three_documented():
    assert ROLES == ("health_worker", "supervisor", "admin")


def test_every_role_may_write_every_form_and_nothing_else_may():
    for restricted_to, _ in READERS:
        definition = {"id": "f", "restricted_to": restricted_to}
        for role in ROLES:
            assert can_write_form({"username": "u", "role": role, "areas": []},
                                  definition) is True
        assert can_write_form({"username": "u", "role": "guest", "areas": []},
                              definition) is False
