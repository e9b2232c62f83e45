"""Demo data: fictional people at different points of their 15 years of follow-up.

Phone numbers are in the 555-01xx range, which is reserved for fiction and reaches nobody."""

from __future__ import annotations

from datetime import date, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.questionnaires.loading import load_shipped_questionnaires
from core.audit.service import Actor
from core.clock import Clock, SystemClock
from core.db import make_engine, make_session_factory, transaction
from core.identity.models import Role, User, UserStateScope
from core.identity.passwords import hash_password
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
from core.reference import set_medicaid_system, set_mrn_system
from core.service import record_history
from core.settings import Settings
from core.therapy_codes import HCPCS, TherapyCodeInput, add_therapy_code

DEMO_PASSWORD = "followup-demo-2026"

# login, name, role, state codes; listed in README.
DEMO_STAFF = [
    ("admin@demo.cgt-access.test", "Alex Admin", Role.ADMIN, []),
    ("coordinator.md@demo.cgt-access.test", "Morgan Reyes", Role.COORDINATOR, ["MD"]),
    ("coordinator.co@demo.cgt-access.test", "Jordan Blake", Role.COORDINATOR, ["CO"]),
    ("analyst@demo.cgt-access.test", "Sam Okafor", Role.STATE_ANALYST, ["MD", "CO"]),
]

# Every demo login, for README and `cgt-access demo seed --show-logins`.
DEMO_LOGINS = [
    (
        "admin@demo.cgt-access.test",
        "admin: states, centers, therapies, users, FHIR clients, audit log",
    ),
    ("coordinator.md@demo.cgt-access.test", "care coordinator, Maryland"),
    ("coordinator.co@demo.cgt-access.test", "care coordinator, Colorado"),
    ("analyst@demo.cgt-access.test", "state analyst, Maryland and Colorado"),
    ("maya", "patient (Maryland), English"),
    ("andre", "patient (Colorado), English"),
    ("denise", "caregiver: Maya's mother (all rights), aunt of Imani (sees the schedule only)"),
    ("rosa", "caregiver: Andre's grandmother, Spanish"),
]

_GIVEN = [
    "Maya",
    "Andre",
    "Lucía",
    "Jaylen",
    "Imani",
    "Marcus",
    "Zoe",
    "Darius",
    "Aaliyah",
    "Mateo",
    "Kiara",
    "Isaiah",
    "Nia",
    "Elijah",
    "Sofía",
    "Malik",
    "Amara",
    "Xavier",
    "Destiny",
    "Camila",
    "Tyrese",
    "Jasmine",
    "Gabriel",
    "Layla",
    "Omar",
    "Brianna",
    "Diego",
    "Ayana",
    "Jalen",
    "Valeria",
]
_FAMILY = [
    "Johnson",
    "Williams",
    "García",
    "Brown",
    "Davis",
    "Jackson",
    "Harris",
    "Thomas",
    "Robinson",
    "Martínez",
    "Lewis",
    "Walker",
    "Young",
    "Allen",
    "Hernández",
    "King",
    "Wright",
    "Scott",
    "Green",
    "López",
    "Adams",
    "Baker",
    "Nelson",
    "Carter",
    "Mitchell",
    "Pérez",
    "Roberts",
    "Turner",
    "Phillips",
    "Rivera",
]
# Days since infusion, spread over the 15 years (negative: infusion planned).
_DAYS_SINCE_INFUSION = [
    -20,
    12,
    35,
    95,
    104,
    170,
    185,
    240,
    330,
    365,
    420,
    540,
    600,
    730,
    800,
    1000,
    1100,
    1460,
    1500,
    1825,
    2000,
    2190,
    2555,
    2900,
    3285,
    3650,
    4015,
    4380,
    5000,
    5400,
]


