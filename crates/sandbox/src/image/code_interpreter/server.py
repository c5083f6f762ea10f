"""IronClaw's code-interpreter server: the HTTP API that E2B's Code
Interpreter SDK (e2b-code-interpreter) speaks on port 49999, over Jupyter
kernels driven with jupyter_client.

- POST /execute {code, context_id, language, env_vars}: runs the code in a
  context's kernel; the answer streams one JSON object per line as the
  kernel's messages arrive: stdout/stderr, number_of_executions, result,
  error, then end_of_execution.
- POST /contexts {language, cwd}, GET /contexts, DELETE /contexts/ID,
  POST /contexts/ID/restart: one kernel per context. The default Python
  context starts with the server.
- GET /health.

Only Python kernels are served. It listens on loopback: the daemon reaches
it through the guest agent, never over the sandbox's network.
"""

import json
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jupyter_client.manager import KernelManager

PORT = int(os.environ.get("CODE_INTERPRETER_PORT", "49999"))
DEFAULT_CWD = os.environ.get("HOME", "/root")
LANGUAGES = ("python", "python3")
# The kernel's MIME types, by the field the SDK's Result has for them.
MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}


class ClientGone(Exception):
    """The caller closed the connection mid-execution."""


class Context:
    """One kernel, one execution at a time."""

    def __init__(self, language, cwd):
        self.id = str(uuid.uuid4())
        self.language = "python"
        self.cwd = cwd
        self.lock = threading.Lock()
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=cwd)
        self.client = self.manager.blocking_client()
        self.client.start_channels()
        self._ready()

    def _ready(self):
        self.client.wait_for_ready(timeout=120)
        # Plain tracebacks: ANSI colours are noise to whoever reads them.
        self._silent("get_ipython().run_line_magic('colors', 'nocolor')")

    def json(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def restart(self):
        with self.lock:
            self.manager.restart_kernel(now=True)
            self._ready()

    def shutdown(self):
        try:
            self.client.stop_channels()
        finally:
            self.manager.shutdown_kernel(now=True)

    def _wait_idle(self, msg_id, emit, on_quiet=None):
        """Relay `msg_id`'s output to `emit` until the kernel is idle again;
        `on_quiet` is called each second without output."""
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=1)
            except queue.Empty:
                if on_quiet:
                    on_quiet()
                if not self.manager.is_alive():
                    emit(
                        {
                            "type": "error",
                            "name": "KernelDied",
                            "value": "the kernel exited during the execution",
                            "traceback": "",
                        }
                    )
                    return
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status":
                if content["execution_state"] == "idle":
                    return
            elif kind == "stream":
                emit(
                    {
                        "type": content["name"],
                        "text": content["text"],
                        "timestamp": time.time_ns(),
                    }
                )
            elif kind == "execute_input":
                emit(
                    {
                        "type": "number_of_executions",
                        "execution_count": content["execution_count"],
                    }
                )
            elif kind in ("execute_result", "display_data"):
                emit(result(content["data"], kind == "execute_result"))
            elif kind == "error":
                emit(
                    {
                        "type": "error",
                        "name": content["ename"],
                        "value": content["evalue"],
                        "traceback": "\n".join(content["traceback"]),
                    }
                )

    def _drain_reply(self, msg_id):
        """The shell reply of `msg_id`, so replies do not pile up."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                reply = self.client.get_shell_msg(timeout=1)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return

    def _silent(self, code):
        msg_id = self.client.execute(code, silent=True, store_history=False)
        self._wait_idle(msg_id, lambda _: None)
        self._drain_reply(msg_id)

    def execute(self, code, env_vars, emit, client_gone):
        """Run `code`. When the caller goes away (a ClientGone from `emit`,
        or `client_gone()` while the code is quiet) the kernel is
        interrupted and the rest of the output dropped."""
        gone = []

        def give_up():
            if not gone:
                gone.append(True)
                self.manager.interrupt_kernel()

        def relay(line):
            if gone:
                return
            try:
                emit(line)
            except ClientGone:
                give_up()

        def check():
            if not gone and client_gone():
                give_up()

        with self.lock:
            if env_vars:
                self._silent(
                    "import os as _ic_os\n"
                    f"_ic_saved_env = {{k: _ic_os.environ.get(k) for k in {list(env_vars)!r}}}\n"
                    f"_ic_os.environ.update({dict(env_vars)!r})\n"
                )
            try:
                msg_id = self.client.execute(code, store_history=True, allow_stdin=False)
                self._wait_idle(msg_id, relay, check)
                self._drain_reply(msg_id)
            finally:
                if env_vars:
                    self._silent(
                        "for _ic_k, _ic_v in _ic_saved_env.items():\n"
                        "    if _ic_v is None: _ic_os.environ.pop(_ic_k, None)\n"
                        "    else: _ic_os.environ[_ic_k] = _ic_v\n"
                        "del _ic_saved_env\n"
                    )
        relay({"type": "end_of_execution"})


def result(data, is_main):
    out = {"type": "result", "is_main_result": is_main}
    extra = {}
    for mime, value in data.items():
        field = MIME_FIELDS.get(mime)
        if field:
            out[field] = value
        else:
            extra[mime] = value
    if extra:
        out["extra"] = extra
    return out


class Contexts:
    """Every context, and the default Python one (started in the background
    with the server: the first execution waits for it)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_id = {}
        self.default = None
        self.default_ready = threading.Event()
        self.default_error = None
        threading.Thread(target=self._start_default, daemon=True).start()

    def _start_default(self):
        try:
            ctx = Context("python", DEFAULT_CWD)
            with self.lock:
                self.by_id[ctx.id] = ctx
                self.default = ctx
        except Exception as e:  # reported to every execution that needs it
            self.default_error = f"the default Python kernel did not start: {e}"
        self.default_ready.set()

    def get_default(self):
        self.default_ready.wait()
        if self.default is None:
            raise HttpError(503, self.default_error)
        return self.default

    def create(self, language, cwd):
        ctx = Context(language, cwd)
        with self.lock:
            self.by_id[ctx.id] = ctx
        return ctx

    def get(self, context_id):
        with self.lock:
            ctx = self.by_id.get(context_id)
        if ctx is None:
            raise HttpError(404, f"context {context_id} not found")
        return ctx

    def remove(self, context_id):
        with self.lock:
            ctx = self.by_id.pop(context_id, None)
            if ctx is not None and ctx is self.default:
                self.default = None
                self.default_error = "the default context was removed"
        if ctx is None:
            raise HttpError(404, f"context {context_id} not found")
        ctx.shutdown()

    def all(self):
        with self.lock:
            return list(self.by_id.values())


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def check_language(language):
    if language not in (None, "", *LANGUAGES):
        raise HttpError(400, f"language {language!r} is not supported: only python")


