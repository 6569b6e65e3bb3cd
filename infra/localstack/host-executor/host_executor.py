"""A LocalStack Lambda runtime executor that runs a function's `bootstrap` as a host process.

LocalStack community runs Lambda functions only in Docker containers. This executor, selected with
``LAMBDA_RUNTIME_EXECUTOR=host``, runs the bootstrap of a ``provided.al2023`` function (a Rust
binary built for this host) directly on the host instead, and serves it the Lambda Runtime API
from a small HTTP server of its own:

- ``GET  /2018-06-01/runtime/invocation/next``: the next invocation LocalStack handed over;
- ``POST /2018-06-01/runtime/invocation/<id>/response`` and ``.../error``: its result;
- ``POST /2018-06-01/runtime/init/error``: the function could not start.

One executor is one execution environment: one process, one invocation at a time, as on Lambda.
The process's output is kept and handed to LocalStack as the invocation's logs. No layers, no
extensions, no container image functions.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)

LOG = logging.getLogger(__name__)

RUNTIME_PREFIX = "/2018-06-01/runtime"
# How long a bootstrap may take to ask for its first event.
STARTUP_TIMEOUT_SECONDS = 30
# Kept per environment, like a log stream: enough for a test to read what went wrong.
MAX_LOG_CHARS = 1_000_000


class _Invocation:
    def __init__(self, payload: dict):
        self.payload = payload
        self.result: queue.Queue[tuple[bytes, bool]] = queue.Queue(maxsize=1)


class _RuntimeApi(ThreadingHTTPServer):
    """The Runtime API of one execution environment, on an ephemeral loopback port."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RuntimeApiHandler)
        self.ready = threading.Event()
        self.init_error: bytes | None = None
        self.pending: queue.Queue[_Invocation | None] = queue.Queue()
        self.current: _Invocation | None = None

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    server: _RuntimeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        LOG.debug("runtime api: " + format, *args)

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != f"{RUNTIME_PREFIX}/invocation/next":
            self._answer(HTTPStatus.NOT_FOUND)
            return
        # The first `next` ends initialisation, as on Lambda.
        self.server.ready.set()
        invocation = self.server.pending.get()
        if invocation is None:  # shutting down
            self._answer(HTTPStatus.GONE)
            return
        self.server.current = invocation
        payload = invocation.payload
        function_timeout_ms = int(payload.get("timeout-ms") or 0)
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": payload["invoke-id"],
            "Lambda-Runtime-Invoked-Function-Arn": payload.get("invoked-function-arn", ""),
            "Lambda-Runtime-Trace-Id": payload.get("trace-id", ""),
            "Lambda-Runtime-Deadline-Ms": str(payload["deadline-ms"]),
        }
        if function_timeout_ms:
            headers["Lambda-Runtime-Function-Timeout-Ms"] = str(function_timeout_ms)
        self._answer(HTTPStatus.OK, payload.get("payload", "").encode(), headers)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self._body()
        if self.path == f"{RUNTIME_PREFIX}/init/error":
            self.server.init_error = body or b'{"errorMessage": "init error"}'
            self.server.ready.set()
            self._answer(HTTPStatus.ACCEPTED)
            return
        parts = self.path.removeprefix(f"{RUNTIME_PREFIX}/invocation/").split("/")
        current = self.server.current
        if len(parts) != 2 or parts[1] not in ("response", "error"):
            self._answer(HTTPStatus.NOT_FOUND)
            return
        if current is None or current.payload["invoke-id"] != parts[0]:
            self._answer(HTTPStatus.BAD_REQUEST, b'{"errorMessage": "no such invocation"}')
            return
        self.server.current = None
        current.result.put((body, parts[1] == "error"))
        self._answer(HTTPStatus.ACCEPTED)


