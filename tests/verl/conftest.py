"""Shared fixtures of the verl backend tests: verl's composed config per preset, a tiny chat tokenizer.

These tests run in the main environment (.venv), where verl 0.9.1 is installed and vLLM is not; nothing
here needs a GPU, vLLM, Ray or the network.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("verl", reason="verl is not installed in this environment")

from experiments.verl.config import PRESETS, preset  # noqa: E402

MLFLOW_URI = "http://mlflow.invalid:5000"


@pytest.fixture(scope="session")
def composed() -> dict[str, object]:
    """verl's ppo_trainer config composed with each preset's overrides and validated by verl (once each).

    The presets get a tracking URI and run id so the MLflow wiring is composed and validated too.
    """
    from experiments.verl.compose import compose_and_validate

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # verl warns that the critic is disabled (GRPO advantages need none)
        for name in PRESETS:
            cfg = preset(name, **{"tracking.uri": MLFLOW_URI, "tracking.run_id": "0123456789abcdef"})
            out[name] = (cfg, compose_and_validate(cfg))
    return out


@pytest.fixture(scope="session")
def chat_tokenizer():
    """A word-level fast tokenizer with a chat template (built locally: no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"] + [f"w{i}" for i in range(64)]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}"
    )
    return fast
