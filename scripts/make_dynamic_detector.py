#!/usr/bin/env python
"""Write a copy of the YOLOX ONNX export whose batch, height and width are free.

    pip install onnx   # this script only; capindex itself does not need it
    python scripts/make_dynamic_detector.py capindex/weights/yolox_nano.onnx OUT.onnx

The shipped export declares its input fixed at (1, 3, 416, 416), although its graph
takes any batch and any multiple of 32 (its head reshapes by the shapes it reads).
This rewrites only the declared input and output shapes (weights and nodes as they
are) and checks that the new file gives the original's output at (1, 3, 416, 416).
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(src: str, dst: str) -> None:
    model = onnx.load(src)
    dims = model.graph.input[0].type.tensor_type.shape.dim  # (batch, 3, height, width)
    for i, name in ((0, "batch"), (2, "height"), (3, "width")):
        dims[i].dim_param = name  # replaces dim_value (a oneof)
    out = model.graph.output[0].type.tensor_type.shape.dim  # (batch, cells, 85)
    out[0].dim_param, out[1].dim_param = "batch", "cells"
    del model.graph.value_info[:]  # intermediate shapes inferred for 416 only
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    a = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    b = ort.InferenceSession(dst, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    if not np.array_equal(a, b):
        raise SystemExit(f"outputs differ (max {np.abs(a - b).max()})")


if __name__ == "__main__":
    main(*sys.argv[1:3])
