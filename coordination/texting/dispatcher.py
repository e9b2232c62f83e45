"""The dispatcher: sends the outbox's due messages through the gateway, exactly once.

1. Claim: due rows are read in a transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
   several workers share the work), checked again (consent, the visit, texting hours,
   caps: `send_check.check_before_sending`), and marked SENDING with the attempt number
   before anything leaves, by an UPDATE guarded by `status = 'queued'`: only the rows it
   took are sent. On SQLite nothing locks a row that was read, and another process may
   dispatch too (`sms dispatch` next to `serve`): the guard is what keeps a text from
   leaving twice.
2. Send: with bounded concurrency, outside any transaction.
3. Record: the results, each only if the row is still in the attempt that sent it.

A crash between 2 and 3 leaves rows SENDING, and so does a send whose outcome is unknown
(a timeout, a connection cut after the request left: the provider may have taken it).
They are "in doubt": after `in_doubt_after` the provider's log is asked whether the
message left; found, it is recorded as sent; not found, it goes again. Nothing is retried
blindly, nothing is lost silently: a message that cannot be sent ends FAILED with its
reason, which the worklist shows.

`in_doubt_after` must outlast any send, or a slow send could be settled (and sent again)
while it is still on the wire: a send is therefore only started within the first quarter
of it after the claim (the rest of a batch goes back to the queue, untouched), and the
client's own timeout (10 s) ends it well before."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from coordination.texting.consent import flag_number, opt_out
from coordination.texting.gateway import GatewayError, RecipientProblem, SendResult, SmsGateway
from coordination.texting.inbound import apply_early_callbacks
from coordination.texting.models import ConsentHow, MessageStatus, OutboundMessage
from coordination.texting.send_check import check_before_sending
from core.clock import Clock
from core.db import transaction
from core.phones import mask_phone

log = logging.getLogger("cgt_access.outbox")

MAX_ATTEMPTS = 5
BATCH_SIZE = 100
CONCURRENCY = 8
# Longer than any send can take (started within 30 s of the claim, the Twilio client times
# out after 10 s).
IN_DOUBT_AFTER = timedelta(minutes=2)
# A send starts at most this share of `in_doubt_after` after its batch was claimed.
SEND_START_SHARE = 0.25
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)
# One tick never runs longer than this many batches (the next tick goes on).
MAX_BATCHES = 200
# On SQLite the threads of one process take turns (their claims would only collide);
# other processes are kept from sending twice by the guarded claim.
_sqlite_dispatch_lock = threading.Lock()


@dataclass(frozen=True)
class _Claim:
    id: int
    to_phone: str
    body: str
    attempt: int


class _NotStarted:
    """A claimed send that was not started: its batch ran out of time."""


NOT_STARTED = _NotStarted()
_Outcome = SendResult | GatewayError | _NotStarted


@dataclass
class DispatchReport:
    """What one tick did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    dropped: int = 0
    deferred: int = 0
    in_doubt: int = 0  # sends whose outcome is unknown, left for reconciliation
    released: int = 0  # claimed but not started in time: back in the queue as they were
    reconciled: int = 0
    requeued: int = 0
    errors: list[str] = field(default_factory=list)


