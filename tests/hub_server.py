"""A small stand-in for the Hugging Face Hub, for tests that must not touch the network.

It answers the `huggingface_hub` 2.4 client's repo, upload, download, branch, tag and
Space-variable calls (the routes are in tests/hub_routes.py); this module holds the
repo state, starts and stops the server, and builds a client's environment.

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

import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
from http.server import ThreadingHTTPServer

from hub_routes import HubHandler, now_iso


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


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
        self.released = threading.Event()
        self.lock = threading.RLock()
        self._counter = 0
        self.httpd: ThreadingHTTPServer | None = None
        os.makedirs(os.path.join(self.root, "blobs"), exist_ok=True)

    # -- lifecycle ---------------------------------------------------------
    def start(self, port: int = 0) -> "HubServer":
        handler = type("Handler", (HubHandler,), {"hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()  # stalled handlers return, so no thread outlives the server
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

    # -- storage (hub_routes reads and writes through these) ---------------
    def put_blob(self, data: bytes) -> str:
        oid = git_blob_sha1(data)
        path = os.path.join(self.root, "blobs", oid)
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        return oid

    def blob_path(self, oid: str) -> str:
        return os.path.join(self.root, "blobs", oid)

    def add_commit(self, repo: dict, branch: str, tree: dict, summary: str) -> str:
        self._counter += 1
        parent = repo["branches"].get(branch)
        sha = hashlib.sha1(json.dumps([parent, tree, summary, self._counter, now_iso()]).encode()).hexdigest()
        repo["commits"][sha] = {"parent": parent, "tree": dict(tree), "summary": summary, "date": now_iso()}
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
