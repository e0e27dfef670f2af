"""The learner's path through a real Jupyter server: JupyterLab's server on a loopback port with a token, its
REST API (contents, sessions, kernels) and a kernel driven over its websocket, as the JupyterLab front end does.

A smoke notebook is executed cell by cell over the websocket; every cell must reply ``ok``, its assertion cells
included, and a deliberately failing assertion must come back as an ``AssertionError`` (so the check can fail).
"""

from __future__ import annotations

import asyncio
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

    def __init__(self, root: Path, log: Path, env: dict[str, str]):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}", "--ServerApp.ip=127.0.0.1",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.port_retries=0", *(["--allow-root"] if os.name == "posix" and os.geteuid() == 0 else [])],
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