CONTEXTS = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ironclaw-code-interpreter"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.command, fmt % args))

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not data.strip():
            return {}
        try:
            body = json.loads(data)
        except ValueError as e:
            raise HttpError(400, f"the body is not JSON: {e}")
        if not isinstance(body, dict):
            raise HttpError(400, "the body is not a JSON object")
        return body

    def _send(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        parts = [p for p in path.split("/") if p]
        method = self.command
        if method == "GET" and parts == ["health"]:
            return self._send(200, {"status": "ok"})
        if method == "POST" and parts == ["execute"]:
            return self._execute(self._body())
        if parts[:1] == ["contexts"]:
            if method == "POST" and len(parts) == 1:
                body = self._body()
                check_language(body.get("language"))
                ctx = CONTEXTS.create(body.get("language"), body.get("cwd") or DEFAULT_CWD)
                return self._send(200, ctx.json())
            if method == "GET" and len(parts) == 1:
                return self._send(200, [c.json() for c in CONTEXTS.all()])
            if method == "DELETE" and len(parts) == 2:
                CONTEXTS.remove(parts[1])
                return self._send(204)
            if method == "POST" and len(parts) == 3 and parts[2] == "restart":
                CONTEXTS.get(parts[1]).restart()
                return self._send(204)
        raise HttpError(404, f"no route {method} {path}")

    def _execute(self, body):
        code = body.get("code")
        if not isinstance(code, str):
            raise HttpError(400, "code must be a string")
        context_id, language = body.get("context_id"), body.get("language")
        if context_id and language:
            raise HttpError(400, "give context_id or language, not both")
        env_vars = body.get("env_vars") or {}
        if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise HttpError(400, "env_vars must map strings to strings")
        if context_id:
            ctx = CONTEXTS.get(context_id)
        else:
            check_language(language)
            ctx = CONTEXTS.get_default()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(obj):
            line = json.dumps(obj).encode() + b"\n"
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            except OSError:
                raise ClientGone()

        try:
            ctx.execute(code, env_vars, emit, self._client_gone)
        except ClientGone:
            pass
        except Exception as e:
            # The status is sent already: the failure is the last line.
            try:
                emit({"type": "error", "name": type(e).__name__, "value": str(e), "traceback": ""})
            except ClientGone:
                pass
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    def _client_gone(self):
        """Has the caller closed the connection? (It sends nothing more
        while the answer streams, so readable means closed.)"""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _handle(self):
        try:
            self._route()
        except HttpError as e:
            self._send(e.status, {"error": e.message})
        except Exception as e:
            self._send(500, {"error": f"{type(e).__name__}: {e}"})

    do_GET = do_POST = do_DELETE = _handle


def main():
    global CONTEXTS
    CONTEXTS = Contexts()
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True

    def stop(*_):
        for ctx in CONTEXTS.all():
            try:
                ctx.shutdown()
            except Exception:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
