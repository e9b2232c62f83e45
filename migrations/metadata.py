"""Imports every room's models so that Base.metadata knows every table."""

from coordination import models as coordination_models
from coordination.followup import models as followup_models
from coordination.questionnaires import models as questionnaire_models
from coordination.texting import models as texting_models
from coordination.travel import models as travel_models
from coordination.worklist import models as worklist_models
from core import models as core_models
from core.audit import models as audit_models
from core.identity import models as identity_models
from education import models as education_models
from fhir_adapter import models as fhir_models
from reporting import models as reporting_models

__all__ = [
    "audit_models",
    "coordination_models",
    "core_models",
    "education_models",
    "fhir_models",
    "followup_models",
    "identity_models",
    "questionnaire_models",
    "reporting_models",
    "texting_models",
    "travel_models",
    "worklist_models",
]
