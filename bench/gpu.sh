#!/usr/bin/env bash
# The project's GPU checks in one go, for the rare minutes a CUDA machine is at hand (bench/README.md):
#   1. CUDA or a clear error, fast: nvidia-smi, then a torch that sees the GPU (.venv reused if its torch
#      has CUDA; no .venv: `make setup`, which takes PyPI's CUDA build where nvidia-smi exists; a CPU
#      torch in .venv: torch alone replaced by PyPI's CUDA build, nothing else installed);
#   2. the GPU-only tests (every test file under tests/ skipped without CUDA);
#   3. `ganpipe train jobs/quickstart.yaml` on 2 workers over NCCL in bf16 (one GPU each; with a single
#      GPU, 0.5 GPU each, which NCCL is expected to refuse, then the same run on 1 worker);
#   4. the widest job in jobs/ (most G+D parameters, at <= WIDEST_MAX_RES px) in bf16, same workers;
#   5. bench/gpu_throughput.py: images/s per GPU for every model kind at 32 and 64 px.
# Every step has its own timeout. Prints one markdown table and writes it, with the logs, to --out.
#
#   bash bench/gpu.sh [--out DIR] [--steps N] [--keep]
# Environment: GPU_PYTHON (an interpreter with a CUDA torch and this project installed, instead of
# .venv), WIDEST_MAX_RES (default 32), T_SETUP T_TESTS T_DATA T_TRAIN T_BENCH (seconds per step).
# Exit status: 0 all passed, 1 a step failed, 2 no CUDA here.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
OUT="${TMPDIR:-/tmp}/ganpipe-gpu-$(date +%Y%m%d-%H%M%S)"
STEPS=300
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
T_SETUP=${T_SETUP:-1200} T_TESTS=${T_TESTS:-300} T_DATA=${T_DATA:-180} T_TRAIN=${T_TRAIN:-300} T_BENCH=${T_BENCH:-360}
WIDEST_MAX_RES=${WIDEST_MAX_RES:-32}

die() { echo "error: $*" >&2; exit 2; }

# -- 1. CUDA, or stop here ----------------------------------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 \
  || die "no CUDA GPU on this machine: nvidia-smi is not installed. bench/gpu.sh runs only where a GPU is."
GPUS=$(timeout 30 nvidia-smi -L 2>/dev/null | grep -c '^GPU ') \
  || die "nvidia-smi found no GPU (or no driver): $(timeout 30 nvidia-smi -L 2>&1 | head -1)"
[ "$GPUS" -ge 1 ] || die "nvidia-smi lists no GPU"

mkdir -p "$OUT" || die "cannot create --out $OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ganpipe-gpu-work.XXXXXX")  # shards, checkpoints, MLflow store: not in OUT
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT
ROWS=()
FAILED=0
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); echo "[gpu.sh] $1: $2 ($3 s) $4"; }

cuda_torch() {  # prints torch's version and CUDA, succeeds only if it sees a GPU
  timeout 180 "$1" -c 'import sys, torch; print(torch.__version__, "CUDA", torch.version.cuda); sys.exit(0 if torch.cuda.is_available() else 1)' 2>&1
}

t0=$SECONDS
if [ -n "${GPU_PYTHON:-}" ]; then
  PY=$GPU_PYTHON
  cuda_torch "$PY" >/dev/null || die "GPU_PYTHON=$PY: its torch sees no CUDA device ($(cuda_torch "$PY" | tail -1))"
  setup="GPU_PYTHON, nothing installed"
