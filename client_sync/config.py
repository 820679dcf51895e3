"""Device settings: where the data folder is and how patient the network is.

The data folder is ``--data-dir``, else ``FIELDSYNC_HOME``, else
``~/.fieldsync``. Network settings have defaults suited to a weak 2G link and
can be overridden by environment variables (documented in the README).
"""

import dataclasses
import os
from pathlib import Path

DB_NAME = "device.db"
APP_VERSION = "0.1.0"


def data_dir(explicit=None):
    """Resolve the data folder (not created here).

    :param explicit: a path given on the command line or to the API, if any.
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("FIELDSYNC_HOME")
    if env:
        return Path(env).expanduser()
    return Path("~/.fieldsync").expanduser()


def _env_float(name, default):
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None


@dataclasses.dataclass
class NetworkConfig:
    """How the transport waits and retries.

    :param give_up_after: seconds without any answer before a request (and so
        the sync) gives up; everything stays queued.
    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds to wait for bytes of an answer.
    :param export_read_timeout: seconds to wait for bytes of an export: the
        server builds an XLSX whole before its first byte (minutes for a
        million records), so this is much longer than ``read_timeout``.
    :param backoff_factor: urllib3 exponential backoff base (0 in tests).
    """

    give_up_after: float = 60.0
    connect_timeout: float = 3.05
    read_timeout: float = 30.0
    export_read_timeout: float = 600.0
    backoff_factor: float = 0.5
    backoff_jitter: float = 0.5
    backoff_max: float = 10.0

    @classmethod
    def from_env(cls, **overrides):
        """Defaults, then ``FIELDSYNC_GIVE_UP_AFTER`` etc., then ``overrides``."""
        config = cls(
            give_up_after=_env_float("FIELDSYNC_GIVE_UP_AFTER", cls.give_up_after),
            connect_timeout=_env_float("FIELDSYNC_CONNECT_TIMEOUT", cls.connect_timeout),
            read_timeout=_env_float("FIELDSYNC_READ_TIMEOUT", cls.read_timeout),
            export_read_timeout=_env_float("FIELDSYNC_EXPORT_READ_TIMEOUT",
                                           cls.export_read_timeout),
            backoff_factor=_env_float("FIELDSYNC_BACKOFF_FACTOR", cls.backoff_factor),
        )
        return dataclasses.replace(config, **overrides)
