"""The preallocated-cache decoder equals the Hugging Face forward it replaces, step by step."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import experiments.local.rollout as rollout_module
from ead_core import EADSchedule
from experiments.local.decode import LlamaDecoder
from experiments.local.policy import load_policy, never_end
from experiments.local.rollout import _positions, encode_prompts, group_prompts, sample

PROMPTS = ["3 5 7>22:", "12 3 4>6:", "9 9 1>80:", "1 2>3:"]  # different lengths: left padding


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    return load_policy(tiny_policy_dir)


@torch.no_grad()
def test_every_step_equals_the_model_forward_with_padding_and_rows_leaving(policy):
    """Teacher-forced through 10 tokens, with rows leaving: the decoder's logits equal the model's own incremental
    forward (DynamicCache, attention mask, position ids) at every step, before and after its lazy compaction."""
    model, tok = policy
    model.eval()
    ids, mask = encode_prompts(tok, PROMPTS)
    b, p, steps = ids.shape[0], ids.shape[1], 10
    forced = torch.randint(3, len(tok), (b, steps), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True)
    cache = out.past_key_values
    dec = LlamaDecoder(model, ids, mask, steps)
    dec.fill(cache)
    rows = torch.arange(b)
    attn = torch.ones(b, p + steps, dtype=mask.dtype)
    attn[:, :p] = mask
    pos = _positions(mask)[:, -1:] + 1
    for t in range(steps):
        # row 2 ends after step 2 (3 of 4 rows live: the decoder keeps it in its cache, unread), then row 0 after
        # step 5 (2 of 4 live: it compacts); the model's cache drops them at once
        for end_at, keep in ((3, torch.tensor([0, 1, 3])), (6, torch.tensor([1, 2]))):
            if t == end_at:
                rows, attn, pos = rows[keep], attn[keep], pos[keep]
                dec.select(keep)
                cache.batch_select_indices(keep)
                assert dec.keys[0].shape[0] == (4 if t == 3 else 2)
        tok_t = forced[rows, t]
        ours = dec.step(tok_t, pos, t)
        ref = model(input_ids=tok_t[:, None], attention_mask=attn[:, : p + t + 1], position_ids=pos,
                    past_key_values=cache, use_cache=True).logits[:, -1]  # fmt: skip
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        pos = pos + 1


def test_sampler_paths_agree(policy, monkeypatch):
    """The sampler draws the same tokens with the same log-probs whether it decodes with LlamaDecoder or with the
    Hugging Face forward (the fallback for other architectures)."""
    model, tok = policy
    rows, _ = group_prompts(PROMPTS, 4)
    schedule = EADSchedule.preset("paper", c=1, d0=8)
    fast = sample(model, tok, rows, schedule, 3, 16, torch.Generator().manual_seed(5))
    monkeypatch.setattr(rollout_module.LlamaDecoder, "supports", staticmethod(lambda m: False))
    slow = sample(model, tok, rows, schedule, 3, 16, torch.Generator().manual_seed(5))
    assert fast.texts == slow.texts
    torch.testing.assert_close(fast.response_mask, slow.response_mask)
    for a, b in [(fast.behavior_logprobs, slow.behavior_logprobs), (fast.target_logprobs, slow.target_logprobs),
                 (fast.entropy, slow.entropy)]:  # fmt: skip
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _llama(**overrides) -> LlamaForCausalLM:
    cfg = dict(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=4, max_position_embeddings=64)  # fmt: skip
    cfg.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**cfg))


def test_supports_only_the_architecture_it_implements(policy):
    assert LlamaDecoder.supports(policy[0])
    assert LlamaDecoder.supports(_llama())
    assert not LlamaDecoder.supports(_llama(num_key_value_heads=2))  # grouped-query attention
    assert not LlamaDecoder.supports(_llama(attention_bias=True))
    assert not LlamaDecoder.supports(_llama(mlp_bias=True))
    assert not LlamaDecoder.supports(_llama(hidden_act="gelu"))
    hooked = _llama()
    hooked.model.layers[0].mlp.register_forward_hook(lambda _m, _i, out: out * 0)
    assert not LlamaDecoder.supports(hooked)  # a hook inside the stack would be skipped
    head_hooked = _llama()
    head_hooked.lm_head.register_forward_hook(lambda _m, _i, out: out.index_fill_(-1, torch.tensor([2]), -1e9))
    assert LlamaDecoder.supports(head_hooked)  # the LM head runs as a module: its hook applies (next test)


@torch.no_grad()
def test_a_hook_on_the_lm_head_applies(policy):
    """Benchmarks suppress EOS with a hook on the LM head (``never_end``); the decoder's logits go through it."""
    model, tok = policy
    ids, mask = encode_prompts(tok, PROMPTS)
    config_eos = model.config.eos_token_id
    handle = never_end(model, tok.eos_token_id)
    try:
        dec = LlamaDecoder(model, ids, mask, 2)
        dec.fill(
            model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True).past_key_values
        )
        logits = dec.step(torch.full((len(PROMPTS),), 5), _positions(mask)[:, -1:] + 1, 0)
    finally:
        handle.remove()
        model.config.eos_token_id = config_eos
    assert torch.all(logits[:, tok.eos_token_id] == -1e9)
