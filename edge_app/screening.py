"""The inference core's one entry point: bytes or an image in, a ``Result`` out.

decode (edge_app.imaging) -> model pixels -> image checks (edge_app.ood) -> classify
(edge_app.classify) -> Result; explain() adds the occlusion heatmap on demand. No Streamlit here:
the page, the batch runner and the tests all call this.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edge_app.bundle import ModelBundle, load_bundle
from edge_app.classify import Classifier, Result
from edge_app.explain import Heatmap, occlusion_heatmap
from edge_app.imaging import model_pixels, open_image
from edge_app.ood import OodDetector

NO_OOD_CALIBRATION = "this model has no calibration for unfamiliar images, so no result can be trusted on its own"


class Screener:
    """A model bundle ready to screen images; cheap to call many times."""

    def __init__(self, bundle: ModelBundle | str | Path, num_threads: int | None = None):
        self.bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
        self.classifier = Classifier(self.bundle, num_threads=num_threads)
        self.detector = OodDetector.from_card(self.bundle.card)
        self.size = self.classifier.size

    def pixels(self, image: Image.Image) -> np.ndarray:
        return model_pixels(image, self.size)

    def screen_image(self, image: Image.Image, source: str = "", image_sha256: str = "") -> Result:
        started = time.perf_counter()
        pixels = self.pixels(image)
        if self.detector is None:
            reasons, distance = [NO_OOD_CALIBRATION], None
        else:
            reasons, distance = self.detector.reasons(pixels)
        result = self.classifier.result(self.classifier.probabilities(pixels), source, reasons)
        result.ood_distance = distance
        result.image_sha256 = image_sha256
        result.seconds = time.perf_counter() - started
        return result

    def screen_bytes(self, data: bytes, name: str = "image") -> Result:
        """Decode and screen; raises edge_app.imaging.ImageError with a sentence for bad files."""
        return self.screen_image(open_image(data, name), name, hashlib.sha256(data).hexdigest())

    def explain(self, image: Image.Image) -> Heatmap:
        return occlusion_heatmap(self.classifier, self.pixels(image))
