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
from importlib import metadata

import pytest
from hub_client import ROOT, TOKEN, env_fixture, front_matter, hub_fixture, run_client  # noqa: F401
from hub_server import client_env, closed_port_endpoint


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


def test_a_mistyped_local_path_is_not_taken_for_a_hub_repo(hub, env, tmp_path):
    out = run_client('''
        os.chdir(sys.argv[1])
        os.makedirs("runs")  # runs/compact does not exist (yet): a typo, not user "runs"
        fallback = make_folder(os.path.join(sys.argv[1], "bundled"))
        folder, notice = hub.resolve_model("runs/compact", fallback=fallback)
        try:
            hub.resolve_model("runs/compact", strict=True)
            strict = None
        except hub.HubError as exc:
            strict = str(exc)
        result({"folder": folder, "notice": notice, "strict": strict,
                "explicit": hub.parse_spec("hf://runs/compact@v1")})
    ''', env, tmp_path)
    assert out["folder"] == str(tmp_path / "bundled")
    assert out["notice"].startswith("no model folder 'runs/compact' (runs/ is a local folder")
    assert "hf://USER/REPO" in out["strict"]
    assert out["explicit"] == ["runs/compact", "v1"]  # hf:// always means the Hub


def test_a_push_removes_model_files_the_folder_no_longer_has(hub, env, tmp_path):
    run_client('''
        from huggingface_hub import HfApi
        work = make_folder(sys.argv[1])
        with open(os.path.join(work, "faithfulness.json"), "w") as f:
            json.dump({"n": 1, "methods": {}}, f)
        hub.push_model_folder(work, "user/refreshed")
        HfApi().upload_file(path_or_fileobj=b"my notes", path_in_repo="NOTES.md",
                            repo_id="user/refreshed")
        os.remove(os.path.join(work, "faithfulness.json"))  # new weights, not yet measured
        hub.push_model_folder(work, "user/refreshed", commit_message="new weights")
        result({})
    ''', env, tmp_path / "work")
    files = hub.files("user/refreshed")
    assert "faithfulness.json" not in files  # it described the old weights
    assert files["NOTES.md"] == b"my notes"  # not ours: kept
    assert {"model.weights.h5", "labels.json", "README.md"} <= set(files)


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
                     "user/missing", "user/pinned@" + "0" * 40, "user/pinned@no-such-branch",
                     "hf://user/pinned@v1"]:
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
    assert seen["hf://user/pinned@v1"] == seen["user/pinned@v1"]  # Keras' spelling of the same repo
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
