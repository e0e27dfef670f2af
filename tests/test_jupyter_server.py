"""The learner's path through a real Jupyter server: JupyterLab's server on a loopback port with a token, its
REST API (contents, sessions, kernels) and a kernel driven over its websocket, as the JupyterLab front end does.

A smoke notebook is executed cell by cell over the websocket; every cell must reply ``ok``, its assertion cells
included, and a deliberately failing assertion must come back as an ``AssertionError`` (so the check can fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.error import URLError
from urllib.request import Request, urlopen

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "notebooks/00_getting_started.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """``jupyter lab`` (no browser) serving the checkout, reachable at :attr:`url` with :attr:`token`."""

    def __init__(self, root: Path, log: Path, env: dict[str, str], extra: list[str] | None = None):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}", "--ServerApp.ip=127.0.0.1",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.port_retries=0", *(["--allow-root"] if os.name == "posix" and os.geteuid() == 0 else []),
             *(extra or [])],
            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None):
        req = Request(f"{self.url}{path}", method=method, data=json.dumps(body).encode() if body else None,
                      headers={"Authorization": f"token {self.token if token is None else token}",
                               "Content-Type": "application/json"})
        with urlopen(req, timeout=30) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def wait_ready(self, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.api("GET", "/api/status")
                return
            except (URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer on {self.url}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = dict(os.environ, LMCOURSE_PROFILE="smoke", MPLBACKEND="module://matplotlib_inline.backend_inline",
               JUPYTER_RUNTIME_DIR=str(tmp_path_factory.mktemp("jupyter-runtime")))
    srv = JupyterServer(REPO, tmp_path_factory.mktemp("jupyter") / "server.log", env)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _message(code: str, session: str) -> dict:
    msg_id = uuid.uuid4().hex
    return {"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": session,
                       "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}


async def _execute_cells(ws_url: str, sources: list[str], timeout: float) -> list[dict]:
    """Send each source as an execute_request; collect its reply and its iopub outputs until the kernel idles."""
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(ws_url)
    session, results = uuid.uuid4().hex, []
    try:
        for code in sources:
            msg = _message(code, session)
            msg_id = msg["header"]["msg_id"]
            await conn.write_message(json.dumps(msg))
            reply, outputs, idle = None, [], False
            end = time.monotonic() + timeout
            while reply is None or not idle:
                raw = await asyncio.wait_for(conn.read_message(), timeout=max(1.0, end - time.monotonic()))
                if raw is None:
                    raise ConnectionError("the kernel's websocket closed")
                m = json.loads(raw)
                if m.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = m["header"]["msg_type"]
                if kind == "execute_reply":
                    reply = m["content"]
                elif kind == "status" and m["content"]["execution_state"] == "idle":
                    idle = True
                elif kind in ("stream", "display_data", "execute_result", "error"):
                    outputs.append({"type": kind, **m["content"]})
            results.append({"reply": reply, "outputs": outputs})
    finally:
        conn.close()
    return results


def test_rest_api_lists_the_course_and_refuses_a_wrong_token(server):
    listing = server.api("GET", "/api/contents/notebooks")
    names = {item["name"] for item in listing["content"]}
    expected = {p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert expected and expected <= names
    with pytest.raises(Exception, match="403"):
        server.api("GET", "/api/contents/notebooks", token="not-the-token")


def test_a_smoke_notebook_runs_cell_by_cell_over_the_kernel_websocket(server):
    session = server.api("POST", "/api/sessions", {"path": NOTEBOOK, "type": "notebook", "name": "",
                                                    "kernel": {"name": "python3"}})
    kernel = session["kernel"]["id"]
    try:
        nb = nbformat.read(REPO / NOTEBOOK, as_version=4)
        sources = [c.source for c in nb.cells if c.cell_type == "code"]
        ws_url = f"ws://127.0.0.1:{server.port}/api/kernels/{kernel}/channels?token={server.token}"
        probe = ["import os; print(os.getcwd()); print(os.environ['LMCOURSE_PROFILE'])",
                 "assert 1 + 1 == 3, 'a failing assertion must come back as an error'"]
        results = asyncio.run(_execute_cells(ws_url, [*sources, *probe], timeout=300))
        for i, (src, res) in enumerate(zip(sources, results)):
            errors = [o for o in res["outputs"] if o["type"] == "error"]
            assert res["reply"]["status"] == "ok", (i, src[:200], errors and errors[0]["evalue"])
        assert any("assert" in s for s in sources)  # the notebook's own checks ran (and passed) above
        texts = "".join(o.get("text", "") for r in results for o in r["outputs"] if o["type"] == "stream")
        assert "profile" in texts.lower() and "smoke" in texts
        rich = [o for r in results for o in r["outputs"] if o["type"] in ("display_data", "execute_result")]
        assert rich, "the notebook displayed nothing (tables, plots)"
        cwd_and_profile, failing = results[-2], results[-1]
        assert cwd_and_profile["outputs"][0]["text"].split() == [str(REPO / "notebooks"), "smoke"]
        assert failing["reply"]["status"] == "error" and failing["reply"]["ename"] == "AssertionError"
    finally:
        server.api("DELETE", f"/api/sessions/{session['id']}")
    assert kernel not in {k["id"] for k in server.api("GET", "/api/kernels")}


# ------------------------------------------------------------------------------------------ the browser
BROWSER_NOTEBOOK = "notebooks/00_getting_started.ipynb"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str:
    import shutil

    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    message = ("no chromium on this machine: the browser test needs it (Debian: apt-get install chromium; "
               ".ci/run installs it)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)



def lab_settings(folder: Path, *extra: tuple[str, str, dict]) -> Path:
    """JupyterLab user settings for a test: every cell rendered (not only those in view), no news or update
    pop-ups, plus ``extra`` ``(extension, plugin, value)`` triples."""
    for ext, plugin, value in (("notebook-extension", "tracker", {"windowingMode": "none"}),
                               ("apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False}),
                               *extra):
        (folder / "@jupyterlab" / ext).mkdir(parents=True, exist_ok=True)
        (folder / "@jupyterlab" / ext / f"{plugin}.jupyterlab-settings").write_text(json.dumps(value))
    return folder


@contextlib.contextmanager
def headless_chromium(logs: Path):
    """Headless chromium with its DevTools endpoint up; yields the DevTools port, and stops the browser after."""
    port = _free_port()
    browser = subprocess.Popen(
        [_chromium(), "--headless=new", f"--remote-debugging-port={port}", "--remote-allow-origins=*",
         "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={logs / 'profile'}", "about:blank"],
        stdout=(logs / "chromium.log").open("w"), stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                urlopen(f"http://127.0.0.1:{port}/json/version", timeout=5).read()
                break
            except (URLError, ConnectionError, OSError):
                if time.monotonic() > end or browser.poll() is not None:
                    raise RuntimeError("chromium did not start:\n"
                                       f"{(logs / 'chromium.log').read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield port
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()

class DevTools:
    """A minimal Chrome DevTools Protocol client over one page target's websocket."""

    def __init__(self, conn):
        self.conn, self.next_id = conn, 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.conn.write_message(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            raw = await self.conn.read_message()
            if raw is None:
                raise ConnectionError("the browser closed the DevTools connection")
            msg = json.loads(raw)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def js(self, expression: str):
        res = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if await self.js(expression):
                return
            await asyncio.sleep(0.5)
        seen = await self.js(DIAGNOSIS)
        raise TimeoutError(f"JupyterLab in the browser: {what} did not happen within {timeout:.0f} s ({seen})")


# the notebook's panel (shell.currentWidget follows focus, which a headless page may not have)
PANEL = "[...window.jupyterapp.shell.widgets('main')].find(w => w.sessionContext && w.content && w.content.model)"
DIAGNOSIS = """(() => { try { const w = window.jupyterapp && """ + PANEL + """;
  const s = w && w.sessionContext; const k = s && s.session && s.session.kernel;
  return JSON.stringify({widget: w ? w.constructor.name : null, ready: s ? s.isReady : null,
    kernel: k ? [k.status, k.connectionStatus] : null}); } catch (e) { return String(e); } })()"""
NOTEBOOK_STATE = """(() => {
  const panel = """ + PANEL + """;
  const cells = [...Array(panel.content.model.cells.length).keys()].map(i => panel.content.model.cells.get(i));
  const code = cells.filter(c => c.type === 'code');
  const outputs = code.flatMap(c => c.toJSON().outputs || []);
  const md = [...document.querySelectorAll('.jp-MarkdownCell .jp-RenderedMarkdown')].map(el => {
    const copy = el.cloneNode(true);
    copy.querySelectorAll('code, pre, mjx-container').forEach(n => n.remove());
    return copy.textContent;
  });
  return {
    code_cells: code.length,
    executed: code.filter(c => c.executionCount !== null).length,
    errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
    kernel: panel.sessionContext.session && panel.sessionContext.session.kernel
            ? panel.sessionContext.session.kernel.status : 'none',
    images: document.querySelectorAll('.jp-OutputArea-output img').length,
    math: document.querySelectorAll('.jp-RenderedMarkdown mjx-container').length,
    raw_math: md.filter(t => /\\$[^$\\n]+\\$/.test(t)).length,
  };
})()"""


async def open_page(devtools_port: int) -> DevTools:
    """A new blank tab of the headless browser, driven over the DevTools protocol."""
    from tornado.websocket import websocket_connect

    with urlopen(Request(f"http://127.0.0.1:{devtools_port}/json/new?about:blank", method="PUT"), timeout=30) as r:
        target = json.loads(r.read())
    return DevTools(await websocket_connect(target["webSocketDebuggerUrl"], max_message_size=64 * 2**20))


async def _drive_jupyterlab(devtools_port: int, lab_url: str, screenshot: Path) -> dict:
    page = await open_page(devtools_port)

    async def save_screenshot(path: Path) -> None:
        import base64

        shot = await page.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    try:
        await page.call("Page.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1,
                        mobile=False)
        await page.call("Page.navigate", url=lab_url)
        try:
            await _run_notebook_in_lab(page)
        except Exception:
            await save_screenshot(screenshot.with_name("failure.png"))  # what the page showed when it failed
            raise
        state = await page.js(NOTEBOOK_STATE)
        await page.js("(() => { const img = document.querySelector('.jp-OutputArea-output img'); "
                      "if (img) img.scrollIntoView(); return true; })()")
        await asyncio.sleep(1.0)
        await save_screenshot(screenshot)
        return state
    finally:
        page.conn.close()


async def _run_notebook_in_lab(page: DevTools) -> None:
    """Wait for the notebook and its kernel, run all cells, wait for them and for the typeset LaTeX."""
    await page.wait_for("!!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell'))", 120,
                        "opening the notebook")
    await page.wait_for(f"(() => {{ const p = {PANEL}; return !!(p && p.sessionContext.session && "
                        "p.sessionContext.session.kernel && p.sessionContext.session.kernel.status === 'idle'); })()",
                        60, "the kernel starting")
    await page.js(f"(() => {{ window.jupyterapp.shell.activateById({PANEL}.id); return true; }})()")
    await page.js("window.jupyterapp.commands.execute('notebook:run-all-cells').then(() => true)")
    await page.wait_for(f"(() => {{ const s = {NOTEBOOK_STATE}; return s.executed === s.code_cells && "
                        "s.kernel === 'idle'; })()", 300, "running every cell")
    await page.js("window.jupyterapp.commands.execute('notebook:render-all-markdown').then(() => true)")
    await page.wait_for(f"{NOTEBOOK_STATE}.math > 0", 60, "typesetting the LaTeX")


def test_jupyterlab_in_a_headless_browser_renders_latex_and_plots(tmp_path_factory):
    _chromium()  # fails at once, saying how to install it, when there is none
    settings = lab_settings(tmp_path_factory.mktemp("lab-settings"))
    env = dict(os.environ, LMCOURSE_PROFILE="smoke", JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTER_RUNTIME_DIR=str(tmp_path_factory.mktemp("jupyter-runtime")))
    env.pop("MPLBACKEND", None)  # the inline backend, as a learner gets it
    logs = tmp_path_factory.mktemp("browser")
    server = JupyterServer(REPO, logs / "server.log", env, extra=["--LabApp.expose_app_in_browser=True"])
    try:
        server.wait_ready()
        with headless_chromium(logs) as port:
            from lmcourse.runner import default_runs_dir

            screenshot = default_runs_dir() / "browser-test" / time.strftime("%Y%m%d-%H%M%S") / "jupyterlab.png"
            lab_url = f"{server.url}/lab/tree/{BROWSER_NOTEBOOK}?token={server.token}"
            state = asyncio.run(_drive_jupyterlab(port, lab_url, screenshot))
        print(f"screenshot: {screenshot}; notebook state: {state}")
        assert state["executed"] == state["code_cells"] > 0 and not state["errors"], state
        assert state["math"] > 0 and state["raw_math"] == 0, state  # LaTeX typeset, no raw $...$ left
        assert state["images"] > 0, state  # a plot appeared
        assert screenshot.stat().st_size > 10_000
    finally:
        server.stop()
