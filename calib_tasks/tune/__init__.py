"""calib-tune: instruction tuning (full fine-tuning and LoRA) with calibration measured on every
epoch's checkpoint through the harness; see ``calib_tasks.tune.cli``."""
