"""The base model of a tuning run, as a folder that transformers, peft and the harness load.

A model given as a GGUF file is loaded once (transformers dequantizes it into an ordinary
float model) and saved as a plain transformers folder: transformers refuses ``save_pretrained``
on a model loaded from GGUF, each harness process would otherwise spend ~30 s dequantizing it
again, and every checkpoint (and the epoch-0 point) then starts from exactly these weights.
Any other model is used where it is (hub name or folder, at its revision).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

BASE_RECORD = "calib_tune_base.json"


@dataclass(frozen=True)
class BaseModel:
    """Where the base model is loaded from: ``model`` (hub name or folder) at ``revision``."""

    model: str
    revision: str | None = None

    def load_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``from_pretrained`` besides the model."""
        return {"revision": self.revision} if self.revision else {}


def materialize_gguf(model: str, gguf_file: str, out_dir: Path) -> BaseModel:
    """Save the GGUF model ``model``/``gguf_file`` (a folder or hub name holding the file) as a
    plain transformers folder ``out_dir`` (weights in the dtype they load in, tokenizer), unless
    ``out_dir`` already holds that conversion. Written to a temporary folder, then renamed."""
    source = {"model": model, "gguf_file": gguf_file}
    record = out_dir / BASE_RECORD
    if record.exists() and json.loads(record.read_text(encoding="utf-8")) == source:
        return BaseModel(str(out_dir))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(model, gguf_file=gguf_file)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    plain.load_state_dict(loaded.state_dict())
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / BASE_RECORD).write_text(json.dumps(source) + "\n", encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return BaseModel(str(out_dir))
