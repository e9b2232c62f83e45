"""Patient-reported outcome questionnaires: FHIR R4 Questionnaires loaded as data (the SDC
subset), the item engine that pages, checks and shows them, and the patients' responses."""
