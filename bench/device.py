"""Device: the local add rate through the library, and a 10,000-record sync
through the `fieldsync` command.

- add: `client_sync.Client.add` (form validation, local SQLite with
  synchronous=FULL, outbox entry), one record per call, as a health worker
  saves a form.
- sync: a device holding 10,000 unsynced records runs `fieldsync sync`
  (a subprocess, the real CLI) against `fieldsync-server serve`: push in the
  library's batches, then pull. Then a second device of the same user, empty,
  runs `fieldsync sync` and pulls all 10,000.

Each is run twice: on plain data folders, then on encrypted ones (SQLCipher,
the passphrase typed once: each `fieldsync` command then opens the file with
the session's key, as a health worker's would), to show what encryption at
rest costs (issue 14 item 7). The key derivation (argon2id, once per
session) is timed on its own.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import common
from common import Generator, Table


def _cli(data_dir: Path, *args, stdin: str | None = None) -> str:
    env = {**os.environ, "FIELDSYNC_HOME": str(data_dir)}
    p = subprocess.run([str(common.VENV_BIN / "fieldsync"), "--data-dir", str(data_dir), *args],
                       input=stdin, capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"fieldsync {args[0]} failed ({p.returncode}): "
                           f"{(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def client_available() -> str | None:
    exe = common.VENV_BIN / "fieldsync"
    if not exe.exists():
        return f"{exe} is not installed"
    try:
        from client_sync import Client  # noqa: F401
    except ImportError as exc:
        return f"client_sync does not import: {exc}"
    return None


def _add_many(device, gen: Generator, n: int) -> float:
    """Seconds to add `n` records one by one through the library."""
    changes = gen.creates(n)
    t0 = time.perf_counter()
    for c in changes:
        device.add(c["form"], c["data"])
    return time.perf_counter() - t0


def run(mode: str = "full") -> dict:
    """Plain data folders, then encrypted ones; the plain figures at the top
    level (as before), the encrypted ones under ``encrypted``."""
    saved = {k: os.environ.pop(k, None) for k in ("FIELDSYNC_PASSPHRASE", "XDG_RUNTIME_DIR")}
    try:
        out = _run(mode, encrypted=False)
        out["encrypted"] = _run(mode, encrypted=True)
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value
    return out


PASSPHRASE = "bench pass phrase"


def _run(mode: str, encrypted: bool) -> dict:
    from client_sync import Client

    rounds = common.mode_rounds(mode, 3, 2)
    adds = {"full": 500, "quick": 100, "smoke": 10}[mode]
    sync_n = {"full": 10_000, "quick": 500, "smoke": 30}[mode]
    out = {}
    # Its own user and area: a shared bench server keeps the plain run's records.
    user, area = ("hwenc", "QN.DV.02") if encrypted else ("hw", "QN.DV.01")
    with common.serve(user, area) as srv, \
            tempfile.TemporaryDirectory(prefix="fieldsync-dev-") as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        add_rates, derive_s = [], None
        if encrypted:  # the session's keys in a private folder of this run
            os.environ["XDG_RUNTIME_DIR"] = str(Path(tmp) / "run")
            (Path(tmp) / "run").mkdir(mode=0o700)
            from client_sync.store import keys
            t0 = time.perf_counter()
            keys.derive(PASSPHRASE, {**keys.PARAMS, "salt": "00" * 16})
            derive_s = time.perf_counter() - t0
        with Client(one, passphrase=PASSPHRASE if encrypted else None) as device:
            device.remember_key()
            if device.encrypted != encrypted:
                raise RuntimeError(f"device encrypted={device.encrypted}, expected {encrypted}")
            device.login(srv.url, user, common.PASSWORD)
            gen = Generator(seed=3, area=area)
            for _ in range(rounds):
                add_rates.append(adds / _add_many(device, gen, adds))
            # Setup for the sync (not timed): the rest of the 10,000, same path.
            have = rounds * adds
            if sync_n > have:
                _add_many(device, gen, sync_n - have)
            queued = max(sync_n, have)
        t0 = time.perf_counter()
        _cli(one, "sync")
        push_s = time.perf_counter() - t0
        if encrypted:  # a new folder: the passphrase given once, then the session key
            os.environ["FIELDSYNC_PASSPHRASE"] = PASSPHRASE
        _cli(two, "login", "--server", srv.url, "--username", user,
             stdin=common.PASSWORD + "\n")
        os.environ.pop("FIELDSYNC_PASSPHRASE", None)
        t0 = time.perf_counter()
        _cli(two, "sync")
        pull_s = time.perf_counter() - t0
        with Client(two) as device:
            if device.encrypted != encrypted:
                raise RuntimeError(f"second device encrypted={device.encrypted}")
            got = sum(1 for _ in device.list())
        if got != queued:
            raise RuntimeError(f"second device holds {got} records, expected {queued}")

    kind = "encrypted (SQLCipher)" if encrypted else "plain"
    table = Table(f"device: library add rate and `fieldsync sync` through the CLI, {kind}")
    out["add"] = table.add(f"add through the library ({adds} per round)", "records/s", add_rates)
    table.add(f"`fieldsync sync`, {queued:,} queued (push + pull)", "s", push_s,
              f"{queued / push_s:,.0f} records/s")
    table.add(f"`fieldsync sync`, empty device pulls {queued:,}", "s", pull_s,
              f"{queued / pull_s:,.0f} records/s")
    if derive_s is not None:
        table.add("key from the passphrase (argon2id, once per session)", "s", derive_s)
    table.print()
    out.update(derive_s=derive_s, sync_push_s=push_s, sync_pull_s=pull_s, sync_n=queued)
    return out


def main(argv=None):
    mode = common.parse_mode(argv, __doc__.splitlines()[0])
    common.print_machine()
    why = client_available() or common.server_available()
    if why:
        print(f"device: skipped: {why}")
        return
    run(mode)


if __name__ == "__main__":
    main()
