#!/usr/bin/env bash
# The issue-10 / issue-5 GPU measurements in one go, for a session that is lent an H100/H200.
#
#   bash benchmarks/gpu_suite.sh fetch            # HERE (PyPI reachable): wheels the GPU image lacks -> .whl/
#   bash benchmarks/gpu_suite.sh run              # ON THE GPU MACHINE: install .whl/, run everything -> $OUT
#   bash benchmarks/gpu_suite.sh run --dry-run    # anywhere: the same sequence with tiny settings (CPU test)
#   SUITE_STEPS="e2e val" SUITE_BUDGET_S=200 bash benchmarks/gpu_suite.sh run   # a subset, a shorter budget
#   (E2E_IMAGES=N: the e2e epoch's image count, default 1024.) Seen on an H200 (2026-11-27): the whole suite
#   took 479 s of command time, the machine's start ~1 min more; e2e ~140 s, each train-step row 50-80 s.
#   The whole-run step (e2e_run: yolov8n b64 @640, mosaic, 3 epochs with validation, vs model.train) is second in
#   line; alone: SUITE_STEPS="e2e_run" (not measured on a GPU yet; budget ~300 s with its compile-cache warm-up).
#
# Device tool call (one call: ~1-2 min start + <= 560 s suite (SUITE_BUDGET_S); carry the wheels):
#   run(command="bash benchmarks/gpu_suite.sh run", carry=[".whl"], timeout_s=600)
# Output under $OUT (./gpu_out when OUT is unset): results.jsonl (one JSON line per result, each script's
# stdout), log.txt (everything), RESULTS.md (the rows the scripts appended; merge them into
# benchmarks/RESULTS.md), env.txt (GPU, driver, versions). Each step has its own time limit so that one
# hang cannot eat the lease; steps run in priority order (train step first).
#
# The GPU image (KINDS.md) has jax 0.11.2 (CUDA 13), flax, optax, orbax, opencv-headless, torch 2.11,
# torchvision, matplotlib, scipy, psutil, pyyaml, requests, etils, cloudpickle, protobuf; it lacks grain
# (+ array-record, portpicker), ml-collections, tensorboardX and ultralytics (+ ultralytics-thop,
# ultralytics-platform, polars). Python there is 3.12.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
WHEELS=(grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 ml-collections==1.1.0 tensorboardX==2.6.5
        ultralytics==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99)
# Not carried: polars + polars-runtime-32 (a 54 MB wheel: with it the tree passes the 64 MiB transfer limit).
# Ultralytics imports polars only when it reads results.csv back after an epoch (save_model) and in
# to_df/to_csv, i.e. after e2e.py's timed window; e2e.py keeps its timing marks when that import fails.

fetch() {
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
  mkdir -p .whl
  local py="${PYTHON:-python3}"
  for w in "${WHEELS[@]}"; do
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
      --platform any -d .whl "$w" || { echo "could not download $w" >&2; return 1; }
  done
  du -sh .whl
  ls -l .whl
}

step() {  # step NAME LIMIT_S CMD... : run with a time limit, JSON lines to results.jsonl, all output to log.txt
  local name="$1" limit="$2"; shift 2
  if [ -n "${SUITE_STEPS:-}" ] && [[ " $SUITE_STEPS " != *" $name "* ]]; then return; fi  # a chosen subset only
  local left=$(( DEADLINE - $(date +%s) ))  # the whole suite fits one device call (600 s at most)
  if [ "$left" -lt 30 ]; then echo "=== $name skipped: ${left}s left of the suite budget" | tee -a "$OUT/log.txt"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$OUT/log.txt"
  timeout --kill-after=10 "$limit" "$@" 2> >(tee -a "$OUT/log.txt" >&2) \
    | tee -a "$OUT/log.txt" | grep --line-buffered '^{' >> "$OUT/results.jsonl"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || echo "=== $name exited $rc" | tee -a "$OUT/log.txt"
}

