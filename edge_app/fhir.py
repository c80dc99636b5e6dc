"""Export one case for hospital systems: a FHIR R4 Bundle with a DiagnosticReport and its Observation.

Plain JSON built from the ``Result`` (the app needs no FHIR library); the tests validate the
structure with fhir.resources. Everything is marked ``preliminary``: an AI screening aid's output
awaits review. Codes are given as text (with a SmearScope code system for the result class)
because no standard code names this model's output; a site mapping to LOINC/SNOMED goes here.

A referred result carries no finding: its Observation's value and interpretation say
"inconclusive" (HL7 interpretation IND), it has no class code, probability, confidence or severity,
and the DiagnosticReport has no conclusion code; the reasons go in as notes.
"""

from __future__ import annotations

import uuid

from edge_app.classify import Result
from edge_app.records import DISCLAIMER, subtype_note

CODE_SYSTEM = "urn:smearscope:class"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
INTERPRETATIONS = {  # outcome -> HL7 v3 observation interpretation
    "refer": ("IND", "Indeterminate"),
    "malignant": ("A", "Abnormal"),
    "benign": ("N", "Normal"),
}
_PERCENT = {"unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
_NAMESPACE = uuid.UUID("6f1d2a4e-5c1b-4c7e-9a55-1f0c2b7d9e10")


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "|".join(parts)))


def fhir_bundle(result: Result, when: str, review: str = "", note: str = "") -> dict:
    """A Bundle (type collection) holding the Observation and the DiagnosticReport that cites it."""
    observation_id = _uuid("observation", result.image_sha256, result.source, when)
    report_id = _uuid("report", result.image_sha256, result.source, when)
    finding = result.finding
    components: list[dict] = [
        {"code": {"text": "Inconclusive: refer for manual review"}, "valueBoolean": bool(result.inconclusive)}
    ]
    if finding is not None:
        components = [
            {"code": {"text": "Probability of malignancy (calibrated)"},
             "valueQuantity": {"value": round(finding.p_malignant * 100, 2), **_PERCENT}},
            {"code": {"text": "Confidence in the class (calibrated)"},
             "valueQuantity": {"value": round(finding.confidence * 100, 2), **_PERCENT}},
            {"code": {"text": "Severity indicator (0-3, configurable, not a clinical staging)"},
             "valueInteger": int(finding.severity)},
            *components,
        ]  # fmt: skip
    interpretation, display = INTERPRETATIONS[result.outcome]
    value = {"text": result.verdict}
    if finding is not None:
        value["coding"] = [{"system": CODE_SYSTEM, "code": finding.label, "display": finding.display_label}]
    subtype = subtype_note(result)  # "" unless a malignant subtype is named
    notes = [{"text": reason} for reason in result.reasons]
    if subtype:
        notes.append({"text": subtype})
    if review or note:
        notes.append({"text": f"Technician review: {review or 'none'}. {note}".strip()})
    observation = {
        "resourceType": "Observation",
        "id": observation_id,
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"text": "Peripheral blood smear image screening for B-ALL (AI-assisted)"},
        "issued": when,
        "valueCodeableConcept": value,
        "interpretation": [
            {
                "coding": [{"system": INTERPRETATION_SYSTEM, "code": interpretation, "display": display}],
                "text": result.verdict,
            }
        ],
        "device": {"display": f"SmearScope model {result.model_name} (sha256 {result.model_sha256})"},
        "component": components,
    }
    if notes:
        observation["note"] = notes
    conclusion = [f"{result.verdict}.", *(f"{reason}." for reason in result.reasons), subtype, DISCLAIMER]
    report = {
        "resourceType": "DiagnosticReport",
        "id": report_id,
        "status": "preliminary",
        "code": {"text": "AI-assisted peripheral blood smear screening report"},
        "issued": when,
        "result": [{"reference": f"urn:uuid:{observation_id}", "display": result.verdict}],
        "conclusion": " ".join(filter(None, conclusion)),
    }
    if finding is not None:
        report["conclusionCode"] = [value]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": when,
        "entry": [
            {"fullUrl": f"urn:uuid:{report_id}", "resource": report},
            {"fullUrl": f"urn:uuid:{observation_id}", "resource": observation},
        ],
    }
