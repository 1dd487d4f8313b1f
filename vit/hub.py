"""Share model folders on the Hugging Face Hub, and get them back safely.

    python -m vit.hub push runs/compact USER/vit-cifar100 [--private]
    python -m vit.hub pull USER/vit-cifar100[@REVISION]      # prints the local folder
    python -m vit.hub verify runs/compact

`push_model_folder` uploads everything but the training checkpoint, with a
model card that names the repo. `resolve_model` turns "USER/REPO@rev", a local
folder or None into a local folder; when the Hub is unreachable or stalls, or the
repo or revision does not exist, it answers within `timeout` seconds with the cached
copy of that revision or the bundled model, plus a one-line notice saying why.

The token comes from `token=`, else HF_TOKEN or `hf auth login` (huggingface_hub
reads them); it is never printed. HF_ENDPOINT / HF_HUB_OFFLINE are read when
huggingface_hub is first imported.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading

import huggingface_hub as hf
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .model_folder import (  # noqa: F401  (re-exported)
    BUNDLED_DIR, REQUIRED_FILES, ModelIntegrityError, bundled_available, verify_model_folder,
)

try:  # the HTTP library huggingface_hub 2.x uses
    import httpx2 as _httpx
except ImportError:  # pragma: no cover
    import httpx as _httpx

# What the app needs from a model repo (everything but the training state).
MODEL_FILES = ["config.json", "metadata.json", "model.weights.h5", "labels.json", "metrics.json",
               "README.md", "curves.png", "history.csv", "assets/*",
               # optional: temperature scaling + "not sure" threshold, and the maps' benchmark
               "calibration.json", "reliability.png", "faithfulness.json"]
# Never uploaded: training state and stray files.
UPLOAD_IGNORE = ["checkpoint/*", "*.keras", "*.tmp", "*.incomplete", "*.lock", "__pycache__/*",
                 "*/__pycache__/*", ".ipynb_checkpoints/*", ".DS_Store"]
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(RuntimeError):
    """A Hub operation failed; the message is one line and never contains the token."""


class HubUnavailableError(HubError, ConnectionError):
    """The Hub (HF_ENDPOINT) could not be reached."""


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_unreachable(exc: BaseException | None) -> bool:
    """Connection refused, timeout, offline mode or a 5xx, also as the cause of another error."""
    for _ in range(5):
        if exc is None:
            return False
        if isinstance(exc, (_httpx.TransportError, OfflineModeIsEnabled, TimeoutError,
                            ConnectionError)) or (
                isinstance(exc, HfHubHTTPError) and exc.response is not None
                and exc.response.status_code >= 500):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _hub_error(exc: BaseException, what: str) -> HubError:
    """Translate a client exception into a one-line HubError."""
    if _is_unreachable(exc):
        return HubUnavailableError(
            f"Could not reach the Hugging Face Hub at {constants.ENDPOINT} to {what} "
            f"({type(exc).__name__}: {_one_line(exc)})")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return HubError(f"Not allowed to {what} (HTTP {status}): log in with `hf auth login` "
                            f"or set HF_TOKEN to a token with write access")
        server = exc.response.headers.get("X-Error-Message") or _one_line(exc)
        return HubError(f"Could not {what}: HTTP {status} {server}")
    return HubError(f"Could not {what}: {type(exc).__name__}: {_one_line(exc)}")


# ---------------------------------------------------------------- push
def push_model_folder(folder: str, repo_id: str, *, private: bool = False, token: str | None = None,
                      revision: str | None = None,
                      commit_message: str = "Upload ViT CIFAR-100 model") -> hf.CommitInfo:
    """Create `repo_id` if needed and upload `folder` (minus checkpoint/) in one commit.

    The commit makes the repo's model files (MODEL_FILES) exactly the folder's:
    one the folder lacks is deleted, so no record of older weights outlives them.

    README.md is regenerated first so the card's usage snippet names `repo_id`.
    Returns huggingface_hub's CommitInfo (a str: the commit URL; `.oid` is the sha,
    `.repo_url` the repo's URL). `revision` uploads to that branch (created from
    main when missing). Raises ModelIntegrityError for a broken folder,
    HubUnavailableError when the Hub cannot be reached, HubError otherwise.
    """
    from .card import write_model_card

    verify_model_folder(folder)
    write_model_card(folder, repo_id=repo_id)
    api = HfApi(token=token)
    what = f"push {folder} to {repo_id}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        # delete_patterns: a model file the folder no longer has (e.g. faithfulness.json
        # measured on the previous weights) goes too; files the owner added stay
        return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                 commit_message=commit_message, ignore_patterns=UPLOAD_IGNORE,
                                 delete_patterns=MODEL_FILES)
    except (HfHubHTTPError, _httpx.HTTPError, OfflineModeIsEnabled, OSError) as exc:
        raise _hub_error(exc, what) from None


# ---------------------------------------------------------------- pull
def parse_spec(spec: str) -> tuple[str, str | None]:
    """"USER/REPO@rev" -> ("USER/REPO", "rev"); "USER/REPO" -> ("USER/REPO", None).

    "hf://USER/REPO" (Keras' spelling) is always the Hub; a bare USER/REPO whose
    USER is a local folder is taken for a mistyped path, not a repo.
    """
    spec = spec.strip()
    explicit = spec.startswith("hf://")
    repo_id, _, revision = spec.removeprefix("hf://").partition("@")
    if not _REPO_ID.match(repo_id) or ".." in repo_id or (_ and not revision):
        raise ValueError(f"{spec!r} is neither a local model folder nor USER/REPO[@revision]")
    owner = repo_id.split("/")[0]
    if not explicit and os.path.isdir(owner):  # e.g. runs/compact before that run exists: a mistyped path
        raise ValueError(f"no model folder {spec!r} ({owner}/ is a local folder, so it is not "
                         "read as a Hub repo; write hf://USER/REPO for the Hub)")
    return repo_id, revision or None
    return repo_id, revision or None


def _download(repo_id: str, revision: str | None, timeout: float, cache_dir, token) -> str:
    """Probe, metadata and download, all within one `timeout`; raises the client's errors.

    Everything runs in a daemon thread and the caller stops waiting at the
    deadline, so slow DNS, a silent server or a Hub that answers the API and
    then stalls the file bytes cannot hold start-up (the client's own read
    timeout is 10 s, with retries). An abandoned download may finish later in
    the background; that is harmless: huggingface_hub writes each file to a
    unique .incomplete file and renames it into the cache when done, and a
    snapshot missing files is refused offline (IncompleteSnapshotError, which
    `_cached` treats as no copy), so a half-written folder is never used.
    """
    box: dict = {}
    done = threading.Event()

    def work():
        try:
            HfApi(token=token).repo_info(repo_id, revision=revision, timeout=timeout)
            box["answered"] = True
            box["path"] = snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES,
                                            cache_dir=cache_dir, token=token)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=f"hub-download-{repo_id}", daemon=True).start()
    if not done.wait(timeout):
        if box.get("answered"):
            raise TimeoutError(f"{constants.ENDPOINT} answered but sent no model files "
                               f"within {timeout:g} s")
        raise TimeoutError(f"no answer from {constants.ENDPOINT} within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["path"]


def _cached(repo_id: str, revision: str | None, cache_dir) -> str | None:
    """A complete cached snapshot of exactly that revision, without network; else None."""
    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES,
                                 cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    try:
        verify_model_folder(path)
    except ModelIntegrityError:
        return None
    return path


def resolve_model(spec: str | None = None, timeout: float = 3.0, *, fallback: str | None = None,
                  cache_dir: str | None = None, token: str | None = None,
                  strict: bool = False) -> tuple[str, str | None]:
    """(local model folder, notice or None) for a model spec.

    spec: None (the bundled model), a local folder, "USER/REPO" or "USER/REPO@rev"
    (branch, tag or commit sha; a commit sha already in the cache is used without
    network). When the Hub cannot deliver the model within `timeout` seconds (one
    deadline for probe, metadata and download) or answers with an error (rate
    limit, outage), the cached copy of that revision is used if
    complete, else `fallback` (default: the bundled model) with a notice; the
    fallback too when the repo or revision does not exist, or when the download
    fails verify_model_folder (corrupted weights).
    strict=True raises HubError instead of falling back to `fallback`.
    """
    fallback = fallback or BUNDLED_DIR
    if not spec:
        return fallback, None
    if os.path.isdir(os.path.expanduser(spec)):
        return os.path.abspath(os.path.expanduser(spec)), None
    try:
        repo_id, revision = parse_spec(spec)
    except ValueError as exc:  # e.g. a mistyped local path
        return _fall_back(str(exc), fallback, strict)
    label = f"{repo_id}@{revision}" if revision else repo_id

    if revision and _COMMIT_SHA.match(revision):  # immutable: a complete cached copy is exact
        path = _cached(repo_id, revision, cache_dir)
        if path:
            return path, None
    try:
        path = _download(repo_id, revision, timeout, cache_dir, token)
        if not bundled_available(path):
            raise HubError(f"{label} is not a model folder (no {' / '.join(REQUIRED_FILES)})")
        verify_model_folder(path)
        return path, None
    except RevisionNotFoundError:
        reason = f"Revision '{revision}' of {repo_id} was not found on the Hugging Face Hub"
    except RepositoryNotFoundError:
        reason = f"Model {repo_id} was not found on the Hugging Face Hub (or it is private)"
    except (HubError, ModelIntegrityError) as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001  (offline, timeouts, HTTP errors, ...)
        if not _is_unreachable(exc):  # rate limits, outages, auth: the Hub said no
            reason = str(_hub_error(exc, f"download {label}"))
        else:
            reason = (f"Could not reach the Hugging Face Hub to load {label} "
                      f"({type(exc).__name__}: {_one_line(exc, 120)})")
        path = _cached(repo_id, revision, cache_dir)
        if path:  # the model that was asked for beats the fallback
            commit = os.path.basename(os.path.normpath(path))[:7]
            return path, f"{reason}; using the cached copy of {label} (commit {commit})."
    return _fall_back(reason, fallback, strict)


def _fall_back(reason: str, fallback: str, strict: bool) -> tuple[str, str]:
    """(fallback folder, notice), or HubError when strict or nothing is bundled."""
    if strict:
        raise HubError(reason)
    if not bundled_available(fallback):
        raise HubError(f"{reason}; and there is no bundled model in {fallback}")
    what = "the bundled model" if os.path.abspath(fallback) == os.path.abspath(BUNDLED_DIR) \
        else f"the default model in {fallback}"
    return fallback, f"{reason}; using {what} instead."


# ---------------------------------------------------------------- CLI
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.hub", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    push = sub.add_parser("push", help="upload a train.py output folder (without checkpoint/)")
    push.add_argument("folder")
    push.add_argument("repo_id", metavar="USER/REPO")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", help="branch to commit to (default: main)")
    push.add_argument("--message", default="Upload ViT CIFAR-100 model", help="commit message")
    pull = sub.add_parser("pull", help="download a model repo; prints the local folder")
    pull.add_argument("spec", metavar="USER/REPO[@REVISION]")
    pull.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the Hub")
    verify = sub.add_parser("verify", help="check a model folder's files and weights sha256")
    verify.add_argument("folder")
    args = p.parse_args(argv)
    try:
        if args.cmd == "push":
            info = push_model_folder(args.folder, args.repo_id, private=args.private,
                                     revision=args.revision, commit_message=args.message)
            print(f"pushed {args.folder} -> {info.repo_url} (commit {info.oid[:7]})")
        elif args.cmd == "pull":
            folder, notice = resolve_model(args.spec, timeout=args.timeout, strict=True)
            if notice:
                print(notice, file=sys.stderr)
            verify_model_folder(folder)
            print(folder)
        else:
            metrics = verify_model_folder(args.folder)
            print(f"{args.folder}: ok" + (" (sha256 matches metrics.json)"
                                           if metrics.get("weights_sha256") else ""))
    except (HubError, ModelIntegrityError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
