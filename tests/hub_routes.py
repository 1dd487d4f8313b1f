"""The HTTP side of the stand-in Hub (tests/hub_server.py): which URLs it answers and
how, kept apart from the repo state so each half stays small.

It answers what the real `huggingface_hub` 2.4 client calls for `create_repo`,
`upload_folder` / `create_commit` (preupload + NDJSON commit, regular files only),
`repo_info`, `list_repo_tree`, `snapshot_download` / `hf_hub_download` /
`keras.saving.load_model("hf://...")`, branches, tags and Space variables. Errors go
out the way the Hub sends them (status, `X-Error-Code`, `X-Error-Message`, JSON body),
since the client picks its exception from those.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from hub_server import HubServer

GITATTRIBUTES = b"*.h5 filter=lfs diff=lfs merge=lfs -text\n*.keras filter=lfs diff=lfs merge=lfs -text\n"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def now_iso() -> str:
    """Now, written as the Hub writes dates in its JSON (the client parses them)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubHTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class HubHandler(BaseHTTPRequestHandler):
    """One request against `hub` (set per server by HubServer.start)."""

    hub: HubServer
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):  # keep pytest output clean
        if os.environ.get("HUB_SERVER_VERBOSE"):
            super().log_message(fmt, *args)

    # -- plumbing ----------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body=b"", headers: dict | None = None, method: str = "GET"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if getattr(self, "stalled", False):  # the client waits for bytes that never come
            self.hub.released.wait()
        elif method != "HEAD":
            self.wfile.write(body)

    def _dispatch(self, method: str):
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if self.hub.fail_with:
                raise HubHTTPError(self.hub.fail_with, f"test Hub answers {self.hub.fail_with}")
            status, body, headers = self._route(method, parts, query)
        except Exception as e:  # noqa: BLE001  (a server bug must not look like a dead Hub)
            if not isinstance(e, HubHTTPError):
                e = HubHTTPError(500, f"test Hub error: {e!r}")
            status, headers = e.status, {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            body = {"error": e.message, **e.extra}
            if (status == 404 and e.code is None) or status == 500:
                self.hub.unknown.append(f"{method} {self.path}: {e.message}")
        self.hub.log.append((method, self.path, status))
        self._send(status, body, headers, method)

    def _auth(self, write: bool) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            if write:
                raise HubHTTPError(401, "You must be authenticated to do this")
            return False
        if self.hub.token and auth != f"Bearer {self.hub.token}":
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return True

    def _repo(self, repo_type: str, repo_id: str) -> dict:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo["private"] and not self._auth(write=False)):
            raise HubHTTPError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit_sha(self, repo: dict, rev: str) -> str:
        sha = self.hub.resolve(repo, rev)
        if sha is None:
            raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha

    # -- routes ------------------------------------------------------------
    def _route(self, method: str, p: list[str], q: dict):
        hub = self.hub
        with hub.lock:
            if p[:2] == ["api", "whoami-v2"]:
                self._auth(write=True)
                return 200, {"type": "user", "name": hub.user, "fullname": "Test User", "orgs": [],
                             "auth": {"type": "access_token",
                                      "accessToken": {"displayName": "test", "role": "write"}}}, None
            if p[:2] == ["api", "agent-harnesses"]:
                return 200, {"standardEnvVars": [], "harnesses": {}}, None
            if p[:2] == ["api", "validate-yaml"] and method == "POST":
                self._body()
                return 200, {"warnings": []}, None
            if p[:3] == ["api", "repos", "create"] and method == "POST":
                return self._create_repo(json.loads(self._body() or b"{}"))
            if len(p) >= 4 and p[0] == "api" and p[1] in TYPES:
                return self._api_repo(method, TYPES[p[1]], f"{p[2]}/{p[3]}", p[4:], q)
            # /{ns}/{name}/resolve/{rev}/{path} and /{type}s/{ns}/{name}/resolve/...
            repo_type = TYPES.get(p[0]) if p and p[0] in ("datasets", "spaces") else "model"
            r = p[1:] if repo_type != "model" else p
            if method in ("GET", "HEAD") and len(r) >= 5 and r[2] == "resolve":
                return self._resolve(method, repo_type, f"{r[0]}/{r[1]}", r[3], "/".join(r[4:]))
        raise HubHTTPError(404, f"not implemented by the test Hub: {method} {self.path}")

    def _create_repo(self, body: dict):
        self._auth(write=True)
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.hub.user}/{body['name']}"
        url = f"{self.hub.endpoint}/{PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.hub.repos:
            raise HubHTTPError(409, "You already created this repo", url=url)  # the client reads "url"
        if repo_type == "space" and not body.get("sdk"):
            raise HubHTTPError(400, "sdk is required for a Space")
        repo = {"private": body.get("visibility", "public") != "public" or bool(body.get("private")),
                "sdk": body.get("sdk"), "branches": {}, "tags": {}, "commits": {}, "variables": {},
                "createdAt": now_iso()}
        self.hub.repos[(repo_type, repo_id)] = repo
        self.hub.add_commit(repo, "main", {".gitattributes": self.hub.put_blob(GITATTRIBUTES)},
                         "initial commit")
        return 200, {"url": url, "name": repo_id}, None

    def _api_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str], q: dict):
        repo = self._repo(repo_type, repo_id)
        op = rest[0] if rest else None
        if method == "GET" and op in (None, "revision"):
            sha = self._commit_sha(repo, rest[1] if op else "main")
            return 200, self._info(repo_type, repo_id, repo, sha), None
        if method == "GET" and op == "tree" and len(rest) >= 2:
            return 200, self._tree(repo, self._commit_sha(repo, rest[1]), "/".join(rest[2:]),
                                   q.get("recursive", "").lower() in ("1", "true")), None
        if method == "POST" and op == "preupload" and len(rest) == 2:
            self._auth(write=True)
            tree = repo["commits"][self._commit_sha(repo, rest[1])]["tree"]
            files = json.loads(self._body())["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                    "oid": tree.get(f["path"])} for f in files]}, None
        if method == "POST" and op == "commit" and len(rest) == 2:
            self._auth(write=True)
            return self._commit(repo_type, repo_id, repo, rest[1], self._body(), q)
        if method == "POST" and op in ("branch", "tag") and len(rest) == 2:
            self._auth(write=True)
            body = json.loads(self._body() or b"{}")
            if op == "branch":
                name, sha = rest[1], self._commit_sha(repo, body.get("startingPoint") or "main")
            else:
                name, sha = body["tag"], self._commit_sha(repo, rest[1])
            refs = repo["branches"] if op == "branch" else repo["tags"]
            if name in repo["branches"] or name in repo["tags"]:
                raise HubHTTPError(409, f"Reference {name} already exists")
            refs[name] = sha
            return 200, {}, None
        if repo_type == "space" and op == "variables":
            self._auth(write=True)
            if method == "POST":
                body = json.loads(self._body())
                repo["variables"][body["key"]] = {"value": body["value"], "description": body.get("description"),
                                                  "updatedAt": now_iso()}
            return 200, repo["variables"], None
        raise HubHTTPError(404, f"not implemented by the test Hub: {method} {self.path}")

    def _info(self, repo_type: str, repo_id: str, repo: dict, sha: str) -> dict:
        info = {"_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                "author": repo_id.split("/")[0], "sha": sha, "private": repo["private"],
                "gated": False, "disabled": False, "likes": 0, "downloads": 0, "tags": [],
                "createdAt": repo["createdAt"], "lastModified": repo["commits"][sha]["date"],
                "siblings": [{"rfilename": p} for p in sorted(repo["commits"][sha]["tree"])]}
        if repo_type == "space":
            info.update(sdk=repo["sdk"], subdomain=repo_id.replace("/", "-").lower())
        return info

    def _tree(self, repo: dict, sha: str, path: str, recursive: bool) -> list[dict]:
        tree = repo["commits"][sha]["tree"]
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in tree):
            raise HubHTTPError(404, f"{path} does not exist at {sha}", "EntryNotFound")
        entries, dirs = [], set()
        for p in sorted(tree):
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            for i in range(1, len(parts)):  # the folders on the way
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    entries.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                    "size": 0, "path": d})
            if recursive or len(parts) == 1:
                entries.append({"type": "file", "oid": tree[p], "path": p,
                                "size": os.path.getsize(self.hub.blob_path(tree[p]))})
        return entries

    def _commit(self, repo_type: str, repo_id: str, repo: dict, branch: str, body: bytes, q: dict):
        if q.get("create_pr"):
            raise HubHTTPError(400, "pull requests are not supported by the test Hub")
        if branch not in repo["branches"]:
            raise HubHTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        tree = dict(repo["commits"][repo["branches"][branch]]["tree"])
        summary = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and parent != repo["branches"][branch]:
                    raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                data = value["content"].encode()
                tree[value["path"]] = self.hub.put_blob(
                    base64.b64decode(data) if value.get("encoding") == "base64" else data)
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubHTTPError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                tree = {p: o for p, o in tree.items() if not p.startswith(folder)}
            else:  # lfsFile: we declared every file "regular" at preupload
                raise HubHTTPError(400, f"operation {key!r} is not supported by the test Hub")
        sha = self.hub.add_commit(repo, branch, tree, summary)
        url = f"{self.hub.endpoint}/{PREFIX[repo_type]}{repo_id}/commit/{sha}"
        return 200, {"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": ""}, None

    def _resolve(self, method: str, repo_type: str, repo_id: str, rev: str, path: str):
        repo = self._repo(repo_type, repo_id)
        sha = self._commit_sha(repo, rev)
        oid = repo["commits"][sha]["tree"].get(path)
        if oid is None:
            raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound")
        stall = self.hub.stall_files
        self.stalled = method == "GET" and bool(stall) and fnmatch(path, stall)
        with open(self.hub.blob_path(oid), "rb") as f:
            data = f.read()
        return 200, data, {"ETag": f'"{oid}"', "X-Repo-Commit": sha, "Content-Type": "application/octet-stream",
                           "Accept-Ranges": "none"}
