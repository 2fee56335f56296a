#!/usr/bin/python3
# A small CGI bridge for `git http-backend` (git's smart HTTP), for tests
# and benchmarks: python3 git_http_bridge.py PROJECT_ROOT HOST PORT with
# GIT_TEST_USER, GIT_TEST_TOKEN and GIT_TEST_LOG in the environment.
# Repositories under /private/ need HTTP Basic auth with that user and
# token; bodies are read whole (chunked request bodies decoded);
# repositories whose path holds "-v0" are served with protocol v0 only.
# With GIT_TEST_TOKENS (a file of "TOKEN REPO EXPIRES" lines, as a fake
# GitHub writes them), a listed token that has not expired also opens
# /private/REPO.git, like GitHub's installation tokens. Never logs
# headers (the token).
import base64, os, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT, HOST, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
USER, TOKEN = os.environ["GIT_TEST_USER"], os.environ["GIT_TEST_TOKEN"]
LOG = open(os.environ["GIT_TEST_LOG"], "a", buffering=1)
TOKENS = os.environ.get("GIT_TEST_TOKENS")


def token_opens(token, path):
    if not TOKENS or not os.path.exists(TOKENS):
        return False
    import time
    for line in open(TOKENS):
        parts = line.split()
        if len(parts) == 3 and parts[0] == token and int(parts[2]) > time.time():
            if path.startswith("/private/" + parts[1] + ".git/"):
                return True
    return False

class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        LOG.write("%s %s\n" % (self.address_string(), fmt % args))

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def authorized(self):
        if not self.path.startswith("/private/"):
            return True
        h = self.headers.get("Authorization", "")
        if not h.startswith("Basic "):
            return False
        try:
            user, _, token = base64.b64decode(h[6:]).decode().partition(":")
        except Exception:
            return False
        return (user == USER and token == TOKEN) or (user == "x-access-token" and token_opens(token, self.path))

    def run(self):
        body = self.body()
        if not self.authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": "/usr/bin:/bin",
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "safe.directory",
            "GIT_CONFIG_VALUE_0": "*",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        # repositories named *-v0 speak protocol v0 only, whose servers
        # refuse to send an unadvertised commit (like many older forges)
        if self.headers.get("Git-Protocol") and "-v0" not in path:
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if path.startswith("/private/"):
            env["REMOTE_USER"] = USER
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, rest = out.partition(b"\r\n\r\n")
        if not _:
            head, _, rest = out.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

    do_GET = run
    do_POST = run

ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
