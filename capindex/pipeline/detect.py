"""Stage 3b: the objects in each image, found by the detector on the captioner's pixels.

The detector (`capindex.model.detector`, YOLOX-nano) reads a 416x416 letterbox. It is made
here from the 224x224 pixels the decode stage already sends the captioner, stretched back
to the photo's aspect ratio, so ingest decodes each file once; on 200 COCO photos the labels
found this way agree with those from the full photo (docs/model-card.md, "Objects").

The detector is passed in like the captioner: `load_detector()` gives the real one, loaded
when first used (a run with nothing to read loads none); tests may pass None (no objects).
Pixels on a GPU (the captioner's, `infer.run_models` moves them there) are letterboxed and
detected there in one call, by the torch port; on a CPU onnxruntime runs the export.
A detector that fails on an image records nothing for it (`objects` stays null, so the next
run tries again) and says why in one line; the caption still lands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from capindex.errors import ModelError

if TYPE_CHECKING:
    import torch


class DeferredDetector:
    """A detector loaded when first used; `detector_id` (what a row records) is known from
    the model file alone. `load_on(device)`, when given, loads it for a GPU (`on`)."""

    def __init__(self, detector_id: str, load: Callable,
                 load_on: Callable[[str], object] | None = None) -> None:
        self.detector_id = detector_id
        self._load = load
        self._load_on = load_on
        self._detector = None
        self._on: dict[str, object] = {}

    @property
    def detector(self):
        """The detector on the CPU."""
        if self._detector is None:
            self._detector = self._load()
        return self._detector

    def on(self, device) -> object:
        """The detector for pixels on `device`: the CPU's, unless a GPU one can be loaded."""
        if str(device) == "cpu" or self._load_on is None:
            return self.detector
        if str(device) not in self._on:
            self._on[str(device)] = self._load_on(str(device))
        return self._on[str(device)]


def load_detector(path: str | Path | None = None) -> DeferredDetector:
    """The shipped YOLOX-nano (or the ONNX file at `path`), loaded when first used."""
    from capindex.model import DEFAULT_DETECTOR, checkpoint_sha256

    path = Path(path or DEFAULT_DETECTOR)
    try:
        digest = checkpoint_sha256(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the object detector ({exc.strerror})") from exc

    def load(device: str = "cpu"):
        from capindex.model.detector import Detector

        return Detector.load(path, device=device)  # onnxruntime on the CPU, else torch

    return DeferredDetector(f"{path.stem.replace('_', '-')}@{digest[:12]}", load, load)


def detect_objects(detector: DeferredDetector, images: torch.Tensor,
                   sizes: list[tuple[int, int]]) -> list[tuple[list[dict] | None, str | None]]:
    """images: uint8 pixels (n, 3, 224, 224) squashed from photos of `sizes` (width, height),
    on any device -> per image (objects as row dicts, surest first, or None; why it failed,
    or None)."""
    from capindex.model.detector import letterbox_batch

    model = detector.on(images.device)
    images = images.to(getattr(model, "device", "cpu"))  # a no-op where it runs
    letterboxes, ratios = letterbox_batch(images, sizes, model.input_size)  # (n, 3, S, S)
    try:
        found = model.detect_batch(letterboxes, ratios, sizes)
        return [([d.to_dict() for d in dets], None) for dets in found]
    except Exception:  # find which image fails; the others keep their objects
        results = []
        for k in range(len(images)):
            try:
                (dets,) = model.detect_batch(letterboxes[k:k + 1], ratios[k:k + 1], sizes[k:k + 1])
                results.append(([d.to_dict() for d in dets], None))
            except Exception as exc:  # onnxruntime raises its own types
                results.append((None, f"object detection failed ({type(exc).__name__}: {exc})"))
        return results
