"""Shared fixtures: a prepared server database, the in-process app, the real server.

The template database (migrated, bundled forms published, users created with
the real `fieldsync-server` CLI) is built once per session and copied for each
test: argon2id hashing is deliberately slow, and a copy is not.
"""
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
SERVER_CMD = [sys.executable, "-c", "from server.cli import main; main()"]

# Hypothesis without its clocks: no per-example deadline (200 ms by default)
# and no too_slow health check, both of which fail on a busy machine, not on
# a bug. `make test` loads "ci" (--hypothesis-profile=ci, with the run's seed
# as --hypothesis-seed): no example database either, so a run depends on its
# printed seed only and replays from it. Tests that set their own settings
# inherit these for what they leave out (the profile is loaded before they
# are imported).
_UNTIMED = [HealthCheck.too_slow]
settings.register_profile("fieldsync", deadline=None, suppress_health_check=_UNTIMED,
                          print_blob=True)
settings.register_profile("ci", settings.get_profile("fieldsync"), database=None)
# Under mutmut (docs/mutation.md) each mutant runs its tests in a pytest
# session of its own: few examples there, the full count in `make test`.
settings.register_profile("mutation", settings.get_profile("ci"), max_examples=15)
MUTATION_RUN = "MUTANT_UNDER_TEST" in os.environ
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "mutation" if MUTATION_RUN else "fieldsync"))

USERS = {
    "admin": {"username": "admin", "password": "admin-pass-1", "role": "admin", "areas": []},
    "hw": {"username": "hw", "password": "hw-pass-123", "role": "health_worker",
           "areas": ["QN.LM.03"]},
    "sup": {"username": "sup", "password": "sup-pass-123", "role": "supervisor",
            "areas": ["QN.LM"]},
    # Another commune, for the area matrix: must never see QN.LM.
    "hw2": {"username": "hw2", "password": "hw2-pass-123", "role": "health_worker",
            "areas": ["QN.TB.01"]},
}


