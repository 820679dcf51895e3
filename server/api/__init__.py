"""HTTP API blueprints. Each module listed here exposes a Blueprint `bp`.

Helpers for blueprint authors:

- `server.auth.require_auth(roles=None)`: decorator; 401 without a live token,
  403 `forbidden` for other roles; puts the user on `g.user` as
  `{id, username, role, areas, device_id, token_hash}`.
- `server.scope`: `covers(user, area)`, `can_read_form(user, definition)`,
  `area_sql(user, column="area") -> (sql, params)` for WHERE clauses.
- `server.db`: `get_db()` (sqlite-utils Database, one per request),
  `write_transaction(db)` (BEGIN IMMEDIATE), `read_snapshot(db)`.
- `server.errors.ApiError(code, message, status, details=None)`.
- `server.clock`: `now_iso()`, `current(db)` (server HLC to return), `load`/`save`.
- `server.storage.apply_server_change(db, record_id, data, user, deleted=None)`:
  inside `write_transaction`, a change with a fresh server clock through the
  push path (validation, merge, seq); returns a push-style result.
- `server.auth.audit(db, username, action, details)`: one audit row.
"""
import importlib
import logging

log = logging.getLogger("fieldsync.server")

BLUEPRINTS = ["meta", "auth", "forms", "sync", "devices"]
#: Registered only when present (written separately: supervisors' tools).
OPTIONAL_BLUEPRINTS = ["exports", "review", "indicators"]


def register(app):
    for name in BLUEPRINTS:
        app.register_blueprint(importlib.import_module(f"{__name__}.{name}").bp)
    for name in OPTIONAL_BLUEPRINTS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ImportError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # the module exists but is broken: fail loudly
            continue
        app.register_blueprint(module.bp)
