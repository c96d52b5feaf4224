#!/usr/bin/env bash
# Train and evaluate; the built-in demo by default.
#
#   bash run.sh                 set up .venv, build + preprocess the demo set, pre-train its backbones on a pretext
#                               set (once, cached), train CTEN on it, evaluate
#   bash run.sh mbt | mart      the same with the MART backbone alone (MBT), or MART stage 1 + 2
#   bash run.sh test            set up .venv and run the test suite
#   bash run.sh gpu-check       on a new GPU machine: every preset's precisions, memory, largest batch, NCCL, the
#                               loader against the step, GPU JPEG decoding (tools/gpu_check.py; JSON in OUT)
#   ROOT=/data/VE8 bash run.sh cten --visual-weights r3d101_KM_200ep.pth \
#       --audio-weights resnet18-f37072fd.pth       (preset <mode>_ve8_official, the release's setting; PRESET=
#                                                    cten_ve8_paper for the paper's; non-demo presets refuse to
#                                                    start without their weight files)
#   GPUS=2 ROOT=... PRESET=cten_ek6_official bash run.sh cten ...   (torchrun, one process per GPU)
#   NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 MASTER_PORT=29500 GPUS=8 ROOT=... bash run.sh mart ...
#                                                             (several machines: run on each with its NODE_RANK)
#
# Extra arguments go to main.py. Variables: ROOT (dataset root), PRESET, GPUS (processes per node), NNODES,
# NODE_RANK, MASTER_ADDR, MASTER_PORT (static rendezvous on node 0) or RDZV_ENDPOINT (host:port, c10d rendezvous;
# RDZV_ID names the job), VENV (default .venv), DEMO_DIR (default data/demo).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
DEMO_DIR=${DEMO_DIR:-data/demo}

setup() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  echo "== setting up $VENV from requirements.txt"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
}

demo_data() {
  if [ -f "$DEMO_DIR/data/ve8.json" ]; then return; fi
  echo "== building the demo set in $DEMO_DIR"
  "$VENV/bin/python" tools/make_demo.py --out "$DEMO_DIR" --per-class 10
  "$VENV/bin/python" tools/preprocess --src "$DEMO_DIR/videos" --dst "$DEMO_DIR/data" \
      --split-lists "$DEMO_DIR" --short-side 128 --workers 2
}

demo_weights() {
  # CTEN's demo backbones, trained once on a pretext set of their own (tools/pretrain_demo.py; cached in
  # $DEMO_DIR/weights, a second call skips them) -> the main.py flags that load them, one per line. The MBT / MART
  # demo still starts from random weights: the video ViT's pretext plan does not learn yet (README, issue #20).
  local w="$DEMO_DIR/weights"
  "$VENV/bin/python" tools/pretrain_demo.py --method cten --out "$w" >&2
  printf '%s\n' --visual-weights "$w/r3d_pretext.pth" --audio-weights "$w/audio_resnet_pretext.pth"
}

torchrun_args() {
  # one machine: --standalone; several: NNODES and NODE_RANK with MASTER_ADDR/PORT, or a c10d RDZV_ENDPOINT
  local nodes=${NNODES:-1}
  if [ "$nodes" -eq 1 ] && [ -z "${RDZV_ENDPOINT:-}" ]; then
    echo "--standalone --nproc_per_node ${GPUS:-1}"
  elif [ -n "${RDZV_ENDPOINT:-}" ]; then
    echo "--nnodes $nodes --nproc_per_node ${GPUS:-1} --rdzv_backend c10d --rdzv_endpoint $RDZV_ENDPOINT --rdzv_id ${RDZV_ID:-vea}"
  else
    : "${MASTER_ADDR:?NNODES > 1 needs MASTER_ADDR (the address of node 0) or RDZV_ENDPOINT}"
    echo "--nnodes $nodes --node_rank ${NODE_RANK:?NNODES > 1 needs NODE_RANK (0 .. NNODES-1) on each node} --nproc_per_node ${GPUS:-1} --master_addr $MASTER_ADDR --master_port ${MASTER_PORT:-29500}"
  fi
}

MODE=${1:-cten}
[ $# -gt 0 ] && shift
setup
PY="$VENV/bin/python"
case "$MODE" in
  test)
    exec "$PY" -m pytest "$@" ;;
  setup)
    exit 0 ;;
  gpu-check)
    exec "$PY" tools/gpu_check.py --out "${OUT:-runs/gpu_check.json}" "$@" ;;
  cten|mbt|mart)
    if [ -z "${ROOT:-}" ]; then
      demo_data
      WEIGHTS=()
      if [ "$MODE" = cten ]; then
        mapfile -t WEIGHTS < <(demo_weights)
        [ ${#WEIGHTS[@]} -eq 4 ] || { echo "the demo's pretext pre-training failed (above)" >&2; exit 1; }
      fi
      # the demo run is rerun from scratch each time (--overwrite), unless the flags say --resume
      set -- --preset "${PRESET:-${MODE}_demo}" --gt-segments "$DEMO_DIR/key_spans.json" --overwrite "${WEIGHTS[@]}" "$@"
    else
      set -- --preset "${PRESET:-${MODE}_ve8_official}" --root "$ROOT" "$@"
    fi
    if [ "${NNODES:-1}" -gt 1 ] || [ "${GPUS:-1}" -gt 1 ]; then
      TORCHRUN_ARGS=$(torchrun_args)  # stops here (set -e) when a multi-node variable is missing
      # shellcheck disable=SC2086  # word splitting of the flags is intended
      exec "$VENV/bin/torchrun" $TORCHRUN_ARGS main.py --method "$MODE" "$@"
    fi
    exec "$PY" main.py --method "$MODE" "$@" ;;
  *)
    echo "usage: bash run.sh [cten|mbt|mart|test|setup|gpu-check] [main.py flags...]" >&2; exit 2 ;;
esac
