"""An exercise in JupyterLab, in a headless browser, as a learner meets it: the chapter's exercise cell
(lmcourse.exercises.cells) in a notebook, a wrong answer typed into it and run, the checker's failure message and
hint read in the page; then the right answer typed, run, and the pass read in the page.

The JupyterLab server, the Chrome DevTools client and the chromium lookup are those of test_jupyter_server.py.
The server's kernels get a learner's environment (none of the headless signs), so the cell checks what was typed.
"""

from __future__ import annotations

import asyncio
import json
import os

import nbformat
from test_jupyter_server import PANEL, DevTools, JupyterServer, _chromium, headless_chromium, lab_settings, open_page

from lmcourse import exercises
from lmcourse.exercises.cells import answer_name, code_cell_source

WRONG_BODY = ("    scores = q @ k.transpose(-2, -1)\n"
              "    if mask is not None:\n"
              "        scores = scores.masked_fill(~mask, float('-inf'))\n"
              "    return scores.softmax(-1) @ v")
RIGHT_BODY = WRONG_BODY.replace("q @ k.transpose(-2, -1)", "q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5")
OUTPUT_TEXT = ("(() => { const p = " + PANEL + "; const c = p.content.widgets[0]; "
               "return c.outputArea ? c.outputArea.node.textContent : ''; })()")


async def _type_into_cell(page: DevTools, text: str) -> str:
    """Focus the first cell's editor, select everything, type ``text`` (as key input), return the cell's source."""
    await page.js(f"(() => {{ const p = {PANEL}; window.jupyterapp.shell.activateById(p.id); p.content.activeCellIndex"
                  " = 0; p.content.mode = 'edit'; const e = p.content.activeCell.editor; e.focus(); "
                  "e.setSelection({start: {line: 0, column: 0}, end: e.getPositionAt(e.model.sharedModel.getSource()"
                  ".length)}); return true; })()")
    await page.call("Input.insertText", text=text)
    await asyncio.sleep(0.5)
    return await page.js(f"{PANEL}.content.widgets[0].model.sharedModel.getSource()")


async def _run_and_read(page: DevTools, marker: str, timeout: float = 120) -> str:
    await page.js(f"(() => {{ const p = {PANEL}; p.content.activeCellIndex = 0; "
                  "return window.jupyterapp.commands.execute('notebook:run-cell').then(() => true); })()")
    await page.wait_for(f"{OUTPUT_TEXT}.includes({json.dumps(marker)})", timeout, f"the output {marker!r}")
    return await page.js(OUTPUT_TEXT)


async def _learner_session(devtools_port: int, lab_url: str, wrong: str, right: str, screenshots) -> tuple:
    page = await open_page(devtools_port)

    async def shot(name: str) -> None:
        import base64

        data = await page.call("Page.captureScreenshot", format="png")
        (screenshots / name).write_bytes(base64.b64decode(data["data"]))

    try:
        await page.call("Page.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1,
                        mobile=False)
        await page.call("Page.navigate", url=lab_url)
        try:
            await page.wait_for("!!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell'))", 120,
                                "opening the notebook")
            await page.wait_for(f"(() => {{ const p = {PANEL}; return !!(p && p.sessionContext.session && "
                                "p.sessionContext.session.kernel && "
                                "p.sessionContext.session.kernel.status === 'idle'); })()", 90, "the kernel starting")
            typed_wrong = await _type_into_cell(page, wrong)
            failed = await _run_and_read(page, "02.sdpa:")
            await shot("wrong.png")
            typed_right = await _type_into_cell(page, right)
            passed = await _run_and_read(page, "✓ 02.sdpa")
            await shot("right.png")
        except Exception:
            await shot("failure.png")
            raise
        return typed_wrong, failed, typed_right, passed
    finally:
        page.conn.close()


def test_a_wrong_answer_typed_in_jupyterlab_shows_the_hint_and_the_right_one_passes(tmp_path):
    _chromium()  # fails at once, saying how to install it, when there is none
    ex = exercises.exercise("02.sdpa")
    cell, name = code_cell_source(ex), answer_name(ex)
    placeholder = f"{name} = exercises.unanswered('02.sdpa')"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(cell, id="ex02-sdpa")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    root = tmp_path / "lab"
    root.mkdir()
    nbformat.write(nb, root / "exercise.ipynb")
    wrong = cell.replace(placeholder, f"def {name}(q, k, v, mask=None):\n{WRONG_BODY}")
    right = cell.replace(placeholder, f"def {name}(q, k, v, mask=None):\n{RIGHT_BODY}")

    settings = lab_settings(tmp_path / "lab-settings",
                            # what is typed stays as typed: no auto-closed brackets
                            ("codemirror-extension", "plugin", {"defaultConfig": {"autoClosingBrackets": False}}))
    learner = {k: v for k, v in os.environ.items()
               if k not in {"PYTEST_CURRENT_TEST", "LMCOURSE_VERDICT_LOG", "TQDM_DISABLE", exercises.MODE_ENV}}
    env = dict(learner, LMCOURSE_PROFILE="smoke", JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), LMCOURSE_EXERCISES_PROGRESS=str(tmp_path / "p.json"))
    logs = tmp_path / "logs"
    logs.mkdir()
    server = JupyterServer(root, logs / "server.log", env, extra=["--LabApp.expose_app_in_browser=True"])
    try:
        server.wait_ready()
        with headless_chromium(logs) as port:
            lab_url = f"{server.url}/lab/tree/exercise.ipynb?token={server.token}"
            typed_wrong, failed, typed_right, passed = asyncio.run(
                _learner_session(port, lab_url, wrong, right, logs))
    finally:
        server.stop()
    assert typed_wrong == wrong and typed_right == right  # the page holds what was typed
    assert "✗ 02.sdpa" in failed and "scores are not divided by √d_k" in failed, failed
    assert "Error" not in failed  # a failed check, not a traceback
    assert "✓ 02.sdpa" in passed and "✗" not in passed, passed
    assert "02.sdpa" in json.loads((tmp_path / "p.json").read_text())["passed"]
    assert (logs / "wrong.png").stat().st_size > 10_000 and (logs / "right.png").stat().st_size > 10_000