def backoff(attempt: int, *, retry_after: float | None, rng: random.Random) -> timedelta:
    """How long to wait after failed attempt number `attempt` (1, 2, ...): exponential,
    capped, with jitter (50-100%) so that many failed sends do not come back at once; never
    sooner than the provider's Retry-After."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    wait: timedelta = ceiling * (0.5 + rng.random() / 2)
    if retry_after is not None:
        wait = max(wait, timedelta(seconds=retry_after))
    return wait


def _claim_batch(
    factory: sessionmaker[Session], *, clock: Clock, limit: int, report: DispatchReport
) -> tuple[bool, list[_Claim]]:
    """(rows were due, the claims to send now).

    Another dispatcher may read the same due rows at the same moment (on SQLite, where
    nothing locks a row that was read; `sms dispatch` next to `serve`): every change here is
    therefore an UPDATE guarded by the state the row was read in, and only the rows that
    the UPDATE took (RETURNING) are sent. What another dispatcher took first is left to it."""
    now = clock.now()
    with transaction(factory) as session:
        query = (
            select(OutboundMessage)
            .where(
                OutboundMessage.status == MessageStatus.QUEUED, OutboundMessage.send_after <= now
            )
            .order_by(OutboundMessage.send_after, OutboundMessage.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            # Several workers may dispatch at once: each takes rows nobody else holds.
            query = query.with_for_update(skip_locked=True)
        rows = list(session.scalars(query))
        if not rows:
            return False, []
        verdicts = check_before_sending(session, clock=clock, messages=rows)
        to_send: list[int] = []
        for message in rows:
            verdict = verdicts[message.id]
            if verdict.drop_reason is not None:
                if _update_if_still_due(
                    session,
                    message.id,
                    now=now,
                    status=MessageStatus.DROPPED,
                    drop_reason=verdict.drop_reason[:200],
                ):
                    report.dropped += 1
            elif verdict.defer_until is not None:
                if _update_if_still_due(
                    session,
                    message.id,
                    now=now,
                    send_after=verdict.defer_until,
                    last_error=(verdict.note or "")[:300] or None,
                ):
                    report.deferred += 1
            else:
                to_send.append(message.id)
        if not to_send:
            return True, []
        taken = session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.id.in_(to_send), *_still_due(now))
            .values(
                status=MessageStatus.SENDING,
                claimed_at=now,
                attempts=OutboundMessage.attempts + 1,
            )
            .returning(
                OutboundMessage.id,
                OutboundMessage.to_phone,
                OutboundMessage.body,
                OutboundMessage.attempts,
            )
            .execution_options(synchronize_session=False)
        ).all()
    by_id = {row.id: _Claim(row.id, row.to_phone, row.body, row.attempts) for row in taken}
    # In the order they fell due (RETURNING promises no order).
    return True, [by_id[message_id] for message_id in to_send if message_id in by_id]


def _still_due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """The row is as the claim read it: queued and due (not taken, sent, dropped or put off
    by another dispatcher meanwhile)."""
    return (OutboundMessage.status == MessageStatus.QUEUED, OutboundMessage.send_after <= now)


def _update_if_still_due(
    session: Session, message_id: int, *, now: datetime, **values: object
) -> bool:
    """Change one row only if it is still queued and due; True if it was changed."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.id == message_id, *_still_due(now))
            .values(**values)
            .execution_options(synchronize_session=False)
        ),
    )
    return result.rowcount == 1


def _send(gateway: SmsGateway, claim: _Claim, *, start_by: float) -> _Outcome:
    if time.monotonic() > start_by:
        return NOT_STARTED
    try:
        return gateway.send(to=claim.to_phone, body=claim.body, reference=f"outbox:{claim.id}")
    except GatewayError as error:
        return error
    except Exception as error:
        # A bug or an unexpected client failure (an answer it could not read, say): the
        # message may have left, so it is settled against the provider's log, and surfaced.
        log.exception("gateway failed unexpectedly for outbox:%s", claim.id)
        return GatewayError(
            f"unexpected: {type(error).__name__}",
            permanent=False,
            code="unknown",
            outcome_unknown=True,
        )


def _still_mine(claim: _Claim) -> ColumnElement[bool]:
    """The row, only while it is still in the attempt that sent it (a reconciliation may
    have settled it meanwhile)."""
    return and_(
        OutboundMessage.id == claim.id,
        OutboundMessage.status == MessageStatus.SENDING,
        OutboundMessage.attempts == claim.attempt,
    )


def _record(
    factory: sessionmaker[Session],
    *,
    clock: Clock,
    gateway: SmsGateway,
    results: Sequence[tuple[_Claim, _Outcome]],
    rng: random.Random,
    report: DispatchReport,
) -> None:
    now = clock.now()
    with transaction(factory) as session:
        sent = [
            {"b_id": claim.id, "b_attempt": claim.attempt, "b_sid": result.provider_message_id}
            for claim, result in results
            if isinstance(result, SendResult)
        ]
        if sent:
            # One statement for every text that left (executemany), each row only while it
            # is still in the attempt that sent it.
            table = OutboundMessage.__table__
            assert isinstance(table, Table)
            session.connection().execute(
                update(table)
                .where(
                    table.c.id == bindparam("b_id"),
                    table.c.status == MessageStatus.SENDING.value,
                    table.c.attempts == bindparam("b_attempt"),
                )
                .values(
                    status=MessageStatus.SENT.value,
                    sent_at=now,
                    provider=gateway.name,
                    provider_message_id=bindparam("b_sid"),
                    last_error=None,
                ),
                sent,
            )
            report.sent += len(sent)
        sids = [str(row["b_sid"]) for row in sent]
        for claim, result in results:
            if isinstance(result, SendResult):
                continue
            if isinstance(result, _NotStarted):
                # Never handed to the provider: back in the queue as it was, still due.
                session.execute(
                    update(OutboundMessage)
                    .where(_still_mine(claim))
                    .values(status=MessageStatus.QUEUED, attempts=claim.attempt - 1)
                )
                report.released += 1
            else:
                _record_failure(
                    session, clock=clock, claim=claim, error=result, rng=rng, report=report
                )
        # A delivery callback can beat us to the database: apply what it said.
        apply_early_callbacks(session, sids=sids)


