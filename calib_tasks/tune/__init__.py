"""calib-tune: alignment with trl (SFT and DPO, full fine-tuning and LoRA, SFT -> DPO chained)
with calibration measured on every epoch's checkpoint through the harness; see
``calib_tasks.tune.cli``."""
