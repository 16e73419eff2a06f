"""Build a tiny random causal LM with a freshly trained byte-level BPE tokenizer, fully offline.

The model is a 2-layer GPT-2 with a short context window, ``WINDOW`` tokens by default (so
rolling windows are exercised on short documents), saved with ``save_pretrained`` so that the
harness's ``hf`` backend loads it by path exactly as it loads a hub model.
"""

from __future__ import annotations

from pathlib import Path

from support.data import mini_lines

#: The tiny model's context window (``n_positions``) unless a test asks for another.
WINDOW = 64

TRAINING_TEXT = """\
The following are multiple choice questions (with answers) about anatomy.
Answer: A B C D. The capital of France is Paris. Paris is the capital of France.
Berlin is the capital of Germany. Madrid is located in Spain. The language of Brazil is
Portuguese. The currency of Japan is the yen. Water boils at one hundred degrees.
Alice was born in London and works as a physician. Bob plays the piano.
The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 .,;:!?'"()-
"""


def _training_lines() -> list[str]:
    """A little text and the package's bundled mini data: real words become single tokens."""
    return TRAINING_TEXT.splitlines() + mini_lines("mmlu_mini.jsonl") + mini_lines("clm_mini.jsonl")


# The ChatML template of SmolLM2-135M-Instruct (and Qwen): the prompt ends with the assistant
# header and a newline, "<|im_start|>assistant\n".
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(
    path: Path,
    *,
    n_positions: int = WINDOW,
    vocab_size: int = 2000,
    n_embd: int = 32,
    n_layer: int = 2,
    chat_template: str | None = None,
) -> Path:
    """Write a tokenizer and a randomly initialised GPT-2 (seed 0) to ``path`` and return it.

    The defaults make a model that runs in milliseconds; benchmarks ask for a wider, deeper one so
    that the forward pass dominates as it does for real models. With ``chat_template`` the
    tokenizer carries it, and ChatML's ``<|im_start|>``/``<|im_end|>`` as special tokens.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_lines(), trainer=trainer)
    if chat_template is not None:
        tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=n_positions,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(path)

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(fast),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=max(2, n_embd // 64),
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        initializer_range=0.2,  # peaky enough that confidences spread over [0, 1]
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(path)
    return path


#: Tiny configurations of the decoder families whose output projection ``token_stats`` splits
#: (``calib_tasks.token_stats.hf_projection``), each with what sets it apart after ``lm_head``.
FAMILY_CONFIGS = {
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"tie_word_embeddings": False}),
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": False}),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {"tie_word_embeddings": True, "final_logit_softcapping": 5.0, "head_dim": 16},
    ),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 3.0}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 0.25}),
}


def build_tiny_family(path: Path, family: str, tokenizer_dir: Path) -> Path:
    """Write a randomly initialised (seed 0) 2-layer model of ``family`` (a key of
    ``FAMILY_CONFIGS``) with ``WINDOW`` positions and the tokenizer of ``tokenizer_dir`` to
    ``path``, and return it."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    config_name, model_name, extra = FAMILY_CONFIGS[family]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=WINDOW,
        initializer_range=0.5,  # logits of a few units, so that soft-capping and scales matter
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        **extra,
    )
    torch.manual_seed(0)
    getattr(transformers, model_name)(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