def seed_demo(settings: Settings, *, force: bool = False, clock: Clock | None = None) -> bool:
    """Seed the demo database; returns False when demo data was already there."""
    factory = make_session_factory(make_engine(settings.database_url))
    with transaction(factory) as session:
        if not force and session.scalar(select(State.id).limit(1)) is not None:
            return False
        clock = clock or SystemClock()
        users = seed_demo_data(session, clock=clock)
        seed_demo_follow_up(session, clock=clock, users=users)
        # Travel support asked and arranged for booked visits.
        from portal.dev.demo_travel import seed_demo_travel_requests

        seed_demo_travel_requests(session, clock=clock, users=users)
        # Consent and the reminders due: the console page shows texts within a minute.
        from portal.dev.demo_sms import seed_demo_sms

        seed_demo_sms(session, clock=clock, users=users)
        seed_demo_fhir(session, clock=clock)
        # Each state's claims files (crises, stays, ED visits, an adjustment), loaded.
        from portal.dev.demo_claims import seed_demo_claims

        seed_demo_claims(session, clock=clock)
        # Infused cohorts with results and claims, and the nightly snapshots: the outcome
        # dashboards and rebate statements show living figures from the first minute.
        from portal.dev.demo_outcomes import seed_demo_outcome_cohorts

        seed_demo_outcome_cohorts(session, clock=clock)
    return True


# What an admin configures so a center's FHIR data maps (README, "Connecting a treatment
# center"): the systems of the demo states' Medicaid IDs and of the centers' record numbers
# (fictional, under the reserved .example domain, and HL7's example OID arc), and the HCPCS
# Level II codes the two therapies are billed with (J3392 and J3394 since January 2025).
DEMO_MEDICAID_SYSTEMS = {
    "MD": "https://medicaid.maryland.example/fhir/sid/member-id",
    "CO": "urn:oid:2.16.840.1.113883.19.5.8",
}
DEMO_MRN_SYSTEMS = {
    "Harborview Medical Center": "https://harborview.example/fhir/sid/mrn",
    "Front Range Medical Center": "https://frontrange.example/fhir/sid/mrn",
}
DEMO_THERAPY_CODES = (
    ("casgevy", HCPCS, "J3392", "Injection, exagamglogene autotemcel, per treatment"),
    ("lyfgenia", HCPCS, "J3394", "Injection, lovotibeglogene autotemcel, per treatment"),
)


def seed_demo_fhir(session: Session, *, clock: Clock) -> None:
    """The demo's FHIR set-up, through the services an admin's pages call. (Tests seed
    without it: their FHIR data uses the platform's default systems.)"""
    actor = Actor.system("demo-seed")
    for state in session.scalars(select(State)):
        if state.code in DEMO_MEDICAID_SYSTEMS:
            set_medicaid_system(
                session,
                clock=clock,
                actor=actor,
                state=state,
                system=DEMO_MEDICAID_SYSTEMS[state.code],
            )
    for center in session.scalars(select(TreatmentCenter)):
        if center.name in DEMO_MRN_SYSTEMS:
            set_mrn_system(
                session,
                clock=clock,
                actor=actor,
                center=center,
                system=DEMO_MRN_SYSTEMS[center.name],
            )
    therapies = {therapy.code: therapy.id for therapy in session.scalars(select(Therapy))}
    for therapy_code, system, code, display in DEMO_THERAPY_CODES:
        add_therapy_code(
            session,
            clock=clock,
            actor=actor,
            data=TherapyCodeInput(
                therapy_id=str(therapies[therapy_code]), system=system, code=code, display=display
            ),
        )


