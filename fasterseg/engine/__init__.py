"""Training engine: losses, the train loop, checkpoints, run directories, cost, seeds, DDP.

Modules (import what you need; nothing heavy happens on ``import fasterseg.engine``):
``losses`` (OhemCrossEntropy, kd_loss, SegLoss), ``trainer`` (train), ``checkpoint`` (save/load
with weights_only, RNG capture/restore, load_model), ``rundir`` (config/env/metrics/summary),
``cost`` (warm-up timing estimate, peak memory), ``distributed`` (torchrun helpers),
``seed`` (seed_everything, deterministic mode).
"""
