#!/usr/bin/env bash
# RecBole 1.2.1 beside metarec on the exact warm-ml split, in its own virtual environment.
#
#   bench/peers/recbole/run.sh [OUT_DIR]          (default: metarec-runs/peers/recbole)
#
# 1. exports the warm-ml leave-one-out split of ml-latest-small through metarec
#    (metarec data export --format recbole);
# 2. creates .venv-recbole (never metarec's dependencies) with the known working pins;
# 3. runs RecBole's SASRec (cross-entropy) and BPR with full ranking, stopping at convergence or
#    after the training budget (default 1800 s), and writes recbole.json;
# 4. prints one table beside metarec's warm-ml figures when OUT_DIR/../warm-ml/metrics.json
#    exists (metarec bench warm-ml --out OUT_DIR/../warm-ml).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-$repo/metarec-runs/peers/recbole}"
budget="${RECBOLE_BUDGET_S:-1800}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"  # absolute: RecBole runs inside it
metarec="${METAREC:-$repo/.venv/bin/metarec}"
"$metarec" data export --format recbole --out "$out/data/ml_latest_small" --name ml_latest_small
venv="$repo/.venv-recbole"
if [ ! -x "$venv/bin/python" ]; then
  python3.11 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.13.0 recbole==1.2.1 numpy==1.26.4 pandas==2.3.3 \
    setuptools==80.10.2 ray==2.6.3
fi
export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1  # RecBole reloads its own checkpoints with torch.load
cd "$out"  # RecBole writes log/ and log_tensorboard/ into the working directory
for model in BPR SASRec; do
  /usr/bin/time -v "$venv/bin/python" "$here/run_recbole.py" --model "$model" \
    --data "$out/data" --out "$out" --budget "$budget" 2> "$out/$model.time.log"
  grep -E "Maximum resident set size" "$out/$model.time.log" || true
done
"$venv/bin/python" "$here/run_recbole.py" --table --out "$out" \
  --metarec "$out/../warm-ml/metrics.json"
