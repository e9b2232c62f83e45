"""The dashboards' figures of `cgt-access bench` (issue 12, "Scale and speed").

- `reporting.dashboard_p95_ms`: the analyst's program dashboard page (`GET /reports/program`,
  an analyst of two states logged in through the real login and second-factor pages) at
  100,000 patients; the goal is at most 200 ms.
- `reporting.outcome_dashboard_p95_ms`: the same analyst's outcome dashboard of the Casgevy
  agreement (`GET /reports/outcomes/casgevy-2025`), on the same data; the goal is at most
  200 ms.

The data is the outcome figures' world (`bench_reporting_outcomes.build_world`: patients,
their history, observations, claims) plus what the program figures read, each made with a
set-based `INSERT ... SELECT`: every protocol visit of every patient (windows from the
infusion date; those closed by today completed, a few late, missed or cancelled), four
reminder texts a patient with their delivery reports, confirmations, outreach notes after
most missed visits, a report from one patient in ten, an opt-out from one in fifty.

Both pages are served from the nightly snapshots (the live counts over millions of visits,
observations and claim lines take seconds, not milliseconds): each figure is taken after
its snapshots, whose time and the live count's time are given beside it (`snapshot_s`,
`live_s`). Everything is fictional and lives
in a throw-away SQLite file. The statements are put together from this module's constants
only (hence no SQL-injection warnings here)."""

# ruff: noqa: S608

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import column, insert, text
from sqlalchemy import table as sa_table

from coordination.followup.protocol import shipped_protocols
from core.clock import SystemClock
from core.db import make_engine, make_session_factory, transaction
from core.identity.models import Role, User, UserStateScope
from core.identity.passwords import hash_password
from core.models import Language
from portal.dev.bench_app import bench_app, in_process
from portal.dev.bench_reporting_outcomes import build_world
from portal.migrate import upgrade_database
from reporting.agreements import shipped_agreements
from reporting.outcomes import AsOf, outcome_cube
from reporting.program import Selection, program_cube
from reporting.program_snapshots import take_program_snapshot
from reporting.snapshots import take_nightly_snapshots

DASHBOARD_FIGURES = ("reporting.dashboard_p95_ms", "reporting.outcome_dashboard_p95_ms")
OUTCOME_AGREEMENT = "casgevy-2025"
PATIENTS = 100_000
REQUESTS = 60
WARM_UP = 5
ANALYST = "analyst.bench@bench.cgt-access.test"
# This throw-away database's only secrets.
PASSWORD = "bench-analyst-password-2026"
TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
TEXTS_PER_PATIENT = 4


def dashboard_figures(
    folder: Path, *, selected: list[str], patients: int = PATIENTS, requests: int = REQUESTS
) -> Iterator[dict[str, Any]]:
    """The dashboard figures asked for, as dicts (the caller prints each as a JSON line)."""
    wanted = [name for name in DASHBOARD_FIGURES if name in selected]
    if not wanted:
        return
    if patients < 100:
        raise ValueError("the dashboard figures need at least 100 patients")
    url = f"sqlite:///{folder / 'dashboard.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    clock = SystemClock()
    found: list[dict[str, Any]] = []
    try:
        build_world(factory, patients=patients)
        counts = _program_data(factory, patients=patients)
        with transaction(factory) as session:
            session.execute(text("ANALYZE"))
        if "reporting.dashboard_p95_ms" in wanted:
            with transaction(factory) as session:
                started = time.perf_counter()
                program_cube(
                    session,
                    as_of=None,
                    now=clock.now(),
                    selection=Selection(state_ids=frozenset({1, 2})),
                )
                live_s = time.perf_counter() - started
                started = time.perf_counter()
                take_program_snapshot(session, clock=clock, as_of=None, computed_by="bench")
                snapshot_s = time.perf_counter() - started
            samples = _page_samples(url, factory, requests=requests, path="/reports/program")
            found.append(
                _figure("reporting.dashboard_p95_ms", samples, live_s=live_s, snapshot_s=snapshot_s)
            )
        if "reporting.outcome_dashboard_p95_ms" in wanted:
            library = shipped_agreements()
            agreement = library.get(OUTCOME_AGREEMENT)
            assert agreement is not None
            with transaction(factory) as session:
                started = time.perf_counter()
                outcome_cube(session, agreement=agreement, as_of=AsOf(clock.now()))
                live_s = time.perf_counter() - started
                started = time.perf_counter()
                # Every agreement's, as the nightly job takes them.
                take_nightly_snapshots(session, clock=clock, library=library)
                snapshot_s = time.perf_counter() - started
            samples = _page_samples(
                url, factory, requests=requests, path=f"/reports/outcomes/{OUTCOME_AGREEMENT}"
            )
            found.append(
                _figure(
                    "reporting.outcome_dashboard_p95_ms",
                    samples,
                    live_s=live_s,
                    snapshot_s=snapshot_s,
                    agreements=len(library.current()),
                )
            )
    finally:
        engine.dispose()
    for item in found:
        yield {**item, "patients": patients, **counts}


