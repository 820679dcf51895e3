"""One device over the slow link, run inside its namespace by tests/test_2g.py.

Logs in, adds `--add` growth records offline, then syncs as a health worker
would on a weak signal: again, RETRY_PAUSE seconds after each sync that did
not finish (a person pressing Sync again, not a loop: with the link down a
sync fails at once with "no route"), until one does or `--deadline` seconds
have passed. Prints one JSON line: every local
record's id and data, the sync attempts, the seconds taken, what is still
unsynced.
"""
import argparse
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from client_sync import Client, NetworkConfig, SyncError
from client_sync.errors import ServerUnreachable

#: Seconds before trying again after a failed login or sync.
RETRY_PAUSE = 2.0


def growth(i):
    """A valid growth v2 record: a child of about 2.5 years, weight for height
    near the WHO median (never SAM, which the form requires to be referred)."""
    day = date(2026, 11, 1) + timedelta(days=i % 25)
    height = 80.0 + (i % 40) / 4
    return {"child_id": f"0193a0c0-0000-7000-8000-{i:012d}", "child_dob": "2024-05-10",
            "child_sex": "female" if i % 2 else "male", "child_dob_precision": "exact",
            "measured_on": day.isoformat(),
            "weight_kg": round(10.9 + (height - 80.0) * 0.21 + (i % 5) / 10, 1),
            "lenhei_cm": height, "position": "standing",
            "muac_mm": 140 + i % 20, "oedema_bilateral": False, "referred_to": "none",
            "counselled": True}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--home", required=True)
    p.add_argument("--user", default="hw")
    p.add_argument("--password", default="hw-pass-123")
    p.add_argument("--add", type=int, default=0)
    p.add_argument("--deadline", type=float, default=600)
    args = p.parse_args()
    start = time.monotonic()
    client = Client(Path(args.home), NetworkConfig.from_env())
    attempts, errors = 0, []
    while True:  # the login crosses the link too
        attempts += 1
        try:
            client.login(args.url, args.user, args.password)
            break
        except ServerUnreachable as exc:  # a wrong password is not retried
            errors.append(f"login: {exc}")
            if time.monotonic() - start > args.deadline:
                raise
            time.sleep(RETRY_PAUSE)
    for i in range(args.add):
        client.add("growth", growth(i), area="QN.LM.03")
    syncs, report = 0, None
    while time.monotonic() - start < args.deadline:
        syncs += 1
        try:
            report = client.sync()
        except SyncError as exc:  # what did not finish stays queued
            errors.append(f"sync: {exc}")
            time.sleep(RETRY_PAUSE)
            continue
        if report.complete:
            break
    records = client.list()
    print(json.dumps({
        "records": {r["id"]: r["data"] for r in records},
        "login_attempts": attempts, "syncs": syncs, "errors": errors,
        "complete": bool(report and report.complete),
        "pending": client.status()["pending"],
        "seconds": round(time.monotonic() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
