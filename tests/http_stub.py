"""Local HTTP servers for download tests (nothing in the tests reaches the network).

``serve(handler_class)`` runs a threaded ``http.server`` on 127.0.0.1 for the duration of a
``with`` block. ``HubStandIn`` answers the requests ``huggingface_hub.hf_hub_download``
makes (``HEAD`` and ``GET`` on ``/{repo_id}/resolve/{revision}/{path}``) for the files a
test publishes, and records every request.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import socket
import threading
from urllib.parse import unquote
from dataclasses import dataclass, field


@contextlib.contextmanager
def serve(handler_class):
    """Serve ``handler_class`` on 127.0.0.1; yields the base URL (``http://127.0.0.1:<port>``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # a stuck download fails the test instead of hanging it
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        socket.setdefaulttimeout(old_timeout)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def commit_of(repo_id: str) -> str:
    """The (fixed) commit hash the stand-in reports for ``repo_id``'s main branch."""
    return hashlib.sha1(repo_id.encode()).hexdigest()


@dataclass
class HubStandIn:
    """The few Hub endpoints ``hf_hub_download`` uses, for files published by the test.

    ``publish(repo, path, data)`` stores a file as Git LFS does (its ETag is the sha256 of
    its content); ``lfs=False`` gives it a git-blob-like ETag instead. ``revisions`` holds the
    (repo, revision) pairs served besides ``main`` and the commit (``refs/pr/3``, a branch). ``truncate`` names
    files whose body is cut off after half its bytes (the connection is closed).
    """

    files: dict = field(default_factory=dict)  # (repo_id, path) -> (bytes, etag)
    revisions: set = field(default_factory=set)  # (repo_id, revision): names besides main (refs/pr/3, ...)
    requests: list = field(default_factory=list)  # (method, path)
    truncate: set = field(default_factory=set)
    url: str = ""
    commits: dict = field(default_factory=dict)  # repo_id -> the commit main is at (default commit_of)

    def commit(self, repo_id: str) -> str:
        return self.commits.get(repo_id) or commit_of(repo_id)

    def publish(self, repo_id: str, path: str, data: bytes, *, lfs: bool = True) -> str:
        etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob " + data).hexdigest()
        self.files[(repo_id, path)] = (data, etag)
        return f"hf://{repo_id}/{path}"

    def handler(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _lookup(self):
                parts = self.path.split("?")[0].split("/")
                # /{org}/{repo}/resolve/{revision}/{path...}
                if len(parts) < 6 or parts[3] != "resolve":
                    return None, None, "NotFound"  # e.g. huggingface_hub's /api/... side requests
                repo_id, revision, path = f"{parts[1]}/{parts[2]}", unquote(parts[4]), "/".join(parts[5:])
                if revision not in ("main", hub.commit(repo_id)) and (repo_id, revision) not in hub.revisions:
                    return repo_id, None, "RevisionNotFound"
                if not any(r == repo_id for r, _ in hub.files):
                    return repo_id, None, "RepositoryNotFound"
                entry = hub.files.get((repo_id, path))
                return repo_id, entry, None if entry else "EntryNotFound"

            def _headers(self, repo_id, entry, error, *, body_len=None, status=200, extra=()):
                if error:
                    self.send_response(404)
                    self.send_header("X-Error-Code", error)
                    self.send_header("X-Error-Message", error)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                data, etag = entry
                self.send_response(status)
                self.send_header("X-Repo-Commit", hub.commit(repo_id))
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(data) if body_len is None else body_len))
                self.send_header("Accept-Ranges", "bytes")
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                return True

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path))
                repo_id, entry, error = self._lookup()
                self._headers(repo_id, entry, error)

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                repo_id, entry, error = self._lookup()
                start = 0
                rng = self.headers.get("Range")
                if entry and rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes="):].split("-")[0])
                if not entry:
                    self._headers(repo_id, entry, error)
                    return
                data = entry[0][start:]
                extra = [("Content-Range", f"bytes {start}-{start + len(data) - 1}/{len(entry[0])}")] if start else []
                if not self._headers(repo_id, entry, None, body_len=len(data), status=206 if start else 200,
                                     extra=extra):
                    return
                path = "/".join(self.path.split("?")[0].split("/")[5:])
                if path in hub.truncate:  # promise the whole file, send half, hang up
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

        return Handler

    def file_requests(self) -> list:
        """The requests for files (``/resolve/``), leaving out huggingface_hub's side requests."""
        return [(m, p) for m, p in self.requests if "/resolve/" in p]
