"""The TFLite runtime is found in the documented order, and its absence is one clear sentence."""

from __future__ import annotations

import importlib
import types

import pytest

from edge_app import runtime


def _fake_import(available: set[str]):
    real = importlib.import_module

    def fake(name: str, *args, **kwargs):
        if name in {m for m, _ in runtime.RUNTIMES}:
            if name not in available:
                raise ImportError(name)
            return types.SimpleNamespace(Interpreter=f"Interpreter from {name}")
        return real(name, *args, **kwargs)

    return fake


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        ({"ai_edge_litert.interpreter", "tflite_runtime.interpreter"}, "ai-edge-litert"),
        ({"tflite_runtime.interpreter"}, "tflite-runtime"),
    ],
)
def test_litert_first_then_tflite_runtime(monkeypatch: pytest.MonkeyPatch, available: set[str], expected: str) -> None:
    monkeypatch.setattr(runtime.importlib, "import_module", _fake_import(available))
    interpreter, name = runtime.interpreter_class()
    assert name == expected
    assert interpreter.startswith("Interpreter from")


def test_no_runtime_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.importlib, "import_module", _fake_import(set()))
    with pytest.raises(runtime.RuntimeMissingError, match="pip install ai-edge-litert"):
        runtime.interpreter_class()


def test_the_real_runtime_is_litert() -> None:
    interpreter, name = runtime.interpreter_class()
    assert name == "ai-edge-litert" and interpreter.__module__.startswith("ai_edge_litert")
    assert runtime.runtime_version(name) == "2.3.0"
