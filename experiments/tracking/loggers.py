"""One small logger interface for every job (training, studies, evaluation).

Jobs call ``log_params`` once, ``log_metrics(metrics, step)`` ONCE per step with all of that step's
metrics (one atomic record, so a killed job never leaves half a step), ``log_table`` for small
tables (entropy by position, branching results) and ``finish(status)``. Steps arrive in increasing
order and a logger ignores a step it already holds: a resumed job recomputes the steps after its
last checkpoint and logs them again, and each step still lands exactly once.

``JsonlLogger`` writes to a run directory; the sweep layer plugs in an MLflow logger with the
same interface (experiments/tracking/store.py).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class RunLogger(Protocol):
    """What a job needs from a tracker."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_table(self, name: str, rows: list[dict[str, Any]], step: int | None = None) -> None: ...
    def last_logged_step(self) -> int | None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


def json_safe(value: Any) -> Any:
    """A JSON-safe scalar (the one cleaner for JSONL, MLflow tables and study dumps): NaN/inf become None; numpy
    scalars become Python numbers."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: a killed job keeps every completed record."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


class JsonlLogger:
    """Logs to ``run_dir``: params.json, metrics.jsonl (one line per step), tables/NAME[_step].jsonl, status."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._last = self.last_logged_step()

    def log_params(self, params: dict[str, Any]) -> None:
        (self.run_dir / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True, default=str))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._last is not None and step <= self._last:
            return  # already logged before a restart
        self._last = int(step)
        _append_line(self.metrics_path, {"step": int(step), **{k: json_safe(v) for k, v in metrics.items()}})

    def log_table(self, name: str, rows: list[dict[str, Any]], step: int | None = None) -> None:
        tables = self.run_dir / "tables"
        tables.mkdir(exist_ok=True)
        path = tables / (f"{name}_step{step}.jsonl" if step is not None else f"{name}.jsonl")
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({k: json_safe(v) for k, v in r.items()}) + "\n" for r in rows))
        os.replace(tmp, path)

    def last_logged_step(self) -> int | None:
        steps = [r["step"] for r in self.records()]
        return max(steps) if steps else None

    def records(self) -> list[dict[str, Any]]:
        """All metric records in order (a torn last line from a kill is ignored)."""
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def finish(self, status: str = "FINISHED") -> None:
        (self.run_dir / "status").write_text(status + "\n")


class MultiLogger:
    """Fan out to several loggers (for instance JSONL next to the checkpoint plus MLflow)."""

    def __init__(self, *loggers: RunLogger) -> None:
        self.loggers = loggers

    def log_params(self, params: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log_metrics(metrics, step)

    def log_table(self, name: str, rows: list[dict[str, Any]], step: int | None = None) -> None:
        for lg in self.loggers:
            lg.log_table(name, rows, step)

    def last_logged_step(self) -> int | None:
        steps = [s for s in (lg.last_logged_step() for lg in self.loggers) if s is not None]
        return min(steps) if len(steps) == len(self.loggers) else None

    def finish(self, status: str = "FINISHED") -> None:
        for lg in self.loggers:
            lg.finish(status)