class HostRuntimeExecutor(RuntimeExecutor):
    """Runs the function's bootstrap on the host and serves it the Lambda Runtime API."""

    def __init__(self, id: str, function_version: FunctionVersion) -> None:  # noqa: A002
        super().__init__(id=id, function_version=function_version)
        self.api: _RuntimeApi | None = None
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.logs: list[str] = []
        self.logs_lock = threading.Lock()
        self.logs_sent = 0

    def _bootstrap(self) -> Path:
        code = self.function_version.config.code
        if code is None:
            raise LambdaRuntimeException("the host executor runs zip functions only")
        return Path(code.get_unzipped_code_location()) / "bootstrap"

    def _collect_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in iter(self.process.stdout.readline, b""):
            text = line.decode(errors="replace")
            with self.logs_lock:
                if sum(len(chunk) for chunk in self.logs) < MAX_LOG_CHARS:
                    self.logs.append(text)

    def start(self, env_vars: dict[str, str]) -> None:
        bootstrap = self._bootstrap()
        if not bootstrap.is_file():
            raise LambdaRuntimeException(f"no bootstrap in the function's code ({bootstrap})")
        bootstrap.chmod(0o755)
        self.env = {key: str(value) for key, value in env_vars.items()}
        self.env["LAMBDA_TASK_ROOT"] = str(bootstrap.parent)
        # The mark of the run that started LocalStack, so that stopping it finds the functions too.
        if run := os.environ.get("RESERVATIONS_LOCALSTACK_RUN"):
            self.env["RESERVATIONS_LOCALSTACK_RUN"] = run
        self.env.setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
        self._spawn(bootstrap)

    def _spawn(self, bootstrap: Path) -> None:
        """Starts the bootstrap with a fresh Runtime API and waits until it asks for an event."""
        self.api = _RuntimeApi()
        threading.Thread(target=self.api.serve_forever, name=f"runtime-api-{self.id}", daemon=True).start()
        self.process = subprocess.Popen(
            [str(bootstrap)],
            cwd=bootstrap.parent,
            env=dict(self.env, AWS_LAMBDA_RUNTIME_API=self.api.address),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._collect_output, name=f"logs-{self.id}", daemon=True).start()
        LOG.debug("started %s for %s (pid %s)", bootstrap, self.function_version.qualified_arn, self.process.pid)
        started = time.monotonic()
        while not self.api.ready.wait(timeout=0.05):
            exited = self.process.poll() is not None
            if exited or time.monotonic() - started > STARTUP_TIMEOUT_SECONDS:
                self.stop()
                raise LambdaRuntimeException(
                    f"the bootstrap {'exited' if exited else 'did not ask for an event'} during "
                    f"initialisation: {self.get_logs()[-2000:]}"
                )
        if self.api.init_error is not None:
            error = self.api.init_error
            self.stop()
            raise LambdaRuntimeException(f"the function failed to initialise: {error.decode(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.api is not None:
            self.api.pending.put(None)
            self.api.shutdown()
            self.api.server_close()

    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        # The bootstrap runs on this host: LocalStack is on loopback (AWS_ENDPOINT_URL).
        return "127.0.0.1"

    def get_runtime_endpoint(self) -> str:
        return f"http://{self.api.address if self.api else '127.0.0.1'}/_localstack_lambda/{self.id}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        if self.api is None or self.process is None or self.process.poll() is not None:
            raise LambdaRuntimeException(f"the execution environment {self.id} is not running")
        timeout = int(self.function_version.config.timeout)
        invocation = _Invocation(dict(payload, **{"deadline-ms": int((time.time() + timeout) * 1000)}))
        self.api.pending.put(invocation)
        try:
            body, is_error = invocation.result.get(timeout=timeout)
        except queue.Empty:
            # Lambda stops a function that outlives its timeout; the next invocation starts afresh.
            self.stop()
            try:
                self._spawn(self._bootstrap())
            except LambdaRuntimeException as error:
                LOG.warning("could not restart %s after a timeout: %s", self.function_version.qualified_arn, error)
            body = json.dumps(
                {"errorType": "Sandbox.Timedout", "errorMessage": f"Task timed out after {timeout:.2f} seconds"}
            ).encode()
            is_error = True
        with self.logs_lock:
            logs = "".join(self.logs[self.logs_sent :])
            self.logs_sent = len(self.logs)
        return InvocationResult(payload["invoke-id"], body, is_error=is_error, logs=logs)

    def get_logs(self) -> str:
        with self.logs_lock:
            return "".join(self.logs)

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        return True


class HostRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = "host"

    def load(self, *args, **kwargs):
        return HostRuntimeExecutor
