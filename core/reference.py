"""States, therapies and treatment centers: the reference data admins keep, with the
identifier systems a center's FHIR data names a state's Medicaid IDs and a center's record
numbers by."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.ids import parse_id, parse_int
from core.models import SID_BASE, State, Therapy, TreatmentCenter
from core.phones import InvalidPhoneNumber, normalize_phone
from core.text import N_


def list_states(session: Session, *, state_ids: set[int] | None = None) -> list[State]:
    """The states (only `state_ids`, when given: a staff member's own), by name."""
    query = select(State)
    if state_ids is not None:
        query = query.where(State.id.in_(state_ids or {-1}))
    return list(session.scalars(query.order_by(State.name)))


def list_therapies(session: Session) -> list[Therapy]:
    return list(session.scalars(select(Therapy).order_by(Therapy.brand_name)))


def list_centers(session: Session, *, state_ids: set[int] | None = None) -> list[TreatmentCenter]:
    query = select(TreatmentCenter).options(joinedload(TreatmentCenter.state))
    if state_ids is not None:
        query = query.where(TreatmentCenter.state_id.in_(state_ids or {-1}))
    return list(session.scalars(query.order_by(TreatmentCenter.name)))


@dataclass
class StateInput:
    code: str = ""
    name: str = ""
    time_zone: str = ""
    program_name: str = ""
    program_phone: str = ""
    texts_from_hour: str = "8"
    texts_until_hour: str = "21"


# Every text names the program: a longer name would push reminders past two SMS segments.
PROGRAM_NAME_MAX = 40


def _hour(value: str) -> int | None:
    return parse_int(value.strip().removesuffix(":00"), low=0, high=24)


def _clean_state(data: StateInput) -> dict[str, object]:
    errors: dict[str, str] = {}
    code = data.code.strip().upper()
    if len(code) != 2 or not code.isalpha():
        errors["code"] = N_("Use the two-letter postal code, e.g. MD.")
    if not data.name.strip():
        errors["name"] = N_("Enter the state's name.")
    zone = data.time_zone.strip()
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        errors["time_zone"] = N_("Choose an IANA time zone such as America/New_York.")
    if not data.program_name.strip():
        errors["program_name"] = N_("Enter the program's name as patients know it.")
    elif len(data.program_name.strip()) > PROGRAM_NAME_MAX:
        errors["program_name"] = N_(
            "Keep the program's name to 40 characters: every text message carries it."
        )
    texts_from, texts_until = _hour(data.texts_from_hour), _hour(data.texts_until_hour)
    if texts_from is None or texts_from > 23:
        errors["texts_from_hour"] = N_("Enter an hour from 0 to 23, e.g. 8.")
    if texts_until is None or texts_until < 1:
        errors["texts_until_hour"] = N_("Enter an hour from 1 to 24, e.g. 21.")
    elif texts_from is not None and texts_until - texts_from < 4:
        errors["texts_until_hour"] = N_(
            "Leave at least 4 hours a day for texts, e.g. from 8 until 21."
        )
    phone = ""
    try:
        phone = normalize_phone(data.program_phone, mobile_only=False)
    except InvalidPhoneNumber as problem:
        errors["program_phone"] = str(problem)
    if errors:
        raise FieldErrors(errors)
    return {
        "code": code,
        "name": data.name.strip()[:100],
        "time_zone": zone,
        "program_name": data.program_name.strip(),
        "program_phone": phone,
        "texts_from_hour": texts_from,
        "texts_until_hour": texts_until,
    }


def save_state(
    session: Session, *, clock: Clock, actor: Actor, data: StateInput, state: State | None
) -> State:
    """Create a state, or update `state`. Raises FieldErrors."""
    values = _clean_state(data)
    clash = session.scalar(
        select(State.id).where(
            State.code == values["code"], State.id != (state.id if state else -1)
        )
    )
    if clash is not None:
        raise FieldErrors({"code": N_("Another state has this code.")})
    if state is None:
        state = State(created_at=clock.now(), **values)
        session.add(state)
    else:
        for name, value in values.items():
            setattr(state, name, value)
    session.flush()
    record_event(
        session, clock=clock, actor=actor, action="admin.state.save", target=f"state:{state.id}"
    )
    return state


@dataclass
class CenterInput:
    name: str = ""
    city: str = ""
    state_id: str = ""
    phone: str = ""
    is_active: bool = True


def save_center(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    data: CenterInput,
    center: TreatmentCenter | None,
) -> TreatmentCenter:
    """Create or update a treatment center. Raises FieldErrors."""
    errors: dict[str, str] = {}
    name, city = data.name.strip(), data.city.strip()
    if not name or len(name) > 160:
        errors["name"] = N_("Enter the center's name (at most 160 characters).")
    if not city or len(city) > 80:
        errors["city"] = N_("Enter the city.")
    state_id = parse_id(data.state_id)
    state = session.get(State, state_id) if state_id is not None else None
    if state is None:
        errors["state_id"] = N_("Choose a state.")
    phone: str | None = None
    if data.phone.strip():
        try:
            phone = normalize_phone(data.phone, mobile_only=False)
        except InvalidPhoneNumber as problem:
            errors["phone"] = str(problem)
    if errors:
        raise FieldErrors(errors)
    assert state is not None
    clash = session.scalar(
        select(TreatmentCenter.id).where(
            TreatmentCenter.state_id == state.id,
            TreatmentCenter.name == name,
            TreatmentCenter.id != (center.id if center else -1),
        )
    )
    if clash is not None:
        raise FieldErrors({"name": N_("This state already has a center with this name.")})
    if center is None:
        center = TreatmentCenter(created_at=clock.now(), name=name, city=city, state_id=state.id)
        session.add(center)
    center.name, center.city, center.state_id = name, city, state.id
    center.phone, center.is_active = phone, data.is_active
    session.flush()
    record_event(
        session, clock=clock, actor=actor, action="admin.center.save", target=f"center:{center.id}"
    )
    return center


# --- identifier systems (FHIR Identifier.system) ---------------------------------------

# The columns' length (states.medicaid_id_system, treatment_centers.mrn_system).
SYSTEM_URI_MAX = 200
_OID = re.compile(r"^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$")
_UUID = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Printable ASCII without spaces: what a URI may hold (RFC 3986), so the value a center's
# system sends compares equal character for character.
_URI_CHARS = re.compile(r"^[\x21-\x7e]+$")


def system_uri_problem(text: str) -> str | None:
    """Why `text` (stripped) cannot be a FHIR identifier or code system, or None: it must
    be an absolute http(s) URL with a host, or `urn:oid:` / `urn:uuid:` with a well-formed
    OID or (lower-case) UUID."""
    if len(text) > SYSTEM_URI_MAX:
        return N_("Keep the address to 200 characters.")
    if not _URI_CHARS.match(text):
        return N_("An address has no spaces and only plain (ASCII) characters.")
    lowered = text.lower()
    if lowered.startswith("urn:oid:"):
        if not _OID.match(text):
            return N_("An OID is numbers joined by dots, e.g. urn:oid:2.16.840.1.113883.19.5.")
        return None
    if lowered.startswith("urn:uuid:"):
        if not _UUID.match(text):
            return N_(
                "A UUID is written in lower case, e.g. "
                "urn:uuid:0f8c3b5e-5d1a-4c8e-9a57-2b1d3f6e4a90."
            )
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return N_(
            "Enter an http:// or https:// address, or urn:oid: or urn:uuid: followed by the "
            "OID or UUID."
        )
    if parts.query or parts.fragment:
        return N_("Leave out the ? and # parts: a system is an address without them.")
    return None


def _in_platform_namespace(text: str) -> bool:
    return text.startswith(SID_BASE + "/")


def set_medicaid_system(
    session: Session, *, clock: Clock, actor: Actor, state: State, system: str
) -> State:
    """Set the system URI of the state's Medicaid IDs in FHIR identifiers; empty (or the
    default itself) means the platform's default. It must differ from every other state's
    and from every center's record-number system, so an identifier always says whose it
    is. A change applies to the next FHIR message at once. Raises FieldErrors."""
    text = system.strip()
    value: str | None = text or None
    if value is not None and value == state.default_medicaid_system:
        value = None
    if value is not None:
        problem = system_uri_problem(value)
        if problem is None and _in_platform_namespace(value):
            problem = N_(
                "Addresses under https://cgt-access.org/fhir/sid/ are the platform's own: "
                "leave the field empty to use the default."
            )
        if problem is not None:
            raise FieldErrors({"medicaid_id_system": problem})
    effective = value or state.default_medicaid_system
    for other in session.scalars(select(State).where(State.id != state.id)):
        if other.medicaid_system == effective:
            raise FieldErrors(
                {
                    "medicaid_id_system": N_(
                        "%(state)s already uses this system for its Medicaid IDs.",
                        state=other.name,
                    )
                }
            )
    if _used_for_record_numbers(session, effective, center_id=None):
        raise FieldErrors(
            {
                "medicaid_id_system": N_(
                    "A treatment center uses this system for its record numbers."
                )
            }
        )
    before = state.medicaid_system
    if value == state.medicaid_id_system:
        return state
    state.medicaid_id_system = value
    session.flush()
    # System URIs are configuration, not personal data: the event keeps both values so the
    # log says what centers had to send when.
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.state.medicaid_system",
        target=f"state:{state.id}",
        detail={"from": before, "to": state.medicaid_system},
    )
    return state


