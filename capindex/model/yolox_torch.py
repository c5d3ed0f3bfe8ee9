"""YOLOX-nano in torch: the shipped ONNX detector's network, for batched GPU detection.

The architecture is Megvii's YOLOX (https://github.com/Megvii-BaseDetection/YOLOX,
Apache-2.0, Copyright (c) 2021-2022 Megvii Inc.): CSPDarknet with depthwise convolutions
(depth 0.33, width 0.25), the YOLOPAFPN neck and the decoupled YOLOXHead, written again
here with YOLOX's module names. Batch norms are folded into the convolutions, as in the
ONNX export, so every block is conv (with bias) + SiLU. The weights are the ONNX file's,
converted once by `scripts/convert_yolox.py` into `capindex/weights/yolox_nano.safetensors`,
whose metadata records the ONNX file's SHA-256.

`YoloxNano` takes what the ONNX export takes, float BGR 0-255 letterboxes (B, 3, S, S) for
any S that is a multiple of 32, and gives the same raw output (B, N, 5 + classes): per grid
cell (strides 8, 16, 32) `cx, cy, w, h` relative to the cell, objectness and class
probabilities (sigmoids applied, boxes not decoded; `model/detector.py` decodes them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from capindex.errors import ModelError

DEPTH, WIDTH = 0.33, 0.25  # YOLOX-nano's multipliers of YOLOX-L's depth and width
NUM_CLASSES = 80


class BaseConv(nn.Sequential):
    """Conv2d (batch norm folded in) -> SiLU."""

    def __init__(self, c_in: int, c_out: int, ksize: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, ksize, stride, (ksize - 1) // 2, groups=groups)
        self.act = nn.SiLU()


class DWConv(nn.Sequential):
    """Depthwise conv -> pointwise conv."""

    def __init__(self, c_in: int, c_out: int, ksize: int, stride: int = 1):
        super().__init__()
        self.dconv = BaseConv(c_in, c_in, ksize, stride, groups=c_in)
        self.pconv = BaseConv(c_in, c_out, 1)


class Bottleneck(nn.Module):
    def __init__(self, channels: int, shortcut: bool):
        super().__init__()
        self.conv1 = BaseConv(channels, channels, 1)
        self.conv2 = DWConv(channels, channels, 3)
        self.use_add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """Cross-stage partial block: half the channels through n bottlenecks, half around."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        hidden = c_out // 2
        self.conv1 = BaseConv(c_in, hidden, 1)
        self.conv2 = BaseConv(c_in, hidden, 1)
        self.conv3 = BaseConv(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, shortcut) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_1, x_2 = self.conv1(x), self.conv2(x)
        return self.conv3(torch.cat((self.m(x_1), x_2), 1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: max pools of 5, 9 and 13 cells, concatenated."""

    def __init__(self, c_in: int, c_out: int, kernels=(5, 9, 13)):
        super().__init__()
        hidden = c_in // 2
        self.conv1 = BaseConv(c_in, hidden, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernels)
        self.conv2 = BaseConv(hidden * (len(kernels) + 1), c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.m], 1))


class Focus(nn.Module):
    """Space to depth: each 2x2 patch's four pixels become channels, then a conv."""

    def __init__(self, c_in: int, c_out: int, ksize: int):
        super().__init__()
        self.conv = BaseConv(c_in * 4, c_out, ksize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
                       x[..., 1::2, 1::2]), 1)  # top left, bottom left, top right, bottom right
        return self.conv(x)


class CSPDarknet(nn.Module):
    def __init__(self, depth: float, width: float):
        super().__init__()
        c = int(width * 64)  # 16 for nano
        n = max(round(depth * 3), 1)  # 1 for nano
        self.stem = Focus(3, c, 3)
        self.dark2 = nn.Sequential(DWConv(c, c * 2, 3, 2), CSPLayer(c * 2, c * 2, n))
        self.dark3 = nn.Sequential(DWConv(c * 2, c * 4, 3, 2), CSPLayer(c * 4, c * 4, n * 3))
        self.dark4 = nn.Sequential(DWConv(c * 4, c * 8, 3, 2), CSPLayer(c * 8, c * 8, n * 3))
        self.dark5 = nn.Sequential(DWConv(c * 8, c * 16, 3, 2), SPPBottleneck(c * 16, c * 16),
                                   CSPLayer(c * 16, c * 16, n, shortcut=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.dark2(self.stem(x))
        dark3 = self.dark3(x)
        dark4 = self.dark4(dark3)
        return dark3, dark4, self.dark5(dark4)  # strides 8, 16, 32


class YOLOPAFPN(nn.Module):
    """The backbone and the path-aggregation neck: top-down, then bottom-up."""

    def __init__(self, depth: float, width: float):
        super().__init__()
        c3, c4, c5 = (int(c * width) for c in (256, 512, 1024))
        n = round(3 * depth)
        self.backbone = CSPDarknet(depth, width)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, shortcut=False)
        self.reduce_conv1 = BaseConv(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, shortcut=False)
        self.bu_conv2 = DWConv(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, shortcut=False)
        self.bu_conv1 = DWConv(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, shortcut=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x2, x1, x0 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))
        return pan_out2, pan_out1, pan_out0


class YOLOXHead(nn.Module):
    """Decoupled head: per level a stem, a class branch and a box + objectness branch."""

    def __init__(self, num_classes: int, width: float):
        super().__init__()
        hidden = int(256 * width)
        self.stems = nn.ModuleList()
        self.cls_convs, self.reg_convs = nn.ModuleList(), nn.ModuleList()
        self.cls_preds, self.reg_preds, self.obj_preds = (nn.ModuleList() for _ in range(3))
        for c in (256, 512, 1024):
            self.stems.append(BaseConv(int(c * width), hidden, 1))
            self.cls_convs.append(nn.Sequential(DWConv(hidden, hidden, 3), DWConv(hidden, hidden, 3)))
            self.reg_convs.append(nn.Sequential(DWConv(hidden, hidden, 3), DWConv(hidden, hidden, 3)))
            self.cls_preds.append(nn.Conv2d(hidden, num_classes, 1))
            self.reg_preds.append(nn.Conv2d(hidden, 4, 1))
            self.obj_preds.append(nn.Conv2d(hidden, 1, 1))

    def forward(self, levels) -> torch.Tensor:
        outputs = []
        for k, x in enumerate(levels):
            x = self.stems[k](x)
            cls_out = self.cls_preds[k](self.cls_convs[k](x))
            reg_feat = self.reg_convs[k](x)
            out = torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat).sigmoid(),
                             cls_out.sigmoid()], 1)  # (B, 5 + classes, h, w)
            outputs.append(out.flatten(2))
        return torch.cat(outputs, 2).permute(0, 2, 1)  # (B, N, 5 + classes), row-major cells


