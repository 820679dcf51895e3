"""Who may read and write what: areas on dot boundaries, roles, restricted forms.

A user is a dict with at least `username`, `role` and `areas` (a list), as put
on `g.user` by `auth.require_auth`.
"""
from schemas.wire import area_covers

ROLES = ("health_worker", "supervisor", "admin")


def covers(user, area):
    """True if `user` may read and write records of `area` (admins: every area)."""
    return user["role"] == "admin" or area_covers(user["areas"], area)


def _roles(restricted_to):
    if restricted_to is None:
        return None
    if isinstance(restricted_to, str):
        return {restricted_to}
    return set(restricted_to)


def can_read_form(user, definition):
    """`restricted_to` limits who may read a form's records; admins always may."""
    roles = _roles(definition.get("restricted_to"))
    return roles is None or user["role"] == "admin" or user["role"] in roles


def can_write_form(user, definition):
    """Every role may write every published form.

    `restricted_to` limits reads only: a health worker files a child-protection
    report and keeps their own copy, but does not receive others'.
    """
    return user["role"] in ROLES


def area_sql(user, column="area"):
    """A WHERE fragment and its parameters limiting `column` to the user's areas.

    Written as ranges (`area >= 'X.' AND area < 'X/'`; '/' follows '.') so
    the dot-boundary rule is exact and needs no LIKE escaping.
    """
    if user["role"] == "admin":
        return "1", []
    if not user["areas"]:
        return "0", []
    parts, params = [], []
    for scope in user["areas"]:
        parts.append(f"({column} = ? OR ({column} >= ? AND {column} < ?))")
        params += [scope, scope + ".", scope + "/"]
    return "(" + " OR ".join(parts) + ")", params
