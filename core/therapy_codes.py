"""The codes that name a therapy in data from outside: a center's infusion Procedure or
MedicationAdministration says which therapy it was by one of them. The platform's own code
(`PLATFORM_SYSTEM|casgevy`) is always accepted; admins add the codes centers' systems send
(an NDC, an RxNorm concept, a HCPCS Level II code). A code names one therapy only."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.ids import parse_id
from core.models import Therapy, TherapyCode
from core.reference import system_uri_problem
from core.text import N_

# The platform's own code system for therapies (codes: each therapy's `code`).
PLATFORM_SYSTEM = "https://cgt-access.org/fhir/CodeSystem/therapy"
# Canonical URIs of the code systems centers use for drugs and their billing (HL7
# Terminology, THO: CodeSystem v3-ndc, v3-rxNorm, hcpcs-Level-II).
NDC = "http://hl7.org/fhir/sid/ndc"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CODE_MAX = 64
DISPLAY_MAX = 200
_FHIR_CODE = re.compile(r"^[^\s]+( [^\s]+)*$")


@dataclass(frozen=True)
class KnownSystem:
    """A code system the page suggests, with the shape of its codes."""

    uri: str
    name: str  # a msgid: the page translates it
    example: str
    pattern: re.Pattern[str]
    problem: str  # a msgid: why a code is not of this system's shape


KNOWN_SYSTEMS = (
    KnownSystem(
        uri=HCPCS,
        name=N_("HCPCS Level II"),
        example="J3392",
        pattern=re.compile(r"^[A-V][0-9]{4}$"),
        problem=N_("A HCPCS Level II code is a letter and four digits, e.g. J3392."),
    ),
    KnownSystem(
        uri=NDC,
        name=N_("NDC (National Drug Code)"),
        example="12345-6789-01",
        # 10 digits in three parts (4-4-2, 5-3-2, 5-4-1) as the FDA lists them, or the
        # 11-digit 5-4-2 form claims use (with or without the dashes).
        pattern=re.compile(
            r"^(\d{4}-\d{4}-\d{2}|\d{5}-\d{3}-\d{2}|\d{5}-\d{4}-\d{1,2}|\d{10,11})$"
        ),
        problem=N_("An NDC is 10 or 11 digits, with or without its dashes, e.g. 12345-6789-01."),
    ),
    KnownSystem(
        uri=RXNORM,
        name=N_("RxNorm"),
        example="123456",
        pattern=re.compile(r"^[1-9][0-9]{0,9}$"),
        problem=N_("An RxNorm code (RXCUI) is a number, e.g. 123456."),
    ),
)
_KNOWN = {system.uri: system for system in KNOWN_SYSTEMS}


def known_system(uri: str) -> KnownSystem | None:
    return _KNOWN.get(uri)


@dataclass
class TherapyCodeInput:
    """What the form sends: the therapy (its id), the code's system, the code, a display."""

    therapy_id: str = ""
    system: str = ""
    code: str = ""
    display: str = ""


@dataclass(frozen=True)
class TherapyWithCodes:
    therapy: Therapy
    codes: list[TherapyCode]


def therapies_with_codes(session: Session) -> list[TherapyWithCodes]:
    """Every therapy (by brand name) with the codes admins configured for it, in the order
    they were added."""
    therapies = list(session.scalars(select(Therapy).order_by(Therapy.brand_name)))
    codes: dict[int, list[TherapyCode]] = {}
    for row in session.scalars(select(TherapyCode).order_by(TherapyCode.id)):
        codes.setdefault(row.therapy_id, []).append(row)
    return [TherapyWithCodes(therapy, codes.get(therapy.id, [])) for therapy in therapies]


def _clean_code(system: str, code: str) -> tuple[str, str | None]:
    """(the code as stored, a problem or None)."""
    if not code:
        return code, N_("Enter the code.")
    if len(code) > CODE_MAX:
        return code, N_("Keep the code to 64 characters.")
    if not _FHIR_CODE.match(code):  # FHIR's `code`: no tabs, line breaks or double spaces
        return code, N_("A code has no tabs, line breaks or double spaces.")
    known = known_system(system)
    if known is not None:
        # HCPCS letters are capitals; a center's system sends them so.
        code = code.upper() if known.uri == HCPCS else code
        if not known.pattern.match(code):
            return code, known.problem
    return code, None


def add_therapy_code(
    session: Session, *, clock: Clock, actor: Actor, data: TherapyCodeInput
) -> TherapyCode:
    """Add a code that names a therapy. Refused (FieldErrors) when the system is not a URI,
    is the platform's own, the code is not of its system's shape, or the code is taken
    (by this therapy or another: one code names one therapy)."""
    errors: dict[str, str] = {}
    therapy_id = parse_id(data.therapy_id)
    therapy = session.get(Therapy, therapy_id) if therapy_id is not None else None
    if therapy is None:
        errors["therapy_id"] = N_("Choose the therapy.")
    system = data.system.strip()
    if not system:
        errors["system"] = N_("Enter the code system's address, e.g. %(uri)s.", uri=HCPCS)
    elif system == PLATFORM_SYSTEM:
        errors["system"] = N_(
            "The platform's own codes are always accepted: choose another code system."
        )
    else:
        problem = system_uri_problem(system)
        if problem is not None:
            errors["system"] = problem
    code, problem = _clean_code(system, data.code.strip())
    if problem is not None:
        errors["code"] = problem
    display = " ".join(data.display.split())
    if len(display) > DISPLAY_MAX:
        errors["display"] = N_("Keep the display to 200 characters.")
    if errors:
        raise FieldErrors(errors)
    assert therapy is not None
    taken = session.scalar(
        select(TherapyCode).where(TherapyCode.system == system, TherapyCode.code == code)
    )
    if taken is not None:
        owner = session.get(Therapy, taken.therapy_id)
        assert owner is not None
        if owner.id == therapy.id:
            raise FieldErrors({"code": N_("%(therapy)s has this code.", therapy=owner.brand_name)})
        raise FieldErrors(
            {
                "code": N_(
                    "This code names %(therapy)s: one code names one therapy.",
                    therapy=owner.brand_name,
                )
            }
        )
    row = TherapyCode(therapy_id=therapy.id, system=system, code=code, display=display or None)
    session.add(row)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.therapy_code.add",
        target=f"therapy:{therapy.id}",
        detail={"system": system, "code": code},
    )
    return row


def remove_therapy_code(
    session: Session, *, clock: Clock, actor: Actor, code_id: str
) -> TherapyCode:
    """Remove a configured code: data a center sends with it from now on is refused
    (records already received keep their therapy). Raises FieldErrors when there is no
    such code (removed meanwhile)."""
    pk = parse_id(code_id)
    row = session.get(TherapyCode, pk) if pk is not None else None
    if row is None:
        raise FieldErrors({"": N_("This code is not configured (any more).")})
    session.delete(row)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.therapy_code.remove",
        target=f"therapy:{row.therapy_id}",
        detail={"system": row.system, "code": row.code},
    )
    return row
