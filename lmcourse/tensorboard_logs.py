"""TensorBoard event files for every training run: where they go, how they are written and read back.

Each training loop of the course writes its scalars (loss, learning rate, tokens/s, eval metrics) as
TensorBoard events under the run's folder: ``<run_dir>/tensorboard/<name>/`` for a run of ``lmcourse run``,
``lmcourse course`` or a benchmark, and ``runs/interactive/tensorboard/<name>/`` for one without a run folder
(a notebook in JupyterLab, ``lmcourse pretrain``). ``tensorboard --logdir runs`` shows them all; ``lmcourse
runs`` prints that command.

* :func:`log_dir` chooses the folder (a fresh one per training run: name, time and process id);
* :func:`scalar_writer` opens a ``torch.utils.tensorboard.SummaryWriter`` there (``None`` when logging is
  switched off with ``LMCOURSE_TENSORBOARD=0``);
* :func:`read_scalars` reads a folder back with TensorBoard's own ``EventAccumulator``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmcourse.paths import default_runs_dir

if TYPE_CHECKING:
    from lmcourse.context import RunContext

TENSORBOARD_SUBDIR = "tensorboard"
SWITCH_ENV = "LMCOURSE_TENSORBOARD"  # "0" switches event files off


def enabled() -> bool:
    """Whether training runs write TensorBoard events (``LMCOURSE_TENSORBOARD`` unset or not "0")."""
    return os.environ.get(SWITCH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def log_root(ctx: RunContext | None = None) -> Path:
    """``<ctx.run_dir>/tensorboard`` for a run with a folder, else ``<runs>/interactive/tensorboard``."""
    if ctx is not None and ctx.run_dir is not None:
        return Path(ctx.run_dir) / TENSORBOARD_SUBDIR
    return Path(default_runs_dir()) / "interactive" / TENSORBOARD_SUBDIR


def log_dir(ctx: RunContext | None, name: str) -> Path:
    """A fresh folder for one training run's events: ``<log_root>/<name>-<time>-<pid>``."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-") or "run"
    return log_root(ctx) / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"


def scalar_writer(ctx: RunContext | None, name: str) -> Any | None:
    """A ``SummaryWriter`` on :func:`log_dir` (``None`` when event files are switched off)."""
    if not enabled():
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder = log_dir(ctx, name)
    folder.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(folder))


def read_scalars(folder: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files in ``folder``: ``{tag: [(step, value), ...]}`` in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(int(e.step), float(e.value)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def event_folders(root: str | os.PathLike) -> list[Path]:
    """The folders under ``root`` that hold TensorBoard event files."""
    return sorted({p.parent for p in Path(root).rglob("events.out.tfevents.*")})