def _record_failure(
    session: Session,
    *,
    clock: Clock,
    claim: _Claim,
    error: GatewayError,
    rng: random.Random,
    report: DispatchReport,
) -> None:
    now = clock.now()
    reason = f"{error.code or 'error'}: {error}"[:300]
    if error.outcome_unknown:
        # The provider may have taken it: a resend now could text twice. The row stays
        # SENDING and is settled against the provider's log after `in_doubt_after`.
        session.execute(
            update(OutboundMessage)
            .where(_still_mine(claim))
            .values(
                last_error=f"{reason} (outcome unknown: the provider's log is checked "
                "before any resend)"[:300]
            )
        )
        report.in_doubt += 1
        log.warning(
            "message %s to %s is in doubt: %s", claim.id, mask_phone(claim.to_phone), error.code
        )
        return
    if error.permanent or claim.attempt >= MAX_ATTEMPTS:
        session.execute(
            update(OutboundMessage)
            .where(_still_mine(claim))
            .values(status=MessageStatus.FAILED, last_error=reason)
        )
        report.failed += 1
        log.warning(
            "message %s to %s failed for good: %s",
            claim.id,
            mask_phone(claim.to_phone),
            error.code,
        )
        if error.recipient_problem is RecipientProblem.OPTED_OUT:
            opt_out(session, clock=clock, phone=claim.to_phone, how=ConsentHow.PROVIDER_21610)
        elif error.recipient_problem is not None:
            flag_number(
                session,
                clock=clock,
                phone=claim.to_phone,
                code=error.code or error.recipient_problem.value,
            )
        return
    wait = backoff(claim.attempt, retry_after=error.retry_after, rng=rng)
    session.execute(
        update(OutboundMessage)
        .where(_still_mine(claim))
        .values(
            status=MessageStatus.QUEUED,
            send_after=now + wait,
            last_error=f"{reason} (attempt {claim.attempt} of {MAX_ATTEMPTS}, retrying)"[:300],
        )
    )
    report.retrying += 1


def reconcile_in_doubt(
    factory: sessionmaker[Session],
    *,
    gateway: SmsGateway,
    clock: Clock,
    in_doubt_after: timedelta = IN_DOUBT_AFTER,
    report: DispatchReport | None = None,
    limit: int = 50,
) -> DispatchReport:
    """Settle messages left SENDING by a crash or a send whose outcome is unknown: ask the
    provider's log whether each left, `limit` messages per transaction, until none is left.

    Found: recorded as sent (no second text). Not found: queued again (or failed when its
    attempts are used up). The provider's log unreadable: left in doubt for the next tick."""
    report = report or DispatchReport()
    now = clock.now()
    after: tuple[datetime, int] | None = None
    while True:
        with transaction(factory) as session:
            last = _reconcile_page(
                session,
                gateway=gateway,
                now=now,
                cutoff=now - in_doubt_after,
                after=after,
                limit=limit,
                report=report,
            )
        if last is None:
            return report
        after = last


def _reconcile_page(
    session: Session,
    *,
    gateway: SmsGateway,
    now: datetime,
    cutoff: datetime,
    after: tuple[datetime, int] | None,
    limit: int,
    report: DispatchReport,
) -> tuple[datetime, int] | None:
    """One page of in-doubt messages (those claimed before `cutoff`, after the cursor);
    returns the cursor past it, None when the page was the last."""
    query = (
        select(OutboundMessage)
        .where(
            OutboundMessage.status == MessageStatus.SENDING,
            OutboundMessage.claimed_at < cutoff,
        )
        .order_by(OutboundMessage.claimed_at, OutboundMessage.id)
        .limit(limit)
    )
    if after is not None:
        # Keyset paging: a message left in doubt (its log unreadable) is not seen twice.
        claimed_at, message_id = after
        query = query.where(
            or_(
                OutboundMessage.claimed_at > claimed_at,
                and_(OutboundMessage.claimed_at == claimed_at, OutboundMessage.id > message_id),
            )
        )
    if session.get_bind().dialect.name == "postgresql":
        # Another worker reconciling at the same time takes other rows.
        query = query.with_for_update(skip_locked=True)
    messages = list(session.scalars(query))
    found: list[str] = []
    for message in messages:
        since = (message.claimed_at or now) - timedelta(minutes=1)
        try:
            sids = gateway.find_sent(to=message.to_phone, body=message.body, since=since)
        except GatewayError as error:
            report.errors.append(f"outbox:{message.id}: cannot check the provider's log")
            log.warning("cannot reconcile outbox:%s yet: %s", message.id, error.code)
            continue
        # Two rows with the same text to one number may both be in doubt: each takes the
        # oldest message no other row owns.
        sid = next((candidate for candidate in sids if _sid_is_free(session, candidate)), None)
        # Each change only while the row is still in the attempt that was in doubt: another
        # dispatcher (on SQLite nothing locked the row) may have settled it meanwhile.
        if sid is not None:
            if _update_if_still_in_doubt(
                session,
                message,
                status=MessageStatus.SENT,
                sent_at=message.claimed_at,
                provider=gateway.name,
                provider_message_id=sid,
                last_error=None,
            ):
                found.append(sid)
                report.reconciled += 1
        elif message.attempts >= MAX_ATTEMPTS:
            if _update_if_still_in_doubt(
                session,
                message,
                status=MessageStatus.FAILED,
                last_error="in doubt (a crash or no answer) and no attempts left",
            ):
                report.failed += 1
        elif _update_if_still_in_doubt(
            session,
            message,
            status=MessageStatus.QUEUED,
            send_after=now,
            last_error="in doubt (a crash or no answer); not at the provider, sending again",
        ):
            report.requeued += 1
    apply_early_callbacks(session, sids=found)
    if len(messages) < limit:
        return None
    last = messages[-1]
    assert last.claimed_at is not None
    return last.claimed_at, last.id


