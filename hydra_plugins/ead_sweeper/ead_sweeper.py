"""``hydra/sweeper=ead``: Hydra's BasicSweeper (same override grammar and cartesian product) that plans the whole sweep
before launching anything.

1. Compose every job (Hydra type-checks it against the structured schema) and validate it
   (``experiments.sweep.jobs.prepare``: ``RLVRConfig.validate()``, config hash). Any bad job -> one error that lists
   every bad job with the parameter at fault; nothing is submitted.
2. Deduplicate: jobs with the same config hash as an earlier job of the sweep, and jobs whose config hash already
   has a FINISHED MLflow run in their experiment (one query per experiment) are skipped, unless ``force=true``.
3. Create each MLflow experiment once, here (concurrent creation by jobs races). With a SQLite store and jobs in
   other processes (submitit launchers), start one ``mlflow server`` in front of it for the sweep's duration
   (``tracking.serve``), so jobs never write the SQLite file concurrently.
4. Launch the remaining jobs with launch-time values pinned as overrides (absolute tracking URI or the server's URL,
   the experiment id, the absolute ``runs_root``, the config hash). For submitit launchers the jobs are submitted as
   the launcher would (one array) but waited on with a bound: without Slurm accounting submitit never sees a job
   that died without a result (scancel, OOM), and the plain launcher would wait forever.

``dry_run=true`` stops after 2 and prints the plan. The module imports only Hydra/OmegaConf at load time (plugin
discovery imports it in every Hydra app); the harness is imported when a sweep starts.
"""

# No `from __future__ import annotations` here: Hydra's plugin scanner executes this module without registering it in
# sys.modules, and dataclasses then cannot resolve string annotations.
import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Keys the sweeper pins for each job; any user override of them is replaced by the resolved value.
PINNED_KEYS = ("tracking.uri", "tracking.experiment_id", "runs_root", "config_hash")


@dataclass
class EADSweeperConf:
    _target_: str = "hydra_plugins.ead_sweeper.ead_sweeper.EADSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    # A union of grids: each entry's params are crossed (on top of `params`) and the grids' jobs concatenated, for a
    # design that is no cartesian product (EAD with and without TIS, fixed temperatures with TIS only).
    grids: list[dict[str, str]] | None = None
    poll_s: float = 5.0  # how often submitit jobs are polled (result files, squeue)
    lost_grace_s: float = 60.0  # a job gone from squeue (or a dead local process) this long without a result is lost


ConfigStore.instance().store(group="hydra/sweeper", name="ead", node=EADSweeperConf, provider="ead-harness")


class SweepConfigError(CompactHydraException):
    """Some job of the sweep does not compose or validate; nothing was launched."""


class SweepJobsFailed(CompactHydraException):
    """Some launched jobs failed or were lost (the others ran to the end)."""


@dataclass
class PlannedJob:
    """One job of the sweep and what the sweeper decided about it."""

    index: int
    overrides: list[str]
    cfg: DictConfig | None = None
    job: Any = None  # experiments.sweep.jobs.PreparedJob
    error: str | None = None
    skip: str | None = None
    experiment_id: str | None = None
    uri: str | None = None
    extra: list[str] = field(default_factory=list)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _without_pinned(overrides: Sequence[str]) -> list[str]:
    def key(o: str) -> str:
        return o.split("=", 1)[0].lstrip("+~")

    return [o for o in overrides if key(o) not in PINNED_KEYS]


def _user_overrides(overrides: Sequence[str]) -> str:
    return " ".join(overrides) or "(defaults)"


