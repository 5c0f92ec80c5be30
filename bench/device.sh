#!/usr/bin/env bash
# The benchmarks too heavy for 2 CPU cores, on a lent CUDA machine (no network there). Python
# packages its image lacks travel as wheels (.gpu/whl), MiniLM as .gpu/minilm, Debian's nginx and
# openssl with their libraries as .gpu/sys, the reviews as .gpu/reviews.parquet; results go to
# $OUT. First the DP-SGD recipes at ε 8 (bench/recipes.py, one seed) while bench/quality.py runs;
# the best recipe then goes through bench/privacy.py (real federations, 3 seeds).
set -uo pipefail
cd "$(dirname "$0")/.."
for need in .gpu/minilm .gpu/sys .gpu/reviews.parquet .gpu/whl; do
    [ -e "$need" ] || { echo "missing $need: carry it" >&2; exit 2; }
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
command -v nginx >/dev/null && command -v openssl >/dev/null || export PATH=$PATH:$PWD/.gpu/sys/bin
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 FEDLLM_BENCH_MINILM=$PWD/.gpu/minilm
OUT=${OUT:-runs/device}
DATA=.gpu/reviews.parquet
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import torch, transformers, peft, opacus, flwr; print(torch.__version__,
  transformers.__version__, peft.__version__, opacus.__version__, flwr.__version__)"
  which nginx openssl; } 2>&1 | tee "$OUT/machine.txt"
started=$SECONDS
timeout $((540 - SECONDS)) python3 bench/quality.py --data $DATA --parallel 4 --threads 1 --out "$OUT/quality.json" \
    --workdir /tmp/bq >"$OUT/quality.log" 2>&1 &
python3 bench/recipes.py --data $DATA --stage dp --physical 64 --workers 9 --workdir /tmp/br \
    --out "$OUT/recipes.json" 2>"$OUT/recipes.log" | tail -50
read -r params dp_lr < <(python3 - "$OUT/recipes.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))["summary"]
best = max(summary, key=lambda name: summary[name]["mean"])
print(best.split()[1], best.split()[2][2:])
PY
)
echo "after $((SECONDS - started)) s, chosen: dp-params $params dp-lr $dp_lr" | tee -a "$OUT/machine.txt"
FEDLLM_DP_PARAMS=$params FEDLLM_DP_LR=$dp_lr timeout $((570 - SECONDS)) \
    python3 bench/privacy.py --data $DATA --parallel 8 --threads 1 \
    --only sgd --only big --workdir /tmp/bp --out "$OUT/privacy.json" --plot "$OUT/privacy.png" \
    2>"$OUT/privacy.log" | tail -40
wait
echo "done after $((SECONDS - started)) s"; tail -30 "$OUT/quality.log"
