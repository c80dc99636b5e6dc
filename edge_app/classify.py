"""Run a model bundle on an image: calibrated probabilities, malignancy, severity, and when to refer.

Results are plain data (``Result``) so the page, the CSV export, the printable report, FHIR and the
history all use the same fields. A result holds the model's raw outputs (for engineers) and, only
when it is not referred, a ``Finding``: everything that shows a class, subtype, severity or malignancy
figure as a result reads ``result.finding``, which a referred result does not have, because a referral
is not a diagnosis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from edge_app.bundle import BundleError, ModelBundle
from edge_app.runtime import TFLiteModel
from smearscope_core.calibration import softmax, unsure, unsure_benign

SEVERITY_COLOURS = {0: "#2e7d32", 1: "#f9a825", 2: "#ef6c00", 3: "#c62828"}
SEVERITY_WORDS = {0: "none", 1: "low", 2: "moderate", 3: "high"}


@dataclass
class ClassProbability:
    name: str
    display_name: str
    probability: float
    malignant: bool


REFER_VERDICT = "Inconclusive - refer for manual review"
UNSURE_ADVICE = "review this field by eye, or screen other fields of the same smear"


@dataclass(frozen=True)
class Finding:
    """What a result may state as a finding: only a result that is not referred has one."""

    label: str
    display_label: str
    confidence: float
    p_malignant: float
    malignant: bool
    severity: int
    severity_word: str
    severity_colour: str
    description: str


@dataclass
class Result:
    """One image's screening result; ``inconclusive`` means: refer for manual review.

    ``label`` to ``description`` are the model's raw top class and scores, kept for "Model details (not a
    result)" and for measurement; show a result through ``verdict``, ``reasons`` and ``finding``.
    """

    source: str
    label: str  # class name of the top class
    display_label: str
    confidence: float  # calibrated top probability
    probabilities: list[ClassProbability]
    p_malignant: float  # summed over malignant classes
    malignant: bool
    severity: int
    severity_word: str
    severity_colour: str
    description: str
    inconclusive: bool
    reasons: list[str] = field(default_factory=list)
    model_name: str = ""
    model_sha256: str = ""
    image_sha256: str = ""  # of the file as received
    ood_distance: float | None = None  # unfamiliarity of the image (smearscope_core.ood); None when not measured
    feature_distance: float | None = None  # unfamiliarity of what the model sees (its embedding); None if not measured
    scale_ratio: float | None = None  # the field's cell scale over the training images' (1.0: alike)
    logits: list[float] = field(default_factory=list)  # the model's dequantized logits
    seconds: float = 0.0  # decode-to-result time

    @property
    def verdict(self) -> str:
        return REFER_VERDICT if self.inconclusive else self.display_label

    @property
    def outcome(self) -> str:
        """One word for machines: "refer", "malignant" or "benign"."""
        return "refer" if self.inconclusive else ("malignant" if self.malignant else "benign")

    @property
    def finding(self) -> Finding | None:
        """The class, confidence, malignancy and severity as a finding; None when referred."""
        if self.inconclusive:
            return None
        return Finding(self.label, self.display_label, self.confidence, self.p_malignant, self.malignant,
                       self.severity, self.severity_word, self.severity_colour, self.description)  # fmt: skip

    def as_dict(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict
        data["outcome"] = self.outcome
        return data


class Classifier:
    """A loaded interpreter for one bundle; feed it uint8 RGB arrays of the model's input size."""

    def __init__(self, bundle: ModelBundle, num_threads: int | None = None):
        self.bundle = bundle
        try:
            self.model = TFLiteModel(str(bundle.model_path), num_threads=num_threads)
        except (ValueError, RuntimeError) as error:  # not a TFLite flatbuffer, or ops this runtime lacks
            reason = (str(error).strip() or type(error).__name__).splitlines()[0]
            raise BundleError(
                f"The model file in {bundle.folder} cannot be loaded by the runtime ({reason})."
            ) from None
        self.runtime = self.model.runtime
        card = bundle.card
        self.classes = card["classes"]
        self.temperature = float(card["calibration"]["temperature"])
        self.threshold = float(card["calibration"]["abstain_threshold"])
        self.benign_min = float(card["calibration"].get("benign_min_probability", 0.0))  # older cards: no rule
        self.malignant = [bool(c["malignant"]) for c in self.classes]
        self.size = int(card["input"]["height"])
        shape = self.model.input_shape
        if shape[1:] != (self.size, int(card["input"]["width"]), 3):
            raise BundleError(f"The model in {bundle.folder} takes input {shape}, but its card says {self.size}px RGB.")
        if self.model.outputs != len(self.classes):
            raise BundleError(
                f"The model in {bundle.folder} has {self.model.outputs} outputs but its card names "
                f"{len(self.classes)} classes."
            )

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Dequantized logits for one uint8 [H, W, 3] image."""
        return self.model.run(pixels)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return softmax(self.logits(pixels), self.temperature)

    def result_from_logits(
        self, logits: np.ndarray, source: str = "", extra_reasons: list[str] | None = None
    ) -> Result:
        """``result`` on the calibrated softmax of ``logits``, keeping the logits for the model details."""
        result = self.result(softmax(logits, self.temperature), source, extra_reasons)
        result.logits = [float(value) for value in logits]
        return result

    def result(self, probs: np.ndarray, source: str = "", extra_reasons: list[str] | None = None) -> Result:
        """Turn calibrated probabilities into a Result; refers when unsure or for ``extra_reasons``."""
        top = int(np.argmax(probs))
        top_class = self.classes[top]
        p_malignant = float(sum(p for p, c in zip(probs, self.classes, strict=True) if c["malignant"]))
        reasons = list(extra_reasons or [])
        if unsure_benign(probs, self.threshold, self.malignant, self.benign_min):
            reasons.insert(
                0,
                f"the model is not sure enough to rule out leukemia (that needs a calibrated probability of at least "
                f"{self.benign_min:.2f}): {UNSURE_ADVICE}",
            )
        elif unsure(probs, self.threshold):
            reasons.insert(
                0, f"the model is unsure (top probability {probs[top]:.2f} < {self.threshold:.2f}): {UNSURE_ADVICE}"
            )
        severity = int(top_class["severity"])
        return Result(
            source=source,
            label=top_class["name"],
            display_label=top_class["display_name"],
            confidence=float(probs[top]),
            probabilities=[
                ClassProbability(c["name"], c["display_name"], float(p), bool(c["malignant"]))
                for c, p in zip(self.classes, probs, strict=True)
            ],
            p_malignant=p_malignant,
            malignant=bool(top_class["malignant"]),
            severity=severity,
            severity_word=SEVERITY_WORDS.get(severity, str(severity)),
            severity_colour=SEVERITY_COLOURS.get(severity, "#555555"),
            description=str(top_class["description"]),
            inconclusive=bool(reasons),
            reasons=reasons,
            model_name=self.bundle.name,
            model_sha256=self.bundle.sha256,
        )
