"""The e2e machinery: a real ComfyUI server (CPU) with this pack, its HTTP and websocket API, and the
ComfyUI page in headless Chromium. conftest.py turns these into fixtures.

The server is the ComfyUI 0.3.75 tree prepared by scripts/setup_env.sh (TTSVAR_COMFY_DIR, default
<repo>/.cache/ComfyUI), started with the interpreter running pytest, so it sees the same virtualenv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
PACK_NAME = "comfyui-ttsvar"
# Test-only nodes (progress, previews, custom events, failures) the harness loads
# beside the pack; see support_nodes/ttsvar_e2e_support.py.
SUPPORT_NODES_DIR = E2E_DIR / "support_nodes"
# Model folders given a per-session directory under ComfyServer.models_dir, so
# tests can drop tiny weight files there without touching the ComfyUI tree.
SESSION_MODEL_FOLDERS = ("infinity", "infinity_vae", "text_encoders", "ttsvar_rewards", "ttsvar_features")
CHROMIUM = Path("/usr/bin/chromium")
# Headless and offline: without the background-networking flags Chromium keeps
# trying to reach Google services, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# A cold start (no .pyc yet, other jobs on the 2 cores) has taken 30 s; leave room.
SERVER_START_TIMEOUT_S = float(os.environ.get("TTSVAR_COMFY_START_TIMEOUT", "300"))
PAGE_READY_TIMEOUT_MS = 90_000


def comfy_dir() -> Path:
    return Path(os.environ.get("TTSVAR_COMFY_DIR") or REPO_ROOT / ".cache" / "ComfyUI").resolve()


def artifacts_dir() -> Path:
    path = Path(os.environ.get("TTSVAR_ARTIFACTS") or REPO_ROOT / ".cache" / "artifacts").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def e2e_required() -> bool:
    return os.environ.get("TTSVAR_REQUIRE_E2E") == "1"


def setup_problem() -> Optional[str]:
    """Why the e2e tests cannot run here, or None when they can."""
    comfy = comfy_dir()
    if not (comfy / "main.py").is_file():
        return f"ComfyUI is not set up at {comfy} (run: bash scripts/setup_env.sh)"
    link = comfy / "custom_nodes" / PACK_NAME
    if not link.exists() or link.resolve() != REPO_ROOT:
        return f"{link} does not link to this checkout {REPO_ROOT} (run: bash scripts/setup_env.sh)"
    for module in ("requests", "websocket"):
        if importlib.util.find_spec(module) is None:
            return f"module {module!r} missing from {sys.executable} (install requirements-test.txt)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# urllib would send loopback requests through a proxy named in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ComfyServer:
    """A ComfyUI process on 127.0.0.1 with output/temp/input/user folders under workdir.

    models_dir/<folder> (for each of SESSION_MODEL_FOLDERS) is an extra search path
    of that model folder, listed after the tree's own models/<folder>.
    """

    def __init__(self, comfy: Path, workdir: Path, port: int, support_nodes: bool = True):
        self.comfy = comfy
        self.support_nodes = support_nodes  # False: the pack alone, as a user installs it
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.log_path = workdir / "server.log"
        self.output_dir = workdir / "output"
        self.input_dir = workdir / "input"
        self.user_dir = workdir / "user"
        # ComfyUI appends "temp" to --temp-directory.
        self.temp_dir = workdir / "temp"
        self.models_dir = workdir / "models"
        self.extra_paths_config = workdir / "extra_model_paths.yaml"
        self.process: Optional[subprocess.Popen] = None
        self.startup_seconds: Optional[float] = None

    def _seed_user_settings(self):
        """Copy the tree's UI settings and make sure the first-run dialog stays closed."""
        settings_path = self.user_dir / "default" / "comfy.settings.json"
        settings_path.parent.mkdir(parents=True, exist_ok=True)
        source = self.comfy / "user" / "default" / "comfy.settings.json"
        settings = json.loads(source.read_text()) if source.is_file() else {}
        settings["Comfy.TutorialCompleted"] = True
        # Screenshots of whole workflows: full node detail at any zoom, no frame-time text on the canvas.
        settings["LiteGraph.Canvas.MinFontSizeForLOD"] = 0
        settings["Comfy.Graph.CanvasInfo"] = False
        # The 2B templates name model files no test has: the frontend's missing-models dialog would cover the
        # page after every load. test_templates.py turns it on where it checks that dialog.
        settings["Comfy.Workflow.ShowMissingModelsWarning"] = False
        settings_path.write_text(json.dumps(settings, indent=2))

    def _write_extra_paths_config(self):
        """Session model folders and the test-only nodes, as an extra_model_paths.yaml."""
        lines = ["ttsvar_e2e:"]
        if self.support_nodes:
            lines.append(f"  custom_nodes: {json.dumps(str(SUPPORT_NODES_DIR))}")
        for name in SESSION_MODEL_FOLDERS:
            folder = self.models_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            lines.append(f"  {name}: {json.dumps(str(folder))}")
        self.extra_paths_config.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "main.py",
            "--cpu",  # the CPU torch build asserts on CUDA without it
            "--listen", "127.0.0.1",
            "--port", str(self.port),
            "--disable-auto-launch",
            "--disable-api-nodes",  # no comfy.org API nodes; CSP keeps the page offline too
            "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.workdir),
            "--input-directory", str(self.input_dir),
            "--user-directory", str(self.user_dir),
            "--database-url", f"sqlite:///{self.workdir / 'comfyui.db'}",
            "--extra-model-paths-config", str(self.extra_paths_config),
        ]
        return cmd + shlex.split(os.environ.get("TTSVAR_COMFY_ARGS", ""))

    def start(self, timeout: float = SERVER_START_TIMEOUT_S):
        for folder in (self.output_dir, self.input_dir, self.user_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._seed_user_settings()
        self._write_extra_paths_config()
        env = dict(os.environ)
        # ComfyUI's own modules (its "nodes" above all) must win over anything on PYTHONPATH.
        env.pop("PYTHONPATH", None)
        env["PYTHONUNBUFFERED"] = "1"  # the log file is read while the server runs
        env["HF_HUB_OFFLINE"] = "1"  # tests must never reach for a model hub
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.comfy, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = started + timeout
        while True:
            self.check_alive()
            try:
                with _DIRECT.open(self.url + "/system_stats", timeout=2):
                    break
            except OSError:  # not listening yet (urllib's URLError is an OSError)
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"ComfyUI not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}")
                time.sleep(0.25)
        self.startup_seconds = time.monotonic() - started

    def check_alive(self):
        """Fail the current test, with the log tail, if the server process has exited."""
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"ComfyUI exited with code {self.process.returncode}; log tail:\n{self.log_tail()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ------------------------------------------------------------------ websocket messages

