"""One sync: refresh forms, push the outbox, pull until ``more`` is false.

Push first resends every sent-but-unanswered batch byte for byte (the answer
may have been lost after the server committed it), then freezes the queue
into new batches sized to the server's published limits: halved on 413,
doubled back after each good answer. Each answer is committed locally before
the next batch is built. Pull applies one page per transaction together with
its cursor, and starts over on ``resync_required``.

A sync either finishes (every change answered, pull complete) and returns a
:class:`SyncReport`, or raises :class:`~client_sync.errors.SyncError` carrying
the partial report. It never claims success for a part that failed.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from schemas import merge as merging
from schemas.wire import LIMITS

from .config import APP_VERSION
from .errors import ApiError, SyncError
from .i18n import N_
from .store import utc_now

SKEW_WARN_SECONDS = 300  # the server's default tolerance before it re-stamps


@dataclasses.dataclass
class SyncReport:
    """What one sync did.

    ``pushed`` changes sent and answered; ``applied``/``unchanged``/
    ``conflicts``/``rejected``/``forbidden`` their outcomes; ``pulled``
    records received; ``skew`` the device clock's offset from the server in
    seconds (positive: device ahead) and ``restamped`` how many of our
    clocks the server replaced; ``complete`` is true only when every change
    got an answer and the pull finished.
    """

    pushed: int = 0
    applied: int = 0
    unchanged: int = 0
    conflicts: int = 0
    rejected: int = 0
    forbidden: int = 0
    pulled: int = 0
    skew: float | None = None
    restamped: int = 0
    resyncs: int = 0
    forms_refreshed: bool = False
    open_conflicts: int | None = None
    complete: bool = False

    def summary(self) -> str:
        """One line of counts, in English; ``i18n.say`` gives it in another language."""
        return N_("pushed {pushed} ({applied} applied, {unchanged} unchanged, {conflicts} "
                  "conflicts, {rejected} rejected, {forbidden} forbidden); pulled {pulled}",
                  pushed=self.pushed, applied=self.applied, unchanged=self.unchanged,
                  conflicts=self.conflicts, rejected=self.rejected, forbidden=self.forbidden,
                  pulled=self.pulled)


def parse_utc(text):
    """An ISO 8601 time (``Z`` or an offset; none means UTC) as an aware
    datetime, or None when empty or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def skew_seconds(server_time):
    """Device clock minus server clock, from the server's ISO time (or None)."""
    server = parse_utc(server_time)
    if server is None:
        return None
    return round((datetime.now(timezone.utc) - server).total_seconds(), 1)


def _conflict_entry(entry):
    return (isinstance(entry, dict) and type(entry.get("id")) is int
            and all(isinstance(entry.get(k), str) for k in ("record_id", "form", "area", "field"))
            and all(isinstance(entry.get(k), dict) for k in ("current", "losing")))


def _limits(published):
    """The server's published limits where each is a whole number of at
    least 1 (anything else, from a broken server or a proxy, is ignored),
    over the defaults."""
    limits = dict(LIMITS)
    if isinstance(published, dict):
        for key, value in published.items():
            if key in LIMITS and type(value) is int and value >= 1:
                limits[key] = value
    return limits


