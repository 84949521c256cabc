"""The lab's pager: a webhook receiver that keeps every Alertmanager notification as a JSON line.

Alertmanager POSTs one JSON document per notification (a group of alerts, firing or resolved).
Each becomes one line of ``--out``: ``{"received": <unix time>, "payload": <the document>}``,
flushed before the answer, so a test that reads the file sees every page that was acknowledged.
A body that is not a JSON object gets 400 and is not written. ``GET /`` answers 200: the role
script's readiness probe.

    python -m lab.webhook --listen 10.77.0.50 --port 9099 --out DIR/webhook.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

MAX_BODY = 1024 * 1024  # Alertmanager's groups are small; a bigger body is not one of them

log = logging.getLogger("lab.webhook")


class PageLog:
    """The JSON-lines file the pages go to; one writer at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, payload: dict[str, Any]) -> None:
        line = json.dumps({"received": time.time(), "payload": payload}, sort_keys=True)
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()


class Handler(BaseHTTPRequestHandler):
    pages: ClassVar[PageLog]

    def do_GET(self) -> None:
        self._answer(200, "webhook receiver: POST Alertmanager notifications here\n")

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > MAX_BODY:
            self._answer(400, f"need a Content-Length of at most {MAX_BODY} bytes\n")
            return
        body = self.rfile.read(int(length))
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._answer(400, f"not JSON: {e}\n")
            return
        if not isinstance(payload, dict):
            self._answer(400, "not a JSON object\n")
            return
        self.pages.append(payload)
        self._answer(200, "ok\n")

    def _answer(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def serve(listen: str, port: int, out: Path) -> ThreadingHTTPServer:
    """A server bound to ``listen:port`` that appends to ``out``; the caller runs
    ``serve_forever`` (OSError when the address cannot be bound)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handler = type("BoundHandler", (Handler,), {"pages": PageLog(out)})
    return ThreadingHTTPServer((listen, port), handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.webhook", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9099, help="port (default 9099)")
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file of the pages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        server = serve(args.listen, args.port, args.out)
    except OSError as e:
        print(f"webhook: error: cannot listen on {args.listen}:{args.port}: {e}", file=sys.stderr)
        return 1

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on %s:%d, pages to %s", args.listen, args.port, args.out)
    with server:
        server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
