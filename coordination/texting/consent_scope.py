"""Consent as a coordinator sees and changes it: only what belongs to their programs.

Consent is kept per number (`consent.py`), and one number may be used by people of several
programs: a family phone, a caregiver who helps patients in two states, or a number typed
on the wrong record. A number's people are the patients whose own number it is and the
patients helped by the caregivers whose number it is. For a coordinator:

- the number's current status is shown (it decides whether their patient gets texts);
- of its history, only the changes recorded within their scope: by the phone itself (a
  keyword texted, the provider's opt-out), by a patient of theirs or a caregiver of one of
  their patients in the portal, or by a coordinator whose scope lies within theirs (they
  themselves, a colleague of the same program). A change recorded by anyone else may have
  been about another program's patient: it is left out, and the page says that some were;
- when someone outside their scope uses the number, the page says so without saying who,
  and the coordinator cannot change the number's consent (record a consent or an opt-out,
  clear the provider's flag, tick the consent box of a form): it would change the other
  program's patient's texts too. The person can always text STOP or START, or agree or
  stop on their own account page."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.identity.access import scope_patients
from core.identity.models import Role, User
from core.models import Caregiver, CaregiverLink, Patient
from core.text import N_

# The refusal of a change to a number that someone outside the coordinator's scope uses.
SHARED_NUMBER_REFUSAL = N_(
    "This number is also used by someone outside your program. Consent belongs to the "
    "number, so a change here would change their texts too: it is not recorded. The person "
    "can text STOP or START to the program's number, or agree or stop on their account page."
)


def _people_of_numbers(session: Session, *, phones: Collection[str]) -> dict[str, set[int]]:
    """The patients of each number: whose own number it is, and those its caregivers help
    (through any link). Two queries."""
    people: dict[str, set[int]] = {phone: set() for phone in phones}
    if not phones:
        return people
    own = select(Patient.mobile_phone, Patient.id).where(Patient.mobile_phone.in_(phones))
    helped = (
        select(Caregiver.mobile_phone, CaregiverLink.patient_id)
        .join(CaregiverLink, CaregiverLink.caregiver_id == Caregiver.id)
        .where(Caregiver.mobile_phone.in_(phones))
    )
    for query in (own, helped):
        for phone, patient_id in session.execute(query):
            if phone is not None:
                people[phone].add(patient_id)
    return people


def _in_scope(session: Session, *, user: User, patient_ids: Collection[int]) -> set[int]:
    """Those of `patient_ids` that `user` may see (a coordinator's states and center)."""
    if not patient_ids:
        return set()
    query = scope_patients(select(Patient), user).where(Patient.id.in_(patient_ids))
    return set(session.scalars(query.with_only_columns(Patient.id)))


def numbers_used_outside(session: Session, *, user: User, phones: Collection[str]) -> set[str]:
    """The numbers of `phones` that someone outside `user`'s scope uses (see the module)."""
    people = _people_of_numbers(session, phones=set(phones))
    everyone = {patient_id for ids in people.values() for patient_id in ids}
    visible = _in_scope(session, user=user, patient_ids=everyone)
    return {phone for phone, ids in people.items() if ids - visible}


def _within(recorder: User, viewer: User) -> bool:
    """A coordinator `recorder` can only have acted for patients `viewer` sees too."""
    return (
        recorder.role is Role.COORDINATOR
        and viewer.role is Role.COORDINATOR
        and recorder.state_ids <= viewer.state_ids
        and (viewer.center_id is None or recorder.center_id == viewer.center_id)
    )


def visible_recorders(session: Session, *, viewer: User, recorders: Iterable[User]) -> set[int]:
    """The ids of `recorders` whose consent changes `viewer` may see (see the module)."""
    recorders = list(recorders)
    patient_ids = {user.patient_id for user in recorders if user.patient_id is not None}
    caregiver_ids = {user.caregiver_id for user in recorders if user.caregiver_id is not None}
    helped: dict[int, set[int]] = {caregiver_id: set() for caregiver_id in caregiver_ids}
    if caregiver_ids:
        links = select(CaregiverLink.caregiver_id, CaregiverLink.patient_id).where(
            CaregiverLink.caregiver_id.in_(caregiver_ids)
        )
        for caregiver_id, patient_id in session.execute(links):
            helped[caregiver_id].add(patient_id)
            patient_ids.add(patient_id)
    seen = _in_scope(session, user=viewer, patient_ids=patient_ids)
    visible = set()
    for user in recorders:
        if user.role is Role.PATIENT:
            shown = user.patient_id in seen
        elif user.role is Role.CAREGIVER:
            shown = user.caregiver_id is not None and bool(helped[user.caregiver_id] & seen)
        else:
            shown = _within(user, viewer)
        if shown:
            visible.add(user.id)
    return visible