def _update_if_still_in_doubt(session: Session, message: OutboundMessage, **values: object) -> bool:
    """Settle one in-doubt row only if it is still SENDING in the attempt that was read."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.id == message.id,
                OutboundMessage.status == MessageStatus.SENDING,
                OutboundMessage.attempts == message.attempts,
            )
            .values(**values)
            # The loaded row takes the new values: delivery callbacks are applied to it next.
            .execution_options(synchronize_session="fetch")
        ),
    )
    return result.rowcount == 1


def _sid_is_free(session: Session, sid: str) -> bool:
    """True unless another outbox row already owns this provider message."""
    owner = select(OutboundMessage.id).where(OutboundMessage.provider_message_id == sid)
    return session.scalar(owner) is None


def dispatch_due(
    factory: sessionmaker[Session],
    *,
    gateway: SmsGateway,
    clock: Clock,
    batch_size: int = BATCH_SIZE,
    concurrency: int = CONCURRENCY,
    max_batches: int = MAX_BATCHES,
    in_doubt_after: timedelta = IN_DOUBT_AFTER,
    rng: random.Random | None = None,
    report: DispatchReport | None = None,
) -> int:
    """One dispatcher tick: settle messages in doubt, then send every due message in
    batches (at most `concurrency` sends at once). Returns how many the gateway accepted;
    `report`, when given, receives the details."""
    report = report if report is not None else DispatchReport()
    rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
    is_sqlite = factory.kw["bind"].dialect.name == "sqlite"
    if is_sqlite and not _sqlite_dispatch_lock.acquire(blocking=False):
        return 0  # this process is dispatching already
    try:
        reconcile_in_doubt(
            factory, gateway=gateway, clock=clock, in_doubt_after=in_doubt_after, report=report
        )
        start_within = in_doubt_after.total_seconds() * SEND_START_SHARE
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sms-send") as pool:
            for _ in range(max_batches):
                # Measured before the claim's transaction: claimed_at is no later than this.
                start_by = time.monotonic() + start_within
                had_rows, claims = _claim_batch(
                    factory, clock=clock, limit=batch_size, report=report
                )
                if not had_rows:
                    break
                if not claims:
                    continue
                if len(claims) == 1:
                    results = [(claims[0], _send(gateway, claims[0], start_by=start_by))]
                else:
                    sent = pool.map(partial(_send, gateway, start_by=start_by), claims)
                    results = list(zip(claims, sent, strict=True))
                _record(
                    factory, clock=clock, gateway=gateway, results=results, rng=rng, report=report
                )
        if report.failed or report.dropped or report.in_doubt:
            log.info(
                "dispatcher: %d sent, %d retrying, %d failed, %d dropped, %d deferred, %d in doubt",
                report.sent,
                report.retrying,
                report.failed,
                report.dropped,
                report.deferred,
                report.in_doubt,
            )
        return report.sent
    finally:
        if is_sqlite:
            _sqlite_dispatch_lock.release()


def due_backlog(session: Session, *, now: datetime) -> int:
    """How many messages are due and not sent yet (health and the demo page)."""
    from sqlalchemy import func

    return (
        session.scalar(
            select(func.count())
            .select_from(OutboundMessage)
            .where(
                OutboundMessage.status == MessageStatus.QUEUED, OutboundMessage.send_after <= now
            )
        )
        or 0
    )
