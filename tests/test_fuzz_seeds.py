"""The fuzz targets' seeds and past findings, replayed without atheris.

`make fuzz` (fuzz/run.py) searches for inputs that break a target's rules
(fuzz/targets.py: no 5xx, no traceback, errors in the error shape; the
device's reading of an answer raises only its own errors). Each seed and
each finding kept under fuzz/seeds/TARGET runs here on every `make test`.
"""
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))
import targets  # noqa: E402

SEEDS = sorted((t, p) for t in targets.TARGETS for p in (FUZZ / "seeds" / t).iterdir())


@pytest.fixture(scope="module")
def runners():
    return {}


@pytest.mark.parametrize("target,path", SEEDS, ids=[f"{t}/{p.name}" for t, p in SEEDS])
def test_a_kept_fuzz_input_breaks_no_rule(runners, target, path):
    run = runners.get(target) or runners.setdefault(target, targets.runner(target))
    run(path.read_bytes())


def test_every_target_has_seeds_and_the_rules_can_fail():
    assert {t for t, _ in SEEDS} == set(targets.TARGETS)
    # The checks themselves: a 5xx and an error without its shape are findings.
    from flask import Response
    with pytest.raises(targets.Finding):
        targets.check(Response('{"error": "x"}', status=500, mimetype="application/json"))
    with pytest.raises(targets.Finding):
        targets.check(Response('{"oops": 1}', status=400, mimetype="application/json"))
    targets.check(Response('{"error": "e", "message": "m", "details": {}}', status=400,
                           mimetype="application/json"))
