"""Task YAMLs and small bundled data of lm-eval-calibration (package data, no code)."""
