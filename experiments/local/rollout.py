"""Batched sampling with a KV cache, the temperature of each response position from a schedule.

EAD and fixed temperatures take the same path: the schedule gives tau_t for response position t
(every row of a batch is at the same t at each decoding step, so tau_t is one number per step).
The sampler records the behaviour log-probs log softmax(z_t / tau_t)[y_t] that TIS needs, the
response mask (1 up to and including EOS) and whether each response ended with EOS.
Both the sampler and ``sequence_logprobs`` run the model in eval mode (no dropout), whatever mode it is in, so the
behaviour, pi_old and training log-probs are one deterministic function of the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ead_core.metrics import token_entropy
from ead_core.schedule import Schedule
from experiments.local.decode import LlamaDecoder


@dataclass
class Rollout:
    """A batch of sampled responses (rows in prompt order; response tensors right-padded)."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, R) pad after EOS
    response_mask: torch.Tensor  # (B, R) float, 1 for generated tokens incl. EOS
    behavior_logprobs: torch.Tensor  # (B, R) log-prob of each sampled token under the behaviour policy
    temperatures: torch.Tensor  # (R,) tau_t used at each response position (logits-dependent: mean over live rows)
    ended: torch.Tensor  # (B,) bool: stopped by EOS (not by the length limit)
    texts: list[str]  # decoded responses without special tokens
    row_temperatures: torch.Tensor | None = None  # (B, R) tau of every sampled token (None in hand-built subsets)
    # From the sampler's own logits, 0 outside the mask (None in hand-built subsets): the log-prob of each sampled token
    # at temperature 1 (pi_old while the model is unchanged) and the entropy of the temperature-1 policy there.
    target_logprobs: torch.Tensor | None = None  # (B, R)
    entropy: torch.Tensor | None = None  # (B, R)

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)

    def subset(self, idx: torch.Tensor) -> Rollout:
        """The rows ``idx`` (in that order) with what a loss needs: ids, masks, behaviour log-probs, temperatures."""
        pick = lambda x: x[idx]  # noqa: E731
        return Rollout(
            pick(self.prompt_ids),
            pick(self.prompt_mask),
            pick(self.response_ids),
            pick(self.response_mask),
            pick(self.behavior_logprobs),
            self.temperatures,
            pick(self.ended),
            [self.texts[i] for i in idx.tolist()],
        )


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS + prompt characters, left-padded to a common width."""
    ids = [[tokenizer.bos_token_id, *tokenizer.encode(p, add_special_tokens=False)] for p in prompts]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], dtype=torch.long)
    return input_ids, mask


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run the block with ``model`` in eval mode (dropout off) and restore its previous mode afterwards.

    Gradients still flow: a loss built inside the block can be back-propagated after it.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    schedule: Schedule,
    step: int,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
    greedy: bool = False,
    position_offset: int = 0,
) -> Rollout:
    """Sample one response per prompt (repeat prompts for groups), annealing tau along the response.

    ``position_offset`` is the number of response tokens already inside the prompts (a branching
    study continues a response from its first K tokens): the schedule then counts positions from
    the ORIGINAL response start, t = position_offset + generated so far.

    Work saved without changing what is computed for any row: each distinct prompt is prefilled once and its KV
    cache copied to the rows that repeat it (a group), a row leaves the decode batch (its cache rows are
    dropped) once it has sampled EOS, so the batch shrinks as responses end, and a Llama policy decodes on a
    preallocated cache with fused weights (``LlamaDecoder``) instead of Hugging Face's per-token forward.
    """
    dev = model.device  # every tensor of the rollout lives where the model does (``generator`` must too)
    prompt_ids, prompt_mask = (x.to(dev) for x in encode_prompts(tokenizer, prompts))
    b, p = prompt_ids.shape
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    adaptive = schedule.needs_logits and not greedy  # entropy_target: tau per row from this step's logits
    row_taus = torch.ones(b, max_new_tokens, device=dev)
    if not schedule.needs_logits:
        taus = schedule.temperatures(torch.arange(max_new_tokens, dtype=torch.float32) + position_offset, step).to(dev)
    out_ids = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=dev)
    out_lp, out_t1, out_ent, out_mask = (torch.zeros(b, max_new_tokens, device=dev) for _ in range(4))
    first_row: dict[str, int] = {}  # each distinct prompt -> its first row
    for i, q in enumerate(prompts):
        first_row.setdefault(q, i)
    slot = {q: k for k, q in enumerate(first_row)}
    first = torch.tensor(list(first_row.values()), device=dev)
    inverse = torch.tensor([slot[q] for q in prompts], device=dev)
    # the attention mask of every step is a prefix of one preallocated mask (no per-step concatenation)
    attn = torch.ones(b, p + max_new_tokens, dtype=prompt_mask.dtype, device=dev)
    attn[:, :p] = prompt_mask
    pos = _positions(prompt_mask)[:, -1:] + 1  # position id of the next token of each row
    rows = torch.arange(b, device=dev)  # the rows still generating, in the order of the cache's batch
    with eval_mode(model):
        u_mask = prompt_mask[first]
        out = model(input_ids=prompt_ids[first], attention_mask=u_mask, position_ids=_positions(u_mask), use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1, :]
        grouped = len(first) < b  # one prefill per distinct prompt, its cache copied to each of its rows
        # decode on a preallocated cache (experiments/local/decode.py) where the architecture allows it
        fast = LlamaDecoder(model, prompt_ids, prompt_mask, max_new_tokens) if LlamaDecoder.supports(model) else None
        if fast is not None:
            fast.fill(cache, inverse if grouped else None)
            del cache
        elif grouped:
            cache.batch_select_indices(inverse)
        if grouped:
            logits = logits[inverse]
        for t in range(max_new_tokens):
            z = logits.float()
            if adaptive:
                tau = schedule.temperatures_for_logits(z, position_offset + t, step)
                row_taus[rows, t] = tau
                tau = tau[:, None]
            else:
                tau = 1.0 if greedy else taus[t]
            logp = torch.log_softmax(z / tau, dim=-1)
            if greedy:
                tok = logp.argmax(dim=-1)
            else:
                tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            out_ids[rows, t] = tok
            out_lp[rows, t] = logp.gather(1, tok[:, None]).squeeze(1)
            logp1 = logp if isinstance(tau, float) and tau == 1.0 else torch.log_softmax(z, dim=-1)
            out_t1[rows, t] = logp1.gather(1, tok[:, None]).squeeze(1)
            out_ent[rows, t] = token_entropy(z)
            out_mask[rows, t] = 1.0
            if t == max_new_tokens - 1:
                break
            ended = tok == eos
            if bool(ended.any()):  # drop the finished rows from the batch and from the KV cache
                keep = (~ended).nonzero().squeeze(1)
                if len(keep) == 0:
                    break
                rows, tok, attn, pos = rows[keep], tok[keep], attn[keep], pos[keep]
                if fast is not None:
                    fast.select(keep)
                else:
                    cache.batch_select_indices(keep)
            if fast is not None:
                logits = fast.step(tok, pos, t)
            else:
                out = model(
                    input_ids=tok[:, None],
                    attention_mask=attn[:, : p + t + 1],
                    position_ids=pos,
                    past_key_values=cache,
                    use_cache=True,
                )
                logits = out.logits[:, -1, :]
            pos = pos + 1
    texts = tokenizer.batch_decode(out_ids.tolist(), skip_special_tokens=True)
    done = (out_ids == eos).any(dim=1)
    if schedule.needs_logits:  # per position: the mean tau of the rows still generating there (1.0 where none is)
        live = out_mask.sum(dim=0)
        taus = torch.where(live > 0, (row_taus * out_mask).sum(dim=0) / live.clamp(min=1), 1.0)
    else:
        row_taus = taus.expand(b, -1)
    return Rollout(prompt_ids, prompt_mask, out_ids, out_mask, out_lp, taus, done, texts, row_taus, out_t1, out_ent)


def response_logits(model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
    """Float logits (B, r, V) that predict the rollout's response tokens, from one forward pass in eval mode.

    Only the columns that matter run through the model: leading columns that are padding in every row, and response
    columns after the last live token (r: the last column any row generated, + 1)."""
    mask, full = rollout.response_mask, rollout.response_ids.shape[1]
    live = mask.any(dim=0).nonzero()
    r = int(live[-1]) + 1 if len(live) else min(1, full)
    lead = int(rollout.prompt_mask.any(dim=0).int().argmax())  # first column holding a prompt token in some row
    p = rollout.prompt_ids.shape[1] - lead
    resp = rollout.response_ids[:, :r]
    ids = torch.cat([rollout.prompt_ids[:, lead:], resp], dim=1)
    attn = torch.cat([rollout.prompt_mask[:, lead:], torch.ones_like(resp)], dim=1)
    with eval_mode(model):
        logits = model(input_ids=ids, attention_mask=attn, position_ids=_positions(attn), use_cache=False).logits
    return logits[:, p - 1 : p + r - 1, :].float()


def sequence_logprobs(
    model: PreTrainedModel,
    rollout: Rollout,
    temperatures: torch.Tensor | None = None,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the rollout's response tokens under ``model`` in eval mode (with grad if enabled by the caller).

    ``temperatures`` (R,) divides the logits per response position, (B, R) per token (a logits-dependent
    schedule's ``row_temperatures``); None: temperature 1.0, the target policy. Entropy (of the temperature-1
    policy) is returned when ``with_entropy``.
    Positions outside the response mask are 0. The logits come from ``response_logits`` (the result is padded back to
    the rollout's width with zeros).
    """
    mask, full = rollout.response_mask, rollout.response_ids.shape[1]
    logits = response_logits(model, rollout)
    r = logits.shape[1]
    resp, mask = rollout.response_ids[:, :r], mask[:, :r]
    entropy = token_entropy(logits, mask) if with_entropy else None
    if temperatures is not None:
        tau = temperatures.to(device=logits.device, dtype=logits.dtype)
        logits = logits / (tau[None, :r, None] if tau.dim() == 1 else tau[:, :r, None])
    logp = torch.log_softmax(logits, dim=-1).gather(2, resp[:, :, None]).squeeze(2) * mask
    if r < full:
        pad = (0, full - r)
        logp = torch.nn.functional.pad(logp, pad)
        entropy = None if entropy is None else torch.nn.functional.pad(entropy, pad)
    return logp, entropy


