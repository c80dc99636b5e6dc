"""The TFLite runtime is found in the documented order, its absence is one clear sentence, and one
model serves several threads (the app's browser sessions share it) with the right answers."""

from __future__ import annotations

import importlib
import threading
import types

import pytest

from edge_app import runtime
from tests.factories import PROJECT_ROOT


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


def test_one_model_serves_concurrent_sessions() -> None:
    """Five threads on one shared model, as five browser sessions are: every answer is the one a lone
    caller gets, and nothing raises (without the lock LiteRT raises "reference to internal data")."""
    import numpy as np

    model = runtime.TFLiteModel(str(PROJECT_ROOT / "edge_app" / "models" / "default" / "model.tflite"), num_threads=1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, model.input_shape[1:], dtype=np.uint8) for _ in range(10)]
    alone = [model.run(image) for image in images]
    failures: list[str] = []

    def session(offset: int) -> None:
        try:
            for step in range(100):
                index = (offset + step) % len(images)
                if not np.array_equal(model.run(images[index]), alone[index]):
                    failures.append(f"thread {offset}: wrong logits for image {index}")
        except Exception as error:  # noqa: BLE001 - any failure of a session is the finding
            failures.append(f"thread {offset}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=session, args=(offset,)) for offset in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:5]


def test_a_model_xnnpack_refuses_runs_on_builtin_kernels(monkeypatch: pytest.MonkeyPatch, tiny_tflite: bytes) -> None:
    """LiteRT applies XNNPACK by default and fails the whole load when XNNPACK refuses a node (seen with the
    ~1e-8 embedding scale of an untrained network); the wrapper retries without default delegates and says so."""
    import numpy as np

    real, distribution = runtime.interpreter_class()

    class Refusing(real):
        def __init__(self, *args, **kwargs):
            if "experimental_op_resolver_type" not in kwargs:
                raise RuntimeError("failed to create XNNPACK runtimeNode number 109 (TfLiteXNNPackDelegate) failed")
            super().__init__(*args, **kwargs)

    Refusing.__module__ = real.__module__  # where OpResolverType lives
    monkeypatch.setattr(runtime, "interpreter_class", lambda: (Refusing, distribution))
    model = runtime.TFLiteModel(content=tiny_tflite, num_threads=1)
    assert model.delegate.startswith("none (XNNPACK refused the model")
    outputs = model.run_all(np.zeros((48, 48, 3), np.uint8))
    assert set(outputs) == {"logits", "embedding"} and np.isfinite(outputs["logits"]).all()
