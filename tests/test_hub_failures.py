"""How the Hub client fails: an unreachable or stalling Hub falls back to the
bundled model within its deadline, and corrupted weights are refused. Same
local stand-in Hub and subprocess clients as tests/test_hub.py."""

from __future__ import annotations

import os

import pytest
from hub_client import ROOT, TOKEN, env_fixture, hub_fixture, run_client  # noqa: F401
from hub_server import SilentEndpoint, client_env, closed_port_endpoint


# ---------------------------------------------------------------- (d) unreachable Hub
@pytest.mark.parametrize("kind", ["closed-port", "silent-server"])
def test_unreachable_hub_falls_back_fast(kind, tmp_path):
    script = '''
        fallback = make_folder(sys.argv[1])
        out = {}
        for spec in ["user/tiny-vit", "user/tiny-vit@v1"]:
            t0 = time.perf_counter()
            folder, notice = hub.resolve_model(spec, timeout=2.0, fallback=fallback)
            out[spec] = {"folder": folder, "notice": notice, "seconds": time.perf_counter() - t0}
        t0 = time.perf_counter()
        try:
            hub.resolve_model("user/tiny-vit", timeout=2.0, strict=True)
            out["strict"] = None
        except hub.HubError as exc:
            out["strict"] = str(exc)
        out["strict_seconds"] = time.perf_counter() - t0
        out["default"] = hub.resolve_model(None, fallback=fallback)
        try:  # no fallback= : the bundled model (vit/weights), when it is there
            out["bundled"] = list(hub.resolve_model("user/tiny-vit", timeout=2.0))
        except hub.HubError as exc:
            out["bundled"] = ["error", str(exc)]
        out["bundled_available"] = model_folder.bundled_available()
        out["model_ok"] = model_folder.load_pretrained(out["user/tiny-vit"]["folder"]).count_params() > 0
        if sys.argv[2] == "push":
            try:
                hub.push_model_folder(fallback, "user/tiny-vit")
            except hub.HubUnavailableError as exc:
                out["push_error"] = str(exc)
        result(out)
    '''
    if kind == "closed-port":
        endpoint, ctx = closed_port_endpoint(), None
    else:
        ctx = SilentEndpoint().__enter__()
        endpoint = ctx.endpoint
    try:
        env = client_env(endpoint, hf_home=tmp_path / "hf", token=TOKEN)
        # (a hung Hub would hold an upload for the client's own timeouts: push only to the dead port)
        out = run_client(script, env, tmp_path / "fallback", "push" if kind == "closed-port" else "-")
    finally:
        if ctx:
            ctx.__exit__(None, None, None)
    for spec in ("user/tiny-vit", "user/tiny-vit@v1"):
        got = out[spec]
        assert got["folder"] == str(tmp_path / "fallback")
        assert got["notice"].startswith("Could not reach the Hugging Face Hub"), got
        assert "using the default model in" in got["notice"] and "\n" not in got["notice"]
        assert got["seconds"] < 3.0, got  # the app's promise: fallback within 3 s
    assert out["strict"] and "Could not reach" in out["strict"] and out["strict_seconds"] < 3.0
    assert out["default"] == [str(tmp_path / "fallback"), None]
    if out["bundled_available"]:
        assert out["bundled"][0] == os.path.join(ROOT, "vit", "weights")
        assert out["bundled"][1].endswith("using the bundled model instead."), out["bundled"]
    else:
        assert out["bundled"][0] == "error" and "no bundled model in" in out["bundled"][1]
    assert out["model_ok"]
    if kind == "closed-port":
        assert out["push_error"].startswith("Could not reach the Hugging Face Hub at " + endpoint)
        assert "\n" not in out["push_error"]


