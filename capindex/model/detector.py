"""Object detection: YOLOX-nano (80 COCO classes), onnxruntime on a CPU, torch on a GPU.

Pixels in, `Detection`s out: `letterbox` makes the detector's input from an image
(RGB uint8, the aspect ratio kept, padded with 114; `letterbox_batch` a batch's on its
device), `Detector.detect_batch` runs the model, decodes its raw grid output, keeps what
scores above a threshold after class-wise NMS and maps the boxes back to the image's own
pixels. `summarize` turns one image's detections into per-label counts for the index
("two dogs").

Two backends run the same network and give the same raw output (within 1e-3) and the
same detections: the shipped ONNX export on onnxruntime (the CPU's: a fixed batch of one),
and its torch port (`model/yolox_torch.py`, weights converted from that export) on a
CUDA device, the whole batch in one call, decoded there too (`decode_batch`: only the
kept detections are copied back). Both record the ONNX file's hash, so rows do not depend
on the device.

The model files and their licences: capindex/weights/YOLOX-NOTICE.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from capindex.errors import ModelError, first_line
from capindex.model import DEFAULT_DETECTOR, checkpoint_sha256
from capindex.model.preprocess import to_pixels, to_rgb

DEFAULT_CLASSES = DEFAULT_DETECTOR.with_name("yolox_nano_classes.txt")
BACKENDS = ("auto", "onnxruntime", "torch")  # auto: onnxruntime on a CPU, torch on a GPU

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
    boxes, ratios = letterbox_batch(pixels.unsqueeze(0), [original], size)
    return boxes[0], ratios[0]


def letterbox_batch(pixels: torch.Tensor, originals: list[tuple[int, int] | None],
                    size: int = INPUT_SIZE) -> tuple[torch.Tensor, list[float]]:
    """uint8 pixels (B, 3, H, W) on any device -> (letterboxes (B, 3, size, size) there,
    each one's ratio), each image as `letterbox_pixels` with its `originals` entry.

    Images scaled to the same shape are resized in one call. On a CPU that is torch's
    uint8 kernel; elsewhere (no uint8 kernel) floats, rounded back to uint8.
    """
    height, width = pixels.shape[2:]
    out = torch.full((len(pixels), 3, size, size), PAD_VALUE, dtype=torch.uint8,
                     device=pixels.device)
    ratios, shapes = [], {}
    for k, original in enumerate(originals):
        orig_w, orig_h = original or (width, height)
        ratio = min(size / orig_h, size / orig_w)
        ratios.append(ratio)
        shapes.setdefault((max(1, int(orig_h * ratio)), max(1, int(orig_w * ratio))), []).append(k)
    for (new_h, new_w), rows in shapes.items():
        scaled = pixels if len(rows) == len(pixels) else pixels[rows]  # (n, 3, H, W)
        if (new_h, new_w) != (height, width):
            scaled = resize(scaled, (new_h, new_w))
        if len(rows) == len(pixels):
            out[:, :, :new_h, :new_w] = scaled
        else:
            out[rows, :, :new_h, :new_w] = scaled
    return out, ratios


def resize(pixels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> uint8 (n, 3, *shape): antialiased bilinear."""
    if pixels.device.type == "cpu":
        return F.interpolate(pixels, size=shape, mode="bilinear", antialias=True)
    scaled = F.interpolate(pixels.float(), size=shape, mode="bilinear", antialias=True)
    return scaled.round_().clamp_(0, 255).to(torch.uint8)


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
    """A YOLOX network + its class names + the post-processing. The network is an
    onnxruntime session of an export (`session`) or the torch port on a device (`model`)."""

    def __init__(self, session, labels: list[str], model_id: str, weights_hash: str,
                 config: DetectorConfig | None = None, input_size: int | None = None,
                 model: torch.nn.Module | None = None) -> None:
        self.session = session
        self.model = model
        self.labels = labels
        self.model_id = model_id
        self.weights_hash = weights_hash
        self.config = config or DetectorConfig()
        fixed = None  # the export's own input size, where it has one
        self.max_batch = None
        if model is not None:  # the torch port: any batch, any multiple of 32
            self.backend, self.device = "torch", next(model.parameters()).device
        else:
            self.backend, self.device = "onnxruntime", torch.device("cpu")
            spec = session.get_inputs()[0]
            self.input_name = spec.name
            batch, _, height, width = spec.shape
            if isinstance(height, int) or isinstance(width, int):
                if height != width:
                    raise ModelError(f"the detector's input must be square, not {spec.shape}")
                fixed = height
            # A fixed batch (the shipped export: 1) is run image by image.
            self.max_batch = batch if isinstance(batch, int) else None
        if fixed and input_size not in (None, fixed):
            raise ModelError(f"this detector export takes {fixed}x{fixed} input only, "
                             f"not {input_size}")
        # An export with free height and width runs at any multiple of 32 (the coarsest grid).
        self.input_size = fixed or input_size or INPUT_SIZE
        if self.input_size % STRIDES[-1]:
            raise ModelError(f"the detector's input size must be a multiple of {STRIDES[-1]}, "
                             f"not {self.input_size}")
        self._cells, self._strides = grid_offsets(self.input_size)

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int | None = None,
             labels: str | Path | None = None, config: DetectorConfig | None = None,
             input_size: int | None = None, spinning: bool = False,
             device: str | torch.device = "cpu", backend: str = "auto") -> Detector:
        """Open a YOLOX detector: the ONNX export at `path` (the shipped YOLOX-nano when None).

        `device`: where it runs; `backend`: "onnxruntime" (CPU only), "torch" (the port,
        weights from the `.safetensors` beside `path`, which must have been converted from
        that very file; run once on `device` here, so that a device it cannot use is a
        ModelError now) or "auto": onnxruntime on a CPU, torch elsewhere (on this 2-core
        CPU onnxruntime was the faster, docs/performance.md; ingest falls back to the CPU
        when the torch port fails on a GPU, `pipeline/detect.py`).
        `threads`: onnxruntime's intra-op threads (None: its default, one per core).
        `labels`: the class-name file (None: the shipped COCO list).
        `input_size`: for an export whose height and width are free (None: INPUT_SIZE); the
        shipped export is fixed at 416, the torch port takes any multiple of 32.
        `spinning`: let idle intra-op threads busy-wait (onnxruntime's default). Off: on
        2 shared cores, 2 spinning threads doubled the CPU time per image (65 against
        33 ms, benchmarks/detector_speed.py) and take it from the decode workers.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        device = torch.device(device)
        if backend == "auto":
            backend = "onnxruntime" if device.type == "cpu" else "torch"
        if backend == "onnxruntime" and device.type != "cpu":
            raise ModelError(f"the onnxruntime detector runs on the CPU only, not {device}")
        path = Path(path) if path else DEFAULT_DETECTOR
        if not path.is_file():
            raise ModelError(f"detector model {path} not found")
        names = read_labels(labels or DEFAULT_CLASSES)
        model_id = path.stem.replace("_", "-")
        if backend == "torch":
            from capindex.model.yolox_torch import load_yolox

            digest = checkpoint_sha256(path)
            port = load_yolox(path.with_suffix(".safetensors"), digest, len(names))
            try:  # a device it cannot use fails here, in one line, not on each batch
                model = port.to(device)
                with torch.inference_mode():
                    model(next(model.parameters()).new_zeros(1, 3, STRIDES[-1], STRIDES[-1]))
            except Exception as exc:  # no CUDA, no kernel for this GPU, out of memory...
                raise ModelError(f"the torch detector cannot run on {device} "
                                 f"({first_line(exc)})") from exc
            return cls(None, names, model_id, digest, config, input_size, model=model)
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
            raise ModelError(f"{path} is not a usable ONNX model ({first_line(exc)})") from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        out_shape = outputs[0].shape if len(outputs) == 1 else None
        if (len(inputs) != 1 or len(inputs[0].shape) != 4 or out_shape is None
                or len(out_shape) != 3 or out_shape[-1] != 5 + len(names)):
            raise ModelError(f"{path} is not a YOLOX detector with {len(names)} classes "
                             f"(outputs {[o.shape for o in outputs]})")
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
        sizes = sizes or [None] * len(ratios)
        if self.model is not None:
            return self.decode_batch(self.raw_output(pixels), ratios, sizes)
        return [self._decode(*self._candidates(out), ratio, size)
                for out, ratio, size in zip(self.raw_output(pixels), ratios, sizes)]

    def raw_output(self, pixels: torch.Tensor) -> np.ndarray | torch.Tensor:
        """uint8 RGB letterboxes (B, 3, S, S) -> the network's raw output (B, N, 5 + classes):
        a numpy array from onnxruntime, a tensor on the model's device from torch."""
        # The model reads BGR floats 0-255 (no scaling).
        if self.model is not None:
            with torch.inference_mode():
                return self.model(pixels.to(self.device, non_blocking=True).flip(1).float()).float()
        images = pixels.cpu().flip(1).float().numpy()  # (B, 3, S, S) BGR, contiguous
        step = self.max_batch or len(images)
        return np.concatenate([self.session.run(None, {self.input_name: images[i:i + step]})[0]
                               for i in range(0, len(images), step)])  # (B, N, 5 + classes)

    def _candidates(self, out: np.ndarray) -> tuple[np.ndarray, ...]:
        """One image's raw output (N, 5 + classes) -> the cells scoring above the threshold:
        (their rows (K,), raw boxes (K, 4), scores (K,), classes (K,))."""
        cls_ids = out[:, 5:].argmax(1)  # (N,) the best class of each cell
        scores = out[:, 4] * out[np.arange(len(out)), 5 + cls_ids]  # (N,) obj x cls
        rows = np.flatnonzero(scores > self.config.threshold)
        return rows, out[rows, :4], scores[rows], cls_ids[rows]

    def decode_batch(self, raw: torch.Tensor, ratios: list[float],
                     sizes: list) -> list[list[Detection]]:
        """The torch port's raw output (B, N, 5 + classes) -> each image's detections, as
        `_decode` gives them one image at a time: threshold, boxes and NMS of the whole batch
        on the output's device, one call each; only the kept detections are copied back.
        (`_decode` image by image cost 0.26 CPU-ms an image on the 2-core VM: some 65 ms of
        host time for a GPU batch of 256.)"""
        import torchvision

        with torch.inference_mode():
            probs, cls_ids = raw[..., 5:].max(2)  # (B, N); ties: the first, as numpy's argmax
            scores = raw[..., 4] * probs
            image, row = torch.nonzero(scores > self.config.threshold, as_tuple=True)  # (K,)
            if not len(image):
                return [[] for _ in raw]
            cells, strides = (torch.from_numpy(a).to(raw.device) for a in (self._cells, self._strides))
            box = raw[image, row, :4]  # (K, 4)
            centre = (box[:, :2] + cells[row]) * strides[row]
            half = box[:, 2:4].exp() * strides[row] / 2
            boxes = torch.cat([centre - half, centre + half], 1)  # (K, 4) in the letterbox
            scores, cls_ids = scores[image, row], cls_ids[image, row]
            # One NMS for the batch: each (image, class) group shifted clear of the others,
            # in float64 so that the shift costs the boxes no precision.
            group = (image * len(self.labels) + cls_ids).double()
            extent = (boxes.max() - boxes.min() + 1).double()
            kept = torchvision.ops.nms(boxes.double() + (group * extent)[:, None],
                                       scores.double(), self.config.nms_iou)  # best first
            kept = kept[torch.sort(image[kept], stable=True).indices]  # by image, best first
            out = torch.cat([image[kept, None].float(), cls_ids[kept, None].float(),
                             scores[kept, None], boxes[kept]], 1).cpu().numpy()  # (D, 7)
        bounds = np.searchsorted(out[:, 0], np.arange(len(raw) + 1))
        found = []
        for (a, b), ratio, size in zip(pairwise(bounds), ratios, sizes):
            rows = out[a:min(b, a + self.config.max_detections)]
            width, height = size or (self.input_size / ratio,) * 2  # else the longer side
            boxes = (rows[:, 3:] / ratio).clip(0, np.array([width, height, width, height],
                                                           np.float32))
            found.append([Detection(self.labels[int(r[1])], float(r[2]),
                                    tuple(float(v) for v in bx)) for r, bx in zip(rows, boxes)])
        return found

    def _decode(self, rows: np.ndarray, raw_boxes: np.ndarray, scores: np.ndarray,
                cls_ids: np.ndarray, ratio: float, size: tuple[int, int] | None) -> list[Detection]:
        """One image's candidates (`_candidates`) -> its detections."""
        import torchvision

        if not len(rows):
            return []
        centre = (raw_boxes[:, :2] + self._cells[rows]) * self._strides[rows]  # (K, 2)
        half = np.exp(raw_boxes[:, 2:4]) * self._strides[rows] / 2  # (K, 2)
        boxes = np.concatenate([centre - half, centre + half], axis=1)  # (K, 4) in the letterbox
        kept = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                           torch.from_numpy(cls_ids), self.config.nms_iou)
        kept = kept[: self.config.max_detections].numpy()  # sorted by score, highest first
        width, height = size or (self.input_size / ratio,) * 2  # else the longer side
        boxes = (boxes / ratio).clip(0, np.array([width, height, width, height], np.float32))
        return [Detection(self.labels[cls_ids[i]], float(scores[i]),
                          tuple(float(v) for v in boxes[i])) for i in kept]
