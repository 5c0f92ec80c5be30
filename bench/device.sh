#!/usr/bin/env bash
# The benchmarks too heavy for 2 CPU cores, on a lent CUDA machine (no network there). Python
# packages its image lacks travel as wheels (.gpu/whl), MiniLM as .gpu/minilm, Debian's nginx and
# openssl as .gpu/sys, the reviews as .gpu/reviews.parquet (cut after the 256th token); results to
# $OUT. A small real federation (its logs if a ClientApp fails); the DP-SGD recipe search on
# frozen features (bench/dp_features.py) at 1,000 and 4,000 records a site, 3 seeds.
set -uo pipefail
cd "$(dirname "$0")/.."
for need in .gpu/minilm .gpu/sys .gpu/reviews.parquet .gpu/whl; do
    [ -e "$need" ] || { echo "missing $need: carry it" >&2; exit 2; }
done
# The weights travel xz-compressed (the 64 MiB limit of what travels).
[ -e .gpu/minilm/model.safetensors ] || python3 -c "import lzma; open('.gpu/minilm/model.safetensors', \
    'wb').write(lzma.open('.gpu/minilm-model.safetensors.xz').read())" || exit 2
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
# A small real federation first: what its nodes logged if a ClientApp fails on CUDA.
python3 -c "import sys; sys.path.insert(0, 'bench'); from runner import write_reviews as w; \
    from pathlib import Path; w(Path('$DATA'), 300, 100, 1, Path('/tmp/small.parquet'))"
(timeout 120 python3 -m fedllm up --nodes 3 --rounds 1 --model "$FEDLLM_BENCH_MINILM" \
    --dataset /tmp/small.parquet --run-dir /tmp/diag --set max-length=64 \
    --set fraction-evaluate=0 --set val-fraction=0 >/tmp/diag.out 2>&1
 { tail -5 /tmp/diag.out; python3 -c "import json; h=json.load(open('/tmp/diag/history.json'));
print(json.dumps(h[-1].get('exchanges', {}), indent=1)[:3000])"
   grep -h -B2 -A30 "Traceback" /tmp/diag/state/logs/*.log | tail -120; } >"$OUT/diag.txt" 2>&1) &
# The DP-SGD recipe search on frozen features, 3 x 1,000 and 3 x 4,000 reviews, 3 seeds.
timeout $((265 - SECONDS)) python3 bench/dp_features.py --data $DATA --threads 8 \
    --out "$OUT/dp-features.json" 2>"$OUT/dp-features.log" | tail -45
wait
echo "done after $((SECONDS - started)) s"; head -c 3000 "$OUT/diag.txt"