else
  PY=.venv/bin/python
  if [ -x "$PY" ] && cuda_torch "$PY" >/dev/null; then
    setup=".venv reused, nothing installed"
  else
    if [ ! -x "$PY" ]; then
      timeout "$T_SETUP" make setup >"$OUT/setup.log" 2>&1 || die "make setup failed or timed out (${T_SETUP} s): see $OUT/setup.log"
      setup="make setup"
    fi
    if ! cuda_torch "$PY" >/dev/null; then
      # A CPU build in .venv (PyTorch's CPU index, or a CPU wheel in pip's find-links): replace torch
      # alone with PyPI's CUDA build, pip's local configuration (find-links, extra indexes) set aside.
      TORCH_VERSION=$(sed -n 's/^TORCH_VERSION *?= *//p' Makefile)
      pypi() { env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_NO_INDEX -u PIP_CONSTRAINT \
                 PIP_CONFIG_FILE=/dev/null timeout "$T_SETUP" .venv/bin/pip install -q --index-url https://pypi.org/simple "$@"; }
      { pypi --no-deps --force-reinstall "torch==$TORCH_VERSION" && pypi "torch==$TORCH_VERSION"; } >>"$OUT/setup.log" 2>&1 \
        || die "torch in .venv has no CUDA and PyPI's CUDA build of torch $TORCH_VERSION could not be installed: see $OUT/setup.log"
      setup="${setup:+$setup, }torch $TORCH_VERSION replaced by PyPI's CUDA build"
    fi
    cuda_torch "$PY" >/dev/null || die "torch in .venv still sees no CUDA device: $(cuda_torch "$PY" | tail -1)"
  fi
fi
PY=$(command -v "$PY")  # absolute: the runs start in a work folder
case "$PY" in /*) ;; *) PY=$REPO/$PY ;; esac
GANPIPE=$(dirname "$PY")/ganpipe
[ -x "$GANPIPE" ] || die "$GANPIPE not found: the project is not installed in that environment (make setup)"
row "setup" "ok" $((SECONDS - t0)) "$GPUS × $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1); $(cuda_torch "$PY" | tail -1); $setup"

# -- 2. GPU-only tests: every test file with a CUDA skip marker ----------------------------------------
t0=$SECONDS
mapfile -t GPU_TESTS < <(grep -rlE 'skipif\(not torch\.cuda\.is_available\(\)' tests --include='*.py' | sort)
if [ ${#GPU_TESTS[@]} -eq 0 ]; then
  row "GPU tests" "FAILED" 0 "no test file under tests/ has a CUDA skip marker"; FAILED=1
else
  timeout "$T_TESTS" "$PY" -m pytest -q -p no:cacheprovider -rs "${GPU_TESTS[@]}" >"$OUT/gpu_tests.log" 2>&1
  rc=$?
  result=$(grep -E '(passed|failed|skipped|error|no tests ran).* in [0-9.]+s' "$OUT/gpu_tests.log" | tail -1 | tr -d '=' | xargs)
  if [ $rc -eq 0 ] && ! grep -q 'skipped' <<<"$result"; then
    row "GPU tests" "ok" $((SECONDS - t0)) "${result}: ${GPU_TESTS[*]}"
  else
    [ $rc -eq 124 ] && result="timed out after ${T_TESTS} s"
    row "GPU tests" "FAILED" $((SECONDS - t0)) "${result:-exit $rc} (see gpu_tests.log; a skip means CUDA was not seen)"; FAILED=1
  fi
fi

# -- 3./4. ganpipe train over NCCL in bf16 ------------------------------------------------------------
t0=$SECONDS
DATA=$WORK/digits
if timeout "$T_DATA" "$GANPIPE" data pack digits --out "$DATA" >"$OUT/data.log" 2>&1; then
  row "pack digits (32 px)" "ok" $((SECONDS - t0)) ""
else
  row "pack digits (32 px)" "FAILED" $((SECONDS - t0)) "see data.log"; FAILED=1
fi

# train NAME JOB WORKERS GPU_PER_WORKER [--set ...]: one ganpipe run in its own local Ray, read back
# from MLflow. No worker-group restarts (max_failures 0): a check should fail at once, not retry.
train() {
  local name=gpu-$1 log="$OUT/gpu-$1.log" job=$2 workers=$3 gpu=$4; shift 4
  local rc t=$SECONDS run_id line
  (cd "$WORK" && env -u RAY_ADDRESS timeout --kill-after=30 "$T_TRAIN" "$GANPIPE" train "$REPO/$job" --name "$name" \
      --tracking-uri "sqlite:///$WORK/mlflow.db" --no-progress \
      --set "data.root=$DATA" --set scaling.use_gpu=true --set scaling.precision=bf16 \
      --set "scaling.num_workers=$workers" --set "scaling.resources_per_worker={CPU: 2, GPU: $gpu}" \
      --set "train.steps=$STEPS" --set scaling.max_failures=0 --set "checkpoint.storage_path=$WORK/ray_results" "$@") >"$log" 2>&1
  rc=$?
  run_id=$(grep -oE 'MLflow run +[0-9a-f]{32}' "$log" | grep -oE '[0-9a-f]{32}' | head -1)
  if [ $rc -eq 0 ] && [ -n "$run_id" ]; then
    line=$("$PY" bench/gpu_runs.py summary --uri "sqlite:///$WORK/mlflow.db" --run-id "$run_id" --steps "$STEPS" 2>&1)
    rc=$?
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    line="timed out after ${T_TRAIN} s"
  else
    # the first error line, and the one after it when indented (the spec's errors name the field there)
    line="exit $rc: $(awk '/Duplicate GPU detected|error: |Error: /{print; if ((getline nxt) > 0 && nxt ~ /^ /) print nxt; exit}' "$log" | tr -s '\n ' '  ' | cut -c1-240)"
  fi
  TRAIN_LINE="$line"
  TRAIN_SECS=$((SECONDS - t))
  return $rc
}

QS_SETS=(--set train.log_every=10 --set train.sample_every="$STEPS" --set eval.num_samples=1000)
if [ "$GPUS" -ge 2 ]; then
  WORKERS=2 PER=1
  if train qs-2-workers jobs/quickstart.yaml 2 1 "${QS_SETS[@]}"; then
    row "quickstart, 2 workers × 1 GPU, NCCL, bf16, $STEPS steps" "ok" "$TRAIN_SECS" "$TRAIN_LINE"
  else
    row "quickstart, 2 workers × 1 GPU, NCCL, bf16, $STEPS steps" "FAILED" "$TRAIN_SECS" "$TRAIN_LINE (see log)"; FAILED=1
  fi
else
  WORKERS=1 PER=1
  # Ray places both workers on the one GPU (CUDA_VISIBLE_DEVICES=0 for each); NCCL refuses two ranks
  # on one device ("Duplicate GPU detected", ray-project/ray#48012). Run it to see, then on 1 worker.
  if train qs-2-workers-half-gpu jobs/quickstart.yaml 2 0.5 "${QS_SETS[@]}"; then
    row "quickstart, 2 workers × 0.5 GPU, NCCL, bf16, $STEPS steps" "ok" "$TRAIN_SECS" "$TRAIN_LINE (NCCL accepted two ranks on one GPU)"
  elif grep -qE 'Duplicate GPU|ncclInvalidUsage' "$OUT/gpu-qs-2-workers-half-gpu.log"; then
    row "quickstart, 2 workers × 0.5 GPU, NCCL, bf16" "refused, as expected" "$TRAIN_SECS" "NCCL: two ranks on one GPU (Duplicate GPU detected)"
  else
    row "quickstart, 2 workers × 0.5 GPU, NCCL, bf16, $STEPS steps" "FAILED" "$TRAIN_SECS" "$TRAIN_LINE (see log)"; FAILED=1
  fi
  if train qs-1-worker jobs/quickstart.yaml 1 1 "${QS_SETS[@]}"; then
    row "quickstart, 1 worker × 1 GPU, NCCL, bf16, $STEPS steps" "ok" "$TRAIN_SECS" "$TRAIN_LINE"
  else
    row "quickstart, 1 worker × 1 GPU, NCCL, bf16, $STEPS steps" "FAILED" "$TRAIN_SECS" "$TRAIN_LINE (see log)"; FAILED=1
  fi
fi

t0=$SECONDS
WIDEST=$("$PY" bench/gpu_runs.py widest --max-resolution "$WIDEST_MAX_RES" 2>"$OUT/widest.log")
if [ -z "$WIDEST" ]; then
  row "widest recipe" "FAILED" $((SECONDS - t0)) "no job found (see widest.log)"; FAILED=1
else
  RES=$("$PY" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['data']['resolution'])" "$WIDEST")
  if [ "$RES" != 32 ]; then  # the digits again, packed at the job's resolution
    timeout "$T_DATA" "$GANPIPE" data pack digits --out "$WORK/digits-$RES" --resolution "$RES" >>"$OUT/data.log" 2>&1 || FAILED=1
  fi
  data_dir=$DATA; [ "$RES" != 32 ] && data_dir=$WORK/digits-$RES
  label="$(basename "$WIDEST" .yaml) ($(grep "^$(basename "$WIDEST"):" "$OUT/widest.log" | cut -d: -f2 | xargs)), $WORKERS worker(s), NCCL, bf16, $STEPS steps, global batch $((64 * WORKERS))"
  if train widest "$WIDEST" "$WORKERS" "$PER" --set "data.root=$data_dir" --set eval=null \
       --set "train.global_batch=$((64 * WORKERS))" --set train.log_every=10 --set "train.sample_every=$STEPS" \
       --set "train.checkpoint_every=$STEPS" --set train.eval_every=0 --set tracking.experiment=gpu-check; then
    row "$label" "ok" "$TRAIN_SECS" "$TRAIN_LINE"
  else
    row "$label" "FAILED" "$TRAIN_SECS" "$TRAIN_LINE (see gpu-widest.log)"; FAILED=1
  fi
fi

# -- 5. throughput per GPU -----------------------------------------------------------------------------
t0=$SECONDS
timeout "$T_BENCH" "$PY" bench/gpu_throughput.py --device cuda --warmup 8 --steps 32 --out "$OUT" >"$OUT/gpu_throughput.log" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
  row "throughput bench" "ok" $((SECONDS - t0)) "table below"
else
  [ $rc -eq 124 ] && why="timed out after ${T_BENCH} s" || why="exit $rc"
  row "throughput bench" "FAILED" $((SECONDS - t0)) "$why (see gpu_throughput.log; the rows it finished are below)"; FAILED=1
fi

# -- the table -----------------------------------------------------------------------------------------
{
  echo "bench/gpu.sh on $(hostname), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null)"
  echo
  echo "| step | result | s | details |"
  echo "|---|---|---:|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  if [ -s "$OUT/gpu_throughput.md" ]; then cat "$OUT/gpu_throughput.md"
  else grep '^| ' "$OUT/gpu_throughput.log" 2>/dev/null; fi
} | tee "$OUT/gpu.md"
echo
echo "table and logs: $OUT"
exit $FAILED
