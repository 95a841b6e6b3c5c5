"""A tiny external-connector sidecar (protocol 1) used by the tests: stdlib only, run as a real child process."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

OUT = Path(sys.argv[1])
# The protocol its /manifest announces (a test passes another to see the gateway refuse it).
PROTOCOL = int(sys.argv[2]) if len(sys.argv) > 2 else 1
# What its /health says: `ready`, another status (`degraded`...), or `broken` for an answer that is not JSON.
HEALTH = sys.argv[3] if len(sys.argv) > 3 else "ready"


def fetch_credentials() -> dict[str, str]:
    """Fetch each allowed secret from the gateway with the short-lived token, as a real sidecar would."""
    token = os.environ.get("GATEWAY_CREDENTIAL_TOKEN")
    if not token:
        return {}
    out = {}
    for key in os.environ["GATEWAY_CREDENTIAL_KEYS"].split(","):
        req = urllib.request.Request(
            f"{os.environ['GATEWAY_CREDENTIAL_URL']}/{key}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            out[key] = json.loads(r.read())["value"]
    return out


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/manifest":
            self._json(200, {"protocol_version": PROTOCOL, "name": "test-sidecar"})
        elif self.path == "/health":
            with (OUT / f"health-{os.getpid()}.log").open("a") as fh:
                fh.write(HEALTH + "\n")
            if HEALTH == "broken":
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._json(200, {"status": HEALTH})
        else:
            self._json(404, {})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/deliver":
            with (OUT / "deliveries.jsonl").open("a") as fh:
                fh.write(json.dumps({"key": self.headers.get("Idempotency-Key"), "body": json.loads(body)}) + "\n")
            self._json(200, {"status": "committed"})
        else:
            self._json(404, {})


def main() -> None:
    (OUT / f"launch-{os.getpid()}").touch()  # every launch, even one whose credential fetch then fails
    creds = fetch_credentials()
    env = {k: v for k, v in os.environ.items() if k.startswith(("GATEWAY_", "SIDE_", "PLATFORM_"))}
    (OUT / f"start-{os.getpid()}.json").write_text(json.dumps({"env": env, "creds": creds}))
    port = urlparse(os.environ["GATEWAY_SIDECAR_BASE_URL"]).port
    ThreadingHTTPServer(("127.0.0.1", port or 0), Handler).serve_forever()


if __name__ == "__main__":
    main()
