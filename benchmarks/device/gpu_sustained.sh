#!/usr/bin/env bash
# The GPU's settings side by side, by sustained rate (docs/performance.md, "GPU"): run on
# the device machine from the repository root with .whl/ carried (fetch_wheels.sh).
# A whole run of 1,000 small images is mostly what a run pays once (model load, workers'
# start, the last commit and merge), so each setting ingests SMALL (1,000) and BIG (7,000)
# small JPEGs into fresh libraries, and the images the bigger run adds give the sustained
# rate: (BIG - SMALL) / (seconds(BIG) - seconds(SMALL)). Settings alternate within a round,
# and rounds repeat, so that drift hits them alike. Also: the model-only rate at each batch
# size (throughput.py), and 12 MP JPEGs with the default workers and 8. Steps stop at LIMIT
# seconds (default 400); give the device call a timeout of LIMIT + 50. Results: $RESULTS
# (default gpu-sustained/) and $OUT/gpu-sustained.tgz.
#   DEVICE=cpu SMALL=16 BIG=48 ROUNDS=1 PYTHON=.venv/bin/python bash benchmarks/device/gpu_sustained.sh
# is the CPU smoke test (move .whl/ aside first).
set -uo pipefail
cd "$(dirname "$0")/../.."
deadline=$(( $(date +%s) + ${LIMIT:-400} ))
out=${RESULTS:-gpu-sustained}
mkdir -p "$out"
source benchmarks/device/device_env.sh  # py, wheels, PYTHONPATH, bytecode cache
device=${DEVICE:-cuda}
small=${SMALL:-1000}
big=${BIG:-7000}
data=/tmp/capindex-bench-data
work=/tmp/capindex-sustained
rm -rf "$work" && mkdir -p "$work"
left() { echo $(( deadline - $(date +%s) )); }

# One ingest: setting name, images folder, count, ingest options... -> a line of results.tsv
ingest() {
    local name=$1 folder=$2 count=$3
    shift 3
    [ "$(left)" -lt 25 ] && { echo "== $name $count: skipped, out of time"; return 1; }
    local library="$work/library" start end seconds
    rm -rf "$library"
    start=$(date +%s.%N)
    timeout "$(left)" "$py" -m capindex --library "$library" ingest "$folder" \
        --device "$device" "$@" >/dev/null 2>"$work/stderr" ||
        { echo "== $name $count: failed"; tail -3 "$work/stderr"; return 1; }
    end=$(date +%s.%N)
    # The summary on stderr, "N new, ...; N captioned in S s (R images/s)": S leaves out
    # loading the model.
    seconds=$(sed -n 's/.* captioned in \([0-9.]*\) s .*/\1/p' "$work/stderr")
    printf '%s\t%s\t%s\t%.2f\n' "$name" "$count" "$seconds" "$(awk "BEGIN { print $end - $start }")" \
        | tee -a "$out/results.tsv"
}

{
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    echo "CPUs: $(nproc)"
    printf 'setting\timages\tseconds\twall_seconds\n' >"$out/results.tsv"
    # The images: SMALL and BIG small JPEGs (the benchmark's own memory-run pool).
    "$py" - "$data" "$work" "$small" "$big" <<'EOF'
import sys
from pathlib import Path
from benchmarks.capbench.data import linked_subset, make_set
data, work, small, big = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pool = make_set(data / "memory", "small", big, seed=1)
for count in (small, big):
    linked_subset(pool[:count], work / f"small-{count}")
EOF
    # Model-only, decode and one whole run at 64 and 256 images a batch.
    for batch in 64 256; do
        [ "$(left)" -lt 40 ] && break
        timeout "$(left)" "$py" benchmarks/throughput.py --device "$device" --images "$small" \
            --data-dir "$data" --sets small --search-docs 0 --memory-sizes "" \
            --batch-size "$batch" --out "$out/throughput-b$batch.json" | tail -4
    done
    # capindex's defaults on a GPU, then each with one setting back as it was before.
    settings=(
        "defaults|"
        "b64|--batch-size 64"
        "pinned|--pin-memory"
        "w8|--workers 8"
    )
    round() {
        for setting in "${settings[@]}"; do
            name=${setting%%|*}
            read -ra options <<<"${setting#*|}"
            ingest "$name" "$work/small-$small" "$small" "${options[@]}" &&
                ingest "$name" "$work/small-$big" "$big" "${options[@]}"
        done
    }
    round
    # 12 MP JPEGs are decode-bound: the default workers against 8 (the cap before).
    if [ "$(left)" -gt 60 ]; then
        "$py" -c "from pathlib import Path; from benchmarks.capbench.data import make_set; \
make_set(Path('$data/large'), 'large', $small)" &&
        ingest large-defaults "$data/large" "$small" && ingest large-w8 "$data/large" "$small" --workers 8
    fi
    for ((r = 2; r <= ${ROUNDS:-2}; r++)); do round; done
    echo "== sustained rates (images the bigger run adds / its added seconds):"
    "$py" - "$out/results.tsv" "$small" "$big" <<'EOF'
import csv, sys
from collections import defaultdict
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
small, big = int(sys.argv[2]), int(sys.argv[3])
runs = defaultdict(list)
for row in rows:
    runs[row["setting"]].append(row)
for name, mine in runs.items():
    smalls = [float(r["seconds"]) for r in mine if int(r["images"]) == small]
    bigs = [float(r["seconds"]) for r in mine if int(r["images"]) == big]
    rates = [round((big - small) / (b - s), 1) for s, b in zip(smalls, bigs) if b > s]
    print(f"{name:20s} whole run of {small}: {[round(small / s, 1) for s in smalls]}/s, "
          f"sustained: {rates}/s")
EOF
} 2>&1 | tee "$out/log.txt"
if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/gpu-sustained.tgz" -C "$(dirname "$out")" "$(basename "$out")"
fi
exit 0
