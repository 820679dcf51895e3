"""Errors of the device library.

Every error carries a message a health worker can act on; the CLI prints it
as one line. Nothing here ever means local data was lost: the outbox is only
emptied by committed server answers.
"""

from .i18n import N_, kept


class FieldsyncError(Exception):
    """Base of every error the device library raises on purpose."""


class NotLoggedIn(FieldsyncError):
    """No user is logged in on this device."""

    def __init__(self, message=N_("Not logged in. Run `fieldsync login --server URL "
                                  "--username NAME` first.")):
        super().__init__(message)


class UserSwitchRefused(FieldsyncError):
    """Another user (or server) still has unsynced changes on this device."""


class RecordNotFound(FieldsyncError):
    """No local record with that id."""


class InvalidRecord(FieldsyncError):
    """Offline validation failed against the cached form definition.

    :param errors: ``{field: [message, ...]}`` as the form compiler reports them.
    """

    def __init__(self, message, errors=None):
        super().__init__(message)
        self.errors = errors or {}


class SyncError(FieldsyncError):
    """A sync step could not finish (network, server, or refused request).

    :param report: the partial :class:`~client_sync.sync.SyncReport`, when a
        sync was under way; everything not answered stays queued.
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class ServerUnreachable(SyncError):
    """No answer from the server within the give-up time."""


class AuthError(SyncError):
    """The token is missing, expired or revoked, or the login was refused."""


class ApiError(SyncError):
    """The server answered with an error body ``{error, message, details}``.

    :param status: the HTTP status code.
    :param code: the server's error code (``batch_too_large``, ...).
    """

    def __init__(self, message, status, code=None, details=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or {}


#: What the device says for the server's error codes a health worker can
#: meet, in place of the server's own English text, so that it is said in
#: the user's language (``i18n.say``). A code not listed keeps the server's text.
SERVER_TEXTS = {
    "invalid_credentials": kept(N_("Wrong username or password.")),
    "too_many_attempts": kept(N_("Too many failed sign-ins; wait a few minutes and try again.")),
    "device_taken": kept(N_("This device is registered to another user. An administrator "
                            "must release it first (fieldsync-server device release "
                            "DEVICE_ID); until then, sign in on your own device.")),
    "device_mismatch": kept(N_("This sign-in belongs to another device; sign in on this "
                               "device.")),
    "missing_token": kept(N_("Not signed in on the server; sign in again.")),
    "invalid_token": kept(N_("The server does not know this sign-in; sign in again.")),
    "token_revoked": kept(N_("This sign-in was revoked; sign in again.")),
    "token_expired": kept(N_("This sign-in has expired; sign in again.")),
}