# Binary frame event types of ComfyUI's websocket protocol (its protocol.py).
BINARY_PREVIEW_IMAGE = 1
BINARY_TEXT = 3
BINARY_PREVIEW_IMAGE_WITH_METADATA = 4
_LEGACY_IMAGE_TYPES = {1: "image/jpeg", 2: "image/png"}


@dataclass
class WsMessage:
    """One websocket message.

    JSON messages keep their "type" and "data". Binary frames become:
      type "preview": data = metadata (node_id, prompt_id, display_node_id, image_type)
                      when the client announced supports_preview_metadata, else {};
                      image = encoded image bytes, image_type = its MIME type;
      type "progress_text": data = {"node_id", "text"};
      type "binary": any other event, data = {"event": number}, image = the payload.
    """

    type: str
    data: Any
    image: Optional[bytes] = None
    image_type: Optional[str] = None


def decode_binary_frame(payload: bytes) -> WsMessage:
    (event,) = struct.unpack(">I", payload[:4])
    if event == BINARY_PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", payload[4:8])
        metadata = json.loads(payload[8:8 + length])
        return WsMessage("preview", metadata, payload[8 + length:], metadata.get("image_type"))
    if event == BINARY_PREVIEW_IMAGE:
        (image_format,) = struct.unpack(">I", payload[4:8])
        return WsMessage("preview", {}, payload[8:], _LEGACY_IMAGE_TYPES.get(image_format))
    if event == BINARY_TEXT:
        (length,) = struct.unpack(">I", payload[4:8])
        node_id = payload[8:8 + length].decode("utf-8")
        text = payload[8 + length:].decode("utf-8", errors="replace")
        return WsMessage("progress_text", {"node_id": node_id, "text": text})
    return WsMessage("binary", {"event": event}, payload[4:])


