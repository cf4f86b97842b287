"""scripts/presets.sh (behind scripts/reproduction.sh and scripts/beyond.sh): bad arguments fail before anything
is restored, launched or archived, naming what is wrong; the wrappers name presets that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "presets.sh"), *args], capture_output=True, text=True)


def test_bad_arguments_fail_before_anything_starts() -> None:
    before = sorted(p.name for p in (ROOT / "results").iterdir())
    usage = run("beyond")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    missing = run("beyond", "reverse", "no_such_preset", "--", "seed=0")
    assert missing.returncode == 2
    assert "PRESET: no sweeps/experiment/no_such_preset.yaml" in missing.stderr
    assert sorted(p.name for p in (ROOT / "results").iterdir()) == before  # no results/<experiment> made


def test_wrappers_run_existing_presets_into_their_experiment() -> None:
    for script, experiment in (("reproduction.sh", "reproduction"), ("beyond.sh", "beyond")):
        text = (ROOT / "scripts" / script).read_text()
        m = re.search(r'presets\.sh" (\S+) \\?\s*([^-]+?) -- "\$@"', text)
        assert m, script
        assert m[1] == experiment
        for preset in m[2].split():
            cfg = (ROOT / "sweeps" / "experiment" / f"{preset}.yaml").read_text()
            assert re.search(rf"^experiment_name: {experiment}$", cfg, flags=re.M), (script, preset)
