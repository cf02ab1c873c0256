#!/bin/bash
cd /work/main
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false METAREC_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
/usr/bin/time -v .venv/bin/metarec bench coldstart-ml --k 5 --like-weight 1.0 \
    --method no-adapt --method finetune-all --method maml --method meta-sgd \
    --out /work/runs/ml-feedback-k5 > /work/runs/ml-feedback-k5.log 2>&1
