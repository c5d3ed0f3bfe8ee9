#!/usr/bin/env python
"""Write an int8 copy of the YOLOX ONNX export (static QDQ, per-channel weights), to measure.

    pip install onnx   # this script only; capindex itself does not need it
    PYTHONPATH=. python scripts/quantize_detector.py /work/shared/datasets/coco-1997 OUT.onnx
    PYTHONPATH=. python scripts/detector_agreement.py /work/shared/datasets/coco-1997 --also int8=OUT.onnx

The export is moved to opset 13 (per-channel DequantizeLinear needs it) and quantized by
onnxruntime.quantization: weights int8 per channel, activations uint8 with MinMax ranges
calibrated on the first --count *training* photos of the dataset (never the hold-out the
agreement is measured on), each fed as ingest feeds the detector: the captioner's 224x224
pixels letterboxed to 416 (`letterbox_pixels`). capindex ships the float export; this
is a lever measured in docs/performance.md ("Levers tried that lost").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from capindex.model import DEFAULT_DETECTOR
from capindex.model.detector import INPUT_SIZE, letterbox_pixels
from capindex.model.preprocess import load_pixels
from capindex.training.datasets import read_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", type=Path, default=DEFAULT_DETECTOR)
    parser.add_argument("--count", type=int, default=64, help="calibration photos (default 64)")
    args = parser.parse_args()

    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dataset = read_dataset(args.dataset)
    paths = [dataset.image_dir / name for name in dataset.train[: args.count]]

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(paths)

        def get_next(self):
            path = next(self.left, None)
            if path is None:
                return None
            with Image.open(path) as img:
                size = ImageOps.exif_transpose(img).size
            pixels, _ = letterbox_pixels(load_pixels(path), INPUT_SIZE, original=size)
            return {"images": pixels[None].flip(1).float().numpy()}  # BGR floats 0-255

    with tempfile.TemporaryDirectory() as tmp:
        opset13, prepared = Path(tmp) / "opset13.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(version_converter.convert_version(onnx.load(args.model), 13), opset13)
        quant_pre_process(str(opset13), str(prepared))
        quantize_static(str(prepared), str(args.out), Photos(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)


if __name__ == "__main__":
    main()
