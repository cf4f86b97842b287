"""The package layout: imports between experiments' packages point one way (no cycles, not even through imports
inside functions), every package imports on its own, and one file in the repository is named sweep.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["local", "verl", "studies", "sweep", "tracking"]
# The allowed direction (a package may import only those listed): ead_core is below everything.
ALLOWED = {
    "tracking": set(),
    "local": {"tracking"},
    "verl": {"tracking", "local"},
    "studies": {"tracking", "local"},
    "sweep": {"tracking", "local", "verl", "studies"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, me: str, is_package: bool = False) -> set[str]:
    """Every ``experiments.*`` module imported anywhere in ``source`` (module level or inside functions)."""
    package = me if is_package else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("experiments")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.startswith("experiments"):
                out.add(base)
    return out


def graph() -> dict[str, set[str]]:
    files = sorted((REPO / "experiments").rglob("*.py"))
    return {module_name(p): imports_of(p.read_text(), module_name(p), p.name == "__init__.py") for p in files}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_exists_and_nothing_lives_beside_them():
    loose = sorted(p.name for p in (REPO / "experiments").glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules directly under experiments/ (put them into a package): {loose}"
    assert sorted(p.name for p in (REPO / "experiments").iterdir() if (p / "__init__.py").exists()) == sorted(PACKAGES)


def test_packages_import_in_the_allowed_direction():
    wrong = []
    for module, deps in graph().items():
        src = package_of(module)
        for dep in deps:
            dst = package_of(dep)
            if src and dst and dst != src and dst not in ALLOWED[src]:
                wrong.append(f"{module} -> {dep}")
    assert wrong == [], "imports against the layout's direction:\n" + "\n".join(wrong)


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    try:
        TopologicalSorter({m: {d for d in deps if d in g and d != m} for m, deps in g.items()}).prepare()
    except CycleError as e:
        return list(e.args[1])
    return None


def test_no_import_cycle_between_modules():
    found = cycle(graph())
    assert found is None, f"import cycle: {' -> '.join(found or [])}"


def test_the_checker_sees_cycles_and_function_level_imports():
    """The checker itself: an import inside a function counts, relative imports resolve, a planted cycle is found."""
    src = "def f():\n    from experiments.sweep import jobs\nfrom .hashing import flat_params\n"
    assert imports_of(src, "experiments.tracking.store") == {"experiments.sweep", "experiments.tracking.hashing"}
    g = graph()
    g["experiments.tracking.store"].add("experiments.sweep.jobs")  # sweep.jobs imports tracking.store
    assert cycle(g) is not None


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_alone(package):
    """``python -c "import experiments.<package>"`` in a fresh interpreter (what a Ray worker or a launcher does)."""
    out = subprocess.run(
        [sys.executable, "-c", f"import experiments.{package}"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_one_file_named_sweep_py():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert [f for f in tracked if Path(f).name == "sweep.py"] == ["sweep.py"]