class WsConnection:
    """A websocket client of the server (/ws?clientId=...), read message by message."""

    def __init__(self, server: ComfyServer, client_id: Optional[str] = None,
                 preview_metadata: bool = True):
        import websocket

        self._websocket = websocket
        self.server = server
        self.client_id = client_id or uuid.uuid4().hex
        self.messages: list[WsMessage] = []
        self._ws = websocket.create_connection(f"{server.ws_url}?clientId={self.client_id}", timeout=30)
        if preview_metadata:
            # Must be the first message: the server reads feature flags only then.
            # With it, previews arrive as event 4 carrying node and prompt ids.
            self._ws.send(json.dumps({"type": "feature_flags",
                                      "data": {"supports_preview_metadata": True}}))

    def receive(self, timeout: float = 60.0) -> WsMessage:
        """Next message; fails the test after timeout, or at once if the server died."""
        deadline = time.monotonic() + timeout
        while True:
            self.server.check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [m.type for m in self.messages[-30:]]
                pytest.fail(f"no websocket message within {timeout:.0f} s (last seen: {seen});"
                            f" server log tail:\n{self.server.log_tail()}")
            # Short slices so a dead server is noticed; a timeout mid-frame is
            # safe, websocket-client keeps the partial frame for the next call.
            self._ws.settimeout(min(1.0, remaining))
            try:
                opcode, payload = self._ws.recv_data()
            except self._websocket.WebSocketTimeoutException:
                continue
            if opcode == self._websocket.ABNF.OPCODE_BINARY:
                message = decode_binary_frame(payload)
            elif opcode == self._websocket.ABNF.OPCODE_TEXT:
                decoded = json.loads(payload)
                message = WsMessage(decoded.get("type", ""), decoded.get("data"))
            elif opcode == self._websocket.ABNF.OPCODE_CLOSE:
                pytest.fail(f"server closed the websocket; log tail:\n{self.server.log_tail()}")
            else:
                continue
            self.messages.append(message)
            return message

    def close(self):
        self._ws.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# ------------------------------------------------------------------ prompt results

