#!/usr/bin/env bash
# kiln's GPU checks, from a bundle built by `cargo xtask gpu-bundle`: no Rust toolchain and no
# network needed. Each step runs under `timeout` within one overall budget; logs go to $OUT
# (default: ./out beside this script); a summary table is printed last.
#
#   ./run.sh [BUDGET_SECONDS]      (default 540)
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$HERE/out}"
mkdir -p "$OUT"
BUDGET="${1:-540}"
START=$(date +%s)
export KILN_DATA_DIR="$HERE/data"          # MNIST as gzip IDX files
export KILN_CUDA_KERNEL_DIR="$HERE/kernels" # sm_90 CUBINs, used only if the host has no NVRTC
export KILN_CACHE_DIR="$OUT/cache"          # kernels compiled here by the host's NVRTC
export RUST_BACKTRACE=1
ROWS=()

# step NAME LIMIT_SECONDS SUMMARY_FUNCTION COMMAND...
step() {
    local name=$1 limit=$2 summarize=$3
    shift 3
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then
        ROWS+=("$name|not run|0|out of budget")
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "==> $name (limit ${limit}s): $*"
    local t0=$(date +%s.%N)
    timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    local secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    local status=ok
    [ $rc -ne 0 ] && status="FAIL($rc)"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="TIMEOUT"
    tail -n 3 "$OUT/$name.log" | sed 's/^/    /'
    ROWS+=("$name|$status|$secs|$($summarize "$OUT/$name.log")")
}

tests_summary() {
    local skipped=$(grep -c "skipped: no CUDA device" "$1")
    local result=$(grep -E "^test result" "$1" | awk '{p += $4; f += $6} END { printf "%d passed, %d failed", p, f }')
    [ "$skipped" -gt 0 ] && result="$result, $skipped skipped (no device)"
    echo "$result"
}
train_summary() {
    local acc=$(grep -Eo "test accuracy [0-9.]+ %" "$1" | tail -1)
    # The epoch rows: "epoch loss train% test% seconds samples/s"; the mean of the seconds.
    local per_epoch=$(awk '/^ +[0-9]+ +[0-9.]+ +[0-9.]+% +[0-9.]+% +[0-9.]+/ { s += $5; n++ } END { if (n) printf "%.2f s/epoch over %d epochs", s / n, n }' "$1")
    if [ -z "$acc" ]; then
        # No result: the last line is the error (or where it stopped).
        echo "$(tail -n 1 "$1" | cut -c1-100)"
        return
    fi
    echo "$acc; ${per_epoch:-no epoch finished}"
}
bench_summary() {
    grep -q "skipped: no CUDA device" "$1" && { echo "skipped (no device)"; return; }
    # criterion: "<name>\n  time: [low median high]" (or on one line); the median of each.
    awk '/^cuda/ { name = $1 } /time:/ { for (i = 1; i <= NF; i++) if ($i ~ /^\[/) { printf "%s %s %s; ", name, $(i + 2), $(i + 3); break } }' "$1" | sed 's/; $//'
}
env_summary() {
    grep -E "^(gpu|driver|nvrtc|cublas):" "$1" | tr '\n' ' '
}

# Run by `bash -c` under timeout (timeout cannot run a shell function).
ENVIRONMENT='
    echo "gpu: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
    echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
    echo "nvrtc: $(ls /usr/local/cuda/lib64/libnvrtc.so.* 2>/dev/null | head -1) $(ls /usr/local/cuda/include/cuda_bf16.h 2>/dev/null)"
    echo "cublas: $(ls /usr/local/cuda/lib64/libcublas.so.* 2>/dev/null | head -1)"
    echo "libcuda: $(ldconfig -p 2>/dev/null | grep -m1 libcuda.so.1)"
    nvidia-smi 2>&1 | head -15
    echo "glibc: $(ldd --version 2>&1 | head -1)"
    "$0" --version
'


step environment 30 env_summary bash -c "$ENVIRONMENT" "$HERE/bin/mnist"
step unit-tests 60 tests_summary "$HERE/tests/unit"
step conformance 200 tests_summary "$HERE/tests/conformance" --nocapture
step mlp-f32 120 train_summary "$HERE/bin/mnist" --device cuda --save "$OUT/mlp-f32.safetensors" --loss-log "$OUT/mlp-f32.loss"
step e2e-tests 120 tests_summary "$HERE/tests/cuda" --nocapture
step cnn-f32 150 train_summary "$HERE/bin/mnist" --device cuda --model cnn --epochs 3 --save "$OUT/cnn-f32.safetensors"
step mlp-bf16 120 train_summary "$HERE/bin/mnist" --device cuda --dtype bf16 --save "$OUT/mlp-bf16.safetensors"
step cnn-bf16 150 train_summary "$HERE/bin/mnist" --device cuda --model cnn --epochs 3 --dtype bf16 --save "$OUT/cnn-bf16.safetensors"
step benches 180 bench_summary "$HERE/benches/cuda" --bench --noplot --warm-up-time 1 --measurement-time 3

{
    echo
    echo "kiln GPU checks, $(date -u +%Y-%m-%dT%H:%MZ), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    printf "%-12s %-9s %8s  %s\n" step status seconds result
    for row in "${ROWS[@]}"; do
        IFS='|' read -r name status secs result <<<"$row"
        printf "%-12s %-9s %8s  %s\n" "$name" "$status" "$secs" "$result"
    done
} | tee "$OUT/summary.txt"