def seed_demo_data(session: Session, *, clock: Clock) -> dict[str, User]:
    """Create the demo states, centers, therapies, patients, caregivers and logins."""
    now = clock.now()
    today = now.date()
    maryland = State(
        code="MD",
        name="Maryland",
        time_zone="America/New_York",
        program_name="Maryland Care Connect",
        program_phone="+14105550100",
        created_at=now,
    )
    colorado = State(
        code="CO",
        name="Colorado",
        time_zone="America/Denver",
        program_name="Colorado Care Connect",
        program_phone="+13035550100",
        created_at=now,
    )
    session.add_all([maryland, colorado])
    session.flush()
    harbor = TreatmentCenter(
        state_id=maryland.id,
        name="Harborview Medical Center",
        city="Baltimore",
        phone="+14105550101",
        is_active=True,
        created_at=now,
    )
    front_range = TreatmentCenter(
        state_id=colorado.id,
        name="Front Range Medical Center",
        city="Aurora",
        phone="+13035550101",
        is_active=True,
        created_at=now,
    )
    casgevy = Therapy(
        code="casgevy",
        brand_name="Casgevy",
        generic_name="exagamglogene autotemcel",
        manufacturer="Vertex Pharmaceuticals",
    )
    lyfgenia = Therapy(
        code="lyfgenia",
        brand_name="Lyfgenia",
        generic_name="lovotibeglogene autotemcel",
        manufacturer="Genetix Biotherapeutics (formerly bluebird bio)",
    )
    session.add_all([harbor, front_range, casgevy, lyfgenia])
    session.flush()

    patients: list[Patient] = []
    for index, (given, family, days) in enumerate(
        zip(_GIVEN, _FAMILY, _DAYS_SINCE_INFUSION, strict=True)
    ):
        in_maryland = index % 2 == 0
        state, center = (maryland, harbor) if in_maryland else (colorado, front_range)
        area = "410" if in_maryland else "303"
        infusion = today - timedelta(days=days)
        age_at_infusion = 12 + (index * 7) % 24
        spanish = given in {"Lucía", "Mateo", "Sofía", "Camila", "Diego", "Valeria"}
        status = PatientStatus.ACTIVE if days >= 0 else PatientStatus.ENROLLED
        if index == 27:
            status = PatientStatus.LOST_TO_FOLLOW_UP
        if index == 29:
            status = PatientStatus.WITHDRAWN
        patient = Patient(
            state_id=state.id,
            center_id=center.id,
            therapy_id=(casgevy if index % 3 else lyfgenia).id,
            medicaid_id=f"{state.code}{100200 + index * 37:08d}",
            center_mrn=f"MRN-{40000 + index * 11}",
            given_name=given,
            family_name=family,
            birth_date=date(infusion.year - age_at_infusion, 1 + index % 12, 1 + (index * 3) % 28),
            preferred_language=Language.ES if spanish else Language.EN,
            time_zone=state.time_zone,
            mobile_phone=f"+1{area}55501{10 + index:02d}",
            infusion_date=infusion,
            status=status,
            created_at=now - timedelta(days=max(days, 0) + 60),
            updated_at=now,
        )
        patients.append(patient)
    session.add_all(patients)
    session.flush()
    for patient in patients:
        record_history(session, patient=patient, at=patient.created_at)

    def caregiver(given: str, family: str, phone: str, language: Language, zone: str) -> Caregiver:
        person = Caregiver(
            given_name=given,
            family_name=family,
            mobile_phone=phone,
            preferred_language=language,
            time_zone=zone,
            created_at=now,
        )
        session.add(person)
        session.flush()
        return person

    def link(person: Caregiver, patient: Patient, relation: Relation, **rights: bool) -> None:
        session.add(
            CaregiverLink(
                caregiver_id=person.id,
                patient_id=patient.id,
                relation=relation,
                created_at=now,
                updated_at=now,
                **rights,
            )
        )

    denise = caregiver("Denise", "Johnson", "+14105550160", Language.EN, maryland.time_zone)
    link(
        denise,
        patients[0],
        Relation.MOTHER,
        can_view_schedule=True,
        can_manage_visits=True,
        can_receive_reminders=True,
        can_view_education=True,
        can_report_events=True,
        can_answer_questionnaires=True,
    )
    link(
        denise,
        patients[4],
        Relation.AUNT,
        can_view_schedule=True,
        can_manage_visits=False,
        can_receive_reminders=False,
        can_view_education=False,
        can_report_events=False,
    )
    rosa = caregiver("Rosa", "García", "+13035550161", Language.ES, colorado.time_zone)
    link(
        rosa,
        patients[1],
        Relation.GRANDMOTHER,
        can_view_schedule=True,
        can_manage_visits=True,
        can_receive_reminders=True,
        can_view_education=True,
        can_report_events=False,
    )
    kevin = caregiver("Kevin", "Brown", "+14105550162", Language.EN, maryland.time_zone)
    link(
        kevin,
        patients[2],
        Relation.PARTNER,
        can_view_schedule=True,
        can_manage_visits=False,
        can_receive_reminders=False,
        can_view_education=False,
        can_report_events=False,
    )

    password = hash_password(DEMO_PASSWORD)
    users: dict[str, User] = {}
    states = {"MD": maryland, "CO": colorado}
    for login, name, role, codes in DEMO_STAFF:
        user = User(
            login=login,
            email=login,
            display_name=name,
            role=role,
            password_hash=password,
            preferred_language=Language.EN,
            is_active=True,
            created_at=now,
        )
        user.state_scopes = [UserStateScope(state_id=states[code].id) for code in codes]
        session.add(user)
        users[login] = user
    for login, patient in (("maya", patients[0]), ("andre", patients[1])):
        users[login] = User(
            login=login,
            display_name=patient.full_name,
            role=Role.PATIENT,
            patient_id=patient.id,
            password_hash=password,
            preferred_language=patient.preferred_language,
            phone_verified_at=now,
            is_active=True,
            created_at=now,
        )
    users["denise"] = User(
        login="denise",
        display_name=denise.full_name,
        role=Role.CAREGIVER,
        caregiver_id=denise.id,
        password_hash=password,
        preferred_language=Language.EN,
        phone_verified_at=now,
        is_active=True,
        created_at=now,
    )
    users["rosa"] = User(
        login="rosa",
        display_name=rosa.full_name,
        role=Role.CAREGIVER,
        caregiver_id=rosa.id,
        password_hash=password,
        preferred_language=Language.ES,
        phone_verified_at=now,
        is_active=True,
        created_at=now,
    )
    session.add_all(users.values())
    session.flush()
    admin = users[DEMO_STAFF[0][0]]
    seed_demo_funding(session, clock=clock, states=states, admin=admin)
    from portal.dev.demo_travel import seed_demo_travel_policies

    seed_demo_travel_policies(session, clock=clock, states=states, admin=admin)
    # The check-in questionnaire written for the project, as an admin would load it.
    load_shipped_questionnaires(
        session,
        clock=clock,
        actor=Actor(user_id=admin.id, label=admin.login or "", role=admin.role.value),
    )
    return users