run() {
  local dry=0
  [ "${1:-}" = "--dry-run" ] && dry=1
  OUT="${OUT:-$REPO/gpu_out}"
  mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
  DEADLINE=$(( $(date +%s) + ${SUITE_BUDGET_S:-560} ))
  [ "$dry" = 1 ] && DEADLINE=$(( $(date +%s) + 3600 ))
  local py="${PYTHON:-python3}" ulpy
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ "$dry" = 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  ulpy="${UL_PYTHON:-$py}"
  [ "$dry" = 1 ] && { py="${PYTHON:-$REPO/.venv/bin/python}"; ulpy="${UL_PYTHON:-$REPO/../ulvenv/bin/python}"; }
  ulpy="$(command -v "$ulpy")" || { echo "no interpreter $ulpy" >&2; exit 1; }  # the scripts want a path
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # yolojax for Grain's worker processes too (no install)
  cp benchmarks/RESULTS.md "$OUT/.results_before.md" 2>/dev/null || true
  {
    date -u; nvidia-smi 2>/dev/null | head -15; "$py" -c "import jax; print('jax', jax.__version__, jax.devices())"
    "$py" -c "import importlib.metadata as m; print(*(f'{p} {m.version(p)}' for p in ('flax', 'optax', \
      'orbax-checkpoint', 'grain', 'ml-collections', 'opencv-python-headless', 'numpy')))"
    "$ulpy" -c "import torch, ultralytics; print('torch', torch.__version__, 'ultralytics', ultralytics.__version__)"
  } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
  local TS="$py benchmarks/train_step.py --ultralytics-python=$ulpy"
  local E2E_RUN="$py benchmarks/e2e.py --whole-run gpu-b64-640 --ultralytics-python=$ulpy"
  if [ "$dry" = 1 ]; then  # tiny shapes, same sequence, CPU
    local T="--width 0.0625 --imgsz 64 --batch 2 --steps 2 --warmup 1 --no-record"
    export YOLOJAX_BENCH_JAX_CACHE="$REPO/.cache/jax_bench"
    step train_n_f32 900 $TS $T --vs-ultralytics
    step train_n_bf16 900 $TS $T --dtype bfloat16
    step e2e 900 "$py" benchmarks/e2e.py --images 8 --imgsz 64 --batch 4 --workers 0 --width 0.0625 \
      --ultralytics-python="$ulpy" --no-record
    step e2e_run 900 $E2E_RUN --width 0.0625 --images 8 --imgsz 64 --batch 4 \
      --epochs 2 --repeats 1 --no-record
    step val 900 "$py" benchmarks/val_bench.py --images 8 --imgsz 64 --batch 4 --train-epochs 1 --train-imgsz 64 \
      --ultralytics-python="$ulpy" --no-record
    step color 900 "$py" benchmarks/color_check.py --batch 2 --imgsz 64 --runs 2 --no-record
    step loader 900 "$py" benchmarks/data_pipeline.py --workers 1 --batch 8 --images 16 --epochs 2 --imgsz 64 \
      --hsv-on-device --warp-on-device --ul-python "$ulpy"
    step train_n_bf16_aug 900 $TS $T --dtype bfloat16 --batch 4 --warp-on-device --hsv-on-device
  else
    export YOLOJAX_BENCH_JAX_CACHE=/tmp/jax_cache
    # Priority order (the issue's targets first); limits sum to ~790 s, so the last ones run only in what is left.
    step train_n_bf16 200 $TS --model yolov8n --batch 64 --imgsz 640 --dtype bfloat16 --steps 20 --vs-ultralytics
    # whole training runs (validation and saving included), yolojax with a warm compile cache, vs model.train
    step e2e_run 300 $E2E_RUN --device 0 --workers 8 --repeats 1
    step e2e 180 "$py" benchmarks/e2e.py --images ${E2E_IMAGES:-1024} --imgsz 640 --batch 64 --workers 8 --ultralytics-python="$ulpy"
    # the loaders alone at e2e's settings: is the epoch input-bound? (yolojax with everything on the host, with the
    # mosaic + warp + flips + jitter left to the device (the GPU default); Ultralytics)
    step loader 120 "$py" benchmarks/data_pipeline.py --workers 8 --batch 64 --images 1536 --epochs 2 \
      --warp-on-device --ul-python "$ulpy" --results benchmarks/RESULTS.md
    # exactness of the device jitter and warp on this GPU (fused multiply-adds?) and their cost per batch
    step color 40 "$py" benchmarks/color_check.py --batch 64 --imgsz 640
    # what the augmentation adds to the step (augment_ms: composing + warping + jittering a b64 batch alone)
    step train_n_bf16_aug 80 $TS --model yolov8n --batch 64 --imgsz 640 --dtype bfloat16 --steps 20 --warp-on-device \
      --hsv-on-device
    step train_s_bf16 110 $TS --model yolov8s --batch 64 --imgsz 640 --dtype bfloat16 --steps 20 --vs-ultralytics
    step train_n_f32 90 $TS --model yolov8n --batch 64 --imgsz 640 --dtype float32 --steps 20 --vs-ultralytics
    step val 150 "$py" benchmarks/val_bench.py --train-epochs 10 --train-imgsz 640 --device 0 --images 512 --imgsz 640 \
      --batch 32 --workers 4 --ultralytics-python="$ulpy"
    step breakdown_n_bf16 90 $TS --model yolov8n --batch 64 --imgsz 640 --dtype bfloat16 --steps 10 --breakdown
    step train_n_bf16_b128 60 $TS --model yolov8n --batch 128 --imgsz 640 --dtype bfloat16 --steps 10
  fi
  # The RESULTS.md rows this run appended (for merging into the repo's file).
  if [ -f "$OUT/.results_before.md" ]; then
    diff "$OUT/.results_before.md" benchmarks/RESULTS.md | sed -n 's/^> //p' > "$OUT/RESULTS.md"
    rm -f "$OUT/.results_before.md"
  fi
  echo "=== done; $(wc -l < "$OUT/results.jsonl") JSON lines in $OUT/results.jsonl"
}

case "${1:-}" in
  fetch) fetch ;;
  run) shift; run "$@" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
