"""Hugging Face ``generate`` adapter: a schedule's temperature as a transformers LogitsProcessor.

Imports transformers lazily (only when this module is imported), so ``import ead_core`` stays light.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from ead_core.schedule import Schedule


class EADTemperatureProcessor(LogitsProcessor):
    """Divide the next-token logits by tau_t, t = tokens generated so far (prompt length excluded).

    Any schedule kind: position-only kinds give one tau for the step; ``entropy_target`` (``needs_logits``) solves
    one tau per row from the scores, with the same code as the other samplers.

    ``prompt_length`` is the padded prompt width that ``generate`` was called with (left padding keeps
    every row's response starting at that column). Use it with ``do_sample=True, temperature=1.0,
    top_k=0, top_p=1.0`` so that no other warper changes the behaviour distribution.
    """

    def __init__(self, schedule: Schedule, step: int, prompt_length: int) -> None:
        self.schedule, self.step, self.prompt_length = schedule, step, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        t = input_ids.shape[1] - self.prompt_length
        if self.schedule.needs_logits:
            tau = self.schedule.temperatures_for_logits(scores, t, self.step)
            return scores / tau.to(scores.dtype)[:, None]
        return scores / self.schedule.temperature(t, self.step)