# What the demo states fund beyond the core modules (module, days from today it started,
# days from today it ends or None): every module is offered to someone, and the admins'
# funding page shows an open-ended window, one with an end date and one that is over.
DEMO_FUNDING: dict[str, list[tuple[str, int, int | None]]] = {
    "MD": [
        ("state-support", -365, None),
        ("living-after-gene-therapy", -180, None),
        ("for-caregivers", -180, None),
    ],
    "CO": [
        ("state-support", -90, 275),
        ("for-caregivers", -30, None),
        ("living-after-gene-therapy", -400, -30),
    ],
}


def seed_demo_funding(
    session: Session, *, clock: Clock, states: dict[str, State], admin: User
) -> None:
    """The demo states' funding windows (see DEMO_FUNDING), as an admin would add them."""
    from education.models import ModuleFunding

    now = clock.now()
    today = now.date()
    session.add_all(
        ModuleFunding(
            state_id=states[code].id,
            module_key=key,
            funded_from=today + timedelta(days=start),
            funded_until=today + timedelta(days=end) if end is not None else None,
            created_at=now,
            created_by_user_id=admin.id,
        )
        for code, windows in DEMO_FUNDING.items()
        for key, start, end in windows
    )
    session.flush()


def seed_demo_follow_up(session: Session, *, clock: Clock, users: dict[str, User]) -> None:
    """Give the demo patients a lived-in follow-up: past visits mostly completed with
    outcomes, a few missed, upcoming appointments, reports, a move request, a note."""
    from decimal import Decimal

    from coordination.followup.models import (
        MoveRequest,
        OutreachChannel,
        OutreachNote,
        OutreachOutcome,
        PatientReport,
        ReportKind,
        ReportStatus,
        RequestStatus,
        VisitStatus,
    )
    from coordination.followup.outcomes import record_outcomes
    from coordination.followup.protocol import shipped_protocols
    from coordination.followup.schedule import (
        book_appointment,
        confirm_visit,
        mark_missed_visits,
        sync_schedule,
    )

    library = shipped_protocols()
    today = clock.now().date()
    coordinators = {
        state_id: user
        for user in users.values()
        if user.role is Role.COORDINATOR
        for state_id in user.state_ids
    }
    patients = list(session.scalars(select(Patient).order_by(Patient.id)))
    for index, patient in enumerate(patients):
        coordinator = coordinators[patient.state_id]
        actor = Actor(user_id=coordinator.id, label=coordinator.login or "", role="coordinator")
        change = sync_schedule(session, clock=clock, actor=actor, library=library, patient=patient)
        protocol = library.current(patient.therapy.code)
        assert protocol is not None
        past = [visit for visit in change.visits if visit.window_end < today]
        # Two patients stopped coming: their last two visits are missed (risk of loss).
        stop_coming = index in (21, 25)
        for position, visit in enumerate(past):
            recent = position >= len(past) - 2
            if (stop_coming and recent) or (index + position) % 11 == 5:
                continue  # the nightly job below marks it missed
            hb = Decimal("10.5") + Decimal((index * 7 + position * 3) % 30) / 10
            hbf = Decimal("28") + Decimal((index * 5 + position * 11) % 170) / 10
            protocol_visit = protocol.visit(visit.visit_key)
            assert protocol_visit is not None
            record_outcomes(
                session,
                clock=clock,
                actor=actor,
                visit=visit,
                assessments=protocol_visit.assessments,
                completed_on=min(visit.target_date + timedelta(days=index % 5), today),
                values={
                    "hemoglobin": hb,
                    "fetal_hemoglobin": hbf,
                    "voe_count": Decimal(1 if (index + position) % 9 == 0 else 0),
                    "hospitalizations": Decimal(0),
                    "transfusions": Decimal(0),
                    "pro_done": bool(position % 4),
                },
            )
        # The visit whose window is open now: booked for some, confirmed for a few.
        upcoming = next(
            (
                visit
                for visit in change.visits
                if visit.status is VisitStatus.DUE
                and visit.window_start <= today + timedelta(days=10)
            ),
            None,
        )
        if upcoming is not None and index % 3 != 2:
            day = max(today + timedelta(days=1 + index % 6), upcoming.window_start)
            # A window closing within the week leaves no day inside it: the demo books
            # the first free day anyway, as a coordinator would, with the reason.
            late = day > upcoming.window_end
            book_appointment(
                session,
                clock=clock,
                actor=actor,
                visit=upcoming,
                patient=patient,
                day=day,
                at=time(9 + index % 7, 30),
                location=patient.center.name,
                reason="The first free day is after the window." if late else None,
                outside_window_confirmed=late,
            )
            if index % 3 == 1:
                confirm_visit(session, clock=clock, actor=actor, visit=upcoming)
    mark_missed_visits(session, clock=clock)

    maya, andre = patients[0], patients[1]
    now = clock.now()
    session.add_all(
        [
            PatientReport(
                patient_id=maya.id,
                kind=ReportKind.PAIN_CRISIS,
                occurred_on=today - timedelta(days=3),
                details="Pain in my back for two days.",
                reported_by_user_id=users["maya"].id,
                reported_at=now - timedelta(days=2),
                status=ReportStatus.NEW,
            ),
            PatientReport(
                patient_id=andre.id,
                kind=ReportKind.EMERGENCY_VISIT,
                occurred_on=today - timedelta(days=8),
                details="Went to the ER for a fever.",
                reported_by_user_id=users["rosa"].id,
                reported_at=now - timedelta(days=7),
                status=ReportStatus.NEW,
            ),
        ]
    )
    andre_next = next(
        (
            v
            for v in sync_schedule(
                session, clock=clock, actor=Actor.system("demo"), library=library, patient=andre
            ).visits
            if v.status.is_open
        ),
        None,
    )
    if andre_next is not None:
        session.add(
            MoveRequest(
                visit_id=andre_next.id,
                patient_id=andre.id,
                requested_by_user_id=users["andre"].id,
                preferred_date=andre_next.target_date + timedelta(days=7),
                note="I have exams that week.",
                status=RequestStatus.OPEN,
                created_at=now - timedelta(days=1),
            )
        )
    coordinator = coordinators[patients[21].state_id]
    session.add(
        OutreachNote(
            patient_id=patients[21].id,
            author_user_id=coordinator.id,
            at=now - timedelta(days=4),
            channel=OutreachChannel.CALL,
            outcome=OutreachOutcome.NO_ANSWER,
            note="Called the mobile number twice.",
            next_step="Send a letter next week.",
        )
    )
    session.flush()
