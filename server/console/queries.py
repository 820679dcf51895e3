"""The SQL only the console needs; everything else comes from the API's modules
(`auth`, `storage`, `api.devices.device_rows`, `api.review`).

Every function here takes the acting user and narrows to their areas
(`scope.area_sql`) and to the forms their role may read.
"""
import re
import secrets
from datetime import datetime, timedelta, timezone

import orjson

from .. import clock
from ..auth import audit, clear_failures, token_hash
from ..db import write_transaction
from ..scope import area_sql
from .text import fold

#: The device id of console sessions in the tokens table.
CONSOLE_DEVICE = "console"
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")


def start_session(db, user, hours, address):
    """A token for a console session of `user`; only its hash is stored."""
    token = secrets.token_urlsafe(32)
    now = clock.utc_now()
    with write_transaction(db):
        clear_failures(db, user["username"])
        db.execute("INSERT INTO tokens (token_hash, user_id, device_id, created_at, "
                   "expires_at) VALUES (?, ?, ?, ?, ?)",
                   [token_hash(token), user["id"], CONSOLE_DEVICE, clock.iso(now),
                    clock.iso(now + timedelta(hours=float(hours)))])
        audit(db, user["username"], "console_sign_in", {})
    return token


def _forms_sql(hidden, column="form"):
    if not hidden:
        return "", []
    return f" AND {column} NOT IN ({', '.join('?' * len(hidden))})", list(hidden)


def open_conflicts(db, user, hidden, form=None, after=0, limit=200):
    """Open conflict rows in scope after id `after`, oldest first, and how
    many are open in all."""
    where, params = area_sql(user)
    forms_sql, forms = _forms_sql(hidden)
    sql = f"FROM conflicts WHERE status = 'open' AND {where}{forms_sql}"
    params = params + forms
    if form:
        sql += " AND form = ?"
        params.append(form)
    total = db.execute("SELECT count(*) " + sql, params).fetchone()[0]
    rows = list(db.query("SELECT * " + sql + " AND id > ? ORDER BY id LIMIT ?",
                         params + [after, limit]))
    return rows, total


def record_conflicts(db, record_id):
    """Every conflict entry of one record (the caller checked its scope)."""
    return list(db.query("SELECT * FROM conflicts WHERE record_id = ? ORDER BY id",
                         [record_id]))


def refused_since(db, since_iso):
    """{device_id: rejections recorded since `since_iso`} (outstanding ones)."""
    return dict(db.execute("SELECT device_id, count(*) FROM rejections WHERE at >= ? "
                           "GROUP BY device_id", [since_iso]).fetchall())


def records_per_form_area(db, user, hidden, since_iso):
    """[(form, area, count)] of records created since `since_iso` in scope."""
    where, params = area_sql(user)
    forms_sql, forms = _forms_sql(hidden)
    return db.execute(
        f"SELECT form, area, count(*) FROM records WHERE created_at >= ? AND deleted = 0 "
        f"AND {where}{forms_sql} GROUP BY form, area ORDER BY form, area",
        [since_iso] + params + forms).fetchall()


def areas_in_scope(db, user, hidden):
    where, params = area_sql(user)
    forms_sql, forms = _forms_sql(hidden)
    return [r[0] for r in db.execute(
        f"SELECT DISTINCT area FROM records WHERE {where}{forms_sql} ORDER BY area",
        params + forms)]


def name_fields(catalog):
    """Text fields holding a person's or household's name, across forms."""
    names = set()
    for form in catalog.all():
        for spec in form.definition["fields"]:
            if spec.get("type") == "string" and spec["name"].endswith("name") \
                    and _IDENT.match(spec["name"]):
                names.add(spec["name"])
    return sorted(names)


def _name_sql(names):
    if not names:
        return "NULL"
    return "coalesce(" + ", ".join(f"json_extract(data, '$.{n}')" for n in names) + ", NULL)"


def browse(db, user, hidden, names, *, form=None, area=None, query=None, limit=100):
    """Records in scope, newest first, narrowed by form, area and a search.

    The search matches an id prefix, or any name field once both sides are
    folded (`text.fold`): "Ly A Sang" finds "Lý A Sáng". Folding runs in
    Python over the rows in scope (a SQLite function), so its cost follows
    the size of the user's areas.
    """
    db.conn.create_function("console_fold", 1, fold, deterministic=True)
    where, params = area_sql(user)
    forms_sql, forms = _forms_sql(hidden)
    name = _name_sql(names)
    sql = (f"SELECT id, form, area, {name} AS name, updated_at, updated_by, deleted "
           f"FROM records WHERE {where}{forms_sql}")
    params = params + forms
    if form:
        sql += " AND form = ?"
        params.append(form)
    if area:
        sql += " AND (area = ? OR (area >= ? AND area < ?))"
        params += [area, area + ".", area + "/"]
    if query:
        folded = fold(query)
        escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        id_prefix = query.strip().lower().replace("\\", "\\\\").replace("%", "\\%") \
            .replace("_", "\\_")
        sql += (f" AND (id LIKE ? ESCAPE '\\' OR console_fold({name}) LIKE ? ESCAPE '\\')")
        params += [id_prefix + "%", "%" + escaped + "%"]
    sql += " ORDER BY seq DESC LIMIT ?"
    return list(db.query(sql, params + [limit]))


def record_row(db, record_id):
    """The columns a record page shows besides its state."""
    rows = list(db.query("SELECT computed, created_at, created_by, updated_at, updated_by, "
                         "device, deleted, seq FROM records WHERE id = ?", [record_id]))
    if not rows:
        return None
    row = dict(rows[0])
    row["computed"] = orjson.loads(row["computed"] or "{}")
    return row


def children(db, user, hidden, names, form_id, field, record_id, limit=200):
    """Records of `form_id` whose ref field `field` points at `record_id`."""
    if not _IDENT.match(field):
        return []
    where, params = area_sql(user)
    forms_sql, forms = _forms_sql(hidden)
    return list(db.query(
        f"SELECT id, form, area, {_name_sql(names)} AS name, deleted FROM records "
        f"WHERE form = ? AND json_extract(data, '$.{field}') = ? AND {where}{forms_sql} "
        "ORDER BY created_at LIMIT ?", [form_id, record_id] + params + forms + [limit]))


def names_of(db, ids, names):
    """{id: (form, area, name)} for linked ids (the caller checks scope)."""
    ids = [i for i in ids if isinstance(i, str)][:200]
    if not ids:
        return {}
    return {r[0]: (r[1], r[2], r[3]) for r in db.execute(
        f"SELECT id, form, area, {_name_sql(names)} FROM records WHERE id IN "
        f"({', '.join('?' * len(ids))})", ids)}


def user_devices(db, username):
    """A user's devices with their live token count (console sessions included)."""
    return list(db.query(
        "SELECT d.device_id, d.app_version, d.last_push, d.last_pull, "
        "(SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id "
        " WHERE u.username = d.username AND t.device_id = d.device_id "
        " AND t.revoked_at IS NULL AND t.expires_at > ?) AS live "
        "FROM devices d WHERE d.username = ? ORDER BY d.device_id",
        [clock.now_iso(), username]))


def day_start_utc(tz):
    """The start of today in `tz`, as the server's UTC timestamp text."""
    local = datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    return clock.iso(local.astimezone(timezone.utc))
