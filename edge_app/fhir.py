"""Export one case for hospital systems: a FHIR R4 Bundle with its Specimen, DiagnosticReport and Observations.

Plain JSON built from the case (the app needs no FHIR library); the tests validate the structure with
fhir.resources. Everything is marked ``preliminary``: an AI screening aid's output awaits review. Codes are
given as text, with SmearScope code systems for a field's class and the case verdict, because no standard
code names this model's output; a site mapping to LOINC/SNOMED, and its own identifier systems, go here.

- Specimen: the sample, its accession identifier (the sample ID);
- the patient is referred to by identifier only (the pseudonymous patient reference), never by name, and no
  Patient resource is sent;
- DiagnosticReport: the case verdict as its conclusion (and ``conclusionCode`` unless inconclusive), the
  summary, performer = the operator (by name as given), one ``result`` per field;
- Observation per field: the file name and the image's sha256 as components, its result or "inconclusive".

A referred field carries no finding: its Observation's value and interpretation say "inconclusive" (HL7
interpretation IND), it has no class code, probability, confidence or severity, and its reasons go in as
notes. An inconclusive case has no conclusion code either.
"""

from __future__ import annotations

import uuid

from edge_app.cases import SUSPECTED, Case, CaseInfo, Field
from edge_app.records import DISCLAIMER, SUBTYPE_NOTE, now, subtype_note, summary_sentences

CODE_SYSTEM = "urn:smearscope:class"  # a field's class (label)
CASE_CODE_SYSTEM = "urn:smearscope:case-verdict"
CASE_CODES = {"suspected": ("suspected-all", SUSPECTED), "negative": ("no-leukemia-suggested", "No leukemia suggested")}
SAMPLE_ID_SYSTEM = "urn:smearscope:sample-id"  # a site puts its laboratory system's accession namespace here
PATIENT_REF_SYSTEM = "urn:smearscope:patient-ref"  # and its pseudonym namespace here
OPERATOR_SYSTEM = "urn:smearscope:operator"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
INTERPRETATIONS = {  # outcome -> HL7 v3 observation interpretation
    "refer": ("IND", "Indeterminate"),
    "malignant": ("A", "Abnormal"),
    "benign": ("N", "Normal"),
}
_PERCENT = {"unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
_NAMESPACE = uuid.UUID("6f1d2a4e-5c1b-4c7e-9a55-1f0c2b7d9e10")
_LABORATORY = [
    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
]


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join(parts)))


def _subject(info: CaseInfo) -> dict:
    """The patient by identifier only (no name, no Patient resource); {} when no reference was given."""
    if not info.patient_ref:
        return {}
    return {"subject": {"identifier": {"system": PATIENT_REF_SYSTEM, "value": info.patient_ref}}}


