export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false METAREC_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
/usr/bin/time -v /work/main/.venv/bin/metarec meta-train --base /work/runs/choice/ml-latest-small-base --data ml-latest-small --algorithm auto --k 5 --fold 0 --time-budget 120 --config /work/runs/choice/vf03.toml --out /work/runs/choice/ml-latest-small-auto-vf03 --overwrite
