"""Stage 3b: the objects in each image, found by the detector on the captioner's pixels.

The detector (`capindex.model.detector`, YOLOX-nano) reads a 416x416 letterbox. It is made
here from the 224x224 pixels the decode stage already sends the captioner, stretched back
to the photo's aspect ratio, so ingest decodes each file once; on 200 COCO photos the labels
found this way agree with those from the full photo (docs/model-card.md, "Objects").

The detector is passed in like the captioner: `load_detector()` gives the real one, loaded
when first used (a run with nothing to read loads none); tests may pass None (no objects).
Pixels on a GPU (the captioner's, `infer.run_models` moves them there) are letterboxed and
detected there in one call, by the torch port; on a CPU onnxruntime runs the export.
With the backend "auto" (ingest's), a torch port that cannot load or run on the GPU (no
weights file, no kernel for that GPU, no memory) leaves the detection to the CPU's
onnxruntime for the rest of the run, which a note says once (`take_notes`, shown by
ingest); the backend "torch", asked for, fails with the ModelError instead.
A detector that fails on an image records nothing for it (`objects` stays null, so the next
run tries again) and says why in one line; the caption still lands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from capindex.errors import ModelError, first_line

if TYPE_CHECKING:
    import torch


class DeferredDetector:
    """A detector loaded when first used; `detector_id` (what a row records) is known from
    the model file alone. `load_on(device)`, when given, loads it for a GPU (`on`);
    `fall_back`: when that fails, the CPU's detects instead (with a note) rather than the
    error being raised."""

    def __init__(self, detector_id: str, load: Callable,
                 load_on: Callable[[str], object] | None = None, fall_back: bool = False) -> None:
        self.detector_id = detector_id
        self._load = load
        self._load_on = load_on
        self.fall_back = fall_back
        self._detector = None
        self._on: dict[str, object] = {}
        self._notes: list[str] = []

    @property
    def detector(self):
        """The detector on the CPU."""
        if self._detector is None:
            self._detector = self._load()
        return self._detector

    def on(self, device) -> object:
        """The detector for pixels on `device`: the CPU's, unless a GPU one can be loaded."""
        where = str(device)
        if where == "cpu" or self._load_on is None:
            return self.detector
        if where not in self._on:
            try:
                self._on[where] = self._load_on(where)
            except Exception as exc:  # torch's and CUDA's errors as well as ModelError
                if not self.fall_back:
                    raise
                self._on[where] = self.detector
                self._notes.append(f"the object detector runs on the CPU (onnxruntime), "
                                   f"not on {where}: {first_line(exc, 300)}")
        return self._on[where]

    def take_notes(self) -> list[str]:
        """What the user should know about the detector since the last call (one line each)."""
        notes, self._notes = self._notes, []
        return notes


def load_detector(path: str | Path | None = None, backend: str = "auto") -> DeferredDetector:
    """The shipped YOLOX-nano (or the ONNX file at `path`), loaded when first used.

    `backend` (`Detector.load`'s): "auto" detects pixels on a CPU with onnxruntime and
    pixels on a GPU with the torch port there, or, when it cannot load or run there, with
    onnxruntime on the CPU (`DeferredDetector.on`, a note); "torch" uses the port wherever
    the pixels are, and raises ModelError when it cannot; "onnxruntime" detects on the CPU
    wherever the pixels are."""
    from capindex.model import DEFAULT_DETECTOR, checkpoint_sha256

    if backend not in ("auto", "onnxruntime", "torch"):  # model.detector.BACKENDS (imports torch)
        raise ValueError(f"backend must be auto, onnxruntime or torch, not {backend!r}")

    path = Path(path or DEFAULT_DETECTOR)
    try:
        digest = checkpoint_sha256(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the object detector ({exc.strerror})") from exc

    def load(device: str = "cpu"):
        from capindex.model.detector import Detector

        return Detector.load(path, device=device, backend=backend)

    return DeferredDetector(f"{path.stem.replace('_', '-')}@{digest[:12]}", load,
                            None if backend == "onnxruntime" else load,
                            fall_back=backend == "auto")


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
