# The image-heavy arm of the v2 DiT: the build's DiT command (scripts/build_default_model.py, V2["dit"]) with its
# own --out and --still-views 6, from the build's step-50,786 weights. Resumes from runs/ab-stills/dit/checkpoints.
cd "$(dirname "$0")/../.." && python -m soraflow.cli train dit --data runs/default-model/cache --out runs/ab-stills/dit \
    --device cpu --threads 1 --preset small --num-layers 4 --num-attention-heads 4 --ffn-dim 1024 --patch-size 4 \
    --steps 250000 --batch-tokens 512 --lr 0.0003 --warmup-steps 1000 --timestep-shift 4.0 --terminal-prob 0.1 \
    --ema-decay 0.9995 --pooled-text --object-weight 10 --checkpoint-every 2000 --still-views 6 --stop-at-step "${1:-60000}"
