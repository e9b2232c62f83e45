"""Who a phone number belongs to: the one rule that inbound replies act on and that the
demo's pages show.

A number belongs to
- the patients whose own mobile number it is, and
- the caregivers whose mobile number it is.

A text from the number is about
- its own patients, when it is some patient's own number (a patient's own number wins);
- else the patients its caregivers help through a link that lets them see the schedule or
  receive the reminders (`CaregiverLink.can_view_schedule` or `can_receive_reminders`).
  A link without either right (education only, say) names who the caregiver is to the
  patient, and the text is filed for that patient's care team no further.

A text from the number acts on (confirms or asks to move) the visits of its own patients, else
of the linked patients whose link also has the right to confirm visits or ask to move them
(`can_manage_visits`), the same right the portal asks for: a caregiver who only sees the
schedule or gets the reminders is answered that a person will call.

The number's language is its first own patient's, else its first caregiver's. To name the
number, its first own patient comes first, else the caregiver of its oldest link (whatever
the link's rights). "First" is by id, so that every page and every reply agree.

One number or many: at most three queries (patients, caregivers, the caregivers' links),
whatever the count of numbers."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, contains_eager

from core.models import Caregiver, CaregiverLink, Patient


def acts_for_patient(link: CaregiverLink) -> bool:
    """Whether a caregiver's texts may act on the linked patient's visits: the link lets
    them see the schedule or receive the reminders."""
    return link.can_view_schedule or link.can_receive_reminders


@dataclass(frozen=True)
class PhoneOwners:
    """The people of one phone number (see the module's rule)."""

    phone: str
    patients: tuple[Patient, ...] = ()  # whose own number it is, by id
    caregivers: tuple[Caregiver, ...] = ()  # whose number it is, by id
    # Every link of those caregivers, oldest first, with its patient and caregiver loaded.
    links: tuple[CaregiverLink, ...] = ()

    @property
    def linked(self) -> tuple[Patient, ...]:
        """The patients the number's caregivers help with a schedule or reminder right,
        once each, by id."""
        helped = {link.patient.id: link.patient for link in self.links if acts_for_patient(link)}
        return tuple(helped[patient_id] for patient_id in sorted(helped))

    @property
    def candidates(self) -> tuple[Patient, ...]:
        """The patients a text from the number is about: its own patients, else the
        linked ones."""
        return self.patients or self.linked

    @property
    def acting_for(self) -> tuple[Patient, ...]:
        """The patients whose visits a text from the number may confirm or ask to move: its
        own patients, else the linked ones whose link has the right to manage visits."""
        if self.patients:
            return self.patients
        managed = {
            link.patient.id: link.patient
            for link in self.links
            if acts_for_patient(link) and link.can_manage_visits
        }
        return tuple(managed[patient_id] for patient_id in sorted(managed))

    @property
    def first_link(self) -> CaregiverLink | None:
        """The link that names a caregiver's number: the oldest one (it says who the
        caregiver is to whom, not what they may do)."""
        return self.links[0] if self.links else None

    def states(self) -> list[int]:
        """The states of the number's own and linked patients, own patients first."""
        return [patient.state_id for patient in self.patients + self.linked]

    def language(self) -> str | None:
        """The owner's language: the patient's whose own number it is, else a caregiver's;
        None for a number nobody has."""
        if self.patients:
            return self.patients[0].preferred_language.value
        if self.caregivers:
            return self.caregivers[0].preferred_language.value
        return None


def owners_of_numbers(session: Session, *, phones: Collection[str]) -> dict[str, PhoneOwners]:
    """The people of each number in `phones` (every number is a key; a number nobody has
    gets empty owners), in at most three queries."""
    wanted = set(phones)
    if not wanted:
        return {}
    patients: dict[str, list[Patient]] = {phone: [] for phone in wanted}
    for patient in session.scalars(
        select(Patient).where(Patient.mobile_phone.in_(wanted)).order_by(Patient.id)
    ):
        assert patient.mobile_phone is not None
        patients[patient.mobile_phone].append(patient)
    caregivers: dict[str, list[Caregiver]] = {phone: [] for phone in wanted}
    for caregiver in session.scalars(
        select(Caregiver).where(Caregiver.mobile_phone.in_(wanted)).order_by(Caregiver.id)
    ):
        assert caregiver.mobile_phone is not None
        caregivers[caregiver.mobile_phone].append(caregiver)
    links: dict[str, list[CaregiverLink]] = {phone: [] for phone in wanted}
    caregiver_ids = [c.id for found in caregivers.values() for c in found]
    if caregiver_ids:
        for link in session.scalars(
            select(CaregiverLink)
            .join(CaregiverLink.patient)
            .join(CaregiverLink.caregiver)
            .options(contains_eager(CaregiverLink.patient), contains_eager(CaregiverLink.caregiver))
            .where(CaregiverLink.caregiver_id.in_(caregiver_ids))
            .order_by(CaregiverLink.id)
        ):
            assert link.caregiver.mobile_phone is not None
            links[link.caregiver.mobile_phone].append(link)
    return {
        phone: PhoneOwners(
            phone=phone,
            patients=tuple(patients[phone]),
            caregivers=tuple(caregivers[phone]),
            links=tuple(links[phone]),
        )
        for phone in wanted
    }


def owners_of_number(session: Session, *, phone: str) -> PhoneOwners:
    """The people of one number (see the module's rule)."""
    return owners_of_numbers(session, phones=[phone])[phone]
