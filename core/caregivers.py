"""Caregivers on a patient's record: linking one (with the proxy rights given), changing their
details, and the rights themselves (given by the patient or staff), each change audited.

Plain keyword-only functions over a Session; they flush and never commit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.models import (
    RELATION_WORDS_MAX,
    Caregiver,
    CaregiverLink,
    Language,
    Patient,
    ProxyRight,
    Relation,
    parse_relation,
)
from core.phones import InvalidPhoneNumber, normalize_phone
from core.service import NAME_MAX
from core.text import N_


@dataclass
class CaregiverInput:
    given_name: str = ""
    family_name: str = ""
    relationship: str = ""  # a code of Relation ("other" with `relationship_other`), or words
    relationship_other: str = ""
    mobile_phone: str = ""
    preferred_language: str = "en"
    rights: set[ProxyRight] = field(
        default_factory=lambda: {ProxyRight.VIEW_SCHEDULE, ProxyRight.VIEW_EDUCATION}
    )


def _clean_caregiver(
    data: CaregiverInput, other_errors: Mapping[str, str]
) -> tuple[str, str, Relation, str | None, str | None, Language]:
    errors: dict[str, str] = {}
    given, family = data.given_name.strip(), data.family_name.strip()
    chosen = data.relationship.strip()
    # "other" comes with the coordinator's words; words that name an entry of the list
    # (typed there, or sent instead of a code) become that entry.
    typed = data.relationship_other if chosen == Relation.OTHER.value else chosen
    relation, other = parse_relation(typed)
    if not given:
        errors["given_name"] = N_("Enter a name.")
    if not family:
        errors["family_name"] = N_("Enter a name.")
    if not chosen:
        errors["relationship"] = N_("Choose how they are related to the patient.")
    elif relation is Relation.OTHER and (
        not other or len(" ".join(typed.split())) > RELATION_WORDS_MAX
    ):
        errors["relationship_other"] = N_(
            "Say how they are related, e.g. godmother (at most 40 characters)."
        )
    phone: str | None = None
    if data.mobile_phone.strip():
        try:
            phone = normalize_phone(data.mobile_phone)
        except InvalidPhoneNumber as problem:
            errors["mobile_phone"] = str(problem)
    try:
        language = Language(data.preferred_language)
    except ValueError:
        errors["preferred_language"] = N_("Choose English or Spanish.")
        language = Language.EN
    errors.update(other_errors)
    if errors:
        raise FieldErrors(errors)
    return given, family, relation, other, phone, language


def add_caregiver(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    data: CaregiverInput,
    other_errors: Mapping[str, str] = MappingProxyType({}),
) -> CaregiverLink:
    """Link a new caregiver to a patient with the proxy rights given (audited). Raises
    FieldErrors, with `other_errors` (the caller's own fields) among them."""
    given, family, relation, other, phone, language = _clean_caregiver(data, other_errors)
    now = clock.now()
    caregiver = Caregiver(
        given_name=given[:NAME_MAX],
        family_name=family[:NAME_MAX],
        mobile_phone=phone,
        preferred_language=language,
        time_zone=patient.time_zone,
        created_at=now,
    )
    session.add(caregiver)
    session.flush()
    link = CaregiverLink(
        caregiver_id=caregiver.id,
        patient_id=patient.id,
        relation=relation,
        relation_other=other,
        created_at=now,
        updated_at=now,
        **{f"can_{right.value}": right in data.rights for right in ProxyRight},
    )
    session.add(link)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="proxy.grant",
        patient_id=patient.id,
        target=f"caregiver:{caregiver.id}",
        detail={"rights": sorted(right.value for right in data.rights)},
    )
    return link


def update_caregiver(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    link: CaregiverLink,
    data: CaregiverInput,
) -> list[str]:
    """Change a linked caregiver's name, number, language and relationship (not their
    rights: those stay with the patient and staff). Returns the changed field names
    (audited, without their values); raises FieldErrors."""
    given, family, relation, other, phone, language = _clean_caregiver(data, {})
    caregiver = link.caregiver
    wanted: dict[tuple[object, str], object] = {
        (caregiver, "given_name"): given[:NAME_MAX],
        (caregiver, "family_name"): family[:NAME_MAX],
        (caregiver, "mobile_phone"): phone,
        (caregiver, "preferred_language"): language,
        (link, "relation"): relation,
        (link, "relation_other"): other,
    }
    changed = [name for (row, name), value in wanted.items() if getattr(row, name) != value]
    if not changed:
        return []
    for (row, name), value in wanted.items():
        setattr(row, name, value)
    link.updated_at = clock.now()
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="caregiver.update",
        patient_id=link.patient_id,
        target=f"caregiver:{link.caregiver_id}",
        detail={"fields": changed},
    )
    return changed


def set_proxy_rights(
    session: Session, *, clock: Clock, actor: Actor, link: CaregiverLink, rights: set[ProxyRight]
) -> bool:
    """Replace what a caregiver may do for the patient; records before and after."""
    before = link.rights()
    if before == rights:
        return False
    for right in ProxyRight:
        setattr(link, f"can_{right.value}", right in rights)
    link.updated_at = clock.now()
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="proxy.change",
        patient_id=link.patient_id,
        target=f"caregiver:{link.caregiver_id}",
        detail={
            "before": sorted(right.value for right in before),
            "after": sorted(right.value for right in rights),
        },
    )
    return True


def caregiver_links(session: Session, *, patient_id: int) -> list[CaregiverLink]:
    return list(
        session.scalars(
            select(CaregiverLink)
            .where(CaregiverLink.patient_id == patient_id)
            .options(joinedload(CaregiverLink.caregiver))
            .order_by(CaregiverLink.id)
        )
    )


def get_caregiver_link(session: Session, *, patient_id: int, link_id: int) -> CaregiverLink | None:
    link = session.get(CaregiverLink, link_id)
    return link if link is not None and link.patient_id == patient_id else None
