"""The required bindings the adapter enforces: FHIR R4 (4.0.1) value sets that a code must come
from, because `fhir.resources` checks only that a `code` is a well-formed token (an Observation
with status "bogus" parses).

Only required bindings are here (an extensible or preferred binding allows other codes), and
only for the elements the platform reads or that carry the meaning of a whole resource (a
status, an HTTP verb in a transaction), plus the datatypes those resources use (Quantity
comparator, ContactPoint, HumanName, Identifier, Address). The code lists are copied from the
R4 value sets named by their canonical URL; each binding applies wherever its element occurs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ValueSet:
    """A required value set. `system` is set for a binding on a CodeableConcept: the concept
    must then carry a coding from that code system with one of the codes."""

    url: str
    codes: frozenset[str]
    system: str | None = None

    def listed(self) -> str:
        """The codes in the order FHIR's own pages print them (sorted, to be deterministic)."""
        return ", ".join(sorted(self.codes))


def _codes(url: str, codes: str, system: str | None = None) -> ValueSet:
    return ValueSet(
        url=f"http://hl7.org/fhir/ValueSet/{url}", codes=frozenset(codes.split()), system=system
    )


OBSERVATION_STATUS = _codes(
    "observation-status",
    "registered preliminary final amended corrected cancelled entered-in-error unknown",
)
ADMINISTRATIVE_GENDER = _codes("administrative-gender", "male female other unknown")
ENCOUNTER_STATUS = _codes(
    "encounter-status",
    "planned arrived triaged in-progress onleave finished cancelled entered-in-error unknown",
)
EVENT_STATUS = _codes(
    "event-status",
    "preparation in-progress not-done on-hold stopped completed entered-in-error unknown",
)
CONDITION_CLINICAL = _codes(
    "condition-clinical",
    "active recurrence relapse inactive remission resolved",
    system="http://terminology.hl7.org/CodeSystem/condition-clinical",
)
CONDITION_VERIFICATION = _codes(
    "condition-ver-status",
    "unconfirmed provisional differential confirmed refuted entered-in-error",
    system="http://terminology.hl7.org/CodeSystem/condition-ver-status",
)
BUNDLE_TYPE = _codes(
    "bundle-type",
    "document message transaction transaction-response batch batch-response history searchset "
    "collection",
)
HTTP_VERB = _codes("http-verb", "GET HEAD POST PUT DELETE PATCH")
SEARCH_ENTRY_MODE = _codes("search-entry-mode", "match include outcome")
APPOINTMENT_STATUS = _codes(
    "appointmentstatus",
    "proposed pending booked arrived fulfilled cancelled noshow entered-in-error checked-in "
    "waitlist",
)
PARTICIPATION_STATUS = _codes("participationstatus", "accepted declined tentative needs-action")
PARTICIPANT_REQUIRED = _codes("participantrequired", "required optional information-only")
CARE_PLAN_STATUS = _codes(
    "request-status", "draft active on-hold revoked completed entered-in-error unknown"
)
CARE_PLAN_INTENT = _codes("care-plan-intent", "proposal plan order option")
CARE_PLAN_ACTIVITY_STATUS = _codes(
    "care-plan-activity-status",
    "not-started scheduled in-progress on-hold completed cancelled stopped unknown "
    "entered-in-error",
)
QUANTITY_COMPARATOR = _codes("quantity-comparator", "< <= >= >")
CONTACT_POINT_SYSTEM = _codes("contact-point-system", "phone fax email pager url sms other")
CONTACT_POINT_USE = _codes("contact-point-use", "home work temp old mobile")
NAME_USE = _codes("name-use", "usual official temp nickname anonymous old maiden")
IDENTIFIER_USE = _codes("identifier-use", "usual official temp secondary old")
ADDRESS_USE = _codes("address-use", "home work temp old billing")
ADDRESS_TYPE = _codes("address-type", "postal physical both")
NARRATIVE_STATUS = _codes("narrative-status", "generated extensions additional empty")
LINK_TYPE = _codes("link-type", "replaced-by replaced refer seealso")
GROUP_TYPE = _codes("group-type", "person animal practitioner device medication substance")

# (type as fhir.resources names it, JSON property) -> the value set its code must come from.
# Quantity's comparator is bound in each of Quantity's specialisations, which fhir.resources
# models as separate types.
REQUIRED_BINDINGS: dict[tuple[str, str], ValueSet] = {
    ("Observation", "status"): OBSERVATION_STATUS,
    ("Patient", "gender"): ADMINISTRATIVE_GENDER,
    ("PatientContact", "gender"): ADMINISTRATIVE_GENDER,
    ("PatientLink", "type"): LINK_TYPE,
    ("RelatedPerson", "gender"): ADMINISTRATIVE_GENDER,
    ("Encounter", "status"): ENCOUNTER_STATUS,
    ("EncounterStatusHistory", "status"): ENCOUNTER_STATUS,
    ("Procedure", "status"): EVENT_STATUS,
    ("Condition", "clinicalStatus"): CONDITION_CLINICAL,
    ("Condition", "verificationStatus"): CONDITION_VERIFICATION,
    ("Bundle", "type"): BUNDLE_TYPE,
    ("BundleEntryRequest", "method"): HTTP_VERB,
    ("BundleEntrySearch", "mode"): SEARCH_ENTRY_MODE,
    ("Appointment", "status"): APPOINTMENT_STATUS,
    ("AppointmentParticipant", "status"): PARTICIPATION_STATUS,
    ("AppointmentParticipant", "required"): PARTICIPANT_REQUIRED,
    ("CarePlan", "status"): CARE_PLAN_STATUS,
    ("CarePlan", "intent"): CARE_PLAN_INTENT,
    ("CarePlanActivityDetail", "status"): CARE_PLAN_ACTIVITY_STATUS,
    ("Group", "type"): GROUP_TYPE,
    ("Quantity", "comparator"): QUANTITY_COMPARATOR,
    ("Age", "comparator"): QUANTITY_COMPARATOR,
    ("Count", "comparator"): QUANTITY_COMPARATOR,
    ("Distance", "comparator"): QUANTITY_COMPARATOR,
    ("Duration", "comparator"): QUANTITY_COMPARATOR,
    ("ContactPoint", "system"): CONTACT_POINT_SYSTEM,
    ("ContactPoint", "use"): CONTACT_POINT_USE,
    ("HumanName", "use"): NAME_USE,
    ("Identifier", "use"): IDENTIFIER_USE,
    ("Address", "use"): ADDRESS_USE,
    ("Address", "type"): ADDRESS_TYPE,
    ("Narrative", "status"): NARRATIVE_STATUS,
}
