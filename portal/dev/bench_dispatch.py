"""The dispatch figures of `cgt-access bench` (issue 4, "Scale and speed").

- `dispatch.plan_rows_per_s`: `plan_reminders` over the 30-day horizon of many patients and
  their caregivers (all with consent, 15-year schedules, an appointment within 30 days).
- `dispatch.msgs_per_s`: `dispatch_due` sending that many due reminders (the check before
  sending really runs: consent, visit, texting hours, caps) through `TwilioGateway`, the real
  `twilio` client, to the loopback double of Twilio's API; `dispatch.ratio_bare_client`: that
  rate over the rate of the same number of bare `client.messages.create` calls, in a plain
  sequential loop, against the same double in the same run.
- `dispatch.tick_1k_ms` / `dispatch.tick_1m_ms`: one dispatcher tick (a gateway that accepts at
  once) sending 50 due messages while 1,000 or 1,000,000 future reminders wait in the outbox.

The double is the one the tests use (tests/doubles/twilio_api.py): the bench runs from the
repository root (`make bench`), which holds `tests/`. It runs in a process of its own, as
Twilio runs on machines of its own: in this process its server threads would fight the
dispatcher's sending threads for the interpreter lock, a cost no real deployment pays.

Everything lives in throw-away SQLite files; phone numbers are in the 555-01xx range, which
reaches nobody. The clock stands at a fixed instant inside texting hours in both demo states.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from coordination.followup.bulk import generate_schedules
from coordination.followup.models import Visit, VisitStatus
from coordination.followup.protocol import shipped_protocols
from coordination.texting.dispatcher import DispatchReport, dispatch_due
from coordination.texting.gateway import SendResult
from coordination.texting.models import (
    ConsentStatus,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    SmsConsent,
)
from coordination.texting.planning import plan_reminders
from coordination.texting.twilio_gateway import TwilioGateway
from core.clock import FrozenClock
from core.db import make_engine, make_session_factory, transaction
from core.models import (
    Caregiver,
    CaregiverLink,
    Language,
    Patient,
    PatientStatus,
    Relation,
    State,
    Therapy,
    TreatmentCenter,
)
from core.settings import load_settings
from portal.dev.bench_app import BENCH_SECRET
from portal.dev.demo import seed_demo_data
from portal.migrate import upgrade_database

DISPATCH_FIGURES = (
    "dispatch.plan_rows_per_s",
    "dispatch.msgs_per_s",
    "dispatch.ratio_bare_client",
    "dispatch.tick_1k_ms",
    "dispatch.tick_1m_ms",
)
# Friday noon in Baltimore, 10:00 in Denver: inside both demo states' texting hours.
BENCH_NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
# Sending: 4 threads and batches of 200 did best against the loopback double (about 10%
# better than the worker's defaults, 8 and 100; 2, 4 or 8 threads and batches of 100 to 500
# all within 15%). Against Twilio itself (answers in 100-300 ms) more threads pay off.
SEND_BATCH = 200
SEND_CONCURRENCY = 4
WARM_UP_SENDS = 200
# Ticks: this many due messages per tick, this many measured ticks (after two warm-ups).
TICK_DUE = 50
TICK_ROUNDS = 15
TICK_WARM_UPS = 2
SMALL_BACKLOG = 1_000
CAREGIVER_EVERY = 3  # one patient in three has a caregiver who gets reminders (own phone)
CHUNK = 2_000

# The double's (and the client's) account: this throw-away run only.
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-only-token-" + "0" * 15
FROM_NUMBER = "+12025550100"
STATUS_CALLBACK = "http://bench.invalid/sms/status"
REPO_ROOT = Path(__file__).resolve().parents[2]  # the double lives in tests/doubles
# Started with `python -c` in the repository root, where `tests` is importable.
_DOUBLE_SCRIPT = """
import sys
from tests.doubles.twilio_api import TwilioApiDouble
double = TwilioApiDouble(sys.argv[1], sys.argv[2], lifetime=float(sys.argv[3])).start()
print(double.url, flush=True)
sys.stdin.read()  # until the bench closes our stdin (or the lifetime ends)
double.stop()
"""


def _figure(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, **extra}


def dispatch_figures(
    folder: Path, *, selected: list[str], patients: int, future_rows: int
) -> Iterator[dict[str, Any]]:
    """The selected dispatch figures, as dicts (the caller prints them as JSON lines)."""
    wanted = [name for name in DISPATCH_FIGURES if name in selected]
    if not wanted:
        return
    if patients < 1 or future_rows < SMALL_BACKLOG:
        raise ValueError(f"dispatch figures need patients >= 1 and future rows >= {SMALL_BACKLOG}")
    clock = FrozenClock(BENCH_NOW)
    if {"dispatch.plan_rows_per_s", "dispatch.msgs_per_s", "dispatch.ratio_bare_client"} & set(
        wanted
    ):
        factory, caregivers = _planning_world(
            folder / "dispatch.db", clock=clock, patients=patients
        )
        try:
            yield from _plan_and_send(
                factory, clock=clock, selected=wanted, patients=patients, caregivers=caregivers
            )
        finally:
            factory.kw["bind"].dispose()
    if {"dispatch.tick_1k_ms", "dispatch.tick_1m_ms"} & set(wanted):
        yield from _ticks(folder / "ticks.db", clock=clock, selected=wanted, future=future_rows)


# --- a world of patients with consent, schedules and appointments --------------------------


def _phone(index: int) -> str:
    """A distinct fictional number per index: 555-0100..0199 in area codes 700 and up (the
    demo's own people are in 410 and 303)."""
    return f"+1{700 + index // 100}55501{index % 100:02d}"


def _add_people(session: Session, *, clock: FrozenClock, count: int, caregivers: bool) -> int:
    """`count` followed patients (each with a number of their own) and, when asked, a
    caregiver who gets reminders for one patient in three; every number opted in. Returns
    how many caregivers."""
    now = clock.now()
    today = now.date()
    therapies = list(session.scalars(select(Therapy.id).order_by(Therapy.id)))
    places = [
        (state.id, state.code, state.time_zone, center.id)
        for state, center in session.execute(
            select(State, TreatmentCenter)
            .join(TreatmentCenter, TreatmentCenter.state_id == State.id)
            .order_by(State.id, TreatmentCenter.id)
        )
    ]
    patients: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    consents: list[dict[str, Any]] = []
    linked: list[int] = []  # indexes of the patients who get a caregiver
    for index in range(count):
        state_id, code, zone, center_id = places[index % len(places)]
        # Spread over the 15 years, a few days apart, so visits fall on every day.
        infusion = today - timedelta(days=20 + (index * 37) % (14 * 365))
        phone = _phone(index)
        patients.append(
            {
                "state_id": state_id,
                "center_id": center_id,
                "therapy_id": therapies[index % len(therapies)],
                "medicaid_id": f"{code}8{index:07d}",
                "center_mrn": f"DISPATCH-{index:07d}",
                "given_name": "Bench",
                "family_name": f"Patient {index}",
                "birth_date": infusion.replace(year=infusion.year - 14 - index % 20, day=1),
                "preferred_language": Language.ES if index % 5 == 0 else Language.EN,
                "time_zone": zone,
                "mobile_phone": phone,
                "infusion_date": infusion,
                "status": PatientStatus.ACTIVE,
                "created_at": now,
                "updated_at": now,
            }
        )
        consents.append({"phone": phone, "status": ConsentStatus.OPTED_IN, "updated_at": now})
        if caregivers and index % CAREGIVER_EVERY == 0:
            phone = _phone(count + index)
            people.append(
                {
                    "given_name": "Bench",
                    "family_name": f"Caregiver {index}",
                    "mobile_phone": phone,
                    "preferred_language": Language.EN,
                    "time_zone": zone,
                    "created_at": now,
                }
            )
            linked.append(index)
            consents.append({"phone": phone, "status": ConsentStatus.OPTED_IN, "updated_at": now})
    for table, rows in ((Patient, patients), (Caregiver, people), (SmsConsent, consents)):
        for start in range(0, len(rows), CHUNK):
            session.execute(insert(table), rows[start : start + CHUNK])
    if linked:
        patient_ids = list(
            session.scalars(
                select(Patient.id).where(Patient.center_mrn.like("DISPATCH-%")).order_by(Patient.id)
            )
        )
        caregiver_ids = list(
            session.scalars(
                select(Caregiver.id)
                .where(Caregiver.family_name.like("Caregiver %"))
                .order_by(Caregiver.id)
            )
        )
        links = [
            {
                "caregiver_id": caregiver_id,
                "patient_id": patient_ids[index],
                "relation": Relation.PARENT,
                "can_view_schedule": True,
                "can_manage_visits": True,
                "can_receive_reminders": True,
                "can_view_education": True,
                "can_report_events": False,
                "created_at": now,
                "updated_at": now,
            }
            for caregiver_id, index in zip(caregiver_ids, linked, strict=True)
        ]
        session.execute(insert(CaregiverLink), links)
    return len(linked)


def _book_next_visits(session: Session, *, clock: FrozenClock) -> int:
    """Book every bench patient's next visit 1 to 29 days from now (one executemany)."""
    today = clock.now().date()
    first: dict[int, tuple[int, str]] = {}
    rows = session.execute(
        select(Visit.patient_id, Visit.id, Patient.time_zone)
        .join(Patient, Patient.id == Visit.patient_id)
        .where(
            Visit.status == VisitStatus.DUE,
            Visit.window_end >= today,
            Patient.center_mrn.like("DISPATCH-%"),
        )
        .order_by(Visit.patient_id, Visit.target_date)
    )
    for patient_id, visit_id, zone in rows:
        first.setdefault(patient_id, (visit_id, zone))
    bookings = [
        {
            "b_id": visit_id,
            "b_at": datetime.combine(
                today + timedelta(days=1 + patient_id % 29),
                day_time(14 + patient_id % 5, 30),
                tzinfo=UTC,
            ),
            "b_zone": zone,
        }
        for patient_id, (visit_id, zone) in first.items()
    ]
    table = Visit.__table__
    assert isinstance(table, Table)
    statement = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            status=VisitStatus.SCHEDULED.value,
            appointment_at=bindparam("b_at"),
            appointment_zone=bindparam("b_zone"),
        )
    )
    session.connection().execute(statement, bookings)
    return len(bookings)


