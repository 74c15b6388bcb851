"""A small Hugging Face Hub on 127.0.0.1, for testing `tune download` without a network.

It serves the parts of the Hub's HTTP API that ``huggingface_hub.snapshot_download`` uses,
with the headers the real Hub sends:

- ``GET /api/models/{repo}[/revision/{rev}]``: model info (``sha``, ``siblings``, ``gated``).
- ``GET /api/models/{repo}/tree/{rev}``: the recursive file listing (git oid, size, LFS info).
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: small files inline with ``ETag`` (git blob sha1),
  ``X-Repo-Commit`` and ``Content-Length``; LFS files (weights) as a 302 to a second server
  on another port standing in for the CDN, with ``X-Linked-Etag`` (sha256) and
  ``X-Linked-Size``, as the Hub does for LFS blobs.

Errors carry ``X-Error-Code`` / ``X-Error-Message`` like the Hub's: a token that isn't known
gets 401 "Invalid credentials in Authorization header"; a missing or private repo gets
RepoNotFound (401 without a token, 404 with one); a gated repo shows its info, listing and
README to anyone, and answers 401/403 GatedRepo for its other files.

A repo made with ``bytes_per_second`` sends its file bodies slowly, a KiB at a time, so a test
can act while a transfer is in flight (stop the client, interrupt it).

Every request is recorded (server, method, path, Authorization header) for the tests to read.
"""

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Set, Tuple
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".model")
# Files of a gated repo that the Hub shows to everyone.
PUBLIC_IN_GATED = ("README.md", ".gitattributes")

_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_BLOB = re.compile(r"^/blobs/(?P<sha256>[0-9a-f]{64})$")


@dataclass
class HubRepo:
    """A model repo at one commit: file path -> bytes."""

    files: Dict[str, bytes]
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False
    private: bool = False
    bytes_per_second: Optional[int] = None  # None: as fast as the socket takes them


@dataclass
class HubRequest:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    authorization: Optional[str]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


@dataclass
class HubServer:
    """The Hub (and its CDN) serving ``repos``; ``tokens`` maps each valid token to the gated
    or private repos it may read. Use as a context manager; ``endpoint`` is the HF_ENDPOINT."""

    repos: Dict[str, HubRepo]
    tokens: Dict[str, Set[str]] = field(default_factory=dict)
    requests: List[HubRequest] = field(default_factory=list)

    def __enter__(self) -> "HubServer":
        self._hub = _serve(self, "hub")
        self._cdn = _serve(self, "cdn")
        return self

    def __exit__(self, *exc) -> None:
        for server, thread in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
            thread.join()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._hub[0].server_port}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._cdn[0].server_port}"

    def blob(self, sha256: str) -> Tuple[Optional[HubRepo], Optional[bytes]]:
        for repo in self.repos.values():
            for data in repo.files.values():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return repo, data
        return None, None


def _serve(hub: HubServer, name: str) -> Tuple[ThreadingHTTPServer, threading.Thread]:
    handler = type(f"{name.title()}Handler", (_Handler,), {"hub": hub, "name": name})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=f"fake-{name}", daemon=True)
    thread.start()
    return server, thread


