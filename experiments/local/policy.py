"""The tiny policy: a character-level tokenizer and a Llama-style causal LM in named sizes.

Everything is saved as an ordinary Hugging Face model directory (config.json, weights,
tokenizer.json, tokenizer_config.json), so transformers, vLLM and verl load it by path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from experiments.local.tasks import ALPHABET

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIALS = [PAD, BOS, EOS]

# name -> (hidden, layers, heads, intermediate); parameter counts printed by `python -m experiments.local.policy`.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (128, 4, 4, 512),  # 1.05M
    "small": (256, 6, 8, 768),  # 5.1M
    "base": (512, 6, 8, 1536),  # 20.5M
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer over the tasks' alphabet (a BPE model with no merges: one token per char)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(ALPHABET))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left", model_max_length=512
    )
    return tok


def model_config(size: str, tokenizer: PreTrainedTokenizerFast, max_positions: int = 256) -> LlamaConfig:
    """LlamaConfig for a named size; the vocabulary comes from the tokenizer."""
    if size not in SIZES:
        raise ValueError(f"model size must be one of {sorted(SIZES)}, got {size!r}")
    hidden, layers, heads, inter = SIZES[size]
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def build_policy(size: str, seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A freshly initialised policy of the named size and its tokenizer (deterministic in ``seed``)."""
    tok = build_tokenizer()
    cfg = model_config(size, tok)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def save_policy(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, path: str | Path) -> Path:
    """Write an HF model directory (safetensors weights + tokenizer) loadable by path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device of the local backend's ``device`` setting: ``auto`` is CUDA when torch sees a GPU, else CPU.

    Raises ValueError naming ``device`` for a value not in DEVICES, or for ``cuda`` on a machine without a GPU."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ValueError("device must be 'auto' or 'cpu' here: device='cuda' but torch.cuda.is_available() is False")
    return torch.device("cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu")


def load_policy(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Load a policy directory written by ``save_policy`` (or any HF causal-LM directory) onto ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device) if isinstance(device, str) else device
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(dev)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    return model, tok


def never_end(model: torch.nn.Module, eos_token_id: int) -> torch.utils.hooks.RemovableHandle:
    """Mask EOS out of the LM head's logits (a forward hook; the sampler's ``LlamaDecoder`` calls the head as a module,
    so it applies there too) and unset the config's EOS: every response runs to its length limit, so benchmarks
    compare conditions on the same work. Returns the hook's handle."""
    eos = torch.tensor([eos_token_id])
    model.config.eos_token_id = None
    return model.lm_head.register_forward_hook(lambda _m, _i, out: out.index_fill_(-1, eos.to(out.device), -1e9))


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    for name in SIZES:
        m, _ = build_policy(name)
        print(f"{name:6s} {n_parameters(m) / 1e6:6.2f}M parameters")
