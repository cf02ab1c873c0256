set -x
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false METAREC_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
M=/work/main/.venv/bin/metarec
for d in ml-latest-small amazon-office; do
  /usr/bin/time -v $M meta-train --base /work/runs/choice/$d-base --data $d --algorithm auto --k 5 --fold 0 --time-budget 120 --out /work/runs/choice/$d-auto --overwrite
done