@dataclass
class PromptRun:
    """What one queued prompt produced: websocket messages in order, then its history entry.

    messages holds everything this client received between queueing and the end
    of the prompt, including broadcasts (custom events sent to all clients).
    """

    prompt_id: str
    client_id: str
    messages: list[WsMessage] = field(default_factory=list)
    history: Optional[dict] = None

    @property
    def types(self) -> list[str]:
        return [m.type for m in self.messages]

    def of_type(self, message_type: str) -> list[Any]:
        """The data of every message of that type, in order."""
        return [m.data for m in self.messages if m.type == message_type]

    @property
    def previews(self) -> list[WsMessage]:
        return [m for m in self.messages if m.type == "preview"]

    @property
    def executing_nodes(self) -> list[str]:
        """Node ids from "executing" messages, in order, without the final None."""
        return [d["node"] for d in self.of_type("executing")
                if d.get("node") is not None and d.get("prompt_id") == self.prompt_id]

    def executed_output(self, node_id: str) -> Optional[dict]:
        """The "output" of the node's "executed" message (its ui dict), or None."""
        for data in self.of_type("executed"):
            if data.get("node") == node_id and data.get("prompt_id") == self.prompt_id:
                return data.get("output")
        return None

    @property
    def status(self) -> Optional[str]:
        """History status: "success" or "error" (errors and interrupts alike)."""
        return (self.history or {}).get("status", {}).get("status_str")

    @property
    def succeeded(self) -> bool:
        return "execution_success" in self.types and self.status == "success"

    @property
    def error(self) -> Optional[dict]:
        """The execution_error data (node_id, node_type, exception_type, exception_message, ...)."""
        errors = self.of_type("execution_error")
        return errors[-1] if errors else None

    @property
    def interrupted(self) -> bool:
        return "execution_interrupted" in self.types

    @property
    def outputs(self) -> dict:
        """History outputs by node id, e.g. {"4": {"images": [{filename, subfolder, type}]}}."""
        return (self.history or {}).get("outputs", {})


