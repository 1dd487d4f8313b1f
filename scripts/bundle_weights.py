"""Make a run the app's bundled default model (vit/weights/).

    python scripts/bundle_weights.py runs/compact --data-dir ../shared/data/cifar100

A finished run's folder is copied as is. A run still in training is exported
from its latest checkpoint (evaluated on the test split now), and its card and
metrics.json say how many of the planned epochs it has done.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vit import data, export, fine_tuning, model_folder, training  # noqa: E402
from vit.config import ViTConfig  # noqa: E402

FILES = ("config.json", "metadata.json", "model.weights.h5", "labels.json", "metrics.json",
         "history.csv", "curves.png", "README.md")
# copied when the run has them (older runs predate calibration; faithfulness.json
# comes from benchmarks/faithfulness.py)
OPTIONAL_FILES = ("calibration.json", "reliability.png", "faithfulness.json")


def build(args, out: str, finished: bool) -> None:
    """Copy a finished run's folder, or export a running one's latest checkpoint, to out."""
    if finished:
        for name in FILES:
            shutil.copy2(os.path.join(args.run, name), out)
        for name in OPTIONAL_FILES:
            if os.path.isfile(os.path.join(args.run, name)):
                shutil.copy2(os.path.join(args.run, name), out)
        return
    model, state = training.load_checkpoint(os.path.join(args.run, training.CHECKPOINT_DIR))
    # a fine-tuning run's epochs count from random initialisation
    before = model_folder.epochs_before(state.get("parent"))
    planned = before + ViTConfig.from_dict(state["config"]).recipe.epochs
    preset = (state.get("preset")
              or fine_tuning.preset_with_architecture(ViTConfig.from_dict(state["config"]))
              or "custom")
    command = state.get("command") or f"python train.py --preset {preset}"
    export.export_run(
        model, state, data.load_cifar100(args.data_dir), out, preset=preset,
        command=f"{command}  # checkpoint after epoch {before + state['epoch']} of {planned}",
        epochs_planned=planned, in_training=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a train.py --output-dir folder")
    p.add_argument("--to", default=model_folder.BUNDLED_DIR)
    p.add_argument("--data-dir")
    args = p.parse_args()
    if os.path.realpath(args.run) == os.path.realpath(args.to):
        sys.exit(f"error: {args.run} is the destination itself")
    finished = os.path.isfile(os.path.join(args.run, "metrics.json"))
    if not finished and training.read_checkpoint_state(
            os.path.join(args.run, training.CHECKPOINT_DIR)) is None:
        sys.exit(f"error: {args.run} has neither metrics.json nor a checkpoint")
    # built beside the destination and swapped in only once verified, so a failure
    # (bad run folder, missing data) leaves the current bundle as it was
    parent = os.path.dirname(os.path.abspath(args.to))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".bundle-", dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the bundle from other users
    try:
        build(args, staging, finished)
        model_folder.verify_model_folder(staging)
        if os.path.isdir(args.to):
            shutil.rmtree(args.to)
        os.replace(staging, args.to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    metrics = json.load(open(os.path.join(args.to, "metrics.json")))
    print(f"bundled {args.run} -> {args.to}: epochs={metrics['epochs']} "
          f"top1={metrics['test_top1']:.4f} top5={metrics['test_top5']:.4f}")


if __name__ == "__main__":
    main()
