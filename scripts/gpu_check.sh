#!/usr/bin/env bash
# The GPU figures and the GPU-only tests in one go, on one GPU, in a few minutes
# (docs/benchmarks.md, "GPU check"). Run from the repository root:
#
#   scripts/gpu_check.sh [OUT_DIR]          # OUT_DIR defaults to $OUT, else ./gpu-check
#
# Needs CUDA JAX, Flax, Optax, NumPy, psutil and nvidia-ml-py (the lent GPU machines have them;
# elsewhere `pip install -e '.[gpu]'`). Wheels in ./.whl (pydantic and its needs, which the
# engine's workspace model uses) are installed into /tmp/site first when present. It writes,
# each step's failure noted but not stopping the next:
#   nvidia-smi.txt     the card, driver and memory
#   check_gpu.json     `nsbi worker --check-gpu --json`: JAX's devices and NVML's GPUs
#   pytest_gpu.log     tests/gpu (@pytest.mark.gpu): fit sums GPU == CPU, training on the GPU
#   bench_train.json   `nsbi bench train`, 7x1500 and 3x64, M = 1, 8, 32, float32 and bfloat16
#   bench_fit.json     `nsbi bench fit --events 1e7 --nps 100` in device memory
#   gpu_check.log      everything printed, with each step's wall time and exit status
# Every step has its own time limit; together they stay under the device tool's 10 minutes.
# Smaller sizes for a smoke run on a CPU: EVENTS=2e4 NPS=5 MEMBERS=1 MODELS=3x64 scripts/gpu_check.sh
set -u -o pipefail
OUT_DIR=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
EVENTS=${EVENTS:-1e7} NPS=${NPS:-100} MEMBERS=${MEMBERS:-1,8,32} MODELS=${MODELS:-7x1500,3x64}
# CHUNK: events per chunk of the fit's passes (default: the model's, 16384). Larger chunks cut
# the per-chunk overhead on a GPU at ~12 kB of temporaries per event at 100 NPs (CHUNK=131072:
# ~1.6 GB); measured on the CPU only (where 16384 is faster), so the default stays.
CHUNK_ARGS=()
[ -n "${CHUNK:-}" ] && CHUNK_ARGS=(--chunk-size "$CHUNK")
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
status=0

step() { # step NAME TIMEOUT_S COMMAND...: run, log, time; remember a failure
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(date +%s)
    echo "=== $name: $*" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=$?
    echo "=== $name: exit $rc after $(($(date +%s) - t0)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || status=1
}

if compgen -G ".whl/*.whl" >/dev/null; then
    step wheels 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

step nvidia-smi 15 bash -c "set -o pipefail; nvidia-smi | tee '$OUT_DIR/nvidia-smi.txt'"
step versions 30 "$PY" -c "import jax, flax, optax, numpy; print('jax', jax.__version__, \
'flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, jax.devices())"
step check-gpu 60 bash -c "'$PY' -m backend.commands.worker --check-gpu --json \
    > '$OUT_DIR/check_gpu.json'; rc=\$?; cat '$OUT_DIR/check_gpu.json'; exit \$rc"
step pytest-gpu 120 bash -c "set -o pipefail; '$PY' -m pytest -q -p no:cacheprovider -m gpu tests/gpu \
    -o addopts=-ra 2>&1 | tee '$OUT_DIR/pytest_gpu.log'"
step bench-train 180 "$PY" -m benchmarks.train --models "$MODELS" --members "$MEMBERS" \
    --strategies vmap --dtype float32,bfloat16 --timed-calls 3 --no-progress \
    --json "$OUT_DIR/bench_train.json"
step bench-fit 180 "$PY" -m benchmarks.fit --events "$EVENTS" --nps "$NPS" --no-iminuit \
    --no-full-hessian --refit-nps 0 --repeat 2 "${CHUNK_ARGS[@]}" --json "$OUT_DIR/bench_fit.json"

echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo some steps failed; \
    see $LOG)" | tee -a "$LOG"
exit $status
