"""A Hugging Face hub without the hub, for the tests of hub ids (core/models.py): a cache laid
out as huggingface_hub lays it, and a local HTTP server speaking the part of the hub API that
`snapshot_download` uses, recording every request it gets.

The cache layout (huggingface_hub/file_download.py, _snapshot_download.py):

    <cache>/models--<org>--<name>/refs/<branch>              the branch's commit sha (no newline)
    <cache>/models--<org>--<name>/blobs/<etag>               each file's bytes, once
    <cache>/models--<org>--<name>/snapshots/<sha>/<file>     → ../../blobs/<etag> (relative symlink)

The API (huggingface_hub/hf_api.py, file_download.py):

    GET  /api/models/<org>/<name>/revision/<rev>       {"id", "sha", "siblings"}; 404 + X-Error-Code
    GET  /api/models/<org>/<name>/tree/<sha>?recursive  [{"type": "file", "path", "size", "oid"}]
    HEAD /<org>/<name>/resolve/<rev>/<file>             X-Repo-Commit, ETag, Content-Length
    GET  /<org>/<name>/resolve/<rev>/<file>             the bytes
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

TINY_REPO = "osp-test/tiny-llama"  # the tiny model's id in the tests' hub cache (conftest.hub_cache)
NO_CONFIG_REPO = "osp-test/no-config"  # the tiny model's files less config.json


def snapshot_of(cache: Path, repo_id: str, sha: str) -> Path:
    return cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / sha


def folder_files(folder: str | Path) -> dict[str, bytes]:
    """Every file of a model folder (flat, as the tiny model is), by name."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def commit_sha(files: dict[str, bytes], salt: str = "") -> str:
    """A 40-hex commit id for a set of files (what a git commit id looks like to huggingface_hub)."""
    digest = hashlib.sha1(salt.encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def etag_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()  # an LFS file's etag: its sha256


def write_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",),
                    salt: str = "") -> str:
    """Put `files` into the hub cache `cache` as snapshot of repo `repo_id`, each ref in `refs`
    pointing at it; returns the commit sha. Files are blobs with relative symlinks, as
    huggingface_hub writes them."""
    sha = commit_sha(files, salt)
    snapshot = snapshot_of(cache, repo_id, sha)
    repo = snapshot.parent.parent
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / etag_of(data)
        blob.write_bytes(data)
        link = snapshot / name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(sha)
    return sha


class FakeHub:
    """A local hub: `repos[repo_id] = {"refs": {branch: sha}, "commits": {sha: {file: bytes}}}`.
    Every request is recorded as (method, path) in `requests`, whatever it asks for, so a test
    can also assert that nothing was asked at all. Use as a context manager; `url` is its
    HF_ENDPOINT."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub._answer(self, body=True)

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_CONNECT(self):  # an HTTPS request sent through this server as a proxy
                hub.requests.append(("CONNECT", self.path))
                self.send_response(403)
                self.end_headers()

            do_POST = do_PUT = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, repo_id: str, files: dict[str, bytes], branch: str = "main", salt: str = "") -> str:
        """Commit `files` to `repo_id` on `branch` (which moves to it); returns the commit sha."""
        sha = commit_sha(files, salt)
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        repo["commits"][sha] = dict(files)
        repo["refs"][branch] = sha
        return sha

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the API ------------------------------------------------------------------------------
    def _commit(self, repo_id: str, revision: str) -> str | None:
        repo = self.repos[repo_id]
        return revision if revision in repo["commits"] else repo["refs"].get(revision)

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = urlsplit(handler.path).path  # absolute-form when sent to us as a proxy
        self.requests.append((handler.command, path))
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo_id, what, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            if repo_id not in self.repos:
                return self._error(handler, "RepoNotFound")
            sha = self._commit(repo_id, revision)
            if sha is None:
                return self._error(handler, "RevisionNotFound")
            files = self.repos[repo_id]["commits"][sha]
            if what == "revision":
                doc = {"id": repo_id, "sha": sha, "siblings": [{"rfilename": f} for f in files]}
            else:
                doc = [{"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                       for f, d in files.items()]
            return self._send(handler, json.dumps(doc).encode(), {"Content-Type": "application/json"}, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, name = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            if repo_id not in self.repos:
                return self._error(handler, "RepoNotFound")
            sha = self._commit(repo_id, revision)
            if sha is None:
                return self._error(handler, "RevisionNotFound")
            data = self.repos[repo_id]["commits"][sha].get(name)
            if data is None:
                return self._error(handler, "EntryNotFound", {"X-Repo-Commit": sha})
            return self._send(handler, data, {"X-Repo-Commit": sha, "ETag": f'"{etag_of(data)}"'}, body)
        self._error(handler, "NotFound")

    @staticmethod
    def _send(handler, data: bytes, headers: dict[str, str], body: bool) -> None:
        handler.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    @staticmethod
    def _error(handler, code: str, headers: dict[str, str] | None = None) -> None:
        handler.send_response(404)
        for key, value in {"X-Error-Code": code, "Content-Length": "0", **(headers or {})}.items():
            handler.send_header(key, value)
        handler.end_headers()
