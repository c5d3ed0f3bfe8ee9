"""Object detection: YOLOX-nano (80 COCO classes, ONNX, run by onnxruntime on CPU).

Pixels in, `Detection`s out: `letterbox` makes the detector's input from an image
(RGB uint8, the aspect ratio kept, padded with 114), `Detector.detect_batch` runs the
model, decodes its raw grid output, keeps what scores above a threshold after
class-wise NMS and maps the boxes back to the image's own pixels. `summarize`
turns one image's detections into per-label counts for the index ("two dogs").

The model file and its licences: capindex/weights/YOLOX-NOTICE.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from capindex.errors import ModelError
from capindex.model import DEFAULT_DETECTOR, checkpoint_sha256
from capindex.model.preprocess import to_pixels, to_rgb

DEFAULT_CLASSES = DEFAULT_DETECTOR.with_name("yolox_nano_classes.txt")

INPUT_SIZE = 416  # the shipped export's fixed input (1, 3, 416, 416)
PAD_VALUE = 114  # YOLOX's letterbox fill
STRIDES = (8, 16, 32)  # the output's three grids: 52x52, 26x26, 13x13 cells at 416
# Kept when objectness x class score is above this. 0.3 is YOLOX's demo value, not tuned
# for capindex: the lead tunes it on validation data (precision of the indexed labels).
SCORE_THRESHOLD = 0.3
NMS_IOU = 0.45  # YOLOX's demo value: boxes of one class overlapping more than this merge
MAX_DETECTIONS = 20  # per image, the highest scores


@dataclass(frozen=True)
class Detection:
    label: str
    score: float  # objectness x class probability, in (0, 1]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the original image's pixels

    def to_dict(self) -> dict:
        return {"label": self.label, "score": self.score, "box": list(self.box)}


@dataclass(frozen=True)
class DetectorConfig:
    threshold: float = SCORE_THRESHOLD
    nms_iou: float = NMS_IOU
    max_detections: int = MAX_DETECTIONS


def letterbox(img: Image.Image, size: int = INPUT_SIZE) -> tuple[torch.Tensor, float]:
    """An image (orientation already applied) -> (uint8 RGB pixels (3, size, size), ratio).

    The image is scaled by `ratio` = min(size / height, size / width) (antialiased
    bilinear, torch's uint8 kernel), placed at the top left and the rest filled with
    114. A box in the letterbox divided by `ratio` is in `img`'s pixels.
    """
    return letterbox_pixels(to_pixels(to_rgb(img)), size)


def letterbox_pixels(pixels: torch.Tensor, size: int = INPUT_SIZE,
                     original: tuple[int, int] | None = None) -> tuple[torch.Tensor, float]:
    """uint8 pixels (3, H, W) -> (the letterbox (3, size, size), ratio), as `letterbox`.

    `original` (width, height): the size of the photo these pixels were resized from,
    when it differs, e.g. the captioner's 224x224 squashed copy of a 640x480 photo: the
    pixels are then stretched back to the original's aspect ratio and `ratio` maps the
    letterbox to the original's pixels.
    """
    height, width = pixels.shape[1:]
    orig_w, orig_h = original or (width, height)
    ratio = min(size / orig_h, size / orig_w)
    new_h, new_w = max(1, int(orig_h * ratio)), max(1, int(orig_w * ratio))
    scaled = pixels.unsqueeze(0)  # (1, 3, H, W)
    if (new_h, new_w) != (height, width):
        scaled = F.interpolate(scaled, size=(new_h, new_w), mode="bilinear", antialias=True)
    out = torch.full((3, size, size), PAD_VALUE, dtype=torch.uint8)
    out[:, :new_h, :new_w] = scaled[0]  # (3, size, size)
    return out, ratio


def summarize(detections: list[Detection]) -> list[dict]:
    """One image's detections -> [{label, count, score (the highest)}], highest score first."""
    by_label: dict[str, dict] = {}
    for det in detections:
        entry = by_label.setdefault(det.label, {"label": det.label, "count": 0, "score": 0.0})
        entry["count"] += 1
        entry["score"] = max(entry["score"], det.score)
    return sorted(by_label.values(), key=lambda e: (-e["score"], e["label"]))


def read_labels(path: str | Path) -> list[str]:
    """A class-name file, one name a line."""
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise ModelError(f"cannot read the detector's class list {path}: "
                         f"{exc.strerror or exc}") from exc


def grid_offsets(size: int, strides=STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Each output row's cell (x, y) (N, 2) and stride (N, 1), in the model's output order."""
    cells, steps = [], []
    for stride in strides:
        n = size // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))  # (n*n, 2), row-major
        steps.append(np.full((n * n, 1), stride))
    return (np.concatenate(cells).astype(np.float32),  # (N, 2), N = 3549 at 416
            np.concatenate(steps).astype(np.float32))  # (N, 1)


class Detector:
    """An onnxruntime session of a YOLOX export + its class names + the post-processing."""

    def __init__(self, session, labels: list[str], model_id: str, weights_hash: str,
                 config: DetectorConfig | None = None, input_size: int | None = None) -> None:
        self.session = session
        self.labels = labels
        self.model_id = model_id
        self.weights_hash = weights_hash
        self.config = config or DetectorConfig()
        spec = session.get_inputs()[0]
        self.input_name = spec.name
        batch, _, height, width = spec.shape
        fixed = None  # the export's own input size, where it has one
        if isinstance(height, int) or isinstance(width, int):
            if height != width:
                raise ModelError(f"the detector's input must be square, not {spec.shape}")
            fixed = height
        if fixed and input_size not in (None, fixed):
            raise ModelError(f"this detector export takes {fixed}x{fixed} input only, "
                             f"not {input_size}")
        # An export with free height and width runs at any multiple of 32 (the coarsest grid).
        self.input_size = fixed or input_size or INPUT_SIZE
        if self.input_size % STRIDES[-1]:
            raise ModelError(f"the detector's input size must be a multiple of {STRIDES[-1]}, "
                             f"not {self.input_size}")
        # A fixed batch (the shipped export: 1) is run image by image.
        self.max_batch = batch if isinstance(batch, int) else None
        self._cells, self._strides = grid_offsets(self.input_size)

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int | None = None,
             labels: str | Path | None = None, config: DetectorConfig | None = None,
             input_size: int | None = None, spinning: bool = False) -> Detector:
        """Open an ONNX YOLOX export (the shipped YOLOX-nano when None) on CPU.

        `threads`: onnxruntime's intra-op threads (None: its default, one per core).
        `labels`: the class-name file (None: the shipped COCO list).
        `input_size`: for an export whose height and width are free (None: 416); the
        shipped export is fixed at 416.
        `spinning`: let idle intra-op threads busy-wait (onnxruntime's default). Off: on
        2 shared cores, 2 spinning threads doubled the CPU time per image (65 against
        33 ms, benchmarks/detector_speed.py) and take it from the decode workers.
        """
        path = Path(path) if path else DEFAULT_DETECTOR
        if not path.is_file():
            raise ModelError(f"detector model {path} not found")
        names = read_labels(labels or DEFAULT_CLASSES)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError("the detector needs onnxruntime: pip install onnxruntime") from exc
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: no warnings on stderr
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own (Fail, InvalidProtobuf, ...)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path} is not a usable ONNX model ({reason[:200]})") from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        out_shape = outputs[0].shape if len(outputs) == 1 else None
        if (len(inputs) != 1 or len(inputs[0].shape) != 4 or out_shape is None
                or len(out_shape) != 3 or out_shape[-1] != 5 + len(names)):
            raise ModelError(f"{path} is not a YOLOX detector with {len(names)} classes "
                             f"(outputs {[o.shape for o in outputs]})")
        model_id = path.stem.replace("_", "-")
        return cls(session, names, model_id, checkpoint_sha256(path), config, input_size)

    def detect_batch(self, pixels: torch.Tensor, ratios: list[float],
                     sizes: list[tuple[int, int]] | None = None) -> list[list[Detection]]:
        """pixels: uint8 RGB letterboxes (B, 3, S, S) (`letterbox`); ratios: each one's scale.

        Returns each image's detections, highest score first, boxes in its own pixels,
        clipped to its (width, height) in `sizes` when given (else to its longer side).
        """
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, self.input_size, self.input_size):
            raise ValueError(f"expected pixels (B, 3, {self.input_size}, {self.input_size}), "
                             f"got {tuple(pixels.shape)}")
        if len(ratios) != len(pixels) or (sizes is not None and len(sizes) != len(pixels)):
            raise ValueError(f"{len(pixels)} images need as many ratios (and sizes, if any)")
        # The model reads BGR floats 0-255 (no scaling).
        images = pixels.flip(1).float().numpy()  # (B, 3, S, S) BGR, contiguous
        step = self.max_batch or len(images)
        raw = np.concatenate([self.session.run(None, {self.input_name: images[i:i + step]})[0]
                              for i in range(0, len(images), step)])  # (B, N, 5 + classes)
        sizes = sizes or [None] * len(ratios)
        return [self._decode(out, ratio, size) for out, ratio, size in zip(raw, ratios, sizes)]

    def _decode(self, out: np.ndarray, ratio: float,
                size: tuple[int, int] | None) -> list[Detection]:
        """One image's raw output (N, 5 + classes) -> its detections."""
        import torchvision

        cls_ids = out[:, 5:].argmax(1)  # (N,) the best class of each cell
        scores = out[:, 4] * out[np.arange(len(out)), 5 + cls_ids]  # (N,) obj x cls
        keep = scores > self.config.threshold
        if not keep.any():
            return []
        out, cls_ids, scores = out[keep], cls_ids[keep], scores[keep]  # (K, ...)
        centre = (out[:, :2] + self._cells[keep]) * self._strides[keep]  # (K, 2)
        half = np.exp(out[:, 2:4]) * self._strides[keep] / 2  # (K, 2)
        boxes = np.concatenate([centre - half, centre + half], axis=1)  # (K, 4) in the letterbox
        kept = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                           torch.from_numpy(cls_ids), self.config.nms_iou)
        kept = kept[: self.config.max_detections].numpy()  # sorted by score, highest first
        width, height = size or (self.input_size / ratio,) * 2  # else the longer side
        boxes = (boxes / ratio).clip(0, np.array([width, height, width, height], np.float32))
        return [Detection(self.labels[cls_ids[i]], float(scores[i]),
                          tuple(float(v) for v in boxes[i])) for i in kept]
