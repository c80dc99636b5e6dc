"""The card's ``acquisition`` section: how the training images were taken, for the app to tell a technician.

The facts a folder of images cannot say (objective, stain, camera) come from
``train/acquisition/<dataset folder name>.json`` (one is shipped for the default dataset; add one for
yours, with the keys of ``FACT_KEYS``); what the images themselves show (their stored size, the red-cell
diameter in model pixels from the field-scale check) is measured. Without a facts file the section says
"not recorded" rather than guess.
"""

from __future__ import annotations

import json
from pathlib import Path

from smearscope_core.errors import InputError

FACTS_DIR = Path(__file__).resolve().parent / "acquisition"
FACT_KEYS = ("objective", "field", "stain", "camera", "source")
NOT_RECORDED = "not recorded"


def acquisition_section(data: Path, red_cell_diameter_px: float | None) -> dict:
    """The section for a model trained on ``data``; ``red_cell_diameter_px`` from the field-scale calibration."""
    facts_file = FACTS_DIR / f"{Path(data).resolve().name}.json"
    facts = dict.fromkeys(FACT_KEYS, NOT_RECORDED)
    if facts_file.is_file():
        try:
            recorded = json.loads(facts_file.read_text())
        except ValueError as error:
            raise InputError(f"{facts_file} is not valid JSON ({error}).") from None
        facts |= {key: str(recorded[key]) for key in FACT_KEYS if key in recorded}
    section = {**facts, "facts_file": facts_file.name if facts_file.is_file() else None}
    if red_cell_diameter_px is not None:
        section["red_cell_diameter_px"] = round(float(red_cell_diameter_px), 2)
    return section
