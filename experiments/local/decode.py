"""Incremental decoding of a Llama policy on a preallocated KV cache: the sampler's per-token forward pass.

Why not ``model(..., past_key_values=cache)`` at every token: Hugging Face's ``DynamicCache`` grows by concatenation
(the whole cache is copied at every token and layer), and each call rebuilds the attention mask, the rotary tables and
the module stack in Python. For the 1-20M-parameter policies of the local backend that overhead rivals the arithmetic
(benchmarks/bench_rollout.py, benchmarks/bench_peers.py). Here the cache is allocated once for the whole response,
each step writes one column, the rotary tables are computed once, and each layer is a few fused matrix products
(q, k and v in one; gate and up in one).

The same function as the Hugging Face forward pass, float rounding aside: the prefill of the prompts still runs
through the model itself, and ``tests/local/test_decode.py`` compares every step's logits with the model's own
incremental forward (left-padded prompts, rows leaving the batch). Models this does not cover (not Llama, grouped
query attention, biases, another activation) keep the Hugging Face path: :meth:`LlamaDecoder.supports`.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


class LlamaDecoder:
    """The KV cache and fused weights of one sampling call (the fused matrices are copies made at construction: build
    one per call, after any weight update)."""

    @staticmethod
    def supports(model: PreTrainedModel) -> bool:
        """True for the plain Llama architecture this decoder implements (the policies ``build_policy`` makes)."""
        c = model.config
        heads = c.num_attention_heads
        return (
            c.model_type == "llama"
            and (c.num_key_value_heads or heads) == heads
            and getattr(c, "head_dim", c.hidden_size // heads) * heads == c.hidden_size
            and not c.attention_bias
            and not c.mlp_bias
            and c.hidden_act == "silu"
            and getattr(c, "pretraining_tp", 1) == 1
            # forward hooks would be skipped (the LM head's run: its output is computed by the module itself)
            and not any(mod._forward_hooks or mod._forward_pre_hooks for mod in model.model.modules())
        )

    def __init__(
        self,
        model: PreTrainedModel,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
        compact: float = 0.75,
    ):
        c, m = model.config, model.model
        self.heads, self.head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        self.eps = c.rms_norm_eps
        self.p = prompt_ids.shape[1]
        dev, dtype = prompt_ids.device, model.dtype
        with torch.no_grad():
            self.layers = [
                (
                    layer.input_layernorm.weight,
                    torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).T.contiguous(),
                    layer.self_attn.o_proj.weight.T.contiguous(),
                    layer.post_attention_layernorm.weight,
                    torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]).T.contiguous(),
                    layer.mlp.down_proj.weight.T.contiguous(),
                )
                for layer, a in ((layer, layer.self_attn) for layer in m.layers)
            ]
            self.embed, self.norm = m.embed_tokens.weight, m.norm.weight  # read as they are (step runs under no_grad)
            self.head = model.lm_head  # called as a module: a hook on it (a benchmark's EOS mask) still applies
            # rotary tables for every position a row can reach (the model's own rotary module, so its scaling applies)
            width = self.p + max_new_tokens
            positions = torch.arange(width, device=dev)[None]
            cos, sin = m.rotary_emb(self.embed[:1][None], positions)
            self.cos, self.sin = cos[0], sin[0]  # (width, head_dim)
        b, shape = prompt_ids.shape[0], (prompt_ids.shape[0], self.heads, width, self.head_dim)
        # uninitialised: a column is written (prompt: fill, response: step) before any step reads it
        self.keys = [torch.empty(shape, dtype=dtype, device=dev) for _ in self.layers]
        self.values = [torch.empty(shape, dtype=dtype, device=dev) for _ in self.layers]
        self.used = self.p  # columns written so far
        self.live = torch.arange(b, device=dev)  # the cache rows of the caller's live rows, in its order
        self.compact = compact
        # additive attention bias: -inf-like on the prompt's left padding, 0 on every real or generated token
        self.bias = torch.zeros(b, 1, 1, width, dtype=dtype, device=dev)
        self.bias[:, 0, 0, : self.p] = torch.where(prompt_mask.bool(), 0.0, torch.finfo(dtype).min)

    def fill(self, cache, rows: torch.Tensor | None = None) -> None:
        """Copy a prefill's Hugging Face cache (one entry per distinct prompt) into the prompt columns, entry
        ``rows[i]`` to row i (None: entry i)."""
        for layer, k, v in zip(cache.layers, self.keys, self.values, strict=True):
            k[:, :, : self.p] = layer.keys if rows is None else layer.keys[rows]
            v[:, :, : self.p] = layer.values if rows is None else layer.values[rows]

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the live rows ``keep`` (indices into the current live rows, in the caller's order): rows that
        ended leave the batch. Lazily: an ended row stays in the cache (computed, never read) until fewer than
        ``compact`` of the rows held are live, then the cache is compacted, copying only the columns written so far.
        Rows end at nearly every step of a 40-200-token trace batch; compacting at each end copied the cache ~100
        times a call."""
        self.live = self.live[keep]
        if len(self.live) >= self.compact * self.keys[0].shape[0]:
            return

        def pick(x: torch.Tensor) -> torch.Tensor:
            out = torch.empty((len(self.live), *x.shape[1:]), dtype=x.dtype, device=x.device)
            out[:, :, : self.used] = x[self.live, :, : self.used]
            return out

        self.keys = [pick(k) for k in self.keys]
        self.values = [pick(v) for v in self.values]
        self.bias = self.bias[self.live]
        self.live = torch.arange(len(self.live), device=self.live.device)

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.head_dim // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    @torch.no_grad()
    def step(self, tok: torch.Tensor, pos: torch.Tensor, t: int) -> torch.Tensor:
        """Logits (rows, V) after feeding ``tok`` (rows,) at position ids ``pos`` (rows, 1) as response token ``t``."""
        rows, nh, hd = self.keys[0].shape[0], self.heads, self.head_dim
        if len(self.live) < rows:  # ended rows still held: feed them token 0 at position 0 (their output is dropped)
            tok = torch.zeros(rows, dtype=tok.dtype, device=tok.device).index_copy_(0, self.live, tok)
            pos = torch.zeros(rows, 1, dtype=pos.dtype, device=pos.device).index_copy_(0, self.live, pos)
        col = self.p + t  # the cache column of this token
        n = self.used = col + 1
        h = self.embed[tok]
        cos, sin = self.cos[pos[:, 0]][:, None, None, :], self.sin[pos[:, 0]][:, None, None, :]  # (rows, 1, 1, hd)
        bias, scale = self.bias[..., :n], hd**-0.5
        for (w_in, w_qkv, w_o, w_post, w_gu, w_down), keys, values in zip(
            self.layers, self.keys, self.values, strict=True
        ):
            qkv = (self._rms(h, w_in) @ w_qkv).view(rows, 3, nh, 1, hd)
            q = self._rotate(qkv[:, 0], cos, sin)
            keys[:, :, col : col + 1] = self._rotate(qkv[:, 1], cos, sin)
            values[:, :, col : col + 1] = qkv[:, 2]
            scores = (q @ keys[:, :, :n].transpose(-1, -2)) * scale + bias
            attn = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ values[:, :, :n]
            h = h + attn.reshape(rows, nh * hd) @ w_o
            gate, up = (self._rms(h, w_post) @ w_gu).chunk(2, dim=-1)
            h = h + (torch.nn.functional.silu(gate) * up) @ w_down
        if len(self.live) < rows:
            h = h[self.live]
        return self.head(self._rms(h, self.norm))
