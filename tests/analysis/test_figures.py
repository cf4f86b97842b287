"""``python -m analysis.figures`` on the session's store: every figure family drawn, files written and logged."""

from __future__ import annotations

from typing import Any

from analysis.figures import main


def test_cli_makes_every_figure(store: dict[str, Any], tmp_path, capsys) -> None:
    code = main(["--experiment", store["experiment"], "--out", str(tmp_path), "--tracking-uri", store["uri"]])
    printed = capsys.readouterr()
    print(printed.out, printed.err)
    assert code == 0
