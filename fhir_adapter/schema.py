"""The shape of every FHIR R4 type, compiled once from the R4B models of `fhir.resources`:
for each JSON property of a type, the kind of JSON value it takes, whether it repeats, whether
it is required or part of a choice (`value[x]`), the required binding of its code
(`terminology.REQUIRED_BINDINGS`) and, for a Reference, the resource types it may point at.

`structure.walk` reads JSON with it; `fhirpath` writes the expressions issues carry.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import fhirtypes, get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase, FhirElementOrResourceBase

from fhir_adapter.terminology import REQUIRED_BINDINGS, ValueSet

# How a JSON value must look for an element of each kind.
BOOLEAN, INTEGER, DECIMAL, STRING, BASE64, COMPLEX, RESOURCE, PRIMITIVE_EXTENSION = range(8)
PRIMITIVE_KINDS = frozenset({BOOLEAN, INTEGER, DECIMAL, STRING, BASE64})
_INTEGER_TYPES = frozenset({"Integer", "UnsignedInt", "PositiveInt", "Integer64"})

Segment = str | int


def fhirpath(segments: typing.Sequence[Segment]) -> str:
    """`("Bundle", "entry", 3, "resource", "status")` -> `Bundle.entry[3].resource.status`."""
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif parts:
            parts.append(f".{segment}")
        else:
            parts.append(segment)
    return "".join(parts)


@dataclass(slots=True, eq=False)
class ElementSpec:
    """One JSON property of a type: how its value must look."""

    key: str  # the JSON property, e.g. "valueQuantity" or "_birthDate"
    name: str  # its name in an expression: "_birthDate" is `birthDate` (its extensions)
    kind: int
    repeats: bool
    model: type[FHIRAbstractModel] | None  # the complex type, for COMPLEX and extensions
    binding: ValueSet | None
    targets: frozenset[str] | None  # a Reference's allowed target types; None: any
    choice: str | None  # "value" for value[x]
    required: bool

    @property
    def type_spec(self) -> TypeSpec:
        assert self.model is not None
        return type_spec(self.model)


@dataclass(slots=True, eq=False)
class TypeSpec:
    """A complex type or resource: its elements by JSON property, and what it requires."""

    name: str
    elements: dict[str, ElementSpec]
    required: tuple[ElementSpec, ...]
    required_choices: dict[str, tuple[str, ...]]  # "value" -> every property of value[x]
    is_resource: bool
    is_reference: bool


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The element type of an annotation and whether the element repeats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _unwrap(inner)
    if origin is list:
        inner, _ = _unwrap(typing.get_args(annotation)[0])
        return inner, True
    return annotation, False


def _kind(annotation: Any) -> tuple[int, type[FHIRAbstractModel] | None]:
    if annotation is bool:
        return BOOLEAN, None
    if typing.get_origin(annotation) is typing.Annotated:
        _base, *metadata = typing.get_args(annotation)
        marker = type(metadata[0]).__name__
        if marker in _INTEGER_TYPES:
            return INTEGER, None
        if marker == "Decimal":
            return DECIMAL, None
        if marker == "EncodedBytes":
            return BASE64, None
        return STRING, None
    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        model = annotation.get_model_klass()
        if issubclass(annotation, FhirElementOrResourceBase):
            return RESOURCE, model
        return COMPLEX, model
    raise TypeError(f"unexpected element annotation {annotation!r}")  # pragma: no cover


@cache
def type_spec(model: type[FHIRAbstractModel]) -> TypeSpec:
    """The compiled shape of a type, from the R4B model's fields (compiled once per type)."""
    name = model.__name__
    elements: dict[str, ElementSpec] = {}
    required: list[ElementSpec] = []
    choices: dict[str, list[str]] = {}
    required_choice_groups: set[str] = set()
    for field_name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        key = info.alias or field_name
        if field_name.endswith("__ext"):
            element_type, repeats = _unwrap(info.annotation)
            kind, child = PRIMITIVE_EXTENSION, element_type.get_model_klass()
            spec_name = key.removeprefix("_")
        elif extra.get("element_property") or (
            # the `_x` of a primitive: its id and extensions, which the model does not flag
            name == "FHIRPrimitiveExtension" and field_name in ("id", "extension")
        ):
            element_type, repeats = _unwrap(info.annotation)
            kind, child = _kind(element_type)
            spec_name = key
        else:
            continue  # fhir.resources' own fields (fhir_comments) are not FHIR elements
        targets = extra.get("enum_reference_types")
        choice = extra.get("one_of_many") if kind != PRIMITIVE_EXTENSION else None
        element = ElementSpec(
            key=key,
            name=spec_name,
            kind=kind,
            repeats=repeats,
            model=child,
            binding=REQUIRED_BINDINGS.get((name, key)),
            targets=(
                None
                if not isinstance(targets, list) or "Resource" in targets
                else frozenset(str(target) for target in targets)
            ),
            choice=str(choice) if choice else None,
            required=bool(extra.get("element_required")) or info.is_required(),
        )
        elements[key] = element
        if element.required:
            required.append(element)
        if isinstance(choice, str):
            choices.setdefault(choice, []).extend((key, f"_{key}"))
            if extra.get("one_of_many_required"):
                required_choice_groups.add(choice)
    return TypeSpec(
        name=name,
        elements=elements,
        required=tuple(required),
        required_choices={group: tuple(choices[group]) for group in required_choice_groups},
        is_resource=model.has_resource_base(),
        is_reference=name == "Reference",
    )


