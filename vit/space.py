"""Publish the Gradio demo as a Hugging Face Space that pulls its model from the Hub.

    python -m vit.space publish USER/vit-demo --model USER/vit-cifar100 [--private]

Uploads app.py, the vit/ package (without vit/weights/: the Space downloads the
model named by the MODEL_REPO variable), the examples/ images, requirements.txt
(generated when the project has none) and a README.md with the Spaces front matter
(sdk: gradio, sdk_version = the installed Gradio, ...). Files of an earlier publish
that no longer exist under vit/ or examples/ are deleted.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from huggingface_hub import (
    CommitOperationAdd, CommitOperationDelete, HfApi, SpaceCard, SpaceCardData, constants,
)
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .hub import HubError, _httpx, _hub_error, parse_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_VARIABLE = "MODEL_REPO"
SKIP_DIRS = {"weights", "__pycache__", ".ipynb_checkpoints"}
EXAMPLE_TYPES = (".png", ".jpg", ".jpeg", ".webp")  # examples/ images the app offers
# Used when the project has no requirements.txt: lower bounds from this environment.
REQUIREMENTS = ("keras", "tensorflow", "huggingface_hub", "numpy", "h5py", "matplotlib", "pillow")

CARD = """---
{{ card_data }}
---

# {{ title }}

Interactive demo of a Vision Transformer trained from scratch on CIFAR-100 with Keras 3:
upload or pick an image, see the top-5 classes and where the model looked
(attention rollout, per-head maps, class-specific maps).

The model is downloaded at start-up from [{{ model }}]({{ model_url }}) (Space variable
`MODEL_REPO`; append `@revision` to pin a branch, tag or commit). When the Hub cannot
be reached the app says so and uses its bundled model if it has one.
"""


def _requirements(root: str) -> bytes:
    path = os.path.join(root, "requirements.txt")
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    lines = []
    for name in REQUIREMENTS:
        try:
            major, minor = metadata.version(name).split(".")[:2]
            lines.append(f"{name}>={major}.{minor}")
        except (metadata.PackageNotFoundError, ValueError):
            lines.append(name)
    return ("\n".join(lines) + "\n").encode()


def space_files(root: str = ROOT) -> dict[str, str | bytes]:
    """{path in the Space: local path or bytes}: app.py, vit/, examples/, requirements.txt."""
    app = os.path.join(root, "app.py")
    if not os.path.isfile(app):
        raise HubError(f"{app} not found: the Space needs the Gradio app")
    files: dict[str, str | bytes] = {"app.py": app, "requirements.txt": _requirements(root)}
    for name in sorted(os.listdir(os.path.join(root, "examples"))) if os.path.isdir(
            os.path.join(root, "examples")) else []:
        if name.lower().endswith(EXAMPLE_TYPES):
            files[f"examples/{name}"] = os.path.join(root, "examples", name)
    package = os.path.join(root, "vit")
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            local = os.path.join(dirpath, name)
            files[os.path.relpath(local, root).replace(os.sep, "/")] = local
    return files


def space_card(space_id: str, model: str, *, title: str = "ViT CIFAR-100 attention explorer",
               sdk_version: str | None = None) -> SpaceCard:
    """README.md of the Space: front matter the Hub reads, and a short description."""
    repo_id, _ = parse_spec(model)
    data = SpaceCardData(
        title=title, sdk="gradio", sdk_version=sdk_version or metadata.version("gradio"),
        python_version="3.11", app_file="app.py", license="apache-2.0",
        models=[repo_id], datasets=["cifar100"],
        tags=["vision-transformer", "keras", "image-classification", "attention-rollout"],
        emoji="🔭", colorFrom="indigo", colorTo="pink", pinned=False,
        short_description="ViT on CIFAR-100: predictions and attention maps")
    return SpaceCard.from_template(data, template_str=CARD, title=title, model=model,
                                   model_url=f"{constants.ENDPOINT}/{repo_id}")


def publish_space(space_id: str, model: str, *, private: bool = False, token: str | None = None,
                  root: str = ROOT, commit_message: str = "Publish the ViT CIFAR-100 demo"):
    """Create/update the Space; returns huggingface_hub's CommitInfo."""
    parse_spec(space_id)
    files = space_files(root)
    files["README.md"] = str(space_card(space_id, model)).encode()
    api = HfApi(token=token)
    try:
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private,
                        exist_ok=True)
        api.add_space_variable(space_id, MODEL_VARIABLE, model,
                               description="model repo (USER/REPO[@revision]) the app loads")
        stale = [p for p in api.list_repo_files(space_id, repo_type="space")
                 if p.startswith(("vit/", "examples/")) and p not in files]
        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=src)
                      for p, src in sorted(files.items())]
        operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
        return api.create_commit(space_id, repo_type="space", operations=operations,
                                 commit_message=commit_message)
    except (HfHubHTTPError, _httpx.HTTPError, OfflineModeIsEnabled, OSError) as exc:
        raise _hub_error(exc, f"publish the Space {space_id}") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit.space", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pub = sub.add_parser("publish", help="create or update the Gradio Space")
    pub.add_argument("space_id", metavar="USER/SPACE")
    pub.add_argument("--model", required=True, metavar="USER/REPO[@REV]",
                     help="model repo the Space loads (set as its MODEL_REPO variable)")
    pub.add_argument("--private", action="store_true")
    pub.add_argument("--root", default=ROOT, help="project folder holding app.py and vit/")
    args = p.parse_args(argv)
    try:
        info = publish_space(args.space_id, args.model, private=args.private, root=args.root)
    except (HubError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"published {constants.ENDPOINT}/spaces/{args.space_id} (commit {info.oid[:7]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