class _Error(Exception):
    def __init__(self, status: int, code: Optional[str], message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer
    name: str

    def log_message(self, format, *args) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def do_GET(self) -> None:
        self._handle(body=True)

    def _handle(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append(HubRequest(self.name, self.command, path, self.headers.get("Authorization")))
        rate = None
        try:
            status, headers, payload, rate = self._route(path)
        except _Error as e:
            status, payload = e.status, json.dumps({"error": e.message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body and rate:
            self._trickle(payload, rate)
        elif body:
            self.wfile.write(payload)

    def _trickle(self, payload: bytes, bytes_per_second: int) -> None:
        piece = 1024
        try:
            for start in range(0, len(payload), piece):
                self.wfile.write(payload[start : start + piece])
                self.wfile.flush()
                time.sleep(piece / bytes_per_second)
        except OSError:  # the client went away mid-body (it was stopped): nothing to finish
            self.close_connection = True

    def _route(self, path: str) -> Tuple[int, Dict[str, str], bytes, Optional[int]]:
        """(status, headers, body, bytes per second to send a file body at, None: at once)."""
        if self.name == "cdn":
            match = _BLOB.match(path)
            repo, data = self.hub.blob(match["sha256"]) if match else (None, None)
            if data is None:
                raise _Error(404, None, "NoSuchKey")
            headers = {"Content-Type": "application/octet-stream", "ETag": f'"{match["sha256"]}"'}
            return 200, headers, data, repo.bytes_per_second
        if self.command == "GET" and (match := _TREE.match(path)):
            repo = self._repo(match["repo"], match["rev"])
            return 200, {"Content-Type": "application/json"}, json.dumps(_tree(repo)).encode(), None
        if self.command == "GET" and (match := _INFO.match(path)):
            repo_id = match["repo"]
            repo = self._repo(repo_id, match["rev"] or "main")
            return 200, {"Content-Type": "application/json"}, json.dumps(_info(repo_id, repo)).encode(), None
        if match := _RESOLVE.match(path):
            return self._resolve(match["repo"], match["rev"], match["path"])
        raise _Error(404, None, "Not Found")

    def _token(self) -> Optional[str]:
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        token = auth.removeprefix("Bearer ")
        if token not in self.hub.tokens:
            raise _Error(401, None, "Invalid credentials in Authorization header")
        return token

    def _repo(self, repo_id: str, revision: str) -> HubRepo:
        token = self._token()
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and repo_id not in self.hub.tokens.get(token, ())):
            raise _Error(401 if token is None else 404, "RepoNotFound", "Repository not found")
        if revision not in ("main", repo.sha):
            raise _Error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo

    def _resolve(
        self, repo_id: str, revision: str, path: str
    ) -> Tuple[int, Dict[str, str], bytes, Optional[int]]:
        repo = self._repo(repo_id, revision)
        token = self._token()
        if repo.gated and path not in PUBLIC_IN_GATED and repo_id not in self.hub.tokens.get(token, ()):
            if token is None:
                raise _Error(
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in.",
                )
            raise _Error(
                403,
                "GatedRepo",
                f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                f"Visit {self.hub.endpoint}/{repo_id} to ask for access.",
            )
        data = repo.files.get(path)
        if data is None:
            raise _Error(404, "EntryNotFound", "Entry not found")
        headers = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        if is_lfs(path):
            sha256 = hashlib.sha256(data).hexdigest()
            location = f"{self.hub.cdn}/blobs/{sha256}"
            headers.update(
                {
                    "ETag": f'"{sha256}"',
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                    "Location": location,
                    "Content-Type": "text/plain; charset=utf-8",
                }
            )
            return 302, headers, f"Found. Redirecting to {location}".encode(), None
        headers.update({"ETag": f'"{git_blob_sha1(data)}"', "Content-Type": "text/plain; charset=utf-8"})
        return 200, headers, data, repo.bytes_per_second


def _info(repo_id: str, repo: HubRepo) -> dict:
    return {
        "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.split("/")[0],
        "sha": repo.sha,
        "lastModified": "2024-04-18T12:00:00.000Z",
        "createdAt": "2024-04-17T12:00:00.000Z",
        "private": repo.private,
        "gated": "manual" if repo.gated else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [{"rfilename": path} for path in sorted(repo.files)],
    }


def _tree(repo: HubRepo) -> list:
    folders = sorted({"/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)})
    entries = [
        {"type": "directory", "oid": git_blob_sha1(f.encode()), "size": 0, "path": f} for f in folders
    ]
    for path in sorted(repo.files):
        data = repo.files[path]
        entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
        if is_lfs(path):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        entries.append(entry)
    return entries
