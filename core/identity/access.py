"""The one permission check: what each role may do, and which patients it may do it to.

Routes never test roles themselves; they declare a Permission and, for a patient's record,
ask `may_access_patient`. The permission-matrix test reads the same declarations.
"""

from __future__ import annotations

import enum

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core.identity.models import Role, User
from core.models import CaregiverLink, Patient, ProxyRight


class Permission(enum.StrEnum):
    PORTAL_HOME = "portal.home"
    PATIENT_LIST = "patients.list"
    PATIENT_ENROLL = "patients.enroll"
    PATIENT_READ = "patients.read"  # a patient or caregiver sees the patient they act for
    RECORD_VIEW = "record.view"  # staff open a patient's record
    PATIENT_EDIT = "patients.edit"
    PATIENT_INVITE = "patients.invite"
    PROXY_MANAGE = "proxy.manage"
    SCHEDULE_VIEW = "schedule.view"
    SCHEDULE_RESPOND = "schedule.respond"  # confirm a visit, ask to move it (acting on it)
    VISIT_MANAGE = "visits.manage"  # book, cancel, complete, record outcomes
    WORKLIST = "worklist"
    REPORT_REVIEW = "reports.review"  # confirm or dismiss what a patient reported
    NOTES_WRITE = "notes.write"  # outreach notes
    EDUCATION_VIEW = "education.view"
    EDUCATION_ASSIGN = "education.assign"  # assign a module to a patient or caregiver, text it
    EDUCATION_FUND = "education.fund"  # set the modules each state funds, and when
    EDUCATION_REACH = "education.reach"  # a state's reach figures (suppressed)
    TRAVEL_ARRANGE = "travel.arrange"  # approve, decline, arrange a patient's travel support
    TRAVEL_POLICY = "travel.policy"  # set what each state funds for travel, and from when
    EVENTS_REPORT = "events.report"
    REPORTS_VIEW = "reports.view"
    CLAIMS_LOAD = "claims.load"  # load a state's Medicaid claims extract, see past loads
    # The patients behind an outcome figure or a rebate statement (only those the person may
    # see: a coordinator's own), one patient's result and its evidence.
    OUTCOMES_PATIENTS = "outcomes.patients"
    ADMIN_STATES = "admin.states"
    ADMIN_CENTERS = "admin.centers"
    ADMIN_THERAPIES = "admin.therapies"  # the codes that name each therapy in FHIR data
    ADMIN_USERS = "admin.users"
    AUDIT_READ = "audit.read"
    FHIR_CLIENTS_MANAGE = "fhir_clients.manage"  # register treatment centers' FHIR clients
    QUESTIONNAIRES_MANAGE = "questionnaires.manage"  # load questionnaires, retire them
    # Answer a questionnaire for a patient: the patient, or a caregiver whose link carries the
    # right to answer questionnaires (answers speak for the patient: a parent for a child).
    QUESTIONNAIRE_ANSWER = "questionnaires.answer"
    ACCOUNT = "account"


_SELF_SERVICE = {
    Permission.PORTAL_HOME,
    Permission.PATIENT_READ,
    Permission.SCHEDULE_VIEW,
    Permission.SCHEDULE_RESPOND,
    Permission.EDUCATION_VIEW,
    Permission.EVENTS_REPORT,
    Permission.QUESTIONNAIRE_ANSWER,
    Permission.ACCOUNT,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.PATIENT: frozenset(_SELF_SERVICE),
    Role.CAREGIVER: frozenset(_SELF_SERVICE),
    Role.COORDINATOR: frozenset(
        {
            Permission.PATIENT_LIST,
            Permission.PATIENT_ENROLL,
            Permission.RECORD_VIEW,
            Permission.PATIENT_EDIT,
            Permission.PATIENT_INVITE,
            Permission.PROXY_MANAGE,
            Permission.SCHEDULE_VIEW,
            Permission.SCHEDULE_RESPOND,
            Permission.VISIT_MANAGE,
            Permission.WORKLIST,
            Permission.REPORT_REVIEW,
            Permission.NOTES_WRITE,
            Permission.EDUCATION_VIEW,
            Permission.EDUCATION_ASSIGN,
            Permission.EDUCATION_REACH,
            Permission.REPORTS_VIEW,
            Permission.OUTCOMES_PATIENTS,
            Permission.TRAVEL_ARRANGE,
            Permission.ACCOUNT,
        }
    ),
    Role.STATE_ANALYST: frozenset(
        {
            Permission.REPORTS_VIEW,
            Permission.EDUCATION_REACH,
            Permission.CLAIMS_LOAD,
            Permission.ACCOUNT,
        }
    ),
    Role.ADMIN: frozenset(
        {
            Permission.ADMIN_STATES,
            Permission.ADMIN_CENTERS,
            Permission.ADMIN_THERAPIES,
            Permission.ADMIN_USERS,
            Permission.AUDIT_READ,
            Permission.FHIR_CLIENTS_MANAGE,
            Permission.QUESTIONNAIRES_MANAGE,
            Permission.EDUCATION_FUND,
            Permission.TRAVEL_POLICY,
            Permission.CLAIMS_LOAD,
            Permission.REPORTS_VIEW,
            Permission.ACCOUNT,
        }
    ),
}