def run_cli(db_path, *args, input=None, check=True, env=None):
    """Run `fieldsync-server --db DB ARGS…` as a real process."""
    proc = subprocess.run([*SERVER_CMD, "--db", str(db_path), *args], input=input,
                          capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"fieldsync-server {' '.join(args)} failed:\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def _build_template(path, env=None):
    run_cli(path, "init", env=env)
    for u in USERS.values():
        areas = [a for area in u["areas"] for a in ("--area", area)]
        run_cli(path, "user", "add", u["username"], "--role", u["role"], *areas,
                input=u["password"] + "\n", env=env)
    return path


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """A database made by `init` and `user add`, copied by each test.

    Under mutmut, built once for the whole run (in `mutants/`, keyed by the
    server's source) by the unmutated code: it is a fixture, not the code
    under test, and five CLI runs with argon2 cost more than most mutants."""
    if not MUTATION_RUN:
        return _build_template(tmp_path_factory.mktemp("template") / "fieldsync.db")
    import hashlib
    digest = hashlib.sha256()
    for source in sorted((ROOT / "server").rglob("*.py")):
        digest.update(source.read_bytes())
    path = ROOT / ".template-cache" / digest.hexdigest()[:16] / "fieldsync.db"
    if not path.exists():
        building = tmp_path_factory.mktemp("template") / "fieldsync.db"
        env = {k: v for k, v in os.environ.items() if k != "MUTANT_UNDER_TEST"}
        _build_template(building, env=env)
        path.parent.mkdir(parents=True, exist_ok=True)
        copy_db(building, path.with_suffix(".building"))
        os.replace(path.with_suffix(".building"), path)
    return path


def copy_db(src, dest):
    """A consistent copy (backup API: the WAL is folded in)."""
    source, target = sqlite3.connect(src), sqlite3.connect(dest)
    source.backup(target)
    source.close()
    target.close()
    return dest


@pytest.fixture
def db_path(template_db, tmp_path):
    return copy_db(template_db, tmp_path / "fieldsync.db")


@pytest.fixture
def app(db_path):
    from server import create_app
    return create_app({"TESTING": True, "DB": str(db_path)})


@pytest.fixture
def client(app):
    return app.test_client()


def login(client, name, device_id=None):
    """Sign `name` in through the Flask test client; return the token.

    Each user has a device of their own by default: a device belongs to the
    first user who signs in on it (server/auth.py `login`)."""
    u = USERS[name]
    device_id = device_id or f"dev-test-{name}"
    body = {"username": u["username"], "password": u["password"], "device_id": device_id,
            "app_version": "test"}
    resp = client.post("/api/v1/auth/login", json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["token"]


def wait_until(condition, what, bound=60, poll=0.02):
    """Poll `condition()` until it is true; fail after `bound` seconds.

    For a state another process or thread reaches in its own time (a commit,
    a restart): the bound is far beyond any real run, a guard against a hang,
    never a measure of speed.
    """
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {bound} s"
        time.sleep(poll)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """The real `fieldsync-server serve` on 127.0.0.1; restartable on the same db."""

    db: Path
    port: int
    workers: int = 2
    log: Path | None = None
    users: dict = field(default_factory=lambda: USERS)
    proc: subprocess.Popen | None = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=60):
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [*SERVER_CMD, "--db", str(self.db), "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self.workers)],
            cwd=ROOT, stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if requests.get(self.url + "/api/v1/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self):
        """SIGKILL the whole process group (master and workers), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def login(self, name, device_id=None):
        u = self.users[name]
        device_id = device_id or f"dev-test-{name}"
        resp = requests.post(self.url + "/api/v1/auth/login", json={
            "username": u["username"], "password": u["password"], "device_id": device_id,
            "app_version": "test"}, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()["token"]


@pytest.fixture
def server_process(db_path, tmp_path):
    """The real server process on a free port with a fresh database and users."""
    server = ServerProcess(db=db_path, port=free_port(), log=tmp_path / "server.log")
    server.start()
    yield server
    server.stop()


# -- building pushes -----------------------------------------------------------


@pytest.fixture
def private_session_dir(tmp_path, monkeypatch):
    """A private runtime folder for the device's session key, and no passphrase from the
    environment: each encryption test starts with no unlocked session."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv("FIELDSYNC_PASSPHRASE", raising=False)
    return run


def household(**over):
    """A complete, valid `household` record's data."""
    data = {"head_name": "Nguyen Van A", "poverty_status": "poor",
            "registered_on": "2025-03-01", "status": "active"}
    data.update(over)
    return data


def hlc_at(millis, device, counter=0):
    from schemas.clock import format_hlc
    return format_hlc(millis, counter, device)


def now_ms():
    from schemas.clock import time_ms
    return time_ms()


def change(data, *, hlc, record_id=None, form="household", version=1, area="QN.LM.03",
           **extra):
    c = {"id": record_id or str(uuid.uuid4()), "form": form, "form_version": version,
         "area": area, "data": data, "hlc": hlc}
    c.update(extra)
    return c


def batch(device_id, records, batch_id=None, device_time=None):
    return {"device_id": device_id, "batch_id": batch_id or str(uuid.uuid4()),
            "device_time": device_time or datetime.now(timezone.utc).isoformat(),
            "app_version": "test", "records": records}


def cp_report(**over):
    """A complete, valid `cp_report` (restricted to supervisors and admins)."""
    data = {"report_date": "2025-03-01", "case_type": ["early_marriage"],
            "union_type": "customary_ceremony", "union_date": "2025-01-10",
            "union_date_precision": "exact", "party_a_sex": "female",
            "party_a_dob": "2009-05-01", "party_a_ethnicity_code": "01",
            "party_b_sex": "male", "party_b_dob": "2003-02-01",
            "party_b_ethnicity_code": "01", "source": "home_visit",
            "action_taken": ["family_counselled"]}
    data.update(over)
    return data
