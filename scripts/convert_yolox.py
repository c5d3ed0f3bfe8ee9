#!/usr/bin/env python
"""Convert the shipped YOLOX-nano ONNX export into the torch port's weights (development only).

    /work/main/.venv/bin/pip install onnx          # a development tool, not a dependency
    python scripts/convert_yolox.py                # capindex/weights/yolox_nano.onnx -> .safetensors

The export's 113 convolutions (batch norms already folded in) are matched, in the order the
graph runs them, with the convolutions of `capindex.model.yolox_torch.YoloxNano` in the
order its forward pass calls them; every shape must agree. The weights are written with
YOLOX's module names, and the metadata records the ONNX file's SHA-256 (the torch backend
refuses weights converted from another file). The script then runs both on the sample
images and a random input and fails unless the raw outputs agree within 1e-3.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capindex.model.yolox_torch import YoloxNano  # noqa: E402

TOLERANCE = 1e-3


def onnx_convs(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of each Conv node of the graph, in graph (execution) order."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = []
    for node in graph.node:
        if node.op_type == "Conv":
            if len(node.input) != 3:
                raise SystemExit(f"conv {node.name} has no bias: batch norm not folded?")
            convs.append((tensors[node.input[1]], tensors[node.input[2]]))
    return convs


def torch_convs(model: torch.nn.Module, size: int) -> list[str]:
    """The names of the model's Conv2d modules in the order its forward pass calls them."""
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(names[m]))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return order


def convert(onnx_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    model = YoloxNano()
    convs = onnx_convs(onnx_path)
    order = torch_convs(model, 416)
    if len(order) != len(convs) or len(set(order)) != len(order):
        raise SystemExit(f"{len(convs)} convolutions in the ONNX graph, {len(order)} calls "
                         f"({len(set(order))} modules) in the torch model")
    state = {}
    for name, (weight, bias) in zip(order, convs):
        conv = model.get_submodule(name)
        if tuple(conv.weight.shape) != weight.shape or tuple(conv.bias.shape) != bias.shape:
            raise SystemExit(f"{name}: torch {tuple(conv.weight.shape)}, ONNX {weight.shape}")
        state[f"{name}.weight"] = torch.from_numpy(weight.copy())
        state[f"{name}.bias"] = torch.from_numpy(bias.copy())
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise SystemExit(f"not filled from the ONNX file: {sorted(missing)}")
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    meta = {"model": "YOLOX-nano (Megvii YOLOX, Apache-2.0), batch norms folded",
            "onnx_file": onnx_path.name, "onnx_sha256": digest,
            "converted_by": "scripts/convert_yolox.py"}
    return state, meta


def check(onnx_path: Path, weights: Path) -> float:
    """The largest absolute difference between onnxruntime's and the port's raw outputs."""
    import onnxruntime as ort
    from PIL import Image

    from capindex.model.detector import letterbox
    from capindex.model.yolox_torch import load_yolox

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = load_yolox(weights)
    images = [letterbox(Image.open(p))[0] for p in sorted((ROOT / "sample_images").glob("*.jpg"))]
    images.append(torch.randint(0, 256, (3, 416, 416), dtype=torch.uint8,
                                generator=torch.Generator().manual_seed(0)))
    worst = 0.0
    for pixels in images:
        bgr = pixels.flip(0).float().unsqueeze(0)
        expected = session.run(None, {"images": bgr.numpy()})[0]
        with torch.no_grad():
            got = model(bgr).numpy()
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=ROOT / "capindex/weights/yolox_nano.onnx")
    parser.add_argument("--out", type=Path, default=ROOT / "capindex/weights/yolox_nano.safetensors")
    args = parser.parse_args()
    from safetensors.torch import save_file

    state, meta = convert(args.onnx)
    save_file(state, str(args.out), metadata=meta)
    worst = check(args.onnx, args.out)
    print(f"{args.out}: {len(state)} tensors from {args.onnx.name} (sha256 {meta['onnx_sha256']});"
          f" largest raw difference to onnxruntime {worst:.2e}")
    if worst > TOLERANCE:
        raise SystemExit(f"the port differs from onnxruntime by {worst} (> {TOLERANCE})")


if __name__ == "__main__":
    main()
