#!/bin/bash
cd /work/main
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false METAREC_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
/usr/bin/time -v .venv/bin/metarec bench coldstart-ml --data amazon-office --k 5 --policy user-embedding \
    --method no-adapt --method finetune-all --method maml --method meta-sgd \
    --out /work/runs/office-ue-k5 > /work/runs/office-ue-k5.log 2>&1
/usr/bin/time -v .venv/bin/metarec bench coldstart-ml --data amazon-office --k 5 --policy all \
    --method no-adapt --method finetune-all --method maml --method meta-sgd \
    --out /work/runs/office-all-k5 > /work/runs/office-all-k5.log 2>&1
