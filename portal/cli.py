"""The `cgt-access` command: serve, worker, db upgrade, demo seed, fhir, bench."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

import typer

from core.settings import Settings, SettingsError, get_settings, load_settings
from portal.fhir_cli import fhir_app

app = typer.Typer(
    help="cgt-access: long-term follow-up and outcome reporting for the CGT Access Model.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
demo_app = typer.Typer(help="Demo data (fictional people only).", no_args_is_help=True)
protocols_app = typer.Typer(help="Follow-up protocols (coordination/followup/protocols/*.yaml).")
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(protocols_app, name="protocols")
sms_app = typer.Typer(help="Text messages: reminder planning and the outbox.", no_args_is_help=True)
app.add_typer(sms_app, name="sms")
# `sms dispatch` holds this job lease (job_locks) while it sends.
SMS_DISPATCH_LOCK = "sms-dispatch"
SMS_DISPATCH_LEASE = timedelta(minutes=10)
content_app = typer.Typer(help="Education modules (education/modules).", no_args_is_help=True)
app.add_typer(content_app, name="content")
app.add_typer(fhir_app, name="fhir")
claims_app = typer.Typer(
    help="Medicaid claims extracts (T-MSIS): load a file, check the code lists.",
    no_args_is_help=True,
)
app.add_typer(claims_app, name="claims")
agreements_app = typer.Typer(
    help="Outcomes-based agreements (reporting/agreements/*.yaml).", no_args_is_help=True
)
app.add_typer(agreements_app, name="agreements")
reports_app = typer.Typer(help="Outcome reports: snapshots of the figures.", no_args_is_help=True)
app.add_typer(reports_app, name="reports")
questionnaires_app = typer.Typer(
    help="Patient-reported outcome questionnaires (FHIR R4 Questionnaire JSON).",
    no_args_is_help=True,
)
app.add_typer(questionnaires_app, name="questionnaires")


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=2) from None


def _protocols_or_exit() -> None:
    from coordination.followup.protocol import ProtocolError, shipped_protocols

    try:
        shipped_protocols()
    except ProtocolError as error:
        typer.echo(f"Cannot start cgt-access, a follow-up protocol is wrong:\n{error}", err=True)
        raise typer.Exit(code=2) from None
    from reporting.agreements import AgreementError, shipped_agreements

    try:
        shipped_agreements()
    except AgreementError as error:
        typer.echo(f"Cannot start cgt-access, an agreement is wrong:\n{error}", err=True)
        raise typer.Exit(code=2) from None


def _code_lists_or_exit() -> None:
    from reporting.code_lists import CodeListError, shipped_code_lists

    try:
        shipped_code_lists()
    except CodeListError as error:
        typer.echo(f"Cannot start cgt-access, a claims code list is wrong:\n{error}", err=True)
        raise typer.Exit(code=2) from None


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # APScheduler logs two lines per run of every job (the export poll runs every 5 s):
    # the jobs log what they did themselves; a job that fails is still logged (ERROR).
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for all)."),
    port: int | None = typer.Option(None, help="Port; defaults to the PORT setting (8000)."),
    workers: int = typer.Option(
        1, help="Worker processes (each runs the scheduler if RUN_SCHEDULER)."
    ),
) -> None:
    """Serve the web application (portal, worklists, FHIR, webhooks) with uvicorn.

    The scheduler (SMS dispatcher and other jobs) runs inside when RUN_SCHEDULER is true."""
    import uvicorn

    if port is not None:
        # The app uvicorn builds reads its settings from the environment: PORT tells it the
        # port it is served on (in demo mode its links follow it, see core.settings).
        os.environ["PORT"] = str(port)
    settings = _settings_or_exit()
    _protocols_or_exit()
    _code_lists_or_exit()
    get_settings.cache_clear()
    _configure_logging()
    uvicorn.run(
        "portal.app:create_app",
        factory=True,
        host=host,
        port=port or settings.port,
        workers=workers,
        access_log=False,  # our own access log leaves out query strings and tokens
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level="info",
    )


@app.command()
def worker() -> None:
    """Run only the scheduled jobs (SMS dispatcher, nightly jobs), without the web server.

    Run as many as you like against PostgreSQL; run one against SQLite."""
    from portal.app import create_app
    from portal.scheduler import start_scheduler

    _settings_or_exit()
    _protocols_or_exit()
    _code_lists_or_exit()
    _configure_logging()
    context = create_app(run_scheduler=False).state.context
    logging.getLogger("cgt_access").info("worker started")
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        start_scheduler(context, blocking=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database at DATABASE_URL to the newest schema (or REVISION)."""
    from portal.migrate import upgrade_database

    settings = _settings_or_exit()
    upgrade_database(settings.database_url, revision)
    typer.echo(f"database is at {revision}")


