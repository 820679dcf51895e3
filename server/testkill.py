"""A test-only crash at a named point of the server, off unless asked for.

`FIELDSYNC_TEST_KILL_AT=POINT:FLAGFILE` arms it when this module is imported
(each gunicorn worker imports it after the fork). The first process to reach
POINT creates FLAGFILE (exclusively, with what it saw, fsynced) and then
SIGKILLs its whole process group: the server's master and every worker die at
once, as in a power cut seen from the process side. It fires once: a FLAGFILE
that exists already disarms it, so a server restarted with the same
environment runs normally. The crash tests (tests/test_server_kills.py) use it.

Points (`POINTS`):

- `push-committed`: a push batch's transaction has committed and its answer
  is not yet sent (`server/api/sync.py`): the committed-but-unanswered case.
- `checkpoint-partial`: a checkpoint of the WAL copied some frames into the
  database file but not all of them, because a reader still needs the rest
  (`server/db.py`, `_Keeper.checkpoint`): the database file holds part of
  what the WAL holds, the state a crash in the middle of a checkpoint leaves.

Off, it costs the callers one module-level `None` check (`ARMED`).
"""
import os
import signal

POINTS = ("push-committed", "checkpoint-partial")
ENV = "FIELDSYNC_TEST_KILL_AT"


def parse(text):
    """(point, flag file path) from `POINT:FLAGFILE`, or None for an empty
    value; a ValueError naming what is wrong for anything else."""
    if not text:
        return None
    point, sep, flag = text.partition(":")
    if not sep or not flag:
        raise ValueError(f"{ENV} must be POINT:FLAGFILE (e.g. push-committed:/tmp/flag).")
    if point not in POINTS:
        raise ValueError(f"{ENV}: unknown point {point!r}; one of {', '.join(POINTS)}.")
    return point, os.path.abspath(flag)


def _armed_from_env():
    try:
        armed = parse(os.environ.get(ENV))
    except ValueError as exc:
        return None, str(exc)  # `fieldsync-server serve` refuses to start with it
    if armed is not None and os.path.exists(armed[1]):
        return None, None  # fired already: a restarted server runs normally
    return armed, None


#: (point, flag file) while armed; None (the usual case) when off.
#: PROBLEM: why a set but malformed FIELDSYNC_TEST_KILL_AT was ignored.
ARMED, PROBLEM = _armed_from_env()


def reached(point, detail=""):
    """Crash here if armed for `point` and nobody has fired yet."""
    if ARMED is None or ARMED[0] != point:
        return
    try:
        fd = os.open(ARMED[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another worker fired (its kill is on its way) or it fired before
    os.write(fd, f"{point} pid={os.getpid()} {detail}\n".encode())
    os.fsync(fd)
    os.close(fd)
    os.killpg(os.getpgrp(), signal.SIGKILL)
