"""fieldsync's device library: a local store that works offline and syncs.

The public API (the CLI only calls these)::

    from client_sync import Client
    with Client("/path/to/data") as device:
        device.login("http://127.0.0.1:8080", "hw", "hw-pass-123")
        record_id = device.add("household", {...})
        report = device.sync(progress=lambda phase, done, total: None)

Imports without Flask.
"""

from .client import Client, describe_errors
from .config import NetworkConfig, data_dir
from .errors import (ApiError, AuthError, FieldsyncError, InvalidRecord, NotLoggedIn,
                     RecordNotFound, ServerUnreachable, SyncError, UserSwitchRefused)
from .store import SYNC_STATES, Store
from .sync import SyncReport

__all__ = [
    "Client", "NetworkConfig", "Store", "SyncReport", "SYNC_STATES", "data_dir",
    "describe_errors", "FieldsyncError", "SyncError", "AuthError", "ApiError",
    "ServerUnreachable", "InvalidRecord", "NotLoggedIn", "RecordNotFound",
    "UserSwitchRefused",
]