@demo_app.command("seed")
def demo_seed(
    reset: bool = typer.Option(False, help="Seed even if demo data is already there."),
    show_logins: bool = typer.Option(False, help="Print the demo logins afterwards."),
) -> None:
    """Fill the database with fictional demo data (DEMO_MODE must be on)."""
    from portal.dev.demo import DEMO_LOGINS, DEMO_PASSWORD, seed_demo

    settings = _settings_or_exit()
    if not settings.demo_mode:
        typer.echo("Refusing: demo data is only seeded with DEMO_MODE=true.", err=True)
        raise typer.Exit(code=2)
    created = seed_demo(settings, force=reset)
    typer.echo("demo data seeded" if created else "demo data already present")
    if show_logins:
        typer.echo(f"\nDemo logins (password for all: {DEMO_PASSWORD}):")
        for login, description in DEMO_LOGINS:
            typer.echo(f"  {login:<40} {description}")
        typer.echo("Staff: on the second-factor page choose 'Skip for now (demo)'.")


@protocols_app.command("check")
def protocols_check() -> None:
    """Validate every protocol file; name the file, line and problem of a broken one."""
    from coordination.followup.protocol import ProtocolError, load_protocols

    try:
        library = load_protocols()
    except ProtocolError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    for therapy, versions in sorted(library.versions.items()):
        for version, protocol in sorted(versions.items()):
            typer.echo(f"{therapy} v{version}: {len(protocol.visits)} visits")


@protocols_app.command("migrate")
def protocols_migrate(
    therapy: str = typer.Argument(..., help="Therapy code, e.g. lyfgenia."),
    version: int = typer.Argument(..., help="The protocol version to move patients to."),
) -> None:
    """Move every existing patient on an older protocol version of THERAPY to VERSION
    (new patients get the newest version by themselves; existing ones only by this step).
    Completed and missed visits stay; open visits move; visits the new version drops are
    cancelled with the reason."""
    from coordination.followup.protocol import load_protocols
    from coordination.followup.schedule import migrate_protocol
    from core.audit.service import Actor
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory, transaction

    settings = _settings_or_exit()
    factory = make_session_factory(make_engine(settings.database_url))
    with transaction(factory) as session:
        try:
            moved = migrate_protocol(
                session,
                clock=SystemClock(),
                actor=Actor.system("protocols-migrate"),
                library=load_protocols(),
                therapy=therapy,
                to_version=version,
            )
        except ValueError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(code=1) from None
    typer.echo(f"{moved} patient(s) moved to {therapy} v{version}")


@content_app.command("check")
def content_check(
    directory: Path | None = typer.Option(None, help="Modules folder (default: the shipped one)."),
) -> None:
    """Check every education module: front matter, sections and questions the same in
    English and Spanish, safe Markdown, English at most grade 8. One line per problem."""
    from coordination.followup.protocol import shipped_protocols
    from education.check import check_library
    from education.content import MODULE_DIR

    _protocols_or_exit()
    result = check_library(
        directory or MODULE_DIR, known_therapies=set(shipped_protocols().versions)
    )
    for problem in result.problems:
        typer.echo(str(problem))
    for key, found in result.readability.items():
        typer.echo(
            f"{key}: English Flesch-Kincaid grade {found.en_grade}, "
            f"Spanish Fernández-Huerta {found.es_score}"
        )
    typer.echo(f"{len(result.modules)} module(s) read, {len(result.problems)} problem(s)")
    if result.problems:
        raise typer.Exit(code=1)


@agreements_app.command("check")
def agreements_check() -> None:
    """Validate every agreement file; name the file, line and problem of a broken one."""
    from coordination.followup.protocol import shipped_protocols
    from reporting.agreements import AgreementError, load_agreements

    try:
        library = load_agreements(known_therapies=set(shipped_protocols().versions))
    except AgreementError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    for agreement in library.current():
        note = " (illustrative)" if agreement.illustrative else ""
        typer.echo(
            f"{agreement.key} v{agreement.version}{note}: {agreement.therapy}, "
            f"{len(agreement.measures)} measure(s)"
        )
    typer.echo(f"definitions {library.definition_hash}")