def _planning_world(
    path: Path, *, clock: FrozenClock, patients: int
) -> tuple[sessionmaker[Session], int]:
    """The world to plan and send in; (its session factory, how many caregivers)."""
    url = f"sqlite:///{path}"
    upgrade_database(url)
    factory = make_session_factory(make_engine(url))
    with transaction(factory) as session:
        seed_demo_data(session, clock=clock)
        caregivers = _add_people(session, clock=clock, count=patients, caregivers=True)
        generate_schedules(session, clock=clock, library=shipped_protocols(), patient_ids=None)
        booked = _book_next_visits(session, clock=clock)
    if booked < patients:
        raise RuntimeError(f"only {booked} of {patients} bench patients have a visit to book")
    return factory, caregivers


# --- planning and sending ---------------------------------------------------------------


def _plan_and_send(
    factory: sessionmaker[Session],
    *,
    clock: FrozenClock,
    selected: list[str],
    patients: int,
    caregivers: int,
) -> Iterator[dict[str, Any]]:
    gc.collect()
    started = time.perf_counter()
    with transaction(factory) as session:
        report = plan_reminders(session, clock=clock)
    seconds = time.perf_counter() - started
    if report.planned < patients:
        raise RuntimeError(f"planning made {report.planned} rows for {patients} patients")
    if "dispatch.plan_rows_per_s" in selected:
        yield _figure(
            "dispatch.plan_rows_per_s",
            round(report.planned / seconds, 1),
            "row/s",
            patients=patients,
            caregivers=caregivers,
            planned=report.planned,
            capped=report.capped,
            visits=report.considered_visits,
            s=round(seconds, 3),
        )
    if not {"dispatch.msgs_per_s", "dispatch.ratio_bare_client"} & set(selected):
        return
    due = _make_due(factory, clock=clock, count=patients)
    with _twilio_double(lifetime=600) as api_base:
        settings = load_settings(
            database_url="sqlite://",
            secret_key=BENCH_SECRET,
            demo_mode=False,
            run_scheduler=False,
            sms_backend="twilio",
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            twilio_from_number=FROM_NUMBER,
            twilio_api_base=api_base,
            public_base_url="http://bench.invalid",
        )
        bare = TwilioGateway(settings).client
        _bare_loop(bare, due[:WARM_UP_SENDS])
        # Half of the bare calls before the dispatcher's run and half after: a machine that
        # slows down or speeds up during the run weighs on both figures alike.
        half = len(due) // 2
        bare_s = _bare_loop(bare, due[:half])
        gc.collect()
        sending = DispatchReport()
        started = time.perf_counter()
        sent = dispatch_due(
            factory,
            gateway=TwilioGateway(settings),
            clock=clock,
            batch_size=SEND_BATCH,
            concurrency=SEND_CONCURRENCY,
            max_batches=len(due) // SEND_BATCH + 10,
            report=sending,
        )
        dispatch_s = time.perf_counter() - started
        bare_s += _bare_loop(bare, due[half:])
    if sent != len(due):
        raise RuntimeError(
            f"the dispatcher sent {sent} of {len(due)} due reminders "
            f"({sending.dropped} dropped, {sending.deferred} deferred, {sending.failed} failed, "
            f"{sending.retrying} retrying)"
        )
    rate = round(sent / dispatch_s, 1)
    bare_rate = round(len(due) / bare_s, 1)
    extra = {"n": sent, "concurrency": SEND_CONCURRENCY, "batch_size": SEND_BATCH}
    if "dispatch.msgs_per_s" in selected:
        yield _figure("dispatch.msgs_per_s", rate, "msg/s", **extra)
    if "dispatch.ratio_bare_client" in selected:
        yield _figure(
            "dispatch.ratio_bare_client",
            round(rate / bare_rate, 3),
            "ratio",
            bare_msgs_per_s=bare_rate,
            **extra,
        )