class PromptRejected(AssertionError):
    """POST /prompt refused the graph (HTTP 400: validation error, unknown node, ...)."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"POST /prompt answered {status}: {json.dumps(body)[:4000]}")
        self.status = status
        self.body = body


def _ends_prompt(message: WsMessage, prompt_id: str) -> bool:
    data = message.data if isinstance(message.data, dict) else {}
    if data.get("prompt_id") != prompt_id:
        return False
    if message.type in ("execution_error", "execution_interrupted"):
        return True
    # {"node": None} closes every prompt, including after execution_success.
    return message.type == "executing" and data.get("node") is None


class ComfyClient:
    """Synchronous helpers for the server's HTTP and websocket API."""

    # Reachable from tests as comfy.PromptRejected (test modules cannot import
    # this module under --import-mode=importlib; conftest loads it by path).
    PromptRejected = PromptRejected

    def __init__(self, server: ComfyServer):
        import requests

        self.server = server
        self.url = server.url
        self.http = requests.Session()
        self.http.trust_env = False  # loopback only: never through an environment proxy

    # -- plain HTTP
    def get(self, path: str, timeout: float = 30.0, **params):
        """GET path (e.g. "/object_info"); returns the requests.Response."""
        return self.http.get(self.url + path, params=params or None, timeout=timeout)

    def get_json(self, path: str, timeout: float = 30.0, **params) -> Any:
        response = self.get(path, timeout=timeout, **params)
        response.raise_for_status()
        return response.json()

    def post_json(self, path: str, payload: Any = None, timeout: float = 30.0):
        """POST a JSON body; returns the requests.Response."""
        return self.http.post(self.url + path, json=payload if payload is not None else {},
                              timeout=timeout)

    def object_info(self, node_class: Optional[str] = None) -> dict:
        """All node definitions, or one ({"input", "output", "category", ...}) by class name."""
        if node_class is None:
            return self.get_json("/object_info")
        info = self.get_json(f"/object_info/{node_class}")
        if node_class not in info:
            pytest.fail(f"node {node_class} is unknown to the server; log tail:\n{self.server.log_tail()}")
        return info[node_class]

    # -- prompts
    def queue_prompt(self, graph: dict, *, client_id: Optional[str] = None,
                     prompt_id: Optional[str] = None, extra_data: Optional[dict] = None) -> dict:
        """POST /prompt with an API-format graph; returns {"prompt_id", "number", "node_errors"}.

        Raises PromptRejected (status, body) when the server refuses the graph.
        """
        payload: dict[str, Any] = {"prompt": graph, "client_id": client_id or uuid.uuid4().hex}
        if prompt_id:
            payload["prompt_id"] = prompt_id
        if extra_data:
            payload["extra_data"] = extra_data
        response = self.post_json("/prompt", payload)
        body = response.json()
        if response.status_code != 200:
            raise PromptRejected(response.status_code, body)
        return body

    def run_prompt(self, graph: dict, *, timeout: float = 120.0,
                   on_message: Optional[Callable[[WsMessage, PromptRun], None]] = None,
                   preview_metadata: bool = True, extra_data: Optional[dict] = None,
                   history_timeout: float = 10.0) -> PromptRun:
        """Queue graph and follow it on a websocket until it ends; then fetch its history.

        The prompt ends with execution_error, execution_interrupted, or the final
        executing message with node None. on_message(message, run) is called for
        every message as it arrives (e.g. to call interrupt after a progress
        message). Raises PromptRejected if the graph is refused; fails the test
        after timeout seconds or if the server dies.
        """
        with WsConnection(self.server, preview_metadata=preview_metadata) as ws:
            queued = self.queue_prompt(graph, client_id=ws.client_id, extra_data=extra_data)
            run = PromptRun(prompt_id=queued["prompt_id"], client_id=ws.client_id)
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.interrupt(run.prompt_id)
                    pytest.fail(f"prompt {run.prompt_id} did not finish in {timeout:.0f} s"
                                f" (messages: {run.types[-30:]}); log tail:\n{self.server.log_tail()}")
                message = ws.receive(timeout=remaining)
                run.messages.append(message)
                if on_message is not None:
                    on_message(message, run)
                if _ends_prompt(message, run.prompt_id):
                    break
        run.history = self.history(run.prompt_id, timeout=history_timeout)
        return run

    def history(self, prompt_id: str, *, timeout: float = 10.0) -> dict:
        """The /history entry of a prompt, polled: it appears shortly after the last ws message."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry:
                return entry
            if time.monotonic() > deadline:
                pytest.fail(f"no /history entry for prompt {prompt_id} after {timeout:.0f} s")
            time.sleep(0.1)

    def interrupt(self, prompt_id: Optional[str] = None):
        """POST /interrupt: the running prompt (only if it is prompt_id, when given)."""
        payload = {"prompt_id": prompt_id} if prompt_id else {}
        self.post_json("/interrupt", payload).raise_for_status()

    def wait_until_idle(self, timeout: float = 60.0):
        """Wait until nothing is running or pending in the queue."""
        deadline = time.monotonic() + timeout
        while True:
            queue = self.get_json("/queue")
            if not queue.get("queue_running") and not queue.get("queue_pending"):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"queue still busy after {timeout:.0f} s: {queue}")
            time.sleep(0.1)

    def free(self, unload_models: bool = True, free_memory: bool = True):
        """POST /free: ask the worker to unload models and free memory between prompts."""
        payload = {"unload_models": unload_models, "free_memory": free_memory}
        self.post_json("/free", payload).raise_for_status()

    def view(self, filename: str, *, subfolder: str = "", folder_type: str = "output") -> bytes:
        """Bytes of an output/temp/input file, as listed in history outputs."""
        response = self.get("/view", filename=filename, subfolder=subfolder, type=folder_type)
        response.raise_for_status()
        return response.content

    def websocket(self, client_id: Optional[str] = None, preview_metadata: bool = True) -> WsConnection:
        """A websocket of one's own, for flows run_prompt does not cover (close it after use)."""
        return WsConnection(self.server, client_id=client_id, preview_metadata=preview_metadata)


# ------------------------------------------------------------------ browser

def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:150]


# Everything the frontend draws over the graph canvas lives in these containers (opacity, because some
# children set their own visibility).
_OVERLAY_CSS = ".splitter-overlay-root, .p-toast, .p-dialog-mask { opacity: 0 !important; }"


