"""The torch port of YOLOX-nano against the shipped ONNX export on onnxruntime (CPU)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import save_file

from capindex.errors import ModelError
from capindex.model import DEFAULT_DETECTOR
from capindex.model.detector import (
    Detector,
    DetectorConfig,
    letterbox,
    letterbox_batch,
    letterbox_pixels,
)
from capindex.model.yolox_torch import load_yolox
from capindex.pipeline.detect import DeferredDetector

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
WEIGHTS = DEFAULT_DETECTOR.with_suffix(".safetensors")


@pytest.fixture(scope="module")
def detectors() -> tuple[Detector, Detector]:
    torch.set_num_threads(1)
    return (Detector.load(threads=1),
            Detector.load(backend="torch", device="cpu"))


@pytest.fixture(scope="module")
def samples() -> tuple[torch.Tensor, list[float], list[tuple[int, int]]]:
    """The sample photos' letterboxes (B, 3, S, S), ratios and sizes."""
    boxes, ratios, sizes = [], [], []
    for path in sorted(SAMPLES.glob("*.jpg")):
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
        pixels, ratio = letterbox(img)
        boxes.append(pixels)
        ratios.append(ratio)
        sizes.append(img.size)
    return torch.stack(boxes), ratios, sizes


def test_raw_output_equals_onnxruntime(detectors, samples):
    ort_det, torch_det = detectors
    pixels, _, _ = samples
    expected = ort_det.raw_output(pixels)  # (B, 3549, 85), image by image
    got = torch_det.raw_output(pixels).numpy()
    assert got.shape == expected.shape == (len(pixels), 3549, 85)
    assert np.abs(got[..., :4] - expected[..., :4]).max() <= 1e-3  # raw boxes
    assert np.abs(got[..., 4:] - expected[..., 4:]).max() <= 1e-3  # objectness, classes


def test_detections_equal_onnxruntime(detectors, samples):
    ort_det, torch_det = detectors
    pixels, ratios, sizes = samples
    expected = ort_det.detect_batch(pixels, ratios, sizes)
    got = torch_det.detect_batch(pixels, ratios, sizes)
    assert sum(map(len, expected)) >= len(expected)  # the photos do hold objects
    for want, have in zip(expected, got):
        assert [d.label for d in have] == [d.label for d in want]
        for a, b in zip(want, have):
            assert b.score == pytest.approx(a.score, abs=1e-3)
            assert b.box == pytest.approx(a.box, abs=0.5)  # pixels of the photo


def test_a_batch_gives_what_single_images_give(detectors, samples):
    _, torch_det = detectors
    pixels, ratios, sizes = samples
    batched = torch_det.raw_output(pixels)
    single = torch.cat([torch_det.raw_output(pixels[k:k + 1]) for k in range(len(pixels))])
    assert (batched - single).abs().max() <= 1e-4
    one_by_one = [torch_det.detect_batch(pixels[k:k + 1], ratios[k:k + 1], sizes[k:k + 1])[0]
                  for k in range(len(pixels))]
    for have, want in zip(torch_det.detect_batch(pixels, ratios, sizes), one_by_one):
        assert [d.label for d in have] == [d.label for d in want]
        assert [d.score for d in have] == pytest.approx([d.score for d in want], abs=1e-4)


def test_the_port_runs_at_other_sizes(detectors, samples):
    """Any multiple of 32 (the ONNX export is fixed at 416): the grid has as many cells."""
    _, torch_det = detectors
    small = Detector(None, torch_det.labels, "x", "0" * 64, input_size=320, model=torch_det.model)
    pixels = letterbox_batch(samples[0][:1], [None], 320)[0]
    assert small.raw_output(pixels).shape == (1, 40 * 40 + 20 * 20 + 10 * 10, 85)


def test_letterbox_batch_equals_one_image_at_a_time():
    """Images of different shapes in one batch: each gets its own ratio and resize."""
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8, generator=generator)
    originals = [(640, 480), (480, 640), (640, 480), None]
    boxes, ratios = letterbox_batch(pixels, originals, 416)
    for k, original in enumerate(originals):
        box, ratio = letterbox_pixels(pixels[k], 416, original)
        assert ratios[k] == ratio and torch.equal(boxes[k], box)
    assert (boxes[0, :, 312:] == 114).all() and (boxes[1, :, :, 312:] == 114).all()


