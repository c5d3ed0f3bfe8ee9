#!/usr/bin/env bash
# The prepared GPU check (docs/performance.md, "GPU"): run on the device machine from the
# repository root, with .whl/ carried (benchmarks/device/fetch_wheels.sh) and, for the
# caption comparison on real photos, .photos/ (any folder of JPEGs; PHOTOS=DIR). Writes
# one JSON per configuration, a cProfile of one ingest, nvidia-smi's utilisation and a log
# to $RESULTS (default gpu-results/), and, where the device tool's $OUT is set, all of it
# as $OUT/gpu-results.tgz. Steps run in order of importance and stop at LIMIT seconds
# (default 420), so give the device call a timeout of LIMIT + 60.
#   DEVICE=cpu IMAGES=8 COMPARE=8 BATCHES=8 TIMING_BATCH=8 PYTHON=.venv/bin/python bash benchmarks/device/gpu_benchmark.sh
# runs the same steps on a CPU machine as a smoke test (move .whl/ aside first).
set -uo pipefail
cd "$(dirname "$0")/../.."
deadline=$(( $(date +%s) + ${LIMIT:-420} ))
out=${RESULTS:-gpu-results}
mkdir -p "$out"
source benchmarks/device/device_env.sh  # py, wheels, PYTHONPATH, bytecode cache
device=${DEVICE:-cuda}
images=${IMAGES:-1000}
photos=${PHOTOS:-.photos}
data=/tmp/capindex-bench-data  # the generated JPEGs, made once, shared by the steps
if command -v nvidia-smi >/dev/null; then
    nvidia-smi dmon -s u -o T -d 1 >"$out/gpu-utilisation.txt" 2>&1 &
    dmon=$!
fi
bench() {  # name, then throughput.py options
    local name=$1
    shift
    step "$name" "$py" benchmarks/throughput.py --device "$device" --images "$images" \
        --data-dir "$data" --search-docs 0 --rounds "${ROUNDS:-1}" --out "$out/$name.json" "$@"
}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    echo "CPUs: $(nproc)"
    # The whole run with capindex's defaults on a GPU (fp32, batch 256, min(16, CPUs - 1)
    # decode workers, ordinary memory), memory at two sizes, far enough apart for the added
    # images to give the sustained rate (gpu_sustained.sh compares settings that way).
    bench defaults --memory-sizes "$images,$((images * 12))"
    # Decoding on the GPU (nvJPEG) against the decode workers: rates, and inputs and
    # captions against the workers' (nothing in capindex decodes on the GPU yet).
    step gpu-decode "$py" benchmarks/device/gpu_decode.py --device "$device" \
        --images "$images" --data-dir "$data" --compare "${COMPARE:-256}" \
        $([ -d "$photos" ] && echo --photos "$photos") --out "$out/gpu-decode.json"
    # One batch's time with the defaults (256): first call, each new batch size, encoder and
    # search (the loop and the batched form side by side) in the steady state.
    timing() {  # precision, channels-last (0/1), cuDNN benchmark mode (0/1)
        [ -d "$photos" ] && step "timing $*" "$py" benchmarks/device/gpu_timing.py \
            --photos "$photos" --device "$device" --precision "$1" --channels-last "$2" \
            --cudnn-benchmark "$3" --batch "${TIMING_BATCH:-256}"
    }
    timing fp32 0 0
    # The model alone: precision x channels-last x batch size, and captions against the
    # CPU's (the batched search on the GPU against the loop on the CPU).
    step model-sweep "$py" benchmarks/device/model_sweep.py --device "$device" \
        --images "$images" --data-dir "$data" --batches "${BATCHES:-16,64,256}" \
        --precisions fp32,bf16 --compare "${COMPARE:-256}" \
        $([ -d "$photos" ] && echo --photos "$photos") --out "$out/model-sweep.json"
    # Then one knob changed at a time, one run profiled, and the other timings.
    bench b64 --batch-size 64 --memory-sizes ""
    bench w8 --workers 8 --memory-sizes ""
    bench pinned --pin-memory --memory-sizes ""
    bench profiled --sets small --memory-sizes "" --profile "$out/profile"
    bench bf16 --precision bf16 --memory-sizes ""
    timing fp32 0 1
    timing bf16 0 0
} 2>&1 | tee "$out/log.txt"
[ -n "${dmon:-}" ] && kill "$dmon"
if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/gpu-results.tgz" -C "$(dirname "$out")" "$(basename "$out")"
fi
exit 0
