"""The shared core's one-home rules: softmax and the abstain rule, sha256, errors, paths; and the app's settings.
Shared test code has one home too: tests/factories.py (builders, helpers) and tests/conftest.py (fixtures)."""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from edge_app import settings
from edge_app.screening import check_size
from smearscope_core.calibration import softmax, unsure, unsure_benign
from smearscope_core.errors import DatasetError, ExitCode, InputError, SmearScopeError
from smearscope_core.files import sha256_of
from smearscope_core.imaging import ImageError
from smearscope_core.model_card import ModelCardError
from tests.factories import PROJECT_ROOT


def test_softmax_batch_and_single_agree() -> None:
    logits = np.array([[2.0, 1.0, -1.0], [0.0, 0.0, 5.0]])
    batch = softmax(logits, 1.5)
    assert np.allclose(batch.sum(axis=1), 1.0)
    assert np.allclose(batch[1], softmax(logits[1], 1.5))
    # large logits do not overflow
    assert np.allclose(softmax(np.array([1000.0, 0.0])), [1.0, 0.0])


def test_abstain_rule_is_strictly_below_threshold() -> None:
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.5, 0.5]])
    assert unsure(probs, 0.6).tolist() == [False, False, True]
    assert unsure(probs[0], 0.61) is True and unsure(probs[1], 0.61) is False


def test_a_benign_answer_needs_the_benign_bar() -> None:
    """Classes benign, malignant: a benign top class below ``benign_min`` is referred; a malignant one is not."""
    malignant = [False, True]
    probs = np.array([[0.85, 0.15], [0.95, 0.05], [0.15, 0.85]])
    assert unsure(probs, 0.5, malignant, 0.9).tolist() == [True, False, False]
    assert unsure(probs, 0.5).tolist() == [False, False, False]  # without the classes' flags: the plain rule
    assert unsure_benign(probs[0], 0.5, malignant, 0.9) and not unsure_benign(probs[0], 0.9, malignant, 0.9)


def test_one_sha256_for_paths_and_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # more than one 1 MB chunk
    (tmp_path / "f.bin").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_of(tmp_path / "f.bin") == sha256_of(data) == sha256_of(str(tmp_path / "f.bin")) == expected


def test_errors_share_one_base_and_named_exit_codes() -> None:
    for error in (InputError, DatasetError, ModelCardError, ImageError):
        assert issubclass(error, SmearScopeError) and issubclass(error, ValueError)
        assert error.exit_code is ExitCode.BAD_INPUT == 2
    assert (ExitCode.OK, ExitCode.GATE_FAILED, ExitCode.FAILED) == (0, 1, 3)


def test_model_folders_one_list_for_page_and_launcher(tmp_path: Path) -> None:
    one, two, three = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    environ = {settings.MODELS_ENV: f"{two}{os.pathsep}{three}"}
    assert settings.model_folders([one], environ) == [settings.DEFAULT_MODELS_DIR, one, two, three]
    assert settings.model_folders([], {}) == [settings.DEFAULT_MODELS_DIR]


def test_upload_limit_has_one_home() -> None:
    check_size(settings.MAX_UPLOAD_BYTES, "ok.png")
    with pytest.raises(ImageError, match=f"larger than {settings.MAX_UPLOAD_MB} MB"):
        check_size(settings.MAX_UPLOAD_BYTES + 1, "big.png")


def imported_modules(tree: ast.Module, package: str) -> set[str]:
    """Every module a file imports, absolute (a relative import resolved against ``package``): ``from tests
    import conftest`` and ``from .conftest import x`` both count as ``tests.conftest``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([package, *filter(None, [node.module])]) if node.level else node.module or ""
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_tests_share_through_factories_and_fixtures() -> None:
    """No module imports a test module or tests/conftest.py: shared builders and helpers are in tests/factories.py,
    shared fixtures in tests/conftest.py (pytest gives them by name), so each test module stands alone."""
    files = sorted(path for folder in ("tests", "bench", "build") for path in (PROJECT_ROOT / folder).glob("*.py"))
    assert len(files) > 30 and PROJECT_ROOT / "tests" / "test_edge_core.py" in files
    offenders = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for module in sorted(imported_modules(tree, path.parent.name)):
            if module == "tests.conftest" or module.startswith("tests.test_"):
                offenders.append(f"{path.relative_to(PROJECT_ROOT)} imports {module}")
    assert not offenders, "import from tests/factories.py (or use a fixture) instead:\n" + "\n".join(offenders)


def test_conftest_holds_fixtures_only() -> None:
    """Helpers and constants in tests/conftest.py would invite imports from it: they belong in tests/factories.py."""
    tree = ast.parse((PROJECT_ROOT / "tests" / "conftest.py").read_text())
    others = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            fixture = any("fixture" in ast.unparse(decorator) for decorator in node.decorator_list)
            if not (fixture or node.name.startswith("pytest_")):
                others.append(f"def {node.name}")
        elif isinstance(node, ast.ClassDef | ast.Assign | ast.AnnAssign | ast.AsyncFunctionDef):
            others.append(ast.unparse(node).splitlines()[0])
    assert not others, others
