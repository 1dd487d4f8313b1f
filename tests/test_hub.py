"""Hub round trips through a local stand-in Hub (tests/hub_server.py); no real network.

Everything that uses huggingface_hub runs in a subprocess whose environment points
HF_ENDPOINT at the local server (or at a dead port) and HF_HOME into tmp_path,
because huggingface_hub reads HF_ENDPOINT when it is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
import yaml

from hub_server import HubServer, SilentEndpoint, client_env, closed_port_endpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "hf_test_token_do_not_print"

# Prepended to every client script: builds an untrained tiny model folder in ~1 s.
PRELUDE = textwrap.dedent('''
    import json, os, sys, time
    import numpy as np
    import vit
    from vit import hub, model_folder

    def make_folder(path, seed=0):
        import keras
        from vit import export
        keras.utils.set_random_seed(seed)
        config = vit.get_preset("tiny")
        model = vit.build_vit(config)
        metrics = {"preset": "tiny", "epochs": 0, "test_top1": 0.01, "test_top5": 0.05,
                   "test_loss": 4.6, "train_seconds": 0.0, "images_per_second": 0.0}
        export.write_model_folder(model, path, config=config, metrics=metrics, history=[],
                                  label_names=[f"class_{i}" for i in range(100)])
        return path

    def result(obj):
        print("RESULT " + json.dumps(obj))
''')


def run_client(script: str, env: dict, *args, timeout: int = 600) -> dict:
    """Run PRELUDE + script in a fresh interpreter from the repo root; returns its RESULT."""
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(script), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert TOKEN not in output, "the token leaked into the output"
    assert proc.returncode == 0, output[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-4000:]
    print(lines[-1])  # shown by pytest -s or on failure
    return json.loads(lines[-1][len("RESULT "):])


def front_matter(text: str) -> dict:
    assert text.startswith("---\n"), text[:200]
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN) as server:
        yield server
        assert not server.unknown, f"the client called endpoints the test Hub lacks: {server.unknown}"


@pytest.fixture
def env(hub, tmp_path, cifar_path):
    return client_env(hub.endpoint, hf_home=tmp_path / "hf", token=TOKEN, CIFAR100_DIR=cifar_path)


# ---------------------------------------------------------------- (a) train, push, pull
@pytest.fixture(scope="module")
def trained(hub, tmp_path_factory, cifar_path):
    out = tmp_path_factory.mktemp("trained") / "model"
    env = client_env(hub.endpoint, hf_home=tmp_path_factory.mktemp("hf"), token=TOKEN)
    proc = subprocess.run(
        [sys.executable, "train.py", "--preset", "tiny", "--epochs", "1", "--limit-train", "512",
         "--data-dir", cifar_path, "--output-dir", str(out), "--push-to-hub", "user/tiny-vit"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "pushed to " in proc.stdout and "user/tiny-vit" in proc.stdout, proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr
    return str(out)


@pytest.mark.slow
def test_train_push_pull_identical_predictions(hub, trained, env, cifar_path):
    assert os.path.isdir(os.path.join(trained, "checkpoint"))  # exists locally...
    files = hub.files("user/tiny-vit")
    assert not [p for p in files if p.startswith("checkpoint/") or p.endswith(".keras")]  # ...not there
    for name in ("config.json", "metadata.json", "model.weights.h5", "labels.json", "metrics.json",
                 "history.csv", "curves.png", "README.md", "calibration.json", "reliability.png"):
        with open(os.path.join(trained, name), "rb") as f:
            assert files[name] == f.read(), name
    metrics = json.loads(files["metrics.json"])
    card = files["README.md"].decode()
    assert "hf://user/tiny-vit" in card and "USER/" not in card
    assert "## Calibration" in card  # push_model_folder rewrote the card from the folder
    meta = front_matter(card)
    assert meta["library_name"] == "keras" and meta["pipeline_tag"] == "image-classification"
    results = meta["model-index"][0]["results"][0]
    values = {m["type"] + ":" + str(m.get("config")): m["value"] for m in results["metrics"]}
    assert values["accuracy:top1"] == pytest.approx(round(metrics["test_top1"], 4))
    assert results["dataset"]["split"] == "test"

    out = run_client('''
        import keras
        from vit import data
        local, data_dir = sys.argv[1], sys.argv[2]
        folder, notice = hub.resolve_model("user/tiny-vit")
        d = data._read_pickle(os.path.join(data_dir, "test"))
        x = np.asarray(d["data"][:16], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        predict = lambda m: m.predict(x.astype("float32"), verbose=0)
        p_local = predict(model_folder.load_pretrained(local))
        p_resolved = predict(model_folder.load_pretrained(folder))
        p_hf = predict(keras.saving.load_model("hf://user/tiny-vit"))
        result({"folder": folder, "notice": notice, "files": sorted(os.listdir(folder)),
                "resolved_equal": bool(np.array_equal(p_local, p_resolved)),
                "hf_equal": bool(np.array_equal(p_local, p_hf)),
                "argmax": p_local.argmax(1).tolist()})
    ''', env, trained, cifar_path)
    assert out["notice"] is None
    assert out["folder"].startswith(env["HF_HOME"])
    assert "checkpoint" not in out["files"] and "model.weights.h5" in out["files"]
    assert {"calibration.json", "reliability.png"} <= set(out["files"])  # in MODEL_FILES
    assert out["resolved_equal"] and out["hf_equal"]
    assert not hub.unknown


# ---------------------------------------------------------------- (b) pinned revisions
def test_pinned_revision_and_offline_cache(hub, env, tmp_path):
    out = run_client('''
        from huggingface_hub import HfApi
        work = make_folder(sys.argv[1])
        first = hub.push_model_folder(work, "user/pinned", private=True)
        with open(os.path.join(work, "labels.json")) as f:
            labels = json.load(f)
        labels[0] = "changed-label"
        with open(os.path.join(work, "labels.json"), "w") as f:
            json.dump(labels, f)
        second = hub.push_model_folder(work, "user/pinned", commit_message="rename a class")
        HfApi().create_tag("user/pinned", tag="v1", revision=first.oid)
        seen = {}
        for spec in [f"user/pinned@{first.oid}", "user/pinned@v1", "user/pinned", f"user/pinned@{second.oid}",
                     "user/missing", "user/pinned@" + "0" * 40, "user/pinned@no-such-branch"]:
            folder, notice = hub.resolve_model(spec, fallback=work)
            with open(os.path.join(folder, "labels.json")) as f:
                seen[spec] = {"folder": folder, "notice": notice, "label0": json.load(f)[0]}
        model_folder.load_pretrained(seen[f"user/pinned@{first.oid}"]["folder"])
        result({"first": first.oid, "second": second.oid, "work": work, "seen": seen})
    ''', env, tmp_path / "work")
    first, second, seen, work = out["first"], out["second"], out["seen"], out["work"]
    assert first != second and hub.commits("user/pinned")[:2] == [second, first]
    assert hub.repos[("model", "user/pinned")]["private"]  # read back with the token
    assert json.loads(hub.files("user/pinned", first)["labels.json"])[0] == "class_0"
    pinned = seen[f"user/pinned@{first}"]
    assert pinned["notice"] is None and pinned["label0"] == "class_0"
    assert pinned["folder"].endswith(first)
    assert seen["user/pinned@v1"]["label0"] == "class_0" and seen["user/pinned@v1"]["notice"] is None
    assert seen["user/pinned"]["label0"] == "changed-label" and seen["user/pinned"]["notice"] is None
    assert seen[f"user/pinned@{second}"]["folder"] == seen["user/pinned"]["folder"]
    # missing repo / revision: the fallback folder and a notice saying why
    for spec, words in [("user/missing", "not found"), ("user/pinned@" + "0" * 40, "Revision"),
                        ("user/pinned@no-such-branch", "Revision")]:
        assert seen[spec]["folder"] == out["work"], spec
        assert words in seen[spec]["notice"] and "instead" in seen[spec]["notice"], seen[spec]

    # The Hub goes away: the cached snapshots still serve, pinned ones without a notice.
    offline = client_env(closed_port_endpoint(), hf_home=env["HF_HOME"], token=TOKEN)
    out = run_client('''
        first = sys.argv[1]
        seen = {}
        for spec in [f"user/pinned@{first}", "user/pinned", "user/pinned@v1", "user/never-downloaded"]:
            t0 = time.perf_counter()
            folder, notice = hub.resolve_model(spec, fallback=sys.argv[2])
            with open(os.path.join(folder, "labels.json")) as f:
                seen[spec] = {"notice": notice, "label0": json.load(f)[0], "folder": folder,
                              "seconds": time.perf_counter() - t0}
        result(seen)
    ''', offline, first, out["work"])
    assert out[f"user/pinned@{first}"]["notice"] is None and out[f"user/pinned@{first}"]["label0"] == "class_0"
    assert out["user/pinned"]["label0"] == "changed-label"
    assert "cached copy of user/pinned" in out["user/pinned"]["notice"]
    assert out["user/pinned@v1"]["label0"] == "class_0"
    assert "Could not reach the Hugging Face Hub" in out["user/never-downloaded"]["notice"]
    assert all(v["seconds"] < 3.0 for v in out.values()), out
    assert not hub.unknown

    # The Hub answers but refuses (rate limit): the cached copy too, not the fallback.
    hub.fail_with = 429
    try:
        out = run_client('''
            result({spec: hub.resolve_model(spec, fallback=sys.argv[1])
                    for spec in ["user/pinned", "user/never-downloaded"]})
        ''', env, work)
    finally:
        hub.fail_with = None
    folder, notice = out["user/pinned"]
    assert folder != work and "429" in notice and "cached copy of user/pinned" in notice, notice
    assert out["user/never-downloaded"][0] == work and "instead" in out["user/never-downloaded"][1]


# ---------------------------------------------------------------- (c) the Space
def test_publish_space(hub, env, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(os.path.join(ROOT, "vit"), project / "vit",
                    ignore=shutil.ignore_patterns("__pycache__", "weights"))
    shutil.copy(os.path.join(ROOT, "app.py"), project / "app.py")  # the real files: a
    shutil.copytree(os.path.join(ROOT, "examples"), project / "examples")  # missing one fails
    (project / "examples" / "notes.txt").write_text("not an example image\n")
    shutil.copy(os.path.join(ROOT, "requirements.txt"), project / "requirements.txt")
    (project / "vit" / "weights").mkdir()
    (project / "vit" / "weights" / "model.weights.h5").write_bytes(b"not for the Space")
    (project / "vit" / "__pycache__").mkdir()
    (project / "vit" / "__pycache__" / "hub.cpython-311.pyc").write_bytes(b"\0")
    (project / "vit" / "old_module.py").write_text("# removed before the second publish\n")

    out = run_client('''
        from vit import space
        root = sys.argv[1]
        rc1 = space.main(["publish", "user/vit-demo", "--model", "user/tiny-vit", "--root", root])
        os.remove(os.path.join(root, "vit", "old_module.py"))
        rc2 = space.main(["publish", "user/vit-demo", "--model", "user/tiny-vit@v1", "--root", root])
        result({"rc": [rc1, rc2]})
    ''', env, project)
    assert out["rc"] == [0, 0]
    repo = hub.repos[("space", "user/vit-demo")]
    assert repo["sdk"] == "gradio"
    assert repo["variables"]["MODEL_REPO"]["value"] == "user/tiny-vit@v1"
    files = hub.files("user/vit-demo", repo_type="space")
    assert files["app.py"] == (project / "app.py").read_bytes()
    assert {"README.md", "requirements.txt", "vit/__init__.py", "vit/hub.py", "vit/model_folder.py",
            "vit/handlers.py"} <= set(files)
    assert files["vit/hub.py"] == (project / "vit" / "hub.py").read_bytes()
    assert not [p for p in files if p.startswith("vit/weights") or p.endswith(".pyc")]
    examples = sorted(p.name for p in (project / "examples").glob("*.png"))
    assert examples and sorted(p[len("examples/"):] for p in files if p.startswith("examples/")) == examples
    assert "vit/old_module.py" in hub.files("user/vit-demo", hub.commits("user/vit-demo", "space")[1], "space")
    assert "vit/old_module.py" not in files  # deleted by the second publish
    assert b"keras" in files["requirements.txt"] and b"huggingface_hub" in files["requirements.txt"]
    meta = front_matter(files["README.md"].decode())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["sdk_version"] == metadata.version("gradio")
    assert meta["python_version"] == "3.11" and meta["models"] == ["user/tiny-vit"]
    assert meta["datasets"] == ["cifar100"] and meta["license"]
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] and meta["colorTo"]
    assert 0 < len(meta["short_description"]) <= 60
    assert not hub.unknown


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
