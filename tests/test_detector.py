"""The object detector (YOLOX-nano, onnxruntime on CPU): real photos, box mapping, bad files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from capindex.errors import ModelError
from capindex.model.detector import (
    DEFAULT_CLASSES,
    Detection,
    Detector,
    DetectorConfig,
    letterbox,
    letterbox_pixels,
    read_labels,
    summarize,
)

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load(threads=1)


def photo(name: str) -> Image.Image:
    with Image.open(SAMPLES / name) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def detect(detector: Detector, img: Image.Image) -> list[Detection]:
    pixels, ratio = letterbox(img, detector.input_size)
    return detector.detect_batch(pixels[None], [ratio], [img.size])[0]


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_shipped_model_identity(detector):
    assert detector.model_id == "yolox-nano"
    assert detector.weights_hash == (
        "d39bee73564e338080378b0ad567fbb40e818b55bbfaf971de82a0267ed16b8a")
    assert detector.input_size == 416 and len(detector.labels) == 80


def test_cat_photo_finds_a_cat(detector):
    img = photo("chelsea.jpg")
    found = detect(detector, img)
    assert "cat" in {d.label for d in found}
    cat = max((d for d in found if d.label == "cat"), key=lambda d: d.score)
    x0, y0, x1, y1 = cat.box
    assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height
    assert (x1 - x0) * (y1 - y0) > 0.3 * img.width * img.height  # the cat fills the frame


def test_coffee_photo_finds_a_cup(detector):
    found = detect(detector, photo("coffee.jpg"))
    assert "cup" in {d.label for d in found}
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    assert all(d.score > detector.config.threshold for d in found)


def test_boxes_come_back_in_the_original_pixels(detector):
    """The cat pasted small into a wide canvas: its box moves and shrinks with it."""
    cat = photo("chelsea.jpg")
    alone = max((d for d in detect(detector, cat) if d.label == "cat"), key=lambda d: d.score)
    canvas = Image.new("RGB", (1600, 700), (200, 190, 170))
    left, top, scale = 900, 250, 1.3
    canvas.paste(cat.resize((round(cat.width * scale), round(cat.height * scale))), (left, top))
    found = [d for d in detect(detector, canvas) if d.label == "cat"]
    assert found
    expected = (left + alone.box[0] * scale, top + alone.box[1] * scale,
                left + alone.box[2] * scale, top + alone.box[3] * scale)
    assert max(iou(d.box, expected) for d in found) > 0.7


def test_letterbox_geometry():
    img = Image.new("RGB", (600, 300), (255, 255, 255))
    img.paste((0, 0, 0), (150, 60, 300, 240))  # a black block x 150-300, y 60-240
    pixels, ratio = letterbox(img, 416)
    assert pixels.shape == (3, 416, 416) and pixels.dtype == torch.uint8
    assert ratio == pytest.approx(416 / 600)
    content_h = int(300 * ratio)  # 208 rows of photo, the rest padding
    assert (pixels[:, content_h:, :] == 114).all()
    assert (pixels[:, content_h - 1, :] != 114).any()
    # The block's centre in the letterbox is its centre in the photo times the ratio.
    dark = (pixels[0] < 50).nonzero().float()  # (K, 2) rows, cols (the padding is 114)
    assert dark[:, 1].mean() * (1 / ratio) == pytest.approx(225, abs=1.5)
    assert dark[:, 0].mean() * (1 / ratio) == pytest.approx(150, abs=1.5)


def test_letterbox_from_squashed_pixels_restores_the_aspect_ratio():
    img = Image.new("RGB", (640, 320), (255, 255, 255))
    img.paste((0, 0, 0), (320, 0, 640, 320))  # right half black
    squashed = torch.from_numpy(np.array(img.resize((224, 224)))).permute(2, 0, 1)
    pixels, ratio = letterbox_pixels(squashed, 416, original=(640, 320))
    _, direct_ratio = letterbox(img, 416)
    assert ratio == direct_ratio == pytest.approx(416 / 640)
    assert (pixels[:, 208:] == 114).all()  # 320 * 0.65 = 208 rows of photo
    assert pixels[:, :208, :200].float().mean() > 240  # white left half, 0.65 x 320 columns
    assert pixels[:, :208, 216:].float().mean() < 15  # black right half


class FakeSession:
    """An onnxruntime session stand-in that answers with a crafted raw output."""

    def __init__(self, raw: np.ndarray, size: int = 416) -> None:
        self.raw = raw  # (N, 85)
        self.size = size

    def get_inputs(self):
        return [type("Input", (), {"name": "images", "shape": [1, 3, self.size, self.size]})]

    def run(self, _names, feed):
        assert feed["images"].shape[0] == 1  # a fixed batch of 1 is run image by image
        return [self.raw[None]]  # (1, N, 85)


def raw_with(cells: list[tuple[int, int, int, tuple[float, float, float, float], float, int]]):
    """A raw output holding the given (stride, gx, gy, box in letterbox pixels, score, class)."""
    raw = np.zeros((3549, 85), np.float32)
    offset = {8: 0, 16: 52 * 52, 32: 52 * 52 + 26 * 26}
    for stride, gx, gy, (x0, y0, x1, y1), score, cls in cells:
        row = offset[stride] + gy * (416 // stride) + gx
        raw[row, 0] = (x0 + x1) / 2 / stride - gx
        raw[row, 1] = (y0 + y1) / 2 / stride - gy
        raw[row, 2] = math.log((x1 - x0) / stride)
        raw[row, 3] = math.log((y1 - y0) / stride)
        raw[row, 4] = 1.0
        raw[row, 5 + cls] = score
    return raw


def fake_detector(raw: np.ndarray, **config) -> Detector:
    return Detector(FakeSession(raw), read_labels(DEFAULT_CLASSES), "fake", "0" * 64,
                    DetectorConfig(**config))


def blank() -> torch.Tensor:
    return torch.zeros(1, 3, 416, 416, dtype=torch.uint8)  # the fake session ignores pixels


def test_decoding_maps_grid_cells_to_original_boxes():
    # A dog (16) at letterbox (100, 40)-(180, 120) in a stride-16 cell; ratio 0.5.
    raw = raw_with([(16, 8, 5, (100, 40, 180, 120), 0.8, 16)])
    (found,) = fake_detector(raw).detect_batch(blank(), [0.5])
    assert len(found) == 1
    assert found[0].label == "dog" and found[0].score == pytest.approx(0.8)
    assert found[0].box == pytest.approx((200, 80, 360, 240), abs=1e-3)
    # Given the photo's size (300 x 200 here), a box is clipped to it.
    (clipped,) = fake_detector(raw).detect_batch(blank(), [0.5], [(300, 200)])
    assert clipped[0].box == pytest.approx((200, 80, 300, 200), abs=1e-3)


def test_nms_is_per_class_and_the_threshold_and_limit_hold():
    box = (100, 100, 200, 200)
    near = (104, 104, 204, 204)  # IoU 0.85 with box
    raw = raw_with([(8, 18, 18, box, 0.9, 16), (8, 19, 19, near, 0.7, 16),  # two dogs, one kept
                    (16, 9, 9, near, 0.6, 15),  # a cat on the same spot: another class, kept
                    (32, 3, 3, (10, 10, 60, 60), 0.2, 0)])  # a person under the threshold
    (found,) = fake_detector(raw).detect_batch(blank(), [1.0])
    assert [(d.label, round(d.score, 2)) for d in found] == [("dog", 0.9), ("cat", 0.6)]
    (limited,) = fake_detector(raw, max_detections=1).detect_batch(blank(), [1.0])
    assert [d.label for d in limited] == ["dog"]
    (lower,) = fake_detector(raw, threshold=0.1).detect_batch(blank(), [1.0])
    assert "person" in {d.label for d in lower}


def test_wrong_input_shape_is_refused(detector):
    with pytest.raises(ValueError, match="416"):
        detector.detect_batch(torch.zeros(1, 3, 224, 224, dtype=torch.uint8), [1.0])


def test_a_garbage_model_file_is_a_model_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not an ONNX model\x00\x01\x02" * 50)
    with pytest.raises(ModelError) as info:
        Detector.load(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="not found"):
        Detector.load(tmp_path / "missing.onnx")


def test_summarize_counts_labels_and_keeps_the_best_score():
    found = [Detection("dog", 0.5, (0, 0, 1, 1)), Detection("person", 0.9, (0, 0, 1, 1)),
             Detection("dog", 0.8, (2, 2, 3, 3))]
    assert summarize(found) == [{"label": "person", "count": 1, "score": 0.9},
                                {"label": "dog", "count": 2, "score": 0.8}]
    assert summarize([]) == []
    assert found[0].to_dict() == {"label": "dog", "score": 0.5, "box": [0, 0, 1, 1]}
