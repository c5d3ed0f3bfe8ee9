#!/usr/bin/env bash
# The one prepared GPU check (docs/performance.md, "GPU"): run on the device machine from
# the repository root, with .whl/ carried (benchmarks/device/fetch_wheels.sh). Writes one
# JSON per configuration and a log to $OUT (default gpu-results/). About 4-6 minutes.
# One round per configuration (ROUNDS=N for more): the configurations are the side by side.
#   DEVICE=cpu IMAGES=8 PYTHON=.venv/bin/python bash benchmarks/device/gpu_benchmark.sh
# runs the same script on a CPU machine as a smoke test.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu-results}
mkdir -p "$out"
py=${PYTHON:-python3}
if [ -d .whl ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/capindex-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/capindex-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
device=${DEVICE:-cuda}
images=${IMAGES:-300}
data=/tmp/capindex-bench-data  # the generated JPEGs, made once, shared by the runs
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    bench() {  # name, then throughput.py options
        local name=$1; shift
        echo "== $name: $*"
        "$py" benchmarks/throughput.py --device "$device" --images "$images" --data-dir "$data" \
            --search-docs 0 --rounds "${ROUNDS:-1}" --out "$out/$name.json" "$@" \
            || echo "== $name failed"
    }
    # Side by side on one machine: precision, batch size, channels-last (on only under
    # half precision on a GPU), decode workers (default CPUs - 1). Memory at two sizes once.
    bench fp32-b64 --batch-size 64 --memory-sizes ""
    bench bf16-b64 --batch-size 64 --precision bf16 --memory-sizes ""
    bench fp16-b64 --batch-size 64 --precision fp16 --memory-sizes ""
    bench bf16-b128 --batch-size 128 --precision bf16 --memory-sizes ""
    bench bf16-b64-w4 --batch-size 64 --precision bf16 --workers 4 --memory-sizes ""
    bench bf16-b64-memory --batch-size 64 --precision bf16 --sets small \
        --memory-sizes "$((images)),$((images * 10))"
} 2>&1 | tee "$out/log.txt"
