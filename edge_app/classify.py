"""Run a model bundle on an image: calibrated probabilities, malignancy, severity, and when to refer.

Results are plain data (``Result``) so the page, the CSV export, the printable report, FHIR and the
history all use the same fields. A result holds the model's raw outputs (for engineers) and, only
when it is not referred, a ``Finding``: everything that shows a class, subtype, severity or malignancy
figure as a result reads ``result.finding``, which a referred result does not have, because a referral
is not a diagnosis.

A site bundle (card section ``site``, docs/site-calibration.md) answers with the site's own head: the image's
colours are mapped onto the training images' (``smearscope_core.stain.ColourMapping``), the feature vector is
read from the bundle's feature extractor (``features.tflite``) or from the model's ``embedding`` output, and
``SiteHead`` turns it into logits over the site's classes; temperature, abstain rule and everything after are
the same as for any bundle. ``Classifier.logits`` goes through the same path, so the occlusion heatmap
(edge_app/explain.py) explains the site's answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edge_app.bundle import BundleError, ModelBundle
from edge_app.runtime import TFLiteModel
from smearscope_core.calibration import softmax, unsure, unsure_benign
from smearscope_core.stain import ColourMapping, ColourMappingError

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
    logits: list[float] = field(default_factory=list)  # the model's dequantized logits (a site bundle: its head's)
    seconds: float = 0.0  # decode-to-result time
    warnings: list[str] = field(default_factory=list)  # shown with every result of the bundle (ModelBundle.warnings)

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


@dataclass(frozen=True)
class SiteHead:
    """A site calibration's linear head (card ``site.head``): logits = ((v - input_mean) / input_scale) @ W.T + b.

    One home for the formula: the calibration (edge_app/site_fit.py) scores its cross-validation and writes the
    card through this class, and the app applies the card's head through it.
    """

    method: str
    weights: np.ndarray  # [classes, dimensions]
    bias: np.ndarray  # [classes]
    input_mean: np.ndarray  # [dimensions]
    input_scale: np.ndarray  # [dimensions], all > 0

    @classmethod
    def from_section(cls, section: dict, classes: int, dimensions: int) -> SiteHead:
        """The head of a card's ``site.head``; ValueError (one sentence) when its shapes do not fit."""
        head = cls(
            str(section["method"]),
            np.asarray(section["weights"], dtype=np.float64),
            np.asarray(section["bias"], dtype=np.float64),
            np.asarray(section["input_mean"], dtype=np.float64),
            np.asarray(section["input_scale"], dtype=np.float64),
        )
        expected = {"weights": (classes, dimensions), "bias": (classes,), "input_mean": (dimensions,),
                    "input_scale": (dimensions,)}  # fmt: skip
        for name, shape in expected.items():
            if getattr(head, name).shape != shape:
                raise ValueError(
                    f"its site head's {name} has shape {list(getattr(head, name).shape)}, not {list(shape)}"
                )
        if not all(np.isfinite(getattr(head, name)).all() for name in expected) or not (head.input_scale > 0).all():
            raise ValueError("its site head holds numbers that are not finite, or a scale that is not above zero")
        return head

    def section(self) -> dict:
        return {
            "method": self.method,
            "weights": self.weights.tolist(),
            "bias": self.bias.tolist(),
            "input_mean": self.input_mean.tolist(),
            "input_scale": self.input_scale.tolist(),
        }

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        """Logits for one feature vector [D] ([C]) or a batch [N, D] ([N, C]), float64."""
        standard = (np.asarray(vectors, dtype=np.float64) - self.input_mean) / self.input_scale
        return standard @ self.weights.T + self.bias


def map_colours(image: Image.Image, mapping: ColourMapping | None) -> Image.Image:
    """A decoded image with a site's colour mapping applied (the image itself for no mapping): the first step of a
    site bundle's path, taken by the calibration on the site's images and by the app on every image."""
    if mapping is None or mapping.method == "none":
        return image
    return Image.fromarray(mapping.apply(np.asarray(image.convert("RGB"))))