def _observation(item: Field, info: CaseInfo, specimen: str) -> dict:
    """One field: file name and image sha256, then its finding, or "inconclusive" with the reasons."""
    result, finding = item.result, item.result.finding
    components: list[dict] = [
        {"code": {"text": "Image file name"}, "valueString": result.source or "(unnamed)"},
        {"code": {"text": "Image SHA-256"}, "valueString": result.image_sha256 or "(not recorded)"},
    ]
    if finding is not None:
        components += [
            {"code": {"text": "Probability of malignancy (calibrated)"},
             "valueQuantity": {"value": round(finding.p_malignant * 100, 2), **_PERCENT}},
            {"code": {"text": "Confidence in the class (calibrated)"},
             "valueQuantity": {"value": round(finding.confidence * 100, 2), **_PERCENT}},
            {"code": {"text": "Severity indicator (0-3, configurable, not a clinical staging)"},
             "valueInteger": int(finding.severity)},
        ]  # fmt: skip
    components.append(
        {"code": {"text": "Inconclusive: refer for manual review"}, "valueBoolean": bool(result.inconclusive)}
    )
    interpretation, display = INTERPRETATIONS[result.outcome]
    value: dict = {"text": result.verdict}
    if finding is not None:
        value["coding"] = [{"system": CODE_SYSTEM, "code": finding.label, "display": finding.display_label}]
    notes = [{"text": reason} for reason in result.reasons]
    notes += [{"text": warning} for warning in result.warnings]
    if subtype := subtype_note(result):  # "" unless a malignant subtype is named
        notes.append({"text": subtype})
    if item.review or item.note:
        notes.append({"text": f"Technician review: {item.review or 'none'}. {item.note}".strip()})
    observation = {
        "resourceType": "Observation",
        "id": _uuid("observation", info.sample_id, result.image_sha256, result.source, item.when),
        "status": "preliminary",
        "category": _LABORATORY,
        "code": {"text": "Peripheral blood smear image screening for B-ALL (AI-assisted), one field of view"},
        **_subject(info),
        "specimen": {"reference": f"urn:uuid:{specimen}"},
        "issued": item.when,
        "valueCodeableConcept": value,
        "interpretation": [
            {
                "coding": [{"system": INTERPRETATION_SYSTEM, "code": interpretation, "display": display}],
                "text": value["text"],
            }
        ],
        "device": {"display": f"SmearScope model {result.model_name} (sha256 {result.model_sha256})"},
        "component": components,
    }
    if notes:
        observation["note"] = notes
    return observation


def fhir_bundle(case: Case, issued: str | None = None) -> dict:
    """A Bundle (type collection): the DiagnosticReport of the case, its Specimen and one Observation per field."""
    info, verdict = case.info, case.verdict
    issued = issued or now()
    specimen_id = _uuid("specimen", info.sample_id, info.opened_utc)
    report_id = _uuid("report", info.sample_id, info.opened_utc, issued)
    specimen = {
        "resourceType": "Specimen",
        "id": specimen_id,
        "identifier": [{"system": SAMPLE_ID_SYSTEM, "value": info.sample_id}],
        "accessionIdentifier": {"system": SAMPLE_ID_SYSTEM, "value": info.sample_id},
        "type": {"text": "Peripheral blood smear (stained slide)"},
        **_subject(info),
    }
    observations = [_observation(item, info, specimen_id) for item in case.fields]
    conclusion = [
        f"Case verdict: {verdict.text}.",
        verdict.reason,
        SUBTYPE_NOTE if verdict.subtype else "",
        # an inconclusive case states no finding: its conclusion counts fields and names no class or figure (each
        # assessed field's own Observation carries its finding)
        *summary_sentences(case, findings=verdict.outcome != "refer"),
        DISCLAIMER,
    ]
    report: dict = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "status": "preliminary",
        "category": [{"text": "Hematology: AI-assisted smear screening"}],
        "code": {"text": "AI-assisted peripheral blood smear screening report (per sample)"},
        **_subject(info),
        "issued": issued,
        "specimen": [{"reference": f"urn:uuid:{specimen_id}", "display": info.sample_id}],
        "result": [
            {"reference": f"urn:uuid:{o['id']}", "display": f"{item.result.source}: {item.result.verdict}"}
            for o, item in zip(observations, case.fields, strict=True)
        ],
        "conclusion": " ".join(filter(None, conclusion)),
    }
    if info.opened_utc:
        report["effectiveDateTime"] = info.opened_utc
    if info.operator:
        report["performer"] = [{"display": info.operator, "identifier": {"system": OPERATOR_SYSTEM,
                                                                          "value": info.operator}}]  # fmt: skip
    if verdict.outcome in CASE_CODES:  # an inconclusive case states no finding, so it has no conclusion code
        code, display = CASE_CODES[verdict.outcome]
        report["conclusionCode"] = [{"coding": [{"system": CASE_CODE_SYSTEM, "code": code, "display": display}],
                                     "text": verdict.text}]  # fmt: skip
    entries = [report, specimen, *observations]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": issued,
        "entry": [{"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource} for resource in entries],
    }
