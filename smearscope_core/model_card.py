"""Read, validate and write ``model_card.json``, the file contract between the stages.

The schema is ``schemas/model_card.schema.json`` (documented in docs/model-card.md); every stage
validates a card against it with jsonschema when it reads one, rather than trusting the writer.
Beyond the schema, the class list must be numbered 0..n-1 in order.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from smearscope_core.errors import InputError
from smearscope_core.paths import SCHEMAS_DIR

SCHEMA_VERSION = "1.1"
SCHEMA_PATH = SCHEMAS_DIR / "model_card.schema.json"


class ModelCardError(InputError):
    """The card is missing, not JSON, or breaks the schema; the message says where."""


def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate_card(card: dict) -> dict:
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(card), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ModelCardError(f"Model card field {where}: {first.message}{more}.")
    ids = [c["id"] for c in card["classes"]]
    if ids != list(range(len(ids))):
        raise ModelCardError(f"Model card classes must be numbered 0..{len(ids) - 1} in order; got {ids}.")
    return card


def read_card(path: Path) -> dict:
    if not path.is_file():
        raise ModelCardError(f"There is no model card at {path}.")
    try:
        card = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelCardError(f"The model card {path} is not valid JSON ({error}).") from None
    except OSError as error:
        raise ModelCardError(f"The model card {path} cannot be read ({error.strerror or error}).") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"The model card {path} must hold a JSON object.")
    return validate_card(card)


def write_card(card: dict, path: Path) -> None:
    validate_card(card)
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
