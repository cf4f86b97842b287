"""Carry finished run directories from one machine to the next.

A long preset (the ``reproduction``: about four hours on two cores) outlasts the machine it starts on. What a
finished run leaves that analysis reads - ``params.json``, ``metrics.jsonl``, ``tables/*.jsonl`` and ``DONE.json`` -
is small, so :func:`save` packs it, one ``<config hash>.tar.gz`` per run (no checkpoints, no trained policy), into
a folder that is committed with the results; :func:`restore` unpacks the archives on the next machine. The sweep
then finds each restored directory finished: the job backfills its MLflow run from the directory
(``experiments.tracking.lifecycle.backfill_from_run_dir``) and training returns at once (``DONE.json``), so only
the runs no machine has finished are computed.

Archives are deterministic (sorted members, zeroed times and owners, gzip without a timestamp): saving a run twice
writes the same bytes, and :func:`save` leaves an unchanged archive alone.

    python -m experiments.tracking.archive save runs/reproduction results/reproduction/runs
    python -m experiments.tracking.archive restore results/reproduction/runs runs/reproduction
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from experiments.tracking.lifecycle import LOCK_FILE, lock_run_dir

DONE = "DONE.json"
RECORD_FILES = ("params.json", "metrics.jsonl", DONE)  # plus tables/*.jsonl


def record_files(run_dir: Path) -> list[Path]:
    """The files of a run directory that make up its record, relative to it, in a fixed order."""
    files = [Path(n) for n in RECORD_FILES if (run_dir / n).is_file()]
    tables = run_dir / "tables"
    if tables.is_dir():
        files += sorted(p.relative_to(run_dir) for p in tables.glob("*.jsonl") if p.is_file())
    return files


def pack(run_dir: Path) -> bytes:
    """The record of ``run_dir`` as deterministic ``.tar.gz`` bytes (the same files give the same bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in record_files(run_dir):
            data = (run_dir / rel).read_bytes()
            info = tarfile.TarInfo(rel.as_posix())
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def save(runs_dir: str | os.PathLike[str], archive_dir: str | os.PathLike[str]) -> list[Path]:
    """Pack every finished run directory under ``runs_dir`` (one holding ``DONE.json``) into
    ``archive_dir/<name>.tar.gz``; unfinished ones are left out. Returns the archives written (new or changed)."""
    runs_dir, archive_dir = Path(runs_dir), Path(archive_dir)
    if not runs_dir.is_dir():
        raise ValueError(f"runs_dir {str(runs_dir)!r} is not a directory")
    archive_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run_dir in sorted(d for d in runs_dir.iterdir() if (d / DONE).is_file()):
        path = archive_dir / f"{run_dir.name}.tar.gz"
        data = pack(run_dir)
        if path.exists() and path.read_bytes() == data:
            continue
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        written.append(path)
    return written


def restore(archive_dir: str | os.PathLike[str], runs_dir: str | os.PathLike[str]) -> list[Path]:
    """Unpack each ``archive_dir/<name>.tar.gz`` into ``runs_dir/<name>`` unless that run finished here already.
    An unfinished directory of the same run (a checkpoint of an interrupted attempt) is replaced by the finished
    record; a directory a live job holds raises ``RunDirBusy`` (its lock). Returns the run directories restored."""
    archive_dir, runs_dir = Path(archive_dir), Path(runs_dir)
    if not archive_dir.is_dir():
        raise ValueError(f"archive_dir {str(archive_dir)!r} is not a directory")
    restored = []
    for path in sorted(archive_dir.glob("*.tar.gz")):
        run_dir = runs_dir / path.name.removesuffix(".tar.gz")
        if (run_dir / DONE).is_file():
            continue
        lock = lock_run_dir(run_dir)  # creates run_dir; raises RunDirBusy while a job works in it
        try:
            with tempfile.TemporaryDirectory(dir=runs_dir) as tmp:
                with tarfile.open(path, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")
                if not (Path(tmp) / DONE).is_file():
                    raise ValueError(f"archive {path} holds no {DONE}: not a finished run")
                for child in run_dir.iterdir():  # the interrupted attempt's checkpoint and logs
                    if child.name != LOCK_FILE:
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                for child in Path(tmp).iterdir():
                    os.replace(child, run_dir / child.name)
        finally:
            lock.release()
        restored.append(run_dir)
    return restored


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.tracking.archive", description=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save", help="pack finished run directories into an archive folder")
    s.add_argument("runs_dir", help="<runs_root>/<experiment>: the run directories")
    s.add_argument("archive_dir", help="where the <config hash>.tar.gz archives go")
    r = sub.add_parser("restore", help="unpack archives into run directories that have not finished here")
    r.add_argument("archive_dir")
    r.add_argument("runs_dir")
    ns = p.parse_args(argv)
    try:
        if ns.command == "save":
            done = save(ns.runs_dir, ns.archive_dir)
            print(f"saved {len(done)} new or changed run record(s) into {ns.archive_dir}")
        else:
            done = restore(ns.archive_dir, ns.runs_dir)
            print(f"restored {len(done)} finished run(s) into {ns.runs_dir}")
    except ValueError as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
