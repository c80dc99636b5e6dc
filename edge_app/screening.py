"""The inference core's one entry point: bytes or an image in, a ``Result`` out.

decode (smearscope_core.imaging) -> model pixels -> image checks (smearscope_core.ood) -> classify
(edge_app.classify) -> Result; explain() adds the occlusion heatmap on demand. No Streamlit here:
the page, the batch runner and the tests all call this.

A site bundle (docs/site-calibration.md) maps the decoded image's colours first, so the image checks measure
the mapped pixels and its feature vector is what its head reads; its unfamiliarity-of-features check
(``embedding_ood``) compares that vector with the site's own images'.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from edge_app.bundle import BundleError, ModelBundle, load_bundle
from edge_app.classify import Classifier, Result
from edge_app.explain import Heatmap, occlusion_heatmap
from edge_app.runtime import TFLiteModel
from edge_app.settings import MAX_UPLOAD_BYTES, MAX_UPLOAD_MB
from smearscope_core.embedding_ood import EmbeddingCalibrationError, EmbeddingDetector
from smearscope_core.files import sha256_of
from smearscope_core.imaging import ImageError, model_pixels, open_image
from smearscope_core.ood import OodDetector
from smearscope_core.scale import ScaleCheck

NO_OOD_CALIBRATION = (
    "this model has no calibration for unfamiliar images, so no result can be trusted on its own: "
    "use a model bundle made by the current training and conversion stages"
)


class Screened(NamedTuple):
    """A screened file: the decoded image (for the page's thumbnail and heatmap) and its result."""

    image: Image.Image
    result: Result


def check_size(size_bytes: int, name: str) -> None:
    """Refuse a file over the upload limit before it is read or decoded (Streamlit alone allows 200 MB)."""
    if size_bytes > MAX_UPLOAD_BYTES:
        raise ImageError(f"{name} is larger than {MAX_UPLOAD_MB} MB and was skipped.")


class Screener:
    """A model bundle ready to screen images; cheap to call many times."""

    def __init__(self, bundle: ModelBundle | str | Path, num_threads: int | None = None):
        self.bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
        self.classifier = Classifier(self.bundle, num_threads=num_threads)
        self.detector = OodDetector.from_card(self.bundle.card)
        try:
            self.embedding_detector = EmbeddingDetector.from_card(self.bundle.card, self.bundle.folder)
        except EmbeddingCalibrationError as error:
            raise BundleError(str(error)) from None
        # the output the feature check reads: the model's embedding, or (a site bundle) the vector its head reads
        self.embedding_output = (self.bundle.card.get("embedding_ood") or {}).get("output", TFLiteModel.EMBEDDING)
        if self.embedding_detector is not None and self.embedding_output not in self.classifier.output_names:
            raise BundleError(
                f"The model in {self.bundle.folder} has no {self.embedding_output} output; its card calibrates one."
            )
        try:
            self.scale_check = ScaleCheck.from_section((self.bundle.card.get("ood") or {}).get("field_scale"))
        except ValueError as error:
            raise BundleError(f"{self.bundle.folder}: {error}") from None
        self.size = self.classifier.size

    def missing_checks(self) -> list[str]:
        """The unfamiliar-image checks this bundle's card does not calibrate (an older bundle), in words."""
        missing = []
        if self.detector is None:
            missing.append("image statistics (colour, focus, texture): every result is referred")
        if self.embedding_detector is None:
            missing.append("what the model sees (its embedding)")
        if self.scale_check is None:
            missing.append("the cells' scale (magnification)")
        return missing

    def pixels(self, image: Image.Image) -> np.ndarray:
        """What the classifier takes for this decoded image (a site bundle: colours mapped, at its head's size)."""
        return model_pixels(self.classifier.map_image(image), self.classifier.input_size)

    def screen_image(self, image: Image.Image, source: str = "", image_sha256: str = "") -> Result:
        started = time.perf_counter()
        image = self.classifier.map_image(image)  # a site bundle's colour mapping; the image itself otherwise
        pixels = model_pixels(image, self.size)
        if self.detector is None:
            reasons, distance = [NO_OOD_CALIBRATION], None
        else:
            reasons, distance = self.detector.reasons(pixels)
        scale = self.scale_check.check(pixels) if self.scale_check is not None else None
        if scale is not None and scale.reason:
            reasons.append(scale.reason)
        size = self.classifier.input_size
        outputs = self.classifier.outputs(pixels if size == self.size else model_pixels(image, size))
        feature_distance = None
        if self.embedding_detector is not None:
            feature_distance = self.embedding_detector.distance(outputs[self.embedding_output])
            if reason := self.embedding_detector.reason(feature_distance):
                reasons.append(reason)
        result = self.classifier.result_from_logits(outputs["logits"], source, reasons)
        result.ood_distance, result.feature_distance = distance, feature_distance
        result.scale_ratio = scale.ratio if scale is not None and math.isfinite(scale.ratio) else None
        result.image_sha256 = image_sha256
        result.seconds = time.perf_counter() - started
        return result

    def screen_file(self, data: bytes, name: str = "image") -> Screened:
        """Check the size, decode and screen a file's bytes; raises ImageError with a sentence for bad files."""
        check_size(len(data), name)
        image = open_image(data, name, min_side=self.bundle.decode_side)  # a camera JPEG: a reduced decode
        return Screened(image, self.screen_image(image, name, sha256_of(data)))

    def screen_bytes(self, data: bytes, name: str = "image") -> Result:
        """``screen_file`` without the image: for callers that only need the result (batch, selftest)."""
        return self.screen_file(data, name).result

    def explain(self, image: Image.Image) -> Heatmap:
        """The occlusion heatmap of this bundle's answer (a site bundle: its head's, on the mapped image)."""
        return occlusion_heatmap(self.classifier, self.pixels(image))