class ComfyPage:
    """A Playwright page showing the ComfyUI frontend, with what it reported.

    page_errors: uncaught exceptions in the page (Playwright Error objects: .message, .stack)
    console: (type, text) of every console message
    failed_responses: (status, url) of every HTTP response >= 400
    """

    def __init__(self, page, artifacts: Path, name: str):
        self.page = page
        self.artifacts = artifacts
        self.name = name
        self.page_errors: list[Any] = []
        self.console: list[tuple[str, str]] = []
        self.failed_responses: list[tuple[int, str]] = []
        page.on("pageerror", lambda error: self.page_errors.append(error))
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("response", self._on_response)

    def _on_response(self, response):
        if response.status >= 400:
            self.failed_responses.append((response.status, response.url))

    def screenshot(self, label: str) -> Path:
        """Save a full-window PNG as <artifacts>/<test name>__<label>.png."""
        path = self.artifacts / f"{self.name}__{safe_name(label)}.png"
        self.page.screenshot(path=str(path))
        return path

    def clean_screenshot(self, label: str, locator: Optional[str] = None) -> Path:
        """Like screenshot, with the frontend's overlays (menus, tabs, banners, toasts) hidden so only the
        graph and its node widgets show; of one element when locator (a CSS selector) is given."""
        path = self.artifacts / f"{self.name}__{safe_name(label)}.png"
        hide = self.page.add_style_tag(content=_OVERLAY_CSS)
        try:
            target = self.page.locator(locator) if locator else self.page
            target.screenshot(path=str(path))
        finally:
            hide.evaluate("(style) => style.remove()")
        return path

    def extension_names(self) -> list[str]:
        return self.page.evaluate("() => window.app.extensions.map(e => e.name)")

    def errors_mentioning(self, text: str) -> list[str]:
        """Uncaught page errors whose message or stack contains text (e.g. our extension path)."""
        found = []
        for error in self.page_errors:
            detail = f"{error.message}\n{error.stack or ''}"
            if text in detail:
                found.append(detail)
        return found


# ------------------------------------------------------------------ lifetimes (what the fixtures hold)

@contextmanager
def running_server(workdir: Path, artifacts: Path):
    """A started ComfyServer; stopped afterwards, its log copied to artifacts/comfyui-server.log."""
    server = ComfyServer(comfy_dir(), workdir, free_port())
    try:
        server.start()
        print(f"\n[e2e] ComfyUI ready at {server.url} in {server.startup_seconds:.1f} s"
              f" (log {server.log_path})")
        yield server
    finally:
        server.stop()
        if server.log_path.exists():
            shutil.copyfile(server.log_path, artifacts / "comfyui-server.log")


def browser_problem() -> Optional[str]:
    """Why no browser test can run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} missing (scripts/setup_env.sh installs Debian's chromium as root)"
    if importlib.util.find_spec("playwright") is None:
        return f"playwright missing from {sys.executable} (install requirements-test.txt)"
    return None


@contextmanager
def chromium():
    """Headless Chromium driven by Playwright; the test is skipped (failed under TTSVAR_REQUIRE_E2E=1)
    when there is none."""
    problem = browser_problem()
    if problem:
        if e2e_required():
            pytest.fail(f"TTSVAR_REQUIRE_E2E=1 but {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Debian's Chromium, never a Playwright browser download (no such network here).
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def open_page(browser, url: str, artifacts: Path, name: str):
    """A fresh browser context on the ComfyUI page, loaded until window.app.graph exists; a last
    screenshot <name>__final.png is saved when the block ends."""
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        comfy_page = ComfyPage(context.new_page(), artifacts, safe_name(name))
        try:
            comfy_page.page.goto(url + "/")
            comfy_page.page.wait_for_function("() => window.app && window.app.graph",
                                              timeout=PAGE_READY_TIMEOUT_MS)
        except PlaywrightError as error:
            comfy_page.screenshot("load-failed")
            pytest.fail(f"ComfyUI page did not load: {error}; page errors:"
                        f" {[e.message for e in comfy_page.page_errors]}")
        yield comfy_page
        comfy_page.screenshot("final")
    finally:
        context.close()