def length_passes(widths: list[int], overhead: float) -> list[int]:
    """Sizes of consecutive passes over rows sorted by ``widths`` (ascending) that minimise the modelled cost: each
    pass costs ``overhead`` (in token-equivalents: the fixed cost of a forward + backward call) plus its rows x its
    widest row (every row is padded to it). Exact (dynamic programming over the cut points; O(rows^2))."""
    n = len(widths)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = best[i] + overhead + (j - i) * widths[j - 1]
            if c < best[j]:
                best[j], cut[j] = c, i
    sizes, j = [], n
    while j > 0:
        sizes.append(j - cut[j])
        j = cut[j]
    return sizes[::-1]


# The fixed cost of one forward + backward pass of the tiny policy, in tokens of work: 8.0 ms for 1 row x 26 tokens,
# ~0.1 ms a token beyond (torch.profiler-free CPU timing, one thread, 2026-12-04).
PASS_OVERHEAD_TOKENS = 56


def logprobs_by_length(
    model: PreTrainedModel, rollout: Rollout, overhead: float = PASS_OVERHEAD_TOKENS
) -> torch.Tensor:
    """``sequence_logprobs`` at temperature 1 (with grad if enabled), the rows run through the model in passes of
    rows of similar response length, so a short response is not padded to the batch's longest; how many passes and
    where they cut is chosen by ``length_passes`` (one pass when padding costs less than another call).

    The same numbers as one pass over all rows (each row's logits depend on that row only; float rounding aside), at
    the cost of its real tokens instead of rows x the longest: with 40-200-token traces about a third of a batch's
    tokens are padding. Rows come back in the rollout's order."""
    order = torch.argsort(rollout.lengths, stable=True)
    width = int(rollout.prompt_mask.sum(dim=1).max())  # the prompt part of every pass (about; trimmed per pass)
    sizes = length_passes([width + int(n) for n in rollout.lengths[order].tolist()], overhead)
    if len(sizes) == 1:
        return sequence_logprobs(model, rollout)[0]
    parts = [sequence_logprobs(model, rollout.subset(idx))[0] for idx in torch.split(order, sizes)]
    return torch.cat(parts)[torch.argsort(order)]


def group_prompts(prompts: list[str], n: int) -> tuple[list[str], np.ndarray]:
    """Repeat each prompt n times (adjacent) and return the group index of every row."""
    rows = [p for p in prompts for _ in range(n)]
    return rows, np.repeat(np.arange(len(prompts)), n)