# ---------------------------------------------------------------- (e) corrupted weights
def test_corrupted_weights_are_refused(hub, env, tmp_path):
    out = run_client('''
        import shutil
        from huggingface_hub import HfApi
        base = sys.argv[1]
        good = make_folder(os.path.join(base, "good"))
        weights = os.path.join(good, "model.weights.h5")
        size = os.path.getsize(weights)
        errors = {}

        def attempt(name, fn, *args, **kwargs):
            try:
                fn(*args, **kwargs)
                errors[name] = None
            except Exception as exc:
                errors[name] = [type(exc).__name__, str(exc)]

        def broken(name, damage, keep_sha=True):
            folder = os.path.join(base, name)
            shutil.copytree(good, folder)
            path = os.path.join(folder, "model.weights.h5")
            with open(path, "r+b") as f:
                damage(f)
            if not keep_sha:
                with open(os.path.join(folder, "metrics.json")) as f:
                    metrics = json.load(f)
                del metrics["weights_sha256"]
                with open(os.path.join(folder, "metrics.json"), "w") as f:
                    json.dump(metrics, f)
            return folder

        def flip(f):
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))

        folders = {"flipped": broken("flipped", flip),
                   "truncated": broken("truncated", lambda f: f.truncate(size // 2)),
                   "truncated_no_sha": broken("truncated_no_sha", lambda f: f.truncate(size // 2), False)}
        attempt("good", model_folder.load_pretrained, good)
        for name, folder in folders.items():
            attempt(name, model_folder.load_pretrained, folder)
        attempt("push", hub.push_model_folder, folders["truncated"], "user/corrupt")

        # A repo whose weights got corrupted after the card recorded their sha256.
        hub.push_model_folder(good, "user/tampered")
        HfApi().upload_file(path_or_fileobj=os.path.join(folders["truncated"], "model.weights.h5"),
                            path_in_repo="model.weights.h5", repo_id="user/tampered")
        folder, notice = hub.resolve_model("user/tampered", fallback=good)
        attempt("strict", hub.resolve_model, "user/tampered", strict=True)
        result({"folders": folders, "errors": errors, "tampered": [folder, notice], "good": good})
    ''', env, tmp_path)
    errors, folders = out["errors"], out["folders"]
    assert errors["good"] is None
    for name in ("flipped", "truncated", "truncated_no_sha"):
        kind, message = errors[name]
        assert kind == "ModelIntegrityError", errors[name]
        assert "model.weights.h5" in message and folders[name] in message, message
    assert "sha256" in errors["flipped"][1] and "metrics.json" in errors["flipped"][1]
    assert errors["push"][0] == "ModelIntegrityError"
    assert ("model", "user/corrupt") not in hub.repos  # refused before anything was created
    folder, notice = out["tampered"]
    assert folder == out["good"]
    assert "model.weights.h5" in notice and "corrupted" in notice and "instead" in notice
    assert errors["strict"][0] == "HubError" and "model.weights.h5" in errors["strict"][1]
    assert not hub.unknown


# ---------------------------------------------------------------- (f) a Hub that stalls the files
def test_stalling_hub_falls_back_within_the_deadline(hub, env, tmp_path):
    """Metadata at once, file bytes never: one deadline covers the download too."""
    run_client('hub.push_model_folder(make_folder(sys.argv[1]), "user/stalls"); result({})',
               env, tmp_path / "pushed")
    script = '''
        fallback = make_folder(sys.argv[1])
        t0 = time.perf_counter()
        assert hub.resolve_model(None, fallback=fallback) == (fallback, None)
        no_hub = time.perf_counter() - t0
        t0 = time.perf_counter()
        folder, notice = hub.resolve_model("user/stalls", timeout=3.0, fallback=fallback)
        seconds = time.perf_counter() - t0
        snapshots = os.path.join(os.environ["HF_HOME"], "hub", "models--user--stalls", "snapshots")
        files = sorted(f for d in (os.listdir(snapshots) if os.path.isdir(snapshots) else [])
                       for f in os.listdir(os.path.join(snapshots, d)))
        result({"folder": folder, "notice": notice, "seconds": seconds, "no_hub": no_hub,
                "cached": hub._cached("user/stalls", None, None), "snapshot": files})
    '''
    seen = {}
    for stall in ("*", "labels.json"):  # nothing arrives / all but one file arrives
        hub.stall_files = stall
        try:
            seen[stall] = out = run_client(script, env, tmp_path / f"fallback{len(seen)}")
        finally:
            hub.stall_files = None
        assert out["folder"] == str(tmp_path / f"fallback{len(seen) - 1}"), out
        assert out["seconds"] - out["no_hub"] <= 3.5, out
        assert out["notice"].startswith("Could not reach the Hugging Face Hub to load user/stalls")
        assert "sent no model files within 3 s" in out["notice"] and "instead" in out["notice"]
        assert out["cached"] is None  # a half-written snapshot is never used
    assert "labels.json" not in seen["labels.json"]["snapshot"]  # it was half-written
    assert "model.weights.h5" in seen["labels.json"]["snapshot"]
    out = run_client('result(hub.resolve_model("user/stalls"))', env)  # the Hub recovers
    assert out[1] is None and os.path.isfile(os.path.join(out[0], "labels.json"))