class EADSweeper(BasicSweeper):
    """BasicSweeper that composes, validates and deduplicates the whole sweep before launching (see module doc)."""

    def __init__(
        self,
        max_batch_size: int | None,
        params: dict[str, str] | None = None,
        grids: list[dict[str, str]] | None = None,
        poll_s: float = 5.0,
        lost_grace_s: float = 60.0,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grids = [dict(g) for g in grids] if grids else None
        self.poll_s = poll_s
        self.lost_grace_s = lost_grace_s

    # --- planning -----------------------------------------------------------------------------------------------
    def job_overrides(self, arguments: list[str]) -> list[list[str]]:
        """Every job's override list: ``hydra.sweeper.params`` and the command line, expanded as BasicSweeper does;
        with ``hydra.sweeper.grids``, one such expansion per grid (its params on top of ``params``), concatenated and
        ordered with ``params`` outermost (all of seed 0's jobs first, then seed 1's...), so a sweep stopped early
        leaves complete seeds behind. The command line applies to every grid."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        base = self.params
        jobs: list[list[str]] = []
        try:
            for grid in self.grids or [None]:
                self.params = base if grid is None else {**(base or {}), **grid}
                parsed = parser.parse_overrides([*self._parse_config(), *arguments])
                jobs += [list(job) for job in self.split_arguments(parsed, None)[0]]
        finally:
            self.params = base
        if self.grids and base:
            outer_keys = [k.lstrip("+~") for k in base]
            first_seen: dict[tuple[str, ...], int] = {}

            def outer(job: list[str]) -> int:
                values = dict(o.lstrip("+~").split("=", 1) for o in job if "=" in o)
                return first_seen.setdefault(tuple(values.get(k, "") for k in outer_keys), len(first_seen))

            jobs = sorted(jobs, key=outer)  # stable: grid order within one combination of the outer params
        return jobs

    def plan(self, arguments: list[str], create_experiments: bool = True) -> list[PlannedJob]:
        """Compose and validate every job; raise SweepConfigError listing all bad jobs. Then mark duplicates and jobs
        that already FINISHED in MLflow (``skip``), creating each experiment once when ``create_experiments``."""
        from experiments.sweep.jobs import preflight, prepare
        from experiments.tracking import resolve_tracking_uri

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        jobs = [PlannedJob(i, ov) for i, ov in enumerate(self.job_overrides(arguments))]
        t0 = time.perf_counter()
        for pj in jobs:
            try:
                pj.cfg = loader.load_sweep_config(self.config, list(pj.overrides))
                pj.job = prepare(pj.cfg)
                preflight(pj.cfg)  # the store answers (tracking.uri) and runs_root is writable; once per store/dir
            except Exception as e:  # noqa: BLE001 - Hydra/OmegaConf type errors and ValueErrors alike are reported
                cause = f"\n    {e.__cause__}" if e.__cause__ is not None and str(e.__cause__) not in str(e) else ""
                pj.error = f"{type(e).__name__}: {e}{cause}".replace("\n", "\n    ")
        bad = [pj for pj in jobs if pj.error]
        if bad:
            lines = [f"#{pj.index} [{_user_overrides(pj.overrides)}]\n    {pj.error}" for pj in bad[:10]]
            more = f"\n... and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise SweepConfigError(
                f"{len(bad)} of {len(jobs)} sweep job(s) have an invalid config; nothing was launched:\n"
                + "\n".join(lines)
                + more
            )
        log.info("composed and validated %d job(s) in %.1f s", len(jobs), time.perf_counter() - t0)

        seen: dict[tuple[str, str, str], int] = {}
        for pj in jobs:
            key = (pj.job.experiment_name, pj.job.backend, pj.job.config_hash)
            if key in seen:
                pj.skip = f"same config as job #{seen[key]}"
            else:
                seen[key] = pj.index
            pj.uri = resolve_tracking_uri(pj.cfg.tracking.uri, Path.cwd())
        self._mark_finished(jobs, create_experiments)
        return jobs

    def _mark_finished(self, jobs: list[PlannedJob], create: bool) -> None:
        """Look up each experiment once; skip jobs whose hash already FINISHED there (unless force)."""
        from experiments.tracking import (
            FINISHED,
            ensure_experiment,
            is_sqlite_uri,
            latest_runs_by_hash,
            make_client,
            sqlite_path,
        )

        groups: dict[tuple[str, str], list[PlannedJob]] = {}
        for pj in jobs:
            groups.setdefault((pj.uri, pj.job.experiment_name), []).append(pj)
        for (uri, name), members in groups.items():
            if not create and is_sqlite_uri(uri) and not sqlite_path(uri).exists():
                continue  # dry run against a store that does not exist yet: nothing finished, create nothing
            client = make_client(uri)
            if create:
                exp_id = ensure_experiment(client, name, uri)
            else:
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    continue
                exp_id = str(exp.experiment_id)
            latest: dict[str, dict[str, Any]] = {}
            for backend in {pj.job.backend for pj in members}:
                latest[backend] = latest_runs_by_hash(client, exp_id, backend)
            for pj in members:
                pj.experiment_id = exp_id
                run = latest[pj.job.backend].get(pj.job.config_hash)
                if pj.skip is None and run is not None and run.info.status == FINISHED and not pj.cfg.force:
                    pj.skip = f"FINISHED in MLflow run {run.info.run_id}"

    def _report(self, jobs: list[PlannedJob]) -> None:
        to_run = sum(pj.skip is None for pj in jobs)
        log.info("sweep plan: %d job(s), %d to launch, %d skipped", len(jobs), to_run, len(jobs) - to_run)
        for pj in jobs:
            what = f"skip ({pj.skip})" if pj.skip else "launch"
            log.info(
                "  #%d %s %s [%s] -> %s",
                pj.index,
                pj.job.config_hash,
                pj.job.run_name,
                _user_overrides(pj.overrides),
                what,
            )
        todo = [pj.job for pj in jobs if pj.skip is None]
        local = [job.config for job in todo if (job.backend, job.kind) == ("local", "train")]
        if local:
            import os

            from experiments.sweep.projection import format_projection, project

            cores = os.cpu_count() or 1
            log.info(format_projection(*project(local, parallel=cores), parallel=cores))

    # --- launching ----------------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        dry = bool(self.config.get("dry_run", False))
        jobs = self.plan(arguments, create_experiments=not dry)
        self._report(jobs)
        if dry:
            from experiments.sweep.jobs import describe

            for pj in jobs:
                text = describe(pj.job, pj.cfg)  # verl jobs: the exact verl command of each
                if text:
                    print(f"\n# job #{pj.index} ({pj.job.run_name})\n{text}", flush=True)
            log.info("dry_run=true: nothing launched")
            return []
        todo = [pj for pj in jobs if pj.skip is None]
        if not todo:
            log.info("nothing to launch: every job already FINISHED (force=true re-runs them)")
            return []

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        with ExitStack() as stack:
            served = self._serve(todo, sweep_dir, stack)
            for pj in todo:
                self.pin(pj, served.get(pj.uri, pj.uri))
            results: list[tuple[PlannedJob, JobReturn]] = []
            size = self.max_batch_size or len(todo)
            for start in range(0, len(todo), size):
                batch = todo[start : start + size]
                overrides = [self.job_overrides_pinned(pj) for pj in batch]
                returns = self._launch(overrides, initial_job_idx=start)
                results.extend(zip(batch, returns))
        return self._summarize(results)

    def pin(self, pj: PlannedJob, uri: str) -> None:
        """Pin launch-time values into the job's overrides (quoted: a hash like ``494452e81970`` would otherwise parse
        as a float), then compose and validate the pinned job once more: it must be the job that was planned."""
        from experiments.sweep.jobs import prepare

        assert self.hydra_context is not None and self.config is not None
        pj.extra = [
            f"tracking.uri={_quote(uri)}",
            f"tracking.experiment_id={_quote(str(pj.experiment_id))}",
            f"runs_root={_quote(str(Path(pj.cfg.runs_root).absolute()))}",
            f"config_hash={_quote(pj.job.config_hash)}",
        ]
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, self.job_overrides_pinned(pj))
        job = prepare(cfg)
        seen = (job.config_hash, cfg.tracking.uri, cfg.tracking.experiment_id)
        if seen != (pj.job.config_hash, uri, pj.experiment_id):
            raise SweepConfigError(f"job #{pj.index}: pinned overrides changed the job ({pj.extra}); nothing launched")

    def job_overrides_pinned(self, pj: PlannedJob) -> list[str]:
        """The overrides a job is launched with: the user's, minus any pinned key, plus the pinned values."""
        return [*_without_pinned(pj.overrides), *pj.extra]

    def _serve(self, todo: list[PlannedJob], sweep_dir: Path, stack: ExitStack) -> dict[str, str]:
        """Start one ``mlflow server`` per SQLite store that needs one; return {store URI: server URL}."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from experiments.sweep.jobs import ServeMode
        from experiments.tracking import is_sqlite_uri, sqlite_path
        from experiments.tracking.server import cluster_address, supervised_mlflow_server

        in_process = isinstance(self.launcher, BasicLauncher)
        slurm = type(self.launcher).__name__ == "SlurmLauncher"
        served: dict[str, str] = {}
        for pj in todo:
            mode = ServeMode(pj.cfg.tracking.serve)
            wanted = mode == ServeMode.always or (mode == ServeMode.auto and not in_process)
            if pj.uri in served or not wanted or not is_sqlite_uri(pj.uri):
                continue
            # Slurm: one address compute nodes reach, never 0.0.0.0, and MLflow's basic auth with credentials that
            # reach the jobs through their environment only (experiments.tracking.server.supervised_mlflow_server).
            host = pj.cfg.tracking.server_host or (cluster_address() if slurm else "127.0.0.1")
            artifacts = sqlite_path(pj.uri).parent / "mlruns"
            auth = host not in ("127.0.0.1", "localhost", "::1")
            server = stack.enter_context(
                supervised_mlflow_server(
                    pj.uri, artifacts, host=host, auth=auth, log_path=sweep_dir / "mlflow-server.log"
                )
            )
            url = server.url
            log.info("mlflow server for %s at %s (log %s)", pj.uri, url, sweep_dir / "mlflow-server.log")
            served[pj.uri] = url
        return served

    def _launch(self, overrides: list[list[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

        if isinstance(self.launcher, BaseSubmititLauncher):
            return self._launch_submitit(overrides, initial_job_idx)
        return self.launcher.launch(overrides, initial_job_idx=initial_job_idx)

    def _launch_submitit(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        """Submit as hydra-submitit-launcher 1.2.0's ``launch`` does (one array, same callable); wait with a bound."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        launcher: Any = self.launcher
        kind = launcher._EXECUTOR
        params = dict(launcher.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{kind}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=kind, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{(k if k in base else f"{kind}_{k}"): v for k, v in params.items()})
        sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        job_params = []
        for i, ov in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(ov)))
            job_params.append((list(ov), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(launcher, *zip(*job_params))
        log.info("submitted %d %s job(s): %s (logs in %s)", len(jobs), kind, [j.job_id for j in jobs], init["folder"])
        return self._wait(jobs, job_overrides, slurm=kind == "slurm")

    def _wait(self, jobs: list[Any], job_overrides: list[list[str]], slurm: bool) -> list[JobReturn]:
        """Poll result files (and squeue on Slurm) until every job has a result or is lost."""
        from experiments.sweep.slurm import TERMINAL_SLURM_STATES, slurm_job_state

        results: list[JobReturn | None] = [None] * len(jobs)
        gone_since: dict[int, float] = {}
        last_report = time.monotonic()
        while any(r is None for r in results):
            now = time.monotonic()
            for i, job in enumerate(jobs):
                if results[i] is not None:
                    continue
                if job.paths.result_pickle.exists():
                    try:
                        results[i] = job.results()[0]
                    except Exception as e:  # noqa: BLE001 - submitit-level failure (e.g. timed out too often)
                        results[i] = JobReturn(overrides=job_overrides[i], status=JobStatus.FAILED, _return_value=e)
                    continue
                if slurm:
                    state = slurm_job_state(job.job_id)
                    gone = state is None or state in TERMINAL_SLURM_STATES
                else:
                    state = "EXITED" if job.done() else "RUNNING"
                    gone = state == "EXITED"
                if not gone:
                    gone_since.pop(i, None)
                    continue
                gone_since.setdefault(i, now)
                if now - gone_since[i] > self.lost_grace_s:
                    err = RuntimeError(
                        f"job {job.job_id} ended ({state or 'unknown to squeue'}) without a result "
                        f"(cancelled, out of memory or killed); its MLflow run is resumed by re-running the sweep. "
                        f"Logs: {job.paths.stdout} {job.paths.stderr}"
                    )
                    results[i] = JobReturn(overrides=job_overrides[i], status=JobStatus.FAILED, _return_value=err)
            if now - last_report > 60:
                done = sum(r is not None for r in results)
                log.info("waiting: %d/%d job(s) done", done, len(jobs))
                last_report = now
            if any(r is None for r in results):
                time.sleep(self.poll_s)
        return [r for r in results if r is not None]

    def _summarize(self, results: list[tuple[PlannedJob, JobReturn]]) -> list[list[JobReturn]]:
        failed = []
        for pj, ret in results:
            if ret.status == JobStatus.COMPLETED:
                value = ret._return_value if isinstance(ret._return_value, dict) else {}
                log.info(
                    "  #%d %s: %s (MLflow run %s)", pj.index, pj.job.run_name, value.get("status"), value.get("run_id")
                )
            else:
                failed.append((pj, ret._return_value))
                log.error("  #%d %s: FAILED: %s", pj.index, pj.job.run_name, ret._return_value)
        if failed:
            lines = [f"#{pj.index} {pj.job.run_name} [{_user_overrides(pj.overrides)}]: {e}" for pj, e in failed]
            raise SweepJobsFailed(f"{len(failed)} of {len(results)} job(s) failed:\n" + "\n".join(lines))
        return [[ret for _, ret in results]]
