"""HTTP to the sync server: one ``requests.Session``, patient but bounded.

Every call has connect and read timeouts. A failure that waiting cannot mend
(:func:`permanent_failure`: a refused connection, an unknown host, no route,
a TLS mismatch) is reported at once with what to check. Transient ones
(timeouts, resets, 5xx and 429) are retried by urllib3's ``Retry`` with exponential backoff and
jitter, POST included: a push is idempotent (the server replays a batch id's
stored answer, and the merge ignores resent clocks). A request gives up once
``give_up_after`` seconds have passed without an answer, so a sync on a dead
link ends within a minute, with everything kept queued. Every failure
becomes a :class:`~client_sync.errors.SyncError`.
"""

from __future__ import annotations

import errno
import random
import socket
import ssl
import time
from urllib.parse import urlsplit

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .config import NetworkConfig
from .errors import SERVER_TEXTS, ApiError, AuthError, ServerUnreachable, SyncError
from .i18n import N_

RETRY_STATUSES = (429, 500, 502, 503, 504)


#: Connection errors that another attempt would only repeat (errno values).
_PERMANENT_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}


def permanent_failure(error):
    """What a connection failure means when retrying cannot help, else None.

    ``"refused"`` (nothing listens on that port), ``"unknown_host"`` (the
    name does not resolve), ``"no_route"`` (no network), ``"tls"`` (a TLS
    handshake failed: https against an http server, or a bad certificate).
    Timeouts and resets are transient: None.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, urllib3.exceptions.NameResolutionError):
            return "unknown_host"
        if isinstance(error, (urllib3.exceptions.SSLError, ssl.SSLError,
                              requests.exceptions.SSLError)):
            return "tls"
        if isinstance(error, OSError) and error.errno in _PERMANENT_ERRNOS:
            return "refused" if error.errno == errno.ECONNREFUSED else "no_route"
        if isinstance(error, urllib3.exceptions.MaxRetryError):
            error = error.reason
        elif isinstance(error, requests.RequestException) and error.args and \
                isinstance(error.args[0], BaseException):
            error = error.args[0]
        else:
            error = error.__cause__ or error.__context__
    return None


def failure_message(kind, base_url):
    """One line for a :func:`permanent_failure`: what happened, what to check."""
    host = urlsplit(base_url).hostname or base_url
    other = base_url.replace("https://", "http://", 1) if base_url.startswith("https://") \
        else base_url.replace("http://", "https://", 1)
    if kind == "refused":
        return N_("Server {url} refused the connection: nothing answers on that port. "
                  "Check the server address and port (ask your supervisor), and that the "
                  "server is running; your changes stay queued.", url=base_url)
    if kind == "unknown_host":
        return N_("Cannot find the server {host!r}: check the server address (ask "
                  "your supervisor) and that this device is on the network; your "
                  "changes stay queued.", host=host)
    if kind == "no_route":
        return N_("No network route to {url}: connect to a network and sync later; "
                  "your changes stay queued.", url=base_url)
    if kind == "tls":
        return N_("A secure connection to {url} failed (TLS): the server may not speak "
                  "https, or its certificate is not trusted. Check the address ({other}?) "
                  "with your supervisor; your changes stay queued.", url=base_url, other=other)
    raise KeyError(kind)


class ServerAddressError(ServerUnreachable):
    """A connection failure retrying cannot mend (:func:`permanent_failure`)."""

    def __init__(self, kind, base_url, attempts=1):
        super().__init__(failure_message(kind, base_url))
        self.kind, self.attempts = kind, attempts


class DeadlineRetry(Retry):
    """``Retry`` that also stops at a wall deadline (``time.monotonic()``),
    and at once on a :func:`permanent_failure`."""

    def __init__(self, *args, deadline=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def new(self, **kw):
        new = super().new(**kw)
        new.deadline = self.deadline
        return new

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        if error is not None and permanent_failure(error):
            raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def is_exhausted(self):
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return True
        return super().is_exhausted()

    def sleep(self, response=None):
        # Honour Retry-After and backoff, but never sleep past the deadline.
        wait = None
        if self.respect_retry_after_header and response is not None:
            wait = self.get_retry_after(response)
            if wait is not None and self.backoff_jitter > 0:
                # Devices told the same Retry-After in a sign-in storm would
                # all come back in the same instant and meet the same 503:
                # spread them over as long again (never sooner than told).
                wait += random.uniform(0.0, wait)
        if wait is None:
            wait = self.get_backoff_time()
        if self.deadline is not None:
            wait = min(wait, max(0.0, self.deadline - time.monotonic()))
        if wait > 0:
            time.sleep(wait)


class Transport:
    """The server's HTTP API v1 as Python calls.

    :param base_url: ``http://host:port`` of the server.
    :param token: the bearer token, once logged in.
    :param config: timeouts and retry settings.
    """

    # How pulled records list their clocks, most compact first: a server
    # older than `clocks=common` answers 400 invalid_clocks, and the next is asked.
    PULL_CLOCKS = ("common", "sparse")

    def __init__(self, base_url, token=None, config=None, lang=None):
        self.base_url = base_url.rstrip("/")
        # The language of the push answers' validation messages (English if None).
        self.lang = lang
        self.pull_clocks = self.PULL_CLOCKS
        self.token = token
        #: Connection attempts that failed before an answer (all calls so far).
        self.attempts = 0
        self.tls_checked = False
        self.config = config or NetworkConfig.from_env()
        self.session = requests.Session()
        self.adapter = HTTPAdapter(max_retries=self._retry(None))
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)

    def close(self):
        self.session.close()

    def _retry(self, deadline, statuses=RETRY_STATUSES):
        c = self.config
        return DeadlineRetry(
            total=50, backoff_factor=c.backoff_factor, backoff_jitter=c.backoff_jitter,
            backoff_max=c.backoff_max, status_forcelist=statuses,
            allowed_methods={"GET", "POST"},  # POST is safe: batches are idempotent
            raise_on_status=False, respect_retry_after_header=True, deadline=deadline)

    def request(self, method, path, *, auth=True, **kwargs):
        """One API call with retries; returns the decoded JSON body.

        :raises AuthError: 401 (token missing, expired or revoked).
        :raises ApiError: any other 4xx/5xx, with the server's error code.
        :raises ServerUnreachable: no answer before the give-up time.
        """
        return self._decode(self._send(method, path, auth=auth, **kwargs))

    def _send(self, method, path, *, auth=True, statuses=RETRY_STATUSES, **kwargs):
        """`request`'s retries, returning the whole answer undecoded.

        :param statuses: the HTTP statuses retried (login leaves out 429: a
            locked-out user waits for minutes, or for an admin).
        """
        c = self.config
        if self.base_url.startswith("https://") and not self.tls_checked:
            self._check_tls()
        # Leave room for the last attempt's connect timeout inside the budget.
        deadline = time.monotonic() + max(0.0, c.give_up_after - c.connect_timeout)
        self.adapter.max_retries = self._retry(deadline, statuses)
        headers = kwargs.pop("headers", {})
        if auth:
            if not self.token:
                raise AuthError(N_("Not logged in. Run `fieldsync login` first."))
            headers["Authorization"] = f"Bearer {self.token}"
        timeout = (c.connect_timeout, min(c.read_timeout, max(c.give_up_after, 1.0)))
        url = self.base_url + path
        attempt = 0
        while True:
            try:
                response = self.session.request(method, url, headers=headers, timeout=timeout,
                                                **kwargs)
                response.content  # read the whole body here, inside the retry loop
                break
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                # urllib3 retries failures before the answer's headers; an answer
                # cut mid-body lands here. Retrying is safe: every call is
                # idempotent (a push replays its stored answer).
                attempt += 1
                self.attempts += 1
                kind = permanent_failure(exc) or (attempt == 1 and self._speaks_plain_http())
                if kind:
                    raise ServerAddressError(kind, self.base_url, attempt) from None
                if time.monotonic() >= deadline:
                    raise ServerUnreachable(N_(
                        "Server {url} did not answer within {seconds:g} s ({error}): the "
                        "connection is too slow or down. Sync later; your changes stay queued.",
                        url=self.base_url, seconds=c.give_up_after,
                        error=type(exc).__name__)) from None
                self.adapter.max_retries = self._retry(deadline, statuses)
                time.sleep(min(c.backoff_factor * (2 ** min(attempt, 6)),
                               max(0.0, deadline - time.monotonic())))
            except requests.RequestException as exc:
                raise SyncError(N_("Request to {url} failed: {error}.", url=self.base_url,
                                   error=type(exc).__name__)) from None
        return response

    #: Seconds a TLS handshake may take before the address is checked for plain http.
    TLS_HANDSHAKE_SECONDS = 4.0

    def _check_tls(self):
        """Once per transport, for https: does the server speak TLS at all?

        A plain-http server waits for a request line and never answers a
        handshake, which would otherwise be retried until the give-up time.
        Only whether TLS is spoken is tested here (certificates are checked
        by the real request); a slow handshake on a slow link is left to it.
        """
        parts = urlsplit(self.base_url)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        try:
            with socket.create_connection((parts.hostname, parts.port or 443),
                                          timeout=self.config.connect_timeout) as raw:
                raw.settimeout(self.TLS_HANDSHAKE_SECONDS)
                with context.wrap_socket(raw, server_hostname=parts.hostname):
                    pass
        except ssl.SSLError:
            raise ServerAddressError("tls", self.base_url) from None
        except socket.timeout:
            if self._speaks_plain_http():
                raise ServerAddressError("tls", self.base_url) from None
            return  # slow: the request itself retries
        except OSError:
            return  # refused, unknown host…: the request classifies it
        self.tls_checked = True

    def _speaks_plain_http(self):
        """``"tls"`` when an https address failed but the same address answers
        plain http (a server that waits for a whole request line never
        answers a TLS handshake: it times out instead of failing)."""
        if not self.base_url.startswith("https://"):
            return None
        plain = "http://" + self.base_url[len("https://"):]
        try:
            with requests.Session() as probe:
                probe.get(plain + "/api/v1/", timeout=(self.config.connect_timeout, 3),
                          allow_redirects=False)
        except requests.RequestException:
            return None
        return "tls"

    def _decode(self, response):
        try:
            body = orjson.loads(response.content)
        except ValueError:  # orjson.JSONDecodeError is one
            body = None
        if response.status_code < 400:
            # Every call the device makes is answered 200: another success or
            # redirect status (a proxy's, a captive portal's) is no answer,
            # and nothing it says is taken (a push stays queued).
            if response.status_code != 200 or not isinstance(body, dict):
                raise SyncError(N_("The server sent an unreadable answer (HTTP {status}).",
                                   status=response.status_code))
            return body
        body = body if isinstance(body, dict) else {}
        # Only our server's error shape is trusted; a proxy's or a broken
        # server's other JSON ({"error": 404}, say) leaves just the status.
        code, message, details = (body.get(key) for key in ("error", "message", "details"))
        code = code if isinstance(code, str) and code else None
        message = SERVER_TEXTS.get(code) or (message if isinstance(message, str) and message
                                            else response.reason or "The server refused the request")
        details = details if isinstance(details, dict) else None
        if response.status_code == 401:
            raise AuthError(message or "Not authorised.")
        if code == "too_many_attempts":
            error = AuthError(message)
            error.code = code  # the user is locked out for a while (Client.login says more)
            raise error
        if response.status_code in RETRY_STATUSES:
            raise ServerUnreachable(N_("Server busy or failing (HTTP {status}): {said}. "
                                       "Sync later; your changes stay queued.",
                                       status=response.status_code, said=message.rstrip(".")))
        raise ApiError(N_("{said} (HTTP {status}{code})", said=message,
                          status=response.status_code, code=f", {code}" if code else ""),
                       response.status_code, code, details)

    # -- endpoints ------------------------------------------------------------

    def info(self):
        """``GET /api/v1/``: version, server time and HLC, limits."""
        return self.request("GET", "/api/v1/", auth=False)

    def login(self, username, password, device_id, app_version):
        """``POST /api/v1/auth/login``: a token tied to this device."""
        return self._decode(self._send(
            "POST", "/api/v1/auth/login", auth=False,
            statuses=tuple(s for s in RETRY_STATUSES if s != 429), json={
                "username": username, "password": password, "device_id": device_id,
                "app_version": app_version}))

    def forms(self, etag=None):
        """``GET /api/v1/forms``: ``(definitions, etag)``, every definition this
        user may use and the answer's ETag; ``(None, etag)`` when ``etag`` still
        matches (304 Not Modified: the server sent no definitions)."""
        response = self._send("GET", "/api/v1/forms",
                              headers={"If-None-Match": etag} if etag else {})
        if response.status_code == 304 and etag:
            return None, etag
        forms = self._decode(response).get("forms", [])
        if not isinstance(forms, list) or not all(isinstance(f, dict) for f in forms):
            raise SyncError(N_("The server sent unreadable form definitions."))
        return forms, response.headers.get("ETag")

    def push(self, body_gzip):
        """``POST /api/v1/sync/push`` with a stored, gzip-compressed batch body."""
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        if self.lang and self.lang != "en":
            headers["Accept-Language"] = f"{self.lang}, en;q=0.5"
        return self.request("POST", "/api/v1/sync/push", data=body_gzip, headers=headers)

    def pull(self, cursor, limit):
        """``GET /api/v1/sync/pull``: one page of changed records, each with
        only the clocks that differ from its ``common_hlc`` (``clocks=common``;
        ``merge.from_wire`` reads it): a fresh record is half the bytes of
        DESIGN's every-clock record, and one edited once lists only its edited
        fields. Against an older server, ``clocks=sparse``.
        """
        while True:
            params = {"limit": limit, "clocks": self.pull_clocks[0]}
            if cursor is not None:
                params["cursor"] = cursor
            try:
                return self.request("GET", "/api/v1/sync/pull", params=params)
            except ApiError as exc:
                if exc.code != "invalid_clocks" or len(self.pull_clocks) == 1:
                    raise
                self.pull_clocks = self.pull_clocks[1:]

    def conflicts(self, after=0, limit=500):
        """``GET /api/v1/conflicts?status=open``: one page of the open conflicts
        in the user's areas (a contract addition: health workers may read them)."""
        return self.request("GET", "/api/v1/conflicts",
                            params={"status": "open", "after": after, "limit": limit})

    def export(self, path, params, out, progress=None):
        """Stream ``GET /api/v1/exports/...`` into the open binary file ``out``.

        :param progress: ``callback(done, total, unit)``: ``unit`` is
            ``"records"`` for CSV and JSONL (counted as lines, against
            ``X-Fieldsync-Count``) and ``"bytes"`` otherwise (against
            ``Content-Length``); ``total`` is None when unknown.
        :raises ServerUnreachable: the download was cut off or timed out; what
            was written to ``out`` is incomplete and must be thrown away.
        """
        c = self.config
        self.adapter.max_retries = self._retry(time.monotonic() + c.give_up_after)
        report = progress or (lambda done, total, unit: None)
        answered, written = False, 0
        try:
            # Only the read timeout is longer: an XLSX is sent only once built.
            with self.session.get(self.base_url + path, params=params, stream=True,
                                  headers={"Authorization": f"Bearer {self.token}"},
                                  timeout=(c.connect_timeout, c.export_read_timeout)) as response:
                answered = True
                if response.status_code >= 400:
                    self._decode(response)
                length = _header_int(response.headers, "Content-Length")
                if response.headers.get("Content-Encoding"):
                    length = None         # decoded bytes do not add up to it
                count = _header_int(response.headers, "X-Fieldsync-Count")
                by_line = count is not None and length is None and \
                    response.headers.get("Content-Type", "").startswith(LINE_TYPES)
                unit, total = ("records", count) if by_line else ("bytes", length)
                done = 0
                report(done, total, unit)
                for chunk in response.iter_content(64 * 1024):
                    out.write(chunk)
                    written += len(chunk)
                    # CSV: the header line, and a text cell's line breaks, make
                    # this an estimate; never past the total.
                    done = min(done + chunk.count(b"\n"), total) if by_line else written
                    report(done, total, unit)
                if length is not None and written != length:  # never a half file as whole
                    raise requests.exceptions.ChunkedEncodingError("short body")
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            name = type(exc).__name__
            kind = permanent_failure(exc)
            if kind and not answered:
                raise ServerAddressError(kind, self.base_url) from None
            if answered:
                # (urllib3 may hold back a partial last read: `written` is a floor.)
                raise ServerUnreachable(N_(
                    "The export download from {url} was cut off after {bytes} bytes ({error}); "
                    "nothing was saved. Try again.", url=self.base_url, bytes=written,
                    error=name)) from None
            if _read_timed_out(exc):
                raise ServerUnreachable(N_(
                    "Server {url} sent nothing for {seconds:g} s (a large XLSX is built whole "
                    "before it is sent: try CSV, or set FIELDSYNC_EXPORT_READ_TIMEOUT higher); "
                    "nothing was saved.", url=self.base_url,
                    seconds=c.export_read_timeout)) from None
            raise ServerUnreachable(N_("Server {url} did not answer ({error}); nothing was saved.",
                                       url=self.base_url, error=name)) from None
        except requests.RequestException as exc:
            raise SyncError(N_("Export from {url} failed ({error}); nothing was saved.",
                               url=self.base_url, error=type(exc).__name__)) from None


#: Exports whose lines are records (the progress counts them).
LINE_TYPES = ("text/csv", "application/x-ndjson")


def _read_timed_out(exc):
    """A read timeout, also when urllib3's retries wrapped it (ConnectionError)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.exceptions.ReadTimeout) or \
        isinstance(reason, urllib3.exceptions.ReadTimeoutError)


def _header_int(headers, name):
    value = headers.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else None