# Every resource type of FHIR R4 (4.0.1), from its resource list. A type that R4B added
# (Citation...) is not R4; the few R4 types that R4B dropped (MedicinalProduct...) have no model.
_R4_NAMES = """
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse
    AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement
    CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse
    ClinicalImpression CodeSystem Communication CommunicationRequest CompartmentDefinition
    Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest
    CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest
    DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis
    Encounter Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence
    EvidenceVariable ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal
    GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy Immunization
    ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan Invoice
    Library Linkage List Location Measure MeasureReport Media Medication MedicationAdministration
    MedicationDispense MedicationKnowledge MedicationRequest MedicationStatement MedicinalProduct
    MedicinalProductAuthorization MedicinalProductContraindication MedicinalProductIndication
    MedicinalProductIngredient MedicinalProductInteraction MedicinalProductManufactured
    MedicinalProductPackaged MedicinalProductPharmaceutical MedicinalProductUndesirableEffect
    MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder Observation
    ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation Parameters Patient PaymentNotice PaymentReconciliation Person
    PlanDefinition Practitioner PractitionerRole Procedure Provenance Questionnaire
    QuestionnaireResponse RelatedPerson RequestGroup ResearchDefinition ResearchElementDefinition
    ResearchStudy ResearchSubject RiskAssessment RiskEvidenceSynthesis Schedule SearchParameter
    ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition StructureMap Subscription
    Substance SubstanceNucleicAcid SubstancePolymer SubstanceProtein
    SubstanceReferenceInformation SubstanceSourceMaterial SubstanceSpecification SupplyDelivery
    SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet VerificationResult
    VisionPrescription
"""
R4_RESOURCE_TYPES = frozenset(_R4_NAMES.split())


@cache
def resource_types() -> frozenset[str]:
    """The R4 resource types that can be validated here: those with an R4B model. Found by
    name, without importing the ~150 model modules (each is imported when first used)."""
    return frozenset(name for name in R4_RESOURCE_TYPES if hasattr(fhirtypes, f"{name}Type"))


def is_resource_type(value: object) -> bool:
    """True when `value` (any JSON value) names an R4 resource type that can be validated."""
    return isinstance(value, str) and value in resource_types()


def resource_model(resource_type: str) -> type[FHIRAbstractModel] | None:
    """The R4B model of a resource type, or None when it is not a concrete resource type."""
    if not is_resource_type(resource_type):
        return None
    return get_fhir_model_class(resource_type)
