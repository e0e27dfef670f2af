"""Small conveniences every notebook uses: set up a run (its context), show lmcourse code, show tables.

Notebooks teach by showing the code that lives in lmcourse; :func:`show_source` renders it so the
chapter reads the real implementation rather than a copy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from lmcourse.context import RunContext, resolve_context
from lmcourse.profiles import Profile


def setup_notebook(profile: str | Profile | None = None, seed: int = 0, device: str | None = None,
                   bf16: bool | None = None, threads: int | None = None, verbose: bool = True) -> RunContext:
    """Resolve the notebook's :class:`~lmcourse.context.RunContext` once (profile, seed, device, precision,
    threads, run folder), seed everything, set the CPU threads and the plot style; returns the context.

    Every lmcourse helper the notebook calls afterwards gets this context passed explicitly."""
    ctx = resolve_context(profile, seed=seed, device=device, bf16=bf16, threads=threads).apply()
    try:
        import matplotlib

        _inline_plots_in_jupyter()
        matplotlib.rcParams.update({"figure.figsize": (7, 4), "figure.dpi": 100, "axes.grid": True})
    except ImportError:  # pragma: no cover
        pass
    if verbose:
        print(ctx.describe())
    return ctx


def _inline_plots_in_jupyter() -> None:
    """Inside a Jupyter kernel, draw figures into the notebook even when ``MPLBACKEND=Agg`` is set (CI and
    papermill runs set it; Agg would silently drop every figure from the executed notebook)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


def show_source(*objects: Callable[..., Any] | type, markdown: bool = True):
    """Display the source of lmcourse functions/classes (syntax-highlighted Markdown in Jupyter)."""
    text = "\n\n".join(inspect.getsource(obj).rstrip() for obj in objects)
    if not markdown:
        print(text)
        return None
    try:
        from IPython.display import Markdown, display

        display(Markdown(f"```python\n{text}\n```"))
    except ImportError:  # pragma: no cover
        print(text)
    return None


def show_table(rows: Any, floatfmt: str = "{:.4f}", **kwargs: Any):
    """Rows (list of dicts, dict of dicts or DataFrame) as a DataFrame, floats formatted; returns it."""
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, **kwargs)
    try:
        from IPython.display import display

        display(df.style.format(floatfmt, subset=df.select_dtypes("float").columns))
    except ImportError:  # pragma: no cover
        print(df.to_string())
    return df