def _make_due(
    factory: sessionmaker[Session], *, clock: FrozenClock, count: int
) -> list[tuple[str, str]]:
    """Make the first planned reminder of `count` numbers due now; (number, body) of each."""
    now = clock.now()
    with transaction(factory) as session:
        first = (
            select(func.min(OutboundMessage.id))
            .where(
                OutboundMessage.status == MessageStatus.QUEUED,
                OutboundMessage.purpose == MessagePurpose.REMINDER,
            )
            .group_by(OutboundMessage.to_phone)
            .order_by(func.min(OutboundMessage.id))
            .limit(count)
        )
        ids = list(session.scalars(first))
        table = OutboundMessage.__table__
        assert isinstance(table, Table)
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(send_after=bindparam("b_due")),
            [{"b_id": id_, "b_due": now - timedelta(minutes=1)} for id_ in ids],
        )
        due = _bodies(session, ids)
    if len(due) != count:
        raise RuntimeError(f"only {len(due)} numbers have a planned reminder, not {count}")
    return due


def _bodies(session: Session, ids: list[int]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for start in range(0, len(ids), 900):
        found.extend(
            (phone, body)
            for phone, body in session.execute(
                select(OutboundMessage.to_phone, OutboundMessage.body)
                .where(OutboundMessage.id.in_(ids[start : start + 900]))
                .order_by(OutboundMessage.id)
            )
        )
    return found


def _bare_loop(client: Any, messages: list[tuple[str, str]]) -> float:
    """Seconds for one `messages.create` per message, one after the other."""
    started = time.perf_counter()
    for to, body in messages:
        client.messages.create(to=to, body=body, from_=FROM_NUMBER, status_callback=STATUS_CALLBACK)
    return time.perf_counter() - started


@contextlib.contextmanager
def _twilio_double(*, lifetime: float) -> Iterator[str]:
    """The loopback Twilio double in a process of its own; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-c", _DOUBLE_SCRIPT, ACCOUNT_SID, AUTH_TOKEN, str(lifetime)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        url = process.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError("the Twilio double did not start (is tests/ in the repository?)")
        yield url
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- a tick with a small and a huge backlog of future reminders ---------------------------


@dataclass
class _NullGateway:
    """Accepts every message at once (the tick figures measure the claim, not a provider)."""

    name: str = "null"

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)

    def send(self, *, to: str, body: str, reference: str) -> SendResult:
        return SendResult(provider_message_id=f"NL{next(self._ids):016d}")

    def find_sent(self, *, to: str, body: str, since: datetime) -> list[str]:
        return []


_FUTURE_BODY = (
    "Colorado Care Connect: reminder of your follow-up visit on Fri, Dec 4 at 9:30 AM. "
    "Reply C to confirm, R to change. Help: (303) 555-0100. STOP to opt out."
)
# Future reminders, made by SQLite itself: many thousands of rows a second. Times are
# written as SQLAlchemy writes them on SQLite ("YYYY-MM-DD HH:MM:SS.ffffff", UTC).
_FUTURE_ROWS = text(
    """
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
    INSERT INTO outbound_messages
        (to_phone, body, purpose, status, created_at, send_after, attempts, rule, language)
    SELECT
        '+1' || (700 + ((i + :offset) / 100) % 300) || '55501' || printf('%02d', i % 100),
        :body, 'reminder', 'queued', :created,
        strftime('%Y-%m-%d %H:%M:%S', :start, '+' || ((i + :offset) % 2592000) || ' seconds')
            || '.000000',
        0, 'appointment:appt-1d', 'en'
    FROM n
    """
)


def _add_future(
    factory: sessionmaker[Session], *, clock: FrozenClock, count: int, offset: int
) -> None:
    now = clock.now()
    with transaction(factory) as session:
        session.execute(
            _FUTURE_ROWS,
            {
                "count": count,
                "offset": offset,
                "body": _FUTURE_BODY,
                "created": now.strftime("%Y-%m-%d %H:%M:%S.%f"),
                "start": (now + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
    # Fold the bulk load into the database file now, so that no tick pays for copying it
    # out of the write-ahead log.
    with factory() as session:
        session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))


def _ticks(
    path: Path, *, clock: FrozenClock, selected: list[str], future: int
) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{path}"
    upgrade_database(url)
    factory = make_session_factory(make_engine(url))
    rounds = TICK_WARM_UPS + TICK_ROUNDS
    try:
        with transaction(factory) as session:
            seed_demo_data(session, clock=clock)
            _add_people(session, clock=clock, count=2 * rounds * TICK_DUE, caregivers=False)
            patients = [
                (patient_id, phone)
                for patient_id, phone in session.execute(
                    select(Patient.id, Patient.mobile_phone)
                    .where(Patient.center_mrn.like("DISPATCH-%"))
                    .order_by(Patient.id)
                )
            ]
        _add_future(factory, clock=clock, count=SMALL_BACKLOG, offset=0)
        gateway = _NullGateway()
        small = _tick_samples(
            factory, clock=clock, gateway=gateway, people=patients[: rounds * TICK_DUE]
        )
        _add_future(factory, clock=clock, count=future - SMALL_BACKLOG, offset=SMALL_BACKLOG)
        large = _tick_samples(
            factory, clock=clock, gateway=gateway, people=patients[rounds * TICK_DUE :]
        )
    finally:
        factory.kw["bind"].dispose()
    small_ms = round(statistics.median(small), 3)
    large_ms = round(statistics.median(large), 3)
    extra = {"due": TICK_DUE, "n": TICK_ROUNDS}
    if "dispatch.tick_1k_ms" in selected:
        yield _figure("dispatch.tick_1k_ms", small_ms, "ms", future=SMALL_BACKLOG, **extra)
    if "dispatch.tick_1m_ms" in selected:
        yield _figure(
            "dispatch.tick_1m_ms",
            large_ms,
            "ms",
            future=future,
            ratio_1k=round(large_ms / small_ms, 3),
            **extra,
        )


def _tick_samples(
    factory: sessionmaker[Session],
    *,
    clock: FrozenClock,
    gateway: _NullGateway,
    people: list[tuple[int, str | None]],
) -> list[float]:
    """Milliseconds of each measured tick; each tick sends `TICK_DUE` one-off texts, due now,
    to numbers that got none yet (so the caps let them all go)."""
    now = clock.now()
    samples: list[float] = []
    for number in range(TICK_WARM_UPS + TICK_ROUNDS):
        batch = people[number * TICK_DUE : (number + 1) * TICK_DUE]
        with transaction(factory) as session:
            session.execute(
                insert(OutboundMessage),
                [
                    {
                        "to_phone": phone,
                        "body": "Bench Care Connect: please call us at (202) 555-0100. "
                        "Reply STOP to opt out.",
                        "purpose": MessagePurpose.ONE_OFF,
                        "patient_id": patient_id,
                        "rule": "call_us",
                        "language": "en",
                        "status": MessageStatus.QUEUED,
                        "created_at": now,
                        "send_after": now - timedelta(seconds=30),
                        "attempts": 0,
                    }
                    for patient_id, phone in batch
                ],
            )
        gc.collect()
        report = DispatchReport()
        started = time.perf_counter()
        sent = dispatch_due(factory, gateway=gateway, clock=clock, report=report)
        elapsed = (time.perf_counter() - started) * 1000
        if sent != len(batch):
            raise RuntimeError(
                f"a tick sent {sent} of {len(batch)} due texts "
                f"({report.dropped} dropped, {report.deferred} deferred)"
            )
        if number >= TICK_WARM_UPS:
            samples.append(elapsed)
    return samples
