"""The sampler: behaviour log-probs equal a recomputation from the model and the schedule."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList

from ead_core import EADSchedule, FixedSchedule
from ead_core.hf import EADTemperatureProcessor
from experiments.local.policy import build_policy, load_policy, save_policy
from experiments.local.rollout import (
    encode_prompts,
    group_prompts,
    length_passes,
    logprobs_by_length,
    sample,
    sequence_logprobs,
)

PROMPTS = ["3 5 7>22:", "12 3 4>6:", "9 9 1>80:"]


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    return load_policy(tiny_policy_dir)


@pytest.mark.parametrize(
    ("schedule", "step"),
    [
        (EADSchedule.preset("paper", c=1, d0=8), 0),
        (EADSchedule.preset("paper", c=1, d0=8), 30),
        (EADSchedule.preset("reference", c=2, d0=1, tau_min=0.3), 5),
        (FixedSchedule(0.6), 0),
        (FixedSchedule(1.2), 7),
    ],
)
def test_behavior_logprobs_equal_recomputation(policy, schedule, step):
    model, tok = policy
    rows, _ = group_prompts(PROMPTS, 8)
    r = sample(model, tok, rows, schedule, step, 12, torch.Generator().manual_seed(1))
    expected_taus = schedule.temperatures(torch.arange(12, dtype=torch.float32), step)
    torch.testing.assert_close(r.temperatures, expected_taus)
    with torch.no_grad():
        recomputed, _ = sequence_logprobs(model, r, temperatures=expected_taus)
        at_t1, entropy = sequence_logprobs(model, r, with_entropy=True)
    torch.testing.assert_close(r.behavior_logprobs, recomputed, atol=2e-5, rtol=1e-5)
    # pi_old and the entropy the trainer takes from the sampler equal the recomputation at temperature 1
    torch.testing.assert_close(r.target_logprobs, at_t1, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(r.entropy, entropy, atol=2e-5, rtol=1e-5)
    valid = r.response_mask.bool()
    if not torch.allclose(expected_taus, torch.ones(12)):
        assert (r.behavior_logprobs[valid] - at_t1[valid]).abs().max() > 1e-3  # temperature really applied
    assert torch.all(r.behavior_logprobs[~valid] == 0)


def test_masks_eos_and_padding(policy):
    model, tok = policy
    ended = []
    for width in (10, 3):  # most responses end within 10 tokens, none within 3 (every answer is longer)
        r = sample(model, tok, PROMPTS * 4, FixedSchedule(1.0), 0, width, torch.Generator().manual_seed(0))
        for i in range(len(r.texts)):
            m = r.response_mask[i]
            n = int(m.sum())
            assert torch.all(m[:n] == 1) and torch.all(m[n:] == 0)  # contiguous prefix
            ids = r.response_ids[i]
            if r.ended[i]:
                assert ids[n - 1] == tok.eos_token_id and tok.eos_token_id not in ids[: n - 1].tolist()
            else:
                assert n == width and tok.eos_token_id not in ids.tolist()
            assert torch.all(ids[n:] == tok.pad_token_id)
            assert r.texts[i] == tok.decode(ids[:n], skip_special_tokens=True)
            ended.append(bool(r.ended[i]))
    assert any(ended) and not all(ended)  # both branches above were checked


def test_sampling_is_reproducible_from_the_generator(policy):
    model, tok = policy
    s = EADSchedule.preset("paper", c=1, d0=8)
    a = sample(model, tok, PROMPTS, s, 3, 10, torch.Generator().manual_seed(5))
    b = sample(model, tok, PROMPTS, s, 3, 10, torch.Generator().manual_seed(5))
    assert torch.equal(a.response_ids, b.response_ids) and a.texts == b.texts


def test_greedy_matches_hf_generate(policy):
    model, tok = policy
    ids, mask = encode_prompts(tok, PROMPTS)
    r = sample(model, tok, PROMPTS, FixedSchedule(1.0), 0, 10, greedy=True)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    hf_texts = tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    assert r.texts == hf_texts


def test_repeated_prompts_in_any_order_and_early_ends(policy):
    """Rows that repeat a prompt share one prefill (its KV cache copied to them) and rows leave the decode batch when
    they end: with repeats out of order, greedy decoding equals HF generate row by row and the sampled behaviour
    log-probs still equal a recomputation."""
    model, tok = policy
    rows = [PROMPTS[i] for i in (2, 0, 2, 1, 0, 0, 1, 2)]
    ids, mask = encode_prompts(tok, rows)
    greedy = sample(model, tok, rows, FixedSchedule(1.0), 0, 12, greedy=True)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    assert greedy.texts == tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    s = EADSchedule.preset("paper", c=1, d0=8)
    r = sample(model, tok, rows * 4, s, 2, 12, torch.Generator().manual_seed(3))
    lengths = r.response_mask.sum(dim=1)
    assert r.ended.any() and lengths.min() < lengths.max()  # rows ended at different steps (the batch shrank)
    with torch.no_grad():
        recomputed, _ = sequence_logprobs(model, r, temperatures=r.temperatures)
    torch.testing.assert_close(r.behavior_logprobs, recomputed, atol=2e-5, rtol=1e-5)


def test_hf_processor_scales_scores_by_position():
    model, tok = build_policy("tiny", seed=0)
    s = EADSchedule.preset("paper", c=1, d0=4)
    ids, mask = encode_prompts(tok, PROMPTS)
    proc = EADTemperatureProcessor(s, step=2, prompt_length=ids.shape[1])
    out = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6,
        logits_processor=LogitsProcessorList([proc]), output_scores=True, output_logits=True,
        return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    for t, (scores, logits) in enumerate(zip(out.scores, out.logits)):
        torch.testing.assert_close(scores, logits / s.temperature(t, 2))


def test_policy_directory_round_trip(tmp_path):
    model, tok = build_policy("tiny", seed=3)
    save_policy(model, tok, tmp_path / "p")
    m2, t2 = load_policy(tmp_path / "p")
    x, mask = encode_prompts(tok, PROMPTS)
    torch.testing.assert_close(
        model(input_ids=x, attention_mask=mask).logits, m2(input_ids=x, attention_mask=mask).logits
    )
    assert t2.decode(t2.encode("3*5+7=22", add_special_tokens=False)) == "3*5+7=22"
    sizes = [sum(p.numel() for p in build_policy(s)[0].parameters()) for s in ("tiny", "small", "base")]
    assert sizes == sorted(sizes) and 0.8e6 < sizes[0] < 1.5e6 and 4e6 < sizes[1] < 7e6 and 15e6 < sizes[2] < 25e6


def test_logprobs_by_length_equal_one_pass_in_row_order_with_the_same_gradient(policy):
    """The update's passes of rows of similar length give each row's log-probs and the loss's gradient as one pass
    over all rows does (float rounding aside), rows in the rollout's order."""
    model, tok = policy
    rows, _ = group_prompts(PROMPTS * 3, 4)  # 36 rows of varied lengths: no call overhead -> a pass per length
    r = sample(model, tok, rows, FixedSchedule(1.0), 0, 12, torch.Generator().manual_seed(3))
    assert len(set(r.lengths.tolist())) > 2
    grads = []
    for fn in (lambda: sequence_logprobs(model, r)[0], lambda: logprobs_by_length(model, r, overhead=0)):
        model.zero_grad(set_to_none=True)
        lp = fn()
        (lp * torch.linspace(0.5, 1.5, lp.shape[0])[:, None]).sum().backward()  # row weights: order matters
        grads.append([p.grad.clone() for p in model.parameters()])
        if len(grads) == 1:
            one_pass = lp.detach()
        else:
            torch.testing.assert_close(lp.detach(), one_pass, atol=2e-5, rtol=1e-5)
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, atol=1e-4, rtol=1e-3)
    model.zero_grad(set_to_none=True)


def test_length_passes_split_where_padding_costs_more_than_a_call():
    assert length_passes([20] * 32, overhead=56) == [32]  # equal lengths: one pass
    assert length_passes([20] * 16 + [200] * 16, overhead=56) == [16, 16]  # two length groups: two passes
    assert length_passes([20] * 16 + [23] * 16, overhead=56) == [32]  # padding 16 x 3 < one more call
    assert length_passes([20] * 16 + [24] * 16, overhead=56) == [16, 16]  # padding 16 x 4 > one more call
    assert length_passes([10, 20, 30], overhead=0) == [1, 1, 1]  # no call cost: no padding at all
    # the cut is optimal: no other split into consecutive passes is cheaper
    widths, overhead = [3, 5, 9, 9, 14, 30, 31, 60], 12
    cost = lambda sizes: sum(overhead + k * widths[sum(sizes[: i + 1]) - 1] for i, k in enumerate(sizes))  # noqa: E731
    splits = [[]]
    for _ in widths:
        splits = [s + [1] for s in splits] + [s[:-1] + [s[-1] + 1] for s in splits if s]
    best = min(cost(s) for s in splits if sum(s) == len(widths))
    assert cost(length_passes(widths, overhead)) == best