def test_weights_record_the_onnx_file_they_came_from():
    digest = hashlib.sha256(DEFAULT_DETECTOR.read_bytes()).hexdigest()
    with safe_open(WEIGHTS, framework="pt") as f:
        assert f.metadata()["onnx_sha256"] == digest
    with pytest.raises(ModelError, match="converted from another ONNX file"):
        load_yolox(WEIGHTS, "f" * 64)


def test_damaged_weights_are_one_line(tmp_path):
    bad = tmp_path / "yolox.safetensors"
    bad.write_bytes(b"not safetensors at all" * 10)
    with pytest.raises(ModelError) as info:
        load_yolox(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    short = tmp_path / "short.safetensors"
    save_file({"head.obj_preds.0.weight": torch.zeros(1, 64, 1, 1)}, str(short))
    with pytest.raises(ModelError, match="do not fit") as info:
        load_yolox(short)
    assert "\n" not in str(info.value)


def test_backend_choice():
    with pytest.raises(ModelError, match="CPU only"):
        Detector.load(backend="onnxruntime", device="cuda")
    with pytest.raises(ValueError, match="backend"):
        Detector.load(backend="tensorrt")


def test_a_deferred_detector_loads_once_per_device():
    calls = []
    deferred = DeferredDetector("x@1", lambda: calls.append("cpu") or "on cpu",
                                lambda device: calls.append(device) or f"on {device}")
    assert deferred.on(torch.device("cpu")) == "on cpu"
    assert deferred.on("cuda:0") == deferred.on("cuda:0") == "on cuda:0"
    assert calls == ["cpu", "cuda:0"]
    # Without a GPU loader (test doubles), pixels anywhere go to the CPU detector.
    assert DeferredDetector("x@1", lambda: "on cpu").on("cuda:0") == "on cpu"


def per_image(det: Detector, raw: torch.Tensor, ratios, sizes) -> list[list]:
    """The onnxruntime path's decoding (numpy, one image at a time) of a raw output."""
    return [det._decode(*det._candidates(out.numpy()), ratio, size)
            for out, ratio, size in zip(raw, ratios, sizes)]


def assert_same(have: list[list], want: list[list]) -> None:
    for a, b in zip(have, want):
        assert [d.label for d in a] == [d.label for d in b]
        assert [d.score for d in a] == pytest.approx([d.score for d in b], abs=1e-6)
        for x, y in zip(a, b):
            assert x.box == pytest.approx(y.box, abs=1e-3)


def test_batch_decoding_equals_decoding_image_by_image(detectors, samples):
    """The torch port decodes a batch at once (one NMS for all images and classes): the
    same detections as the numpy decoding, also where NMS has much to do."""
    _, torch_det = detectors
    pixels, ratios, sizes = samples
    low = Detector(None, torch_det.labels, "x", "0" * 64, DetectorConfig(threshold=0.02),
                   model=torch_det.model)  # hundreds of overlapping candidates an image
    raw = low.raw_output(pixels)
    want = per_image(low, raw, ratios, sizes)
    assert max(map(len, want)) == low.config.max_detections
    assert_same(low.decode_batch(raw, ratios, sizes), want)
    # Random output: boxes everywhere, all classes, some off the letterbox's edges.
    generator = torch.Generator().manual_seed(1)
    raw = torch.rand(4, 3549, 85, generator=generator)
    raw[..., :2] = raw[..., :2] * 3 - 1
    raw[..., 2:4] = raw[..., 2:4] * 3 - 1
    raw[..., 4] = raw[..., 4] ** 8  # most cells below the threshold
    unlimited = Detector(None, torch_det.labels, "x", "0" * 64,
                         DetectorConfig(max_detections=10_000), model=torch_det.model)
    want = per_image(unlimited, raw, [0.5, 1.0, 2.0, 1.0], [(800, 600), None, (100, 200), None])
    assert sum(map(len, want)) > 50
    assert_same(unlimited.decode_batch(raw, [0.5, 1.0, 2.0, 1.0],
                                       [(800, 600), None, (100, 200), None]), want)
    assert low.decode_batch(torch.zeros(2, 3549, 85), [1.0, 1.0], [None, None]) == [[], []]
