"""schemathesis against `/api/openapi.json`: no 5xx, no answer that breaks the spec.

Runs in-process (`from_wsgi`) on a fresh database with real sign-ins, one
test per operation. The operations are driven from plain tests (not
schemathesis' pytest plugin, which does not load under this pytest version).
"""
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conftest import login

EXAMPLES = 30

OPERATIONS = [
    ("GET", "/api/v1/"), ("POST", "/api/v1/auth/login"), ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/forms"), ("POST", "/api/v1/sync/push"), ("GET", "/api/v1/sync/pull"),
    ("GET", "/api/v1/devices"),
]
# Documented by the exports/review modules when they are installed.
OPTIONAL = [
    ("GET", "/api/v1/exports/{name}"), ("GET", "/api/v1/conflicts"),
    ("POST", "/api/v1/conflicts/{id}/resolve"), ("GET", "/api/v1/invalid_merges"),
]
#: {(method, path): reason} for bugs known and not yet fixed (marked xfail).
KNOWN_BUGS = {}


def _params():
    return [pytest.param(*op, id=f"{op[0]} {op[1]}",
                         marks=[pytest.mark.xfail(reason=KNOWN_BUGS[op], strict=False)]
                         if op in KNOWN_BUGS else [])
            for op in OPERATIONS + OPTIONAL]


def _shape(path):
    """A path with its parameter names blanked: /a/{id}/b and /a/<int:x>/b match."""
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", path)


@pytest.fixture
def schema(app):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


def test_the_document_describes_every_route_the_app_serves(app, schema):
    documented = {(op.method.upper(), _shape(op.path)) for op in
                  (r.ok() for r in schema.get_all_operations())}
    # The document describes the API; the console's pages (HTML, at /) are not in it.
    served = {(m, _shape(rule.rule)) for rule in app.url_map.iter_rules()
              for m in rule.methods - {"HEAD", "OPTIONS"} if rule.rule.startswith("/api/")}
    served.discard(("GET", "/api/openapi.json"))  # schemathesis skips the document itself
    assert served == documented
    assert {(m, _shape(p)) for m, p in OPERATIONS} <= documented


@pytest.mark.parametrize("method,path", _params())
def test_operation_answers_within_the_openapi_document(app, schema, method, path):
    found = [r.ok() for r in schema.get_all_operations()]
    ops = [op for op in found if op.method.upper() == method and op.path == path]
    if not ops:
        pytest.skip(f"{method} {path} is not served by this installation")
    op = ops[0]
    # Logout revokes the token it is sent with: give it one of its own.
    token = login(app.test_client(), "sup", "dev-fuzz")

    @given(case=op.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        # Every check but "positive data acceptance": a schema-valid but
        # unknown cursor, or another device's id, is rightly a 4xx.
        # identity: the in-process transport does not undo gzip as real
        # HTTP clients do (gzip is tested in test_server_pull.py).
        case.call_and_validate(headers={"Authorization": "Bearer " + token,
                                        "Accept-Encoding": "identity"},
                               excluded_checks=[positive_data_acceptance])

    check()
