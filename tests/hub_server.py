"""A small stand-in for the Hugging Face Hub, for tests that must not touch the network.

It answers what the real `huggingface_hub` 2.4 client calls for `create_repo`,
`upload_folder` / `create_commit` (preupload + NDJSON commit, regular files only),
`repo_info`, `list_repo_tree`, `snapshot_download` / `hf_hub_download` /
`keras.saving.load_model("hf://...")`, branches, tags and Space variables.

    with HubServer() as hub:                    # 127.0.0.1, a free port
        env = hub.env(hf_home=tmp_path / "hf")  # HF_ENDPOINT, HF_TOKEN, HF_HOME, ...
        subprocess.run([...], env=env)          # huggingface_hub reads HF_ENDPOINT at import
        hub.files("user/repo")                  # {path: bytes} at main, for assertions

File contents are stored on disk under `root` (named by their git blob sha1);
refs and commits live in memory, and every commit keeps its whole tree, so any
old commit sha stays resolvable. Every file is declared "regular" at preupload,
so no LFS/Xet transfer is involved. Requests the server does not know (404) and
server bugs (500) are recorded in `hub.unknown`, so a test can assert that the
client called nothing unexpected. `hub.fail_with = 429` makes every request fail
with that status (rate limits, outages); `hub.stall_files = "*"` answers the API and
HEADs at once but never sends the bytes of matching files (a Hub that stalls the
downloads). By hand: `python tests/hub_server.py [--port N]`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.h5 filter=lfs diff=lfs merge=lfs -text\n*.keras filter=lfs diff=lfs merge=lfs -text\n"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubHTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class HubServer:
    """Start with `with HubServer() as hub:` (or `start()` / `stop()`)."""

    def __init__(self, root: str | None = None, token: str | None = None, user: str = "user"):
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="hub-server-")
        self.token, self.user = token, user
        self.repos: dict[tuple[str, str], dict] = {}
        self.log: list[tuple[str, str, int]] = []
        self.unknown: list[str] = []
        self.fail_with: int | None = None  # e.g. 429: every request gets this status
        # fnmatch pattern: a GET of a matching file sends its headers, then nothing until stop()
        self.stall_files: str | None = None
        self._released = threading.Event()
        self.lock = threading.RLock()
        self._counter = 0
        self.httpd: ThreadingHTTPServer | None = None
        os.makedirs(os.path.join(self.root, "blobs"), exist_ok=True)

    # -- lifecycle ---------------------------------------------------------
    def start(self, port: int = 0) -> "HubServer":
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()  # stalled handlers return, so no thread outlives the server
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def env(self, hf_home=None, base: dict | None = None, **extra) -> dict:
        """Environment for a client subprocess pointed at this server."""
        return client_env(self.endpoint, hf_home=hf_home, base=base, token=self.token or "hf_dummy_token",
                          **extra)

    # -- storage -----------------------------------------------------------
    def _put_blob(self, data: bytes) -> str:
        oid = git_blob_sha1(data)
        path = os.path.join(self.root, "blobs", oid)
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        return oid

    def blob_path(self, oid: str) -> str:
        return os.path.join(self.root, "blobs", oid)

    def _commit(self, repo: dict, branch: str, tree: dict, summary: str) -> str:
        self._counter += 1
        parent = repo["branches"].get(branch)
        sha = hashlib.sha1(json.dumps([parent, tree, summary, self._counter, _now()]).encode()).hexdigest()
        repo["commits"][sha] = {"parent": parent, "tree": dict(tree), "summary": summary, "date": _now()}
        repo["branches"][branch] = sha
        return sha

    def resolve(self, repo: dict, rev: str) -> str | None:
        if rev in repo["branches"]:
            return repo["branches"][rev]
        if rev in repo["tags"]:
            return repo["tags"][rev]
        return rev if rev in repo["commits"] else None

    # -- helpers for tests -------------------------------------------------
    def files(self, repo_id: str, rev: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        tree = repo["commits"][self.resolve(repo, rev)]["tree"]
        out = {}
        for path, oid in tree.items():
            with open(self.blob_path(oid), "rb") as f:
                out[path] = f.read()
        return out

    def commits(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> list[str]:
        """Commit shas of a branch, newest first."""
        repo = self.repos[(repo_type, repo_id)]
        out, sha = [], repo["branches"].get(branch)
        while sha:
            out.append(sha)
            sha = repo["commits"][sha]["parent"]
        return out


def client_env(endpoint: str, hf_home=None, base: dict | None = None, token: str = "hf_dummy_token",
               **extra) -> dict:
    """os.environ plus what keeps a huggingface_hub client on `endpoint` and off the network."""
    env = dict(os.environ if base is None else base)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(k, None)
    env.update(HF_ENDPOINT=endpoint, HF_TOKEN=token, HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_UPDATE_CHECK="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               HF_HUB_DISABLE_XET="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    if hf_home is not None:
        env["HF_HOME"] = str(hf_home)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def closed_port_endpoint() -> str:
    """An endpoint nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class SilentEndpoint:
    """Accepts TCP connections and never answers (a hung Hub); a context manager."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        return self

    def __exit__(self, *exc):
        self.sock.close()


class _Handler(BaseHTTPRequestHandler):
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
            self.hub._released.wait()
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
                "createdAt": _now()}
        self.hub.repos[(repo_type, repo_id)] = repo
        self.hub._commit(repo, "main", {".gitattributes": self.hub._put_blob(GITATTRIBUTES)},
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
                                                  "updatedAt": _now()}
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
                tree[value["path"]] = self.hub._put_blob(
                    base64.b64decode(data) if value.get("encoding") == "base64" else data)
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubHTTPError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                tree = {p: o for p, o in tree.items() if not p.startswith(folder)}
            else:  # lfsFile: we declared every file "regular" at preupload
                raise HubHTTPError(400, f"operation {key!r} is not supported by the test Hub")
        sha = self.hub._commit(repo, branch, tree, summary)
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


if __name__ == "__main__":
    import argparse
    import time

    ap = argparse.ArgumentParser(description="Serve a local stand-in Hub until Ctrl-C.")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--root", help="where file contents go (default: a temp dir, removed on exit)")
    args = ap.parse_args()
    with HubServer(root=args.root) as server:
        print(f"HF_ENDPOINT={server.endpoint} HF_TOKEN=hf_dummy_token", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