class YoloxNano(nn.Module):
    """YOLOX-nano: BGR 0-255 letterboxes (B, 3, S, S) -> raw output (B, N, 5 + classes)."""

    def __init__(self, num_classes: int = NUM_CLASSES, depth: float = DEPTH, width: float = WIDTH):
        super().__init__()
        self.backbone = YOLOPAFPN(depth, width)
        self.head = YOLOXHead(num_classes, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def load_yolox(path: str | Path, expect_onnx_sha256: str | None = None,
               num_classes: int = NUM_CLASSES) -> YoloxNano:
    """The network with the weights of `path` (a safetensors file of `convert_yolox.py`).

    `expect_onnx_sha256`: the ONNX file these weights must have been converted from
    (the file's metadata says); another gives ModelError, so a torch run and an
    onnxruntime run record the same detector.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not iterable)
    except (OSError, SafetensorError) as exc:
        raise ModelError(f"{path}: not a readable detector weights file ({exc})") from exc
    if expect_onnx_sha256 is not None and meta.get("onnx_sha256") != expect_onnx_sha256:
        raise ModelError(f"{path}: converted from another ONNX file "
                         f"({meta.get('onnx_sha256', 'not recorded')[:12]}, "
                         f"expected {expect_onnx_sha256[:12]}); run scripts/convert_yolox.py")
    model = YoloxNano(num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: the weights do not fit YOLOX-nano "
                         f"({str(exc).splitlines()[0]})") from exc
    return model.eval()