def _figure(name: str, samples: list[float], **beside: Any) -> dict[str, Any]:
    ordered = sorted(samples)
    p95 = ordered[max(1, -(-95 * len(ordered) // 100)) - 1]
    return {
        "name": name,
        "value": round(p95, 3),
        "unit": "ms",
        "n": len(samples),
        "p50_ms": round(ordered[len(ordered) // 2], 3),
        "served_from": "snapshot",
        **{
            key: round(value, 3) if isinstance(value, float) else value
            for key, value in beside.items()
        },
    }


def _page_samples(url: str, factory: Any, *, requests: int, path: str) -> list[float]:
    from portal.dev.bench import _log_in

    app = bench_app(url=url, clock=SystemClock(), factory=factory)
    samples: list[float] = []
    with in_process(app) as client:
        _log_in(client, ANALYST, PASSWORD, totp_secret=TOTP)
        for _ in range(WARM_UP):
            _check(client.get(path))
        gc.collect()
        for _ in range(requests):
            started = time.perf_counter()
            response = client.get(path)
            samples.append((time.perf_counter() - started) * 1000)
            _check(response)
    return samples


def _check(response: Any) -> None:
    if response.status_code != 200 or "from the nightly snapshot" not in response.text:
        raise RuntimeError(f"the dashboard answered {response.status_code} without the snapshot")


def _program_data(factory: Any, *, patients: int) -> dict[str, int]:
    """Visits, texts, answers, reports, notes and opt-outs for the world's patients, and an
    analyst of the first two states; returns how many rows of each were made."""
    with transaction(factory) as session:
        reporter = User(
            login="reporter.bench@bench.cgt-access.test",
            display_name="Bench reporter",
            role=Role.COORDINATOR,
            password_hash=hash_password(PASSWORD),
            preferred_language=Language.EN,
            is_active=True,
            created_at=SystemClock().now(),
        )
        analyst = User(
            login=ANALYST,
            email=ANALYST,
            display_name="Bench analyst",
            role=Role.STATE_ANALYST,
            password_hash=reporter.password_hash,
            preferred_language=Language.EN,
            totp_secret=TOTP,
            totp_enabled_at=SystemClock().now(),
            is_active=True,
            created_at=SystemClock().now(),
        )
        analyst.state_scopes = [UserStateScope(state_id=1), UserStateScope(state_id=2)]
        session.add_all([reporter, analyst])
        session.flush()
        protocol_visits = sa_table(
            "bench_protocol_visits",
            column("therapy_id"),
            column("visit_key"),
            column("sequence"),
            column("offset_days"),
            column("before_days"),
            column("after_days"),
        )
        session.execute(
            text(
                "CREATE TABLE bench_protocol_visits (therapy_id INTEGER, visit_key TEXT, "
                "sequence INTEGER, offset_days INTEGER, before_days INTEGER, after_days INTEGER)"
            )
        )
        library = shipped_protocols()
        rows = []
        for therapy_id, code in ((1, "casgevy"), (2, "lyfgenia")):
            protocol = library.current(code)
            assert protocol is not None
            for sequence, visit in enumerate(protocol.visits, start=1):
                rows.append(
                    {
                        "therapy_id": therapy_id,
                        "visit_key": visit.key,
                        "sequence": sequence,
                        "offset_days": visit.offset_days,
                        "before_days": visit.window_before_days,
                        "after_days": visit.window_after_days,
                    }
                )
        session.execute(insert(protocol_visits), rows)
        session.execute(text("CREATE TABLE bench_numbers_small (i INTEGER PRIMARY KEY)"))
        session.execute(
            insert(sa_table("bench_numbers_small", column("i"))),
            [{"i": i} for i in range(TEXTS_PER_PATIENT)],
        )
        for statement in _statements(reporter.id):
            session.execute(text(statement))
        session.execute(text("DROP TABLE bench_protocol_visits"))
        session.execute(text("DROP TABLE bench_numbers_small"))
        return {
            name: int(session.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())
            for name in (
                "visits",
                "visit_events",
                "outbound_messages",
                "outreach_notes",
                "patient_reports",
            )
        }


def _statements(user_id: int) -> list[str]:
    def day(base: str, days: str) -> str:
        return f"date({base}, ({days}) || ' days')"

    def instant(expression: str, hour: int = 12) -> str:
        return f"({expression} || ' {hour:02d}:00:00.000000')"

    closes = day("p.infusion_date", "v.offset_days + v.after_days")
    kind = "(p.id + v.sequence) % 20"
    status = (
        f"CASE WHEN {closes} >= date('now') THEN 'due' "
        f"WHEN {kind} IN (0, 1, 2) THEN 'missed' WHEN {kind} = 3 THEN 'cancelled' "
        "ELSE 'completed' END"
    )
    completed_on = (
        f"CASE WHEN {closes} < date('now') AND {kind} > 3 THEN "
        f"CASE WHEN {kind} = 4 THEN {day(closes, '5')} "
        f"ELSE {day('p.infusion_date', 'v.offset_days')} END END"
    )
    sent_day = day("p.infusion_date", "20 + k.i * 90")
    return [
        f"""INSERT INTO visits (patient_id, visit_key, protocol_version, sequence,
            target_date, window_start, window_end, status, completed_on, created_at,
            updated_at)
        SELECT p.id, v.visit_key, 1, v.sequence,
            {day("p.infusion_date", "v.offset_days")},
            {day("p.infusion_date", "v.offset_days - v.before_days")},
            {closes}, {status}, {completed_on}, p.created_at, p.created_at
        FROM patients p JOIN bench_protocol_visits v ON v.therapy_id = p.therapy_id""",
        # A third of the completed visits were confirmed first, a third of those by text.
        f"""INSERT INTO visit_events (visit_id, at, actor_label, action, from_status,
            to_status)
        SELECT id, {instant(day("target_date", "-3"))},
            CASE WHEN id % 9 = 0 THEN 'sms:***0100' ELSE 'bench' END, 'confirm',
            'scheduled', 'confirmed'
        FROM visits WHERE status = 'completed' AND id % 3 = 0""",
        f"""INSERT INTO outreach_notes (patient_id, author_user_id, at, channel, outcome)
        SELECT patient_id, {user_id}, {instant(day("window_end", "1 + id % 30"))}, 'call',
            'reached'
        FROM visits WHERE status = 'missed' AND id % 3 <> 0""",
        f"""INSERT INTO outbound_messages (to_phone, body, purpose, patient_id, status,
            created_at, send_after, claimed_at, sent_at, provider, provider_message_id,
            attempts)
        SELECT '+1202555' || substr('0000' || (p.id % 10000), -4), 'Reminder', 'reminder',
            p.id,
            CASE WHEN (p.id + k.i) % 20 = 0 THEN 'failed'
                 WHEN (p.id + k.i) % 7 = 0 THEN 'sent' ELSE 'delivered' END,
            {instant(sent_day, 9)}, {instant(sent_day, 10)}, {instant(sent_day, 10)},
            {instant(sent_day, 10)}, 'bench', 'SMB' || p.id || '-' || k.i, 1
        FROM patients p JOIN bench_numbers_small k ON k.i < {TEXTS_PER_PATIENT}
        WHERE {sent_day} < date('now')""",
        """INSERT INTO delivery_events (message_sid, status, at)
        SELECT provider_message_id, CASE status WHEN 'failed' THEN 'undelivered'
            ELSE 'delivered' END, sent_at
        FROM outbound_messages WHERE status IN ('delivered', 'failed')""",
        f"""INSERT INTO patient_reports (patient_id, kind, occurred_on, reported_by_user_id,
            reported_at, status, reviewed_at)
        SELECT id, CASE id % 3 WHEN 0 THEN 'pain_crisis' WHEN 1 THEN 'emergency_visit'
            ELSE 'hospital_stay' END, {day("infusion_date", "60")}, {user_id},
            {instant(day("infusion_date", "61"))},
            CASE WHEN id % 20 = 0 THEN 'confirmed' WHEN id % 30 = 0 THEN 'dismissed'
                 ELSE 'new' END,
            CASE WHEN id % 20 = 0 OR id % 30 = 0 THEN {instant(day("infusion_date", "62"))} END
        FROM patients WHERE id % 10 = 0""",
        """UPDATE patients SET mobile_phone = '+1303555' || substr('0000' || (id % 10000), -4)
        WHERE id % 50 = 0""",
        f"""INSERT INTO sms_consent_events (phone, at, action, how)
        SELECT mobile_phone, {instant(day("infusion_date", "100"))}, 'opt_out', 'sms_keyword'
        FROM patients WHERE id % 50 = 0""",
    ]
