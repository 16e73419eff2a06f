from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.tiny_model import CHATML_TEMPLATE, build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 (``WINDOW`` = 64-token window) and its byte-level BPE tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_long_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny GPT-2 with a 2048-token window: whole few-shot prompts fit, untruncated."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_gpt2_long"), n_positions=2048)


@pytest.fixture(scope="session")
def tiny_long_lm(tiny_long_model_dir: Path):
    """The harness's own hf backend on the long-window tiny model."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_long_model_dir), device="cpu", batch_size=16)


@pytest.fixture(scope="session")
def tiny_chat_lm(tmp_path_factory: pytest.TempPathFactory):
    """The harness's hf backend on a long-window tiny model whose tokenizer has a ChatML chat
    template (the prompt ends with "<|im_start|>assistant\\n", as SmolLM2-Instruct's does)."""
    from lm_eval.models.huggingface import HFLM

    path = tmp_path_factory.mktemp("tiny_gpt2_chat")
    build_tiny_model(path, n_positions=2048, chat_template=CHATML_TEMPLATE)
    return HFLM(pretrained=str(path), device="cpu", batch_size=16)


@pytest.fixture(scope="session")
def task_manager():
    """A harness TaskManager that knows this package's tasks (not the harness's own: indexing
    its thousands of YAMLs costs ~20 s)."""
    from calib_tasks import package_tasks

    return package_tasks()