# What a caregiver's link must allow for each patient-level permission.
_PROXY_RIGHT_FOR: dict[Permission, ProxyRight | None] = {
    Permission.PATIENT_READ: None,  # any link shows the patient's name
    Permission.SCHEDULE_VIEW: ProxyRight.VIEW_SCHEDULE,
    # Seeing the schedule is not acting on it: that takes its own right.
    Permission.SCHEDULE_RESPOND: ProxyRight.MANAGE_VISITS,
    Permission.EDUCATION_VIEW: ProxyRight.VIEW_EDUCATION,
    Permission.EVENTS_REPORT: ProxyRight.REPORT_EVENTS,
    # Answers speak for the patient: a right of its own (a parent for a child).
    Permission.QUESTIONNAIRE_ANSWER: ProxyRight.ANSWER_QUESTIONNAIRES,
}


def role_allows(user: User, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[user.role]


def caregiver_link(session: Session, *, user: User, patient_id: int) -> CaregiverLink | None:
    """The link through which caregiver `user` acts for the patient; None for anyone else."""
    if user.role is not Role.CAREGIVER:
        return None
    return session.scalar(
        select(CaregiverLink).where(
            CaregiverLink.caregiver_id == user.caregiver_id,
            CaregiverLink.patient_id == patient_id,
        )
    )


def may_access_patient(
    session: Session, *, user: User, patient: Patient, permission: Permission
) -> bool:
    """True when `user` may exercise `permission` on this patient's record."""
    if not role_allows(user, permission):
        return False
    match user.role:
        case Role.PATIENT:
            return user.patient_id == patient.id
        case Role.CAREGIVER:
            link = caregiver_link(session, user=user, patient_id=patient.id)
            if link is None or permission not in _PROXY_RIGHT_FOR:
                return False
            right = _PROXY_RIGHT_FOR[permission]
            return right is None or link.has(right)
        case Role.COORDINATOR:
            return patient.state_id in user.state_ids and (
                user.center_id is None or patient.center_id == user.center_id
            )
        case _:
            return False


def report_state_ids(user: User) -> frozenset[int] | None:
    """The states whose figures `user` sees in reports: every state for an admin (None),
    their own for analysts and coordinators."""
    return None if user.role is Role.ADMIN else frozenset(user.state_ids)


def claims_state_ids(user: User) -> set[int] | None:
    """The states whose Medicaid claims `user` may load (and whose loads they see): None
    for an admin (every state), a state analyst's own states, none for anyone else."""
    if not role_allows(user, Permission.CLAIMS_LOAD):
        return set()
    return None if user.role is Role.ADMIN else set(user.state_ids)


def scope_patients(query: Select[Patient], user: User) -> Select[Patient]:
    """Restrict a patient query to what a coordinator may see (the list and search)."""
    if user.role is not Role.COORDINATOR:
        return query.where(Patient.id.is_(None))
    query = query.where(Patient.state_id.in_(user.state_ids or {-1}))
    if user.center_id is not None:
        query = query.where(Patient.center_id == user.center_id)
    return query


def linked_patients(
    session: Session, *, user: User, right: ProxyRight | None = None
) -> list[tuple[Patient, CaregiverLink | None]]:
    """The patients a patient or caregiver acts for (with the link that allows it)."""
    if user.role is Role.PATIENT and user.patient is not None:
        return [(user.patient, None)]
    if user.role is not Role.CAREGIVER:
        return []
    query = (
        select(Patient, CaregiverLink)
        .join(CaregiverLink, CaregiverLink.patient_id == Patient.id)
        .where(CaregiverLink.caregiver_id == user.caregiver_id)
        .order_by(Patient.given_name)
    )
    if right is not None:
        query = query.where(getattr(CaregiverLink, f"can_{right.value}").is_(True))
    return [(row[0], row[1]) for row in session.execute(query)]