def _used_for_record_numbers(session: Session, system: str, *, center_id: int | None) -> bool:
    query = select(TreatmentCenter)
    if center_id is not None:
        query = query.where(TreatmentCenter.id != center_id)
    return any(center.record_number_system == system for center in session.scalars(query))


def set_mrn_system(
    session: Session, *, clock: Clock, actor: Actor, center: TreatmentCenter, system: str
) -> TreatmentCenter:
    """Set the system URI of the center's medical record numbers in FHIR identifiers; empty
    (or the default itself) means the platform's default. It may not be a state's Medicaid
    system. Centers of one health system may share one (a patient is looked up only among
    the sending center's own). Raises FieldErrors."""
    text = system.strip()
    value: str | None = text or None
    if value is not None and value == center.default_record_number_system:
        value = None
    if value is not None:
        problem = system_uri_problem(value)
        if problem is None and _in_platform_namespace(value):
            problem = N_(
                "Addresses under https://cgt-access.org/fhir/sid/ are the platform's own: "
                "leave the field empty to use the default."
            )
        if problem is not None:
            raise FieldErrors({"mrn_system": problem})
        if any(state.medicaid_system == value for state in session.scalars(select(State))):
            raise FieldErrors({"mrn_system": N_("A state uses this system for its Medicaid IDs.")})
    before = center.record_number_system
    if value == center.mrn_system:
        return center
    center.mrn_system = value
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.center.mrn_system",
        target=f"center:{center.id}",
        detail={"from": before, "to": center.record_number_system},
    )
    return center
