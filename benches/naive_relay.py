#!/usr/bin/env python3
"""A naive Sentry -> Slack relay: what a user would otherwise write. Baseline for the ingest benchmark.

Python 3 standard library only. For each POST it verifies the Sentry-Hook-Signature
(HMAC-SHA256 of the raw body, compared with hmac.compare_digest), parses the JSON, picks a
channel by project and environment from a small dict, POSTs a Slack-style message to the sink
synchronously (urllib.request), and only then answers 202. Nothing is stored, nothing is
retried, nothing is deduplicated.

Usage: naive_relay.py LISTEN_PORT SINK_BASE_URL   (secret in SENTRY_CLIENT_SECRET)
GET /healthz answers 200, for the benchmark's readiness check.

Two charitable settings a naive script might not have: HTTP/1.1 keep-alive towards the
client, and a listen backlog of 128 (the default of 5 drops SYNs when 64 clients connect at
once, which would add 1 s retransmits to this row).
"""

import hashlib
import hmac
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("SENTRY_CLIENT_SECRET", "").encode()
PORT = int(sys.argv[1])
SINK = sys.argv[2].rstrip("/")

# (project, environment) -> channel; anything else goes to "errors".
CHANNELS = {
    ("service-0", "production"): "prod",
    ("service-1", "production"): "prod",
    ("service-2", "production"): "prod",
    ("service-3", "production"): "prod",
    ("service-4", "production"): "prod",
}


def project_of(event):
    # .../api/0/projects/{org}/{project}/events/{id}/
    parts = (event.get("url") or "").split("/")
    if "projects" in parts:
        i = parts.index("projects")
        if len(parts) > i + 2:
            return parts[i + 2]
    return str(event.get("project", "unknown"))


class Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet, like a service logging to nowhere
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200 if self.path == "/healthz" else 404, b"ok")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        signature = self.headers.get("Sentry-Hook-Signature", "")
        expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.strip().lower()):
            return self.answer(401)
        try:
            event = json.loads(body)["data"]["event"]
        except (ValueError, KeyError, TypeError):
            return self.answer(400)
        project = project_of(event)
        environment = event.get("environment", "")
        channel = CHANNELS.get((project, environment), "errors")
        text = "[%s] %s — %s — %s" % (
            str(event.get("level", "error")).upper(),
            event.get("title", ""),
            project,
            event.get("web_url", ""),
        )
        message = json.dumps({"text": text}).encode()
        request = urllib.request.Request(
            "%s/hooks/%s" % (SINK, channel),
            data=message,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                resp.read()
        except Exception:
            return self.answer(502)
        self.answer(202)


class Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


if __name__ == "__main__":
    Server(("127.0.0.1", PORT), Relay).serve_forever()
