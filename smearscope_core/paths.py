"""Where things are: the project root, the schemas and the default dataset (one home for each path)."""

from __future__ import annotations

from pathlib import Path

# The project checkout, or the unpacked desktop executable's folder (build/smearscope.spec keeps this layout).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
# The training set is never committed (its terms forbid redistribution): it sits beside the project.
DEFAULT_DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "all-4class"
EXTERNAL_DEV_DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "external-dev"  # other labs' normal cells