class Synchronizer:
    """Runs syncs for one store over one transport.

    :param store: the device's :class:`~client_sync.store.Store`.
    :param transport: a logged-in :class:`~client_sync.transport.Transport`.
    :param progress: ``callback(phase, done, total)``; phase is ``"push"``
        (total = changes queued at the start) or ``"pull"`` (total None).
    """

    def __init__(self, store, transport, progress=None):
        self.store = store
        self.transport = transport
        self.progress = progress or (lambda phase, done, total: None)
        self.report = SyncReport()

    def run(self) -> SyncReport:
        report = self.report
        try:
            info = self.transport.info()
            self.limits = _limits(info.get("limits"))
            report.skew = skew_seconds(info.get("server_time"))
            self.store.observe(info.get("hlc"))
            if report.skew is not None:
                self.store.set_meta(clock_skew={"seconds": report.skew, "at": utc_now()})
            self.refresh_forms()
            self.push()
            self.pull()
            if self.report.resyncs and self.store.release_forbidden():
                # The scope changed (resync_required): what was refused as
                # forbidden may be allowed now. Send it again, then pull its answer.
                self.report.forbidden = 0
                self.push()
                self.pull()
            self.refresh_conflicts()
        except SyncError as exc:
            exc.report = report
            self.store.set_meta(last_sync_attempt=utc_now(), last_sync_ok=False)
            raise
        report.complete = True
        self.store.set_meta(last_sync=utc_now(), last_sync_attempt=utc_now(), last_sync_ok=True,
                            last_report=dataclasses.asdict(report))
        return report

    def refresh_forms(self):
        # Asked with the cached definitions' ETag: unchanged ones cost a 304.
        forms, etag = self.transport.forms(self.store.forms_etag())
        if forms:
            self.report.forms_refreshed = self.store.save_forms(forms, etag)

    def refresh_conflicts(self):
        """Fetch every open conflict in the user's areas, whichever edit
        arrived first, and store them in place of the last list. A server
        older than this contract addition refuses health workers (403): the
        device then knows only the conflicts its own pushes were told of."""
        entries, after = [], 0
        for _ in range(1000):  # bounded: a server whose paging never ends
            try:
                page = self.transport.conflicts(after)
            except ApiError as exc:
                if exc.status in (403, 404):
                    return
                raise
            items = page.get("conflicts")
            if not isinstance(items, list) or not all(_conflict_entry(e) for e in items):
                raise SyncError(N_("The server sent an unreadable conflict list."))
            entries += items
            if not page.get("more") or type(page.get("next_after")) is not int:
                break
            after = page["next_after"]
        self.store.replace_conflicts(entries)
        self.report.open_conflicts = len(entries)

    # -- push -------------------------------------------------------------------

    def push(self):
        report, store = self.report, self.store
        max_records = int(self.limits["max_records_per_batch"])
        max_bytes = int(self.limits["max_batch_bytes"])
        size = int(store.get_meta("batch_size") or max_records)
        size = max(1, min(size, max_records))
        ceiling = max_records  # below the smallest size refused as too large in this sync
        total = store.queued_count()
        self.progress("push", 0, total)
        while True:
            batch = store.pending_batch() or store.make_batch(size, max_bytes, APP_VERSION)
            if batch is None:
                break
            batch_id, body, count = batch
            try:
                answer = self.transport.push(body)
            except ApiError as exc:
                if exc.status == 413:
                    # Nothing was stored: split smaller and try again.
                    ids = store.batch_record_ids(batch_id)
                    store.drop_batch(batch_id)
                    if count == 1:
                        store.hold(ids[0], "rejected", {"record": [
                            "This record is larger than the server accepts."]})
                        report.rejected += 1
                    ceiling = min(ceiling, max(1, count - 1))
                    size = max(1, count // 2)
                    store.set_meta(batch_size=size)
                    continue
                if exc.status == 409 and exc.code != "resync_required":
                    # The server knows this batch id with another body (a
                    # restored device database): send the changes afresh;
                    # the merge makes any repeat harmless.
                    store.drop_batch(batch_id)
                    continue
                raise
            counts = store.apply_answer(batch_id, answer)
            answered = count - counts["unanswered"]
            report.pushed += answered
            report.applied += counts["applied"]
            report.unchanged += counts["unchanged"]
            report.conflicts += counts["conflict"]
            report.rejected += counts["rejected"]
            report.forbidden += counts["forbidden"]
            skew = answer.get("skew")
            if isinstance(skew, dict):
                if type(skew.get("restamped")) is int:
                    report.restamped += skew["restamped"]
                if isinstance(skew.get("seconds"), (int, float)):
                    report.skew = skew["seconds"]
            if counts["unanswered"]:
                raise SyncError(N_("The server answered only {answered} of {count} changes; "
                                   "the rest stay queued.", answered=answered, count=count))
            if size < ceiling:  # a good answer: grow back toward the limit
                size = min(ceiling, size * 2)
                store.set_meta(batch_size=size)
            self.progress("push", report.pushed, max(total, report.pushed))

    # -- pull -------------------------------------------------------------------

    def _adopt_scope(self, user):
        # resync_required names the user's areas and role as they are now: new
        # records are then checked against them (Client.add) without a login.
        known = self.store.get_meta("user") or {}
        if (isinstance(user, dict) and user.get("username") == known.get("username")
                and isinstance(user.get("areas"), list)
                and all(isinstance(a, str) for a in user["areas"])
                and isinstance(user.get("role"), str)):
            self.store.set_meta(user={**known, "role": user["role"], "areas": user["areas"]})

    def pull(self):
        store, report = self.store, self.report
        limit = int(self.limits.get("pull_limit_default") or 500)
        generation = store.get_meta("pull_gen", 0)
        cursor = store.get_meta("cursor")
        resyncs = 0
        self.progress("pull", 0, None)
        while True:
            try:
                page = self.transport.pull(cursor, limit)
            except ApiError as exc:
                # A changed scope (409) or a cursor this server no longer
                # recognises (400, e.g. a restored server): start over.
                if exc.code in ("resync_required", "invalid_cursor") and resyncs < 3:
                    resyncs += 1
                    report.resyncs += 1
                    self._adopt_scope(exc.details.get("user"))
                    generation = store.start_resync()
                    cursor = None
                    continue
                raise
            records = page.get("records") or []
            if (not isinstance(records, list) or not isinstance(page.get("more"), bool)
                    or not isinstance(page.get("cursor", ""), (str, type(None)))
                    or not all(merging.readable_wire(r) for r in records)):
                # Never skip a record: the cursor would move past it for good.
                raise SyncError(N_("The server sent a malformed pull page; nothing was applied."))
            if page["more"] and not records and page.get("cursor") in (None, cursor):
                raise SyncError(N_("The server's pull did not advance; try again later."))
            cursor, more = page.get("cursor", cursor), page["more"]
            store.apply_pull(records, cursor, generation=generation)
            report.pulled += len(records)
            # Let go of this page before asking for the next: the device holds
            # one decoded page at a time (5,000 records are some 15 MB of
            # objects), and the next is decoded into the memory this one frees.
            del page, records
            self.progress("pull", report.pulled, None)
            if not more:
                break
        store.finish_pull()
