"""Headless Chromium driven over the Chrome DevTools protocol, with the standard library only (no
selenium or playwright in the resolve): a local HTTP server for a built site, a minimal WebSocket
client (RFC 6455, client side), and the few protocol calls a test needs — navigate, evaluate
JavaScript, wait for a condition, take a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Where Debian's ``chromium`` package puts the browser.
CHROMIUM = "/usr/bin/chromium"
#: Headless, no sandbox (CI runs as root), nothing reaching out on its own, a fresh profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


#: DevTools' answers to an evaluation that a navigation interrupted.
NAVIGATING = ("Inspected target navigated or closed", "Cannot find context with specified id")


class BrowserError(RuntimeError):
    """Chromium did not start, or the protocol failed or timed out."""


def chromium_path() -> str | None:
    """``$TJX_CHROMIUM``, else Debian's ``/usr/bin/chromium``, else ``chromium`` on PATH."""
    wanted = os.environ.get("TJX_CHROMIUM")
    if wanted:
        return wanted if Path(wanted).is_file() else None
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    return shutil.which("chromium")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Serve silently (a test's output is its assertions)."""


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on a free loopback port while the block runs; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class WebSocket:
    """A client WebSocket over a plain TCP socket: text frames out (masked), frames in."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise BrowserError("the DevTools socket closed during its handshake")
            head += chunk
        status, _, self._buffer = head.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise BrowserError(f"DevTools refused the WebSocket: {status.splitlines()[0]!r}")

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise BrowserError("the DevTools socket closed")
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def send(self, text: str) -> None:
        """Send one text frame (a client masks every frame)."""
        payload = text.encode()
        head = bytes([0x81])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def receive(self) -> str:
        """The next text message (fragments joined; a ping answered on the way)."""
        parts: list[bytes] = []
        while True:
            first, second = self._read(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else b""
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise BrowserError("the browser closed the DevTools connection")
            if opcode == 0x9:  # ping: answer with the same data
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)
                continue
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if first & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        """Close the connection without waiting for the browser's reply."""
        with contextlib.suppress(OSError):
            self.sock.sendall(bytes([0x88, 0x80]) + b"\0\0\0\0")
        self.sock.close()


class Page:
    """One browser tab over its DevTools WebSocket."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.ws = WebSocket(ws_url, timeout)
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a protocol command and return its result (events that arrive meanwhile are
        kept in ``events``)."""
        self._next_id += 1
        ident = self._next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript failed: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout: float | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value.

        Raises
        ------
        BrowserError
            It stayed falsy for ``timeout`` seconds (the page's ``timeout`` by default);
            ``what`` names the condition.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError as err:
                # A navigation (the click being waited for) can replace the document while the
                # expression runs: not yet, poll again in the new one.
                if not any(reason in str(err) for reason in NAVIGATING):
                    raise
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def goto(self, url: str) -> None:
        """Navigate to ``url`` and wait until its document has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for(
            f"document.readyState === 'complete' && location.href.startsWith({json.dumps(url)})",
            f"{url} to load",
        )

    def screenshot(self, path: Path) -> Path:
        """Save the visible page as a PNG at ``path``."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the tab's connection."""
        self.ws.close()


@contextlib.contextmanager
def chromium(executable: str, timeout: float = 30.0) -> Iterator[Page]:
    """Start headless Chromium with a fresh profile and yield one page; the browser and its
    profile are gone afterwards.

    Raises
    ------
    BrowserError
        It did not start (or print its DevTools port) within ``timeout`` seconds.
    """
    with tempfile.TemporaryDirectory(prefix="tjx-chromium-") as profile:
        log = open(Path(profile) / "chromium.log", "w+")  # noqa: SIM115 (read back on failure)
        proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            port_file, deadline = Path(profile) / "DevToolsActivePort", time.monotonic() + timeout
            while not (port_file.is_file() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = " | ".join(log.read().strip().splitlines()[-3:])
                    raise BrowserError(f"chromium did not start ({executable}): {tail}")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
            target = next(p for p in pages if p.get("type") == "page")
            page = Page(target["webSocketDebuggerUrl"], timeout)
            try:
                yield page
            finally:
                page.close()
        finally:
            # The whole session (renderer, GPU and crash-handler children write to the profile
            # too): terminating the main process alone left a child writing into the profile
            # while it was removed ("Directory not empty") on a loaded machine.
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)
            _wait_group(proc.pid, timeout=5.0)
            log.close()


def _wait_group(pgid: int, timeout: float) -> None:
    """Wait up to ``timeout`` seconds until no process of group ``pgid`` is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid``; one already gone is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
