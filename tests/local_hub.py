"""A loopback HTTP server that speaks just enough of the Hugging Face Hub's API for `huggingface_hub` uploads.

What the real client (huggingface_hub 2.x) sends, and what this server does with it:
  POST /api/repos/create                         {name, organization, type, visibility?} -> {url}; 409 if it exists
  GET  /api/{type}s/{owner}/{name}               repo_info -> {id, private, sha}
  POST /api/validate-yaml                        a README's front matter -> {errors, warnings} (400 on bad YAML
                                                 or a `base_model` that is not a Hub id, as the Hub does)
  POST /api/{type}s/{repo}/preupload/{rev}       {files: [{path, size, sample}]} -> uploadMode per file:
                                                 "lfs" for `lfs_suffixes`, else "regular" (inline in the commit)
  POST /{datasets/}{repo}.git/info/lfs/objects/batch   (only with HF_HUB_DISABLE_XET=1; with hf_xet installed
                                                 the client sends "lfs" files to a Xet CAS server instead, which
                                                 this server does not implement) -> an upload + verify action
  GET  /api/{type}s/{repo}/xet-write-token/{rev} (hf_xet, for "lfs" files: the CAS address and a short-lived
                                                 token) -> 404, so such a push fails: there is no CAS here
  PUT  /lfs-upload/{oid}                         the file's bytes (no Authorization: it is storage), sha256-checked
  POST /lfs-verify                               {oid, size}
  POST /api/{type}s/{repo}/commit/{rev}          NDJSON: header, then file (base64) / lfsFile (oid) / deletedFile
  POST /api/{type}s/{repo}/branch/{branch}       {startingPoint?}: a copy of main (or of startingPoint)
  GET  /api/{type}s/{repo}/tree/{rev}            the branch's files (upload_folder's delete_patterns lists them)
  GET  /api/agent-harnesses                      (huggingface_hub's user agent looks up AI-agent names at its
                                                 HF_ENDPOINT, without a token) -> 404
Every request is recorded (method, path, query, headers, body); the repos' branches hold the committed bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"
)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    """Parsed JSON, a list of NDJSON objects (commits), or the raw bytes (LFS uploads)."""
    status: int = 0


@dataclass
class Repo:
    kind: str
    private: bool
    branches: dict[str, dict[str, bytes]] = field(
        default_factory=lambda: {"main": {".gitattributes": GITATTRIBUTES}}
    )


class LocalHub:
    def __init__(self, lfs_suffixes: tuple[str, ...] = (), forbidden: str = "leaky") -> None:
        self.lfs_suffixes = lfs_suffixes
        self.forbidden = forbidden
        """Creating a repo of this name fails with a 403 whose message quotes the Authorization header."""
        self.requests: list[Request] = []
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id].branches[branch]

    def route(self, req: Request) -> tuple[int, Any]:
        if req.path == "/api/repos/create":
            return self.create(req)
        if req.path == "/api/validate-yaml":
            return validate_yaml(req.body["content"])
        if req.path.endswith(".git/info/lfs/objects/batch"):
            return self.lfs_batch(req)
        if req.path.startswith("/lfs-upload/"):
            oid = req.path.rsplit("/", 1)[1]
            if hashlib.sha256(req.body).hexdigest() != oid:
                return 400, {"error": "sha256 mismatch"}
            self.lfs[oid] = req.body
            return 200, {}
        if req.path == "/lfs-verify":
            return (200, {}) if req.body["oid"] in self.lfs else (404, {"error": "not uploaded"})
        return self.route_repo(req)

    def route_repo(self, req: Request) -> tuple[int, Any]:
        """/api/{models,datasets}/{repo}[/{action}/{revision}...]"""
        api = re.match(r"^/api/(models|datasets)/([\w.-]+/[\w.-]+)(?:/(preupload|commit|branch|tree)/([^/]+).*)?$",
                       req.path)  # fmt: skip
        if api is None or api[2] not in self.repos:
            return 404, {"error": f"Repository Not Found {req.path}"}
        repo, action, rev = self.repos[api[2]], api[3], unquote(api[4] or "main")
        if action is None:
            return 200, {"id": api[2], "private": repo.private, "sha": "0" * 40}
        if action == "preupload":
            mode = lambda p: "lfs" if p.endswith(self.lfs_suffixes) else "regular"  # noqa: E731
            return 200, {"files": [{"path": f["path"], "uploadMode": mode(f["path"]), "shouldIgnore": False,
                                    "oid": None} for f in req.body["files"]]}  # fmt: skip
        if action == "commit":
            return self.commit(repo, f"{self.url}/{'datasets/' if repo.kind == 'dataset' else ''}{api[2]}", rev,
                               req.body)  # fmt: skip
        if action == "branch":
            if rev in repo.branches:
                return 409, {"error": "Reference already exists"}
            repo.branches[rev] = dict(repo.branches[req.body.get("startingPoint") or "main"])
            return 200, {}
        return 200, [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                     for p, b in repo.branches[rev].items()]  # fmt: skip

    def create(self, req: Request) -> tuple[int, Any]:
        repo_id = f"{req.body['organization']}/{req.body['name']}"
        if req.body["name"] == self.forbidden:
            return 403, {"error": f"token {req.headers.get('authorization')} may not create {repo_id}"}
        if repo_id in self.repos:
            return 409, {"error": "You already created this repo", "url": f"{self.url}/{repo_id}"}
        kind = req.body.get("type") or "model"
        self.repos[repo_id] = Repo(kind, req.body.get("visibility") == "private")
        return 200, {"url": f"{self.url}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"}

    def lfs_batch(self, req: Request) -> tuple[int, Any]:
        objects = [
            {
                "oid": o["oid"],
                "size": o["size"],
                "authenticated": True,
                "actions": {
                    "upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"},
                    "verify": {"href": f"{self.url}/lfs-verify"},
                },
            }
            for o in req.body["objects"]
        ]
        return 200, {"transfer": "basic", "objects": objects}

    def commit(self, repo: Repo, url: str, branch: str, lines: list[dict[str, Any]]) -> tuple[int, Any]:
        files = repo.branches.setdefault(branch, {})
        for line in lines[1:]:  # the first line is the commit header (summary, description)
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 422, {"error": f"LFS object {value['oid']} was never uploaded"}
                files[value["path"]] = self.lfs[value["oid"]]
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
        oid = hashlib.sha1(json.dumps(lines).encode()).hexdigest()
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{url}/commit/{oid}"}


def validate_yaml(content: str) -> tuple[int, Any]:
    if not content.startswith("---\n"):
        return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
    try:
        meta = yaml.safe_load(content[4:].split("\n---", 1)[0])
    except yaml.YAMLError as e:
        return 400, {"errors": [{"message": f"invalid YAML: {e}"}]}
    base = meta.get("base_model")
    if base is not None and not REPO_ID.match(str(base)):
        return 400, {"errors": [{"message": f'"base_model" must be a Hub model id, got {base}'}]}
    return 200, {"errors": [], "warnings": []}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # quiet: the requests are recorded instead
        pass

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed file upload
            data = b""
            while size := int(self.rfile.readline().strip(), 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def handle_any(self) -> None:
        hub: LocalHub = self.server.hub  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        raw = self.read_body()
        kind = self.headers.get("Content-Type", "")
        body: Any = raw
        if "ndjson" in kind:
            body = [json.loads(line) for line in raw.splitlines() if line.strip()]
        elif "json" in kind and raw:
            body = json.loads(raw)
        req = Request(
            self.command, url.path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()}, body
        )
        with hub.lock:
            hub.requests.append(req)
            req.status, payload = hub.route(req)
        data = json.dumps(payload).encode()
        self.send_response(req.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = handle_any
