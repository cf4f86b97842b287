"""Build a tiny random Llama model directory that both transformers and vLLM load by path.

Used by the vLLM tests and by ``benchmarks/bench_vllm.py``. The tokenizer is a word-level vocabulary
``w0 .. wN`` built with the ``tokenizers`` library (whitespace split), so prompts are just strings of
those words and no download is needed. The output-layer weights are scaled up so that logits are far
from uniform: temperature changes then move log-probs a lot, which keeps the tests discriminative.

    python tests/vllm/tiny_model.py OUT_DIR [--vocab 512 --hidden 64 --layers 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]


def word(i: int) -> str:
    """The i-th ordinary word of the tiny vocabulary (token id ``i + len(SPECIAL_TOKENS)``)."""
    return f"w{i}"


def build_tiny_llama(
    out_dir: str | Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    logit_scale: float = 40.0,
    seed: int = 0,
) -> Path:
    """Write config, float32 safetensors weights and a fast tokenizer to ``out_dir``; return the path.

    Idempotent: if ``out_dir`` already holds a model built with the same arguments it is reused.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    spec = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "logit_scale": logit_scale,
        "seed": seed,
    }
    stamp = out / "tiny_model_spec.json"
    if stamp.exists() and json.loads(stamp.read_text()) == spec:
        return out
    out.mkdir(parents=True, exist_ok=True)

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for i in range(vocab_size - len(SPECIAL_TOKENS)):
        vocab[word(i)] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
    model.save_pretrained(out)
    stamp.write_text(json.dumps(spec))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    args = ap.parse_args()
    path = build_tiny_llama(
        args.out_dir, vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads
    )
    print(path)


if __name__ == "__main__":
    main()