class Classifier:
    """A loaded interpreter for one bundle; feed it uint8 RGB arrays of ``input_size`` (the model's input size, or
    a site bundle's feature extractor's)."""

    def __init__(self, bundle: ModelBundle, num_threads: int | None = None):
        self.bundle = bundle
        self.model = load_model(bundle, bundle.model_path, num_threads)
        self.runtime = self.model.runtime
        card = bundle.card
        self.classes = card["classes"]
        self.temperature = float(card["calibration"]["temperature"])
        self.threshold = float(card["calibration"]["abstain_threshold"])
        self.benign_min = float(card["calibration"].get("benign_min_probability", 0.0))  # older cards: no rule
        self.malignant = [bool(c["malignant"]) for c in self.classes]
        self.size = int(card["input"]["height"])  # model.tflite's input: the pixels the image checks measure
        shape = self.model.input_shape
        if shape[1:] != (self.size, int(card["input"]["width"]), 3):
            raise BundleError(f"The model in {bundle.folder} takes input {shape}, but its card says {self.size}px RGB.")
        self.mapping: ColourMapping | None = None
        self.head: SiteHead | None = None
        self.feature_model: TFLiteModel | None = None
        self.vector_output = TFLiteModel.EMBEDDING  # the output the head reads (a site bundle)
        self.input_size = self.size
        if bundle.site is not None:
            self._load_site(bundle.site, num_threads)
        elif self.model.outputs != len(self.classes):
            raise BundleError(
                f"The model in {bundle.folder} has {self.model.outputs} outputs but its card names "
                f"{len(self.classes)} classes."
            )

    def _load_site(self, site: dict, num_threads: int | None) -> None:
        """The site path: colour mapping, the feature vector's source (and its model), the head."""
        folder = self.bundle.folder
        try:
            self.mapping = ColourMapping.from_section(site["colour_mapping"])
        except ColourMappingError as error:
            raise BundleError(f"The site calibration in {folder} cannot be used: {error}") from None
        source = self.bundle.feature_source(site["features"]["source"])
        self.vector_output, self.input_size = source.output, source.height
        if source.path == self.bundle.model_path:
            model = self.model
        else:
            self.feature_model = model = load_model(self.bundle, source.path, num_threads)
            if model.input_shape[1:] != (source.height, source.width, 3):
                raise BundleError(
                    f"The feature extractor in {folder} takes input {model.input_shape}, but its card says "
                    f"{source.height}px RGB."
                )
        if self.vector_output not in model.named_outputs:
            raise BundleError(f"The site calibration in {folder} reads the output {self.vector_output!r}, which its "
                              "model does not have.")  # fmt: skip
        dimensions = int(site["features"]["dimensions"])
        produced = int(model.named_outputs[self.vector_output]["shape"][-1])
        if produced != dimensions:
            raise BundleError(f"The site calibration in {folder} expects {dimensions} features, but its model gives "
                              f"{produced}.")  # fmt: skip
        try:
            self.head = SiteHead.from_section(site["head"], len(self.classes), dimensions)
        except ValueError as error:
            raise BundleError(f"The site calibration in {folder} cannot be used: {error}.") from None

    @property
    def output_names(self) -> set[str]:
        """The names ``outputs`` returns."""
        if self.head is None:
            return set(self.model.named_outputs) | {TFLiteModel.LOGITS}
        return {self.vector_output, TFLiteModel.LOGITS}

    def map_image(self, image: Image.Image) -> Image.Image:
        """The decoded image as this bundle's path sees it: a site bundle's colour mapping applied."""
        return map_colours(image, self.mapping)

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name for one uint8 [input_size, input_size, 3] image: ``logits`` and the model's (a site
        bundle: the feature vector its head reads, under ``vector_output``, and its head's ``logits``)."""
        if self.head is None:
            return self.model.run_all(pixels)
        model = self.feature_model or self.model
        vector = model.run_all(pixels)[self.vector_output]
        return {self.vector_output: vector, TFLiteModel.LOGITS: self.head.logits(vector)}

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """Dequantized logits for one uint8 [H, W, 3] image (a site bundle: its head's, on its feature vector)."""
        if self.head is None:
            return self.model.run(pixels)
        return self.outputs(pixels)[TFLiteModel.LOGITS]

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
            warnings=self.bundle.warnings,
        )


def load_model(bundle: ModelBundle, path: Path | None, num_threads: int | None) -> TFLiteModel:
    """A bundle's .tflite on the runtime, or a BundleError sentence when the runtime cannot load it."""
    try:
        return TFLiteModel(str(path), num_threads=num_threads)
    except (ValueError, RuntimeError) as error:  # not a TFLite flatbuffer, or ops this runtime lacks
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        what = "model file" if path == bundle.model_path else f"feature extractor {Path(str(path)).name}"
        raise BundleError(f"The {what} in {bundle.folder} cannot be loaded by the runtime ({reason}).") from None
