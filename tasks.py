#!/usr/bin/env python3
"""Task runner for lmcourse that needs only Python 3.11 and pip (no make, no conda).

    python3 tasks.py course   # set up .venv, run every notebook headless (smoke profile) into runs/
    python3 tasks.py test     # set up .venv, run the unit tests and the notebooks (nbval, smoke profile)
    python3 tasks.py gpu-check  # on a CUDA GPU: every notebook at smoke sizes on it, with a short report
    python3 tasks.py lab      # set up .venv, open JupyterLab on notebooks/ with the course's kernel
    python3 tasks.py setup    # only create/update .venv
    python3 tasks.py lint     # ruff

Setup is idempotent: it reinstalls only when requirements.txt or pyproject.toml changed. Extra
arguments after the task go to the underlying command (pytest, `lmcourse course` or `jupyter lab`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LMCOURSE_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".lmcourse-installed"
INPUTS = ("requirements.txt", "pyproject.toml")


def _digest() -> str:
    h = hashlib.sha256()
    for name in INPUTS:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def _run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def setup() -> None:
    """Create .venv and install the pinned requirements and lmcourse (editable) into it."""
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py may be run by an older python3
        sys.exit(f"lmcourse needs Python >= 3.11, this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text().strip() == _digest():
        return
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check"]
    if _run([*pip, "-r", "requirements.txt"]) != 0:
        sys.exit("installing requirements.txt failed (see pip's message above)")
    if _run([*pip, "--no-deps", "--no-build-isolation", "-e", "."]) != 0:
        sys.exit("installing lmcourse failed (see pip's message above)")
    if _run([PY, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3",
             "--display-name", "Python 3 (lmcourse)"]) != 0:
        sys.exit("registering the Jupyter kernel failed")
    STAMP.write_text(_digest() + "\n")


def course_env() -> dict[str, str]:
    """Environment for headless runs: the venv first on PATH, the offline data mirror if it is beside us."""
    env = dict(os.environ)
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(VENV)
    mirror = ROOT.parent / "shared" / "data"
    if "LMCOURSE_DATA_DIR" not in env and mirror.is_dir():
        env["LMCOURSE_DATA_DIR"] = str(mirror)
    env.setdefault("MPLBACKEND", "Agg")
    return env


NO_CUDA = ("gpu-check needs an NVIDIA GPU with its driver, and this machine has none (no nvidia-smi, no "
           "/dev/nvidia*); `python3 tasks.py course` runs the smoke profile on the CPU")


def cuda_driver_present() -> bool:
    """An NVIDIA driver is there (checked before the venv is set up, so that gpu-check stops at once without it;
    ``lmcourse gpu-check`` then asks torch)."""
    import glob
    import shutil

    return bool(shutil.which("nvidia-smi") or glob.glob("/dev/nvidia[0-9]*"))


TASKS = ("setup", "course", "test", "lint", "lab", "gpu-check")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    task, rest = argv[0], argv[1:]
    if task not in TASKS:
        print(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}", file=sys.stderr)
        return 2
    if task == "gpu-check" and not cuda_driver_present():
        print(f"tasks.py: error: {NO_CUDA}", file=sys.stderr)
        return 2
    setup()
    env = course_env()
    if task == "setup":
        return 0
    if task == "course":
        return _run([BIN / "lmcourse", "course", "--profile", "smoke", *rest], env)
    if task == "gpu-check":  # exits 2 at once when torch sees no CUDA device
        return _run([BIN / "lmcourse", "gpu-check", *rest], env)
    if task == "lab":  # the notebooks pick their profile from LMCOURSE_PROFILE (cpu when unset)
        root = ["--allow-root"] if os.name == "posix" and os.geteuid() == 0 else []  # containers often run as root
        return _run([BIN / "jupyter", "lab", f"--notebook-dir={ROOT / 'notebooks'}", *root, *rest], env)
    if task == "lint":
        return _run([PY, "-m", "ruff", "check", "lmcourse", "tests", "tasks.py", "conftest.py", *rest], env)
    env["LMCOURSE_PROFILE"] = "smoke"
    return _run([PY, "-m", "pytest", *rest], env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