@reports_app.command("snapshot")
def reports_snapshot(
    as_of: str = typer.Option(
        "",
        "--as-of",
        help="The moment the figures look from: YYYY-MM-DD (the end of that day, UTC) or an "
        "ISO instant with its offset; default now.",
    ),
) -> None:
    """Compute and keep the outcome figures of every agreement as of now (or --as-of): a
    snapshot per agreement, with the data's moment and the agreement files' digest."""
    from datetime import date, datetime

    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory, transaction
    from reporting.agreements import shipped_agreements
    from reporting.outcomes import AsOf
    from reporting.snapshots import take_snapshots

    settings = _settings_or_exit()
    _protocols_or_exit()
    clock = SystemClock()
    moment = AsOf(clock.now())
    if as_of:
        try:
            moment = (
                AsOf.end_of(date.fromisoformat(as_of))
                if len(as_of) == 10
                else AsOf(datetime.fromisoformat(as_of))
            )
        except ValueError:
            typer.echo(f"--as-of: {as_of!r} is neither YYYY-MM-DD nor an ISO instant", err=True)
            raise typer.Exit(code=2) from None
        if moment.at.tzinfo is None:
            typer.echo("--as-of: give the instant's offset (e.g. +00:00)", err=True)
            raise typer.Exit(code=2)
        if moment.at > clock.now():
            typer.echo("--as-of: the moment is in the future", err=True)
            raise typer.Exit(code=2)
    factory = make_session_factory(make_engine(settings.database_url))
    with transaction(factory) as session:
        taken = take_snapshots(
            session,
            clock=clock,
            library=shipped_agreements(),
            as_of=moment,
            computed_by="cgt-access reports snapshot",
        )
        for snapshot in taken:
            typer.echo(f"snapshot {snapshot.id}: {snapshot.report} as of {snapshot.as_of}")


@sms_app.command("plan")
def sms_plan(
    days: int = typer.Option(30, help="How far ahead to plan reminders (days)."),
) -> None:
    """Plan the visit reminders of the coming DAYS into the outbox now (the worker does it
    every few minutes by itself). Planning twice never makes two reminders."""
    from coordination.locks import run_exclusively
    from coordination.texting.planning import plan_reminders
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory

    settings = _settings_or_exit()
    _protocols_or_exit()
    factory = make_session_factory(make_engine(settings.database_url))
    clock = SystemClock()
    ran, report = run_exclusively(
        factory,
        name="plan-reminders",
        clock=clock,
        job=lambda session: plan_reminders(session, clock=clock, horizon_days=days),
    )
    if not ran or report is None:
        typer.echo("another worker is planning right now; nothing done", err=True)
        raise typer.Exit(code=1)
    typer.echo(
        f"{report.planned} reminder(s) and {report.notices} moved-appointment notice(s) "
        f"planned, {report.capped} held back by the caps"
    )


@sms_app.command("dispatch")
def sms_dispatch() -> None:
    """Send the due messages now, once (what the worker's dispatcher does every few
    seconds), and print what happened. Two of these at once: the second does nothing."""
    from coordination.locks import acquire_lock, release_lock
    from coordination.texting.dispatcher import DispatchReport, dispatch_due
    from coordination.texting.gateway import make_gateway
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory

    settings = _settings_or_exit()
    _configure_logging()
    factory = make_session_factory(make_engine(settings.database_url))
    clock = SystemClock()
    # The lease keeps two runs of this command from sharing one outbox; a dispatcher in
    # `serve` or `worker` running meanwhile is harmless (each row is claimed by one sender),
    # and a run that died leaves the lease to run out by itself.
    if not acquire_lock(factory, name=SMS_DISPATCH_LOCK, clock=clock, lease=SMS_DISPATCH_LEASE):
        typer.echo("another `cgt-access sms dispatch` is sending right now; nothing done", err=True)
        raise typer.Exit(code=1)
    report = DispatchReport()
    try:
        dispatch_due(
            factory,
            gateway=make_gateway(settings),
            clock=clock,
            concurrency=settings.dispatch_concurrency,
            report=report,
        )
    finally:
        release_lock(factory, name=SMS_DISPATCH_LOCK, clock=clock)
    typer.echo(
        f"sent {report.sent}, retrying {report.retrying}, failed {report.failed}, "
        f"dropped {report.dropped}, deferred {report.deferred}, "
        f"in doubt {report.in_doubt}, settled {report.reconciled + report.requeued}, "
        f"released {report.released}"
    )


@fhir_app.command("export-run")
def fhir_export_run() -> None:
    """Run the queued bulk exports now, once (what every worker does every few seconds),
    then delete the files of expired ones. Safe next to running workers: each job is
    claimed by one of them."""
    from coordination.locks import run_exclusively
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory
    from fhir_adapter.export_jobs import (
        CLEANUP_LOCK,
        ExportConfig,
        expire_exports,
        run_queued_exports,
    )

    settings = _settings_or_exit()
    _protocols_or_exit()
    _configure_logging()
    factory = make_session_factory(make_engine(settings.database_url))
    clock = SystemClock()
    config = ExportConfig.from_settings(settings)
    ran = run_queued_exports(factory, clock=clock, config=config)
    _, expired = run_exclusively(
        factory,
        name=CLEANUP_LOCK,
        clock=clock,
        job=lambda session: expire_exports(session, clock=clock, config=config),
    )
    typer.echo(f"ran {ran} export(s); {expired or 0} expired export(s) deleted")


@claims_app.command("import")
def claims_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The claims CSV."),
    state: str = typer.Option(..., "--state", help="The state the file is for, e.g. MD."),
    as_login: str = typer.Option(
        "", "--as", help="Load as this user (an admin, or an analyst of STATE); default: system."
    ),
) -> None:
    """Load a state's claims extract (the layout is in README, "Medicaid claims"). A file
    with a malformed row loads nothing and every problem is listed; loading the same file
    again changes nothing. Exit code 1 when the file is refused."""
    from sqlalchemy import select

    from core.audit.service import Actor
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory, transaction
    from core.identity.access import claims_state_ids
    from core.identity.models import User
    from core.models import State
    from reporting.claims import LoadOutcome, load_claims

    settings = _settings_or_exit()
    _code_lists_or_exit()
    factory = make_session_factory(make_engine(settings.database_url))
    with transaction(factory) as session:
        found = session.scalar(select(State).where(State.code == state.strip().upper()))
        if found is None:
            typer.echo(f"No state with the code {state!r}.", err=True)
            raise typer.Exit(code=2)
        actor, allowed = Actor.system("claims-import"), None
        if as_login:
            user = session.scalar(select(User).where(User.login == as_login.strip()))
            if user is None or not user.is_active:
                typer.echo(f"No active user {as_login!r}.", err=True)
                raise typer.Exit(code=2)
            allowed = claims_state_ids(user)
            if allowed is not None and not allowed:
                typer.echo(f"{as_login} may not load claims (admins and analysts may).", err=True)
                raise typer.Exit(code=2)
            actor = Actor(
                user_id=user.id, label=user.login or user.display_name, role=user.role.value
            )
        with file.open("rb") as stream:
            result = load_claims(
                session,
                clock=SystemClock(),
                actor=actor,
                state=found,
                filename=file.name,
                data=stream,
                allowed_state_ids=allowed,
            )
    if result.outcome is LoadOutcome.ALREADY_LOADED:
        assert result.file is not None
        typer.echo(
            f"{file.name}: already loaded for {found.code} (load {result.file.id}); nothing changed"
        )
        return
    if result.outcome is LoadOutcome.REFUSED:
        typer.echo(
            f"{file.name}: refused, nothing loaded ({result.problem_count} problem(s)):", err=True
        )
        for problem in result.problems:
            where = f"line {problem.line}: " if problem.line is not None else ""
            typer.echo(f"  {where}{problem.message}", err=True)
        if result.problem_count > len(result.problems):
            typer.echo(f"  ... and {result.problem_count - len(result.problems)} more", err=True)
        raise typer.Exit(code=1)
    assert result.file is not None
    typer.echo(
        f"{file.name}: load {result.file.id} for {found.code}: {result.rows} row(s), "
        f"{result.loaded} loaded ({result.replacing} replacing earlier lines), "
        f"{result.unchanged} unchanged, {result.voids} void(s), "
        f"{result.superseded} earlier line(s) superseded, {result.unmatched} unmatched"
    )
    for row in result.unmatched_rows[:20]:
        typer.echo(f"  line {row['line']}: no patient of {found.code} has this Medicaid ID")
    if result.unmatched > 20:
        typer.echo(f"  ... and {result.unmatched - 20} more unmatched (see the load's page)")


@questionnaires_app.command("load")
def questionnaires_load(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="A FHIR R4 Questionnaire (JSON)."
    ),
    as_login: str = typer.Option("", "--as", help="Load as this admin; default: system."),
) -> None:
    """Load a questionnaire (the SDC subset; README, "Questionnaires"). Every item outside
    it is listed; loading the same file again changes nothing; a changed questionnaire needs
    a new version. Exit code 1 when the file is refused."""
    from sqlalchemy import select

    from coordination.questionnaires.items import QuestionnaireRefused
    from coordination.questionnaires.loading import load_questionnaire, parse_file
    from core.audit.service import Actor
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory, transaction
    from core.identity.models import Role, User

    settings = _settings_or_exit()
    factory = make_session_factory(make_engine(settings.database_url))
    try:
        with transaction(factory) as session:
            actor = Actor.system("questionnaires-load")
            if as_login:
                user = session.scalar(select(User).where(User.login == as_login.strip()))
                if user is None or not user.is_active or user.role is not Role.ADMIN:
                    typer.echo(f"No active admin {as_login!r}.", err=True)
                    raise typer.Exit(code=2)
                actor = Actor(user_id=user.id, label=user.login or "", role=user.role.value)
            result = load_questionnaire(
                session, clock=SystemClock(), actor=actor, resource=parse_file(file.read_bytes())
            )
            row = result.questionnaire
            summary = f"{row.url} {row.version} ({row.language.value})"
    except QuestionnaireRefused as refused:
        typer.echo(f"{file.name}: refused, nothing loaded:", err=True)
        for message in refused.errors:
            typer.echo(f"  {message}", err=True)
        raise typer.Exit(code=1) from None
    if result.created:
        typer.echo(f"{file.name}: loaded {summary} as questionnaire {row.id}")
    else:
        typer.echo(f"{file.name}: {summary} is already loaded; nothing changed")


@claims_app.command("rederive")
def claims_rederive() -> None:
    """Work the flags of every loaded claim line (crisis, hospital stay, ED visit) out again
    from the code lists in reporting/codes/, after a list changed."""
    from core.audit.service import Actor
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory, transaction
    from reporting.claims import rederive_flags

    settings = _settings_or_exit()
    _code_lists_or_exit()
    factory = make_session_factory(make_engine(settings.database_url))
    with transaction(factory) as session:
        done = rederive_flags(session, clock=SystemClock(), actor=Actor.system("claims-rederive"))
    typer.echo(f"{done.lines} claim line(s) read, {done.changed} changed")


@claims_app.command("sample")
def claims_sample(
    state: str = typer.Option(..., "--state", help="A demo state, e.g. MD."),
    out: Path | None = typer.Option(None, help="Write here (default: standard output)."),
) -> None:
    """Write a fictional claims file for a demo state, made from the demo patients (as
    `demo seed` loads it), to try the upload page (DEMO_MODE must be on)."""
    from sqlalchemy import select

    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory
    from core.models import State
    from portal.dev.demo_claims import demo_claim_files

    settings = _settings_or_exit()
    if not settings.demo_mode:
        typer.echo("Refusing: sample files are made only with DEMO_MODE=true.", err=True)
        raise typer.Exit(code=2)
    factory = make_session_factory(make_engine(settings.database_url))
    with factory() as session:
        found = session.scalar(select(State).where(State.code == state.strip().upper()))
        if found is None:
            typer.echo(f"No state with the code {state!r}.", err=True)
            raise typer.Exit(code=2)
        first, _later = demo_claim_files(session, state=found, today=SystemClock().now().date())
    if out is None:
        typer.echo(first, nl=False)
    else:
        out.write_text(first, encoding="utf-8")
        typer.echo(f"{out}: {first.count(chr(10)) - 1} claim row(s) for {found.code}")


@claims_app.command("codes")
def claims_codes() -> None:
    """Check the code lists (reporting/codes/*.yaml) and print what each flag counts."""
    from reporting.code_lists import CodeListError, load_code_lists

    try:
        codes = load_code_lists()
    except CodeListError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    for listed in codes.files:
        kinds = ", ".join(f"{len(entries)} {kind}" for kind, entries in listed.match.items())
        typer.echo(f"{listed.flag} ({listed.key}): {kinds}")


@app.command()
def bench(
    only: str = typer.Option("", help="Run only the figures whose name starts with this."),
    patients: int = typer.Option(10_000, help="Patients in the benchmark database."),
    requests: int = typer.Option(2_000, help="Requests per measured page."),
) -> None:
    """Run the benchmarks; print one JSON object per figure."""
    from portal.dev.bench import run_benchmarks

    for line in run_benchmarks(only=only, patients=patients, requests=requests):
        typer.echo(line)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
