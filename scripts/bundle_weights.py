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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vit import data, export, fine_tuning, model_folder, training  # noqa: E402
from vit.config import ViTConfig  # noqa: E402

FILES = ("config.json", "metadata.json", "model.weights.h5", "labels.json", "metrics.json",
         "history.csv", "curves.png", "README.md")
# copied when the run has them (older runs predate calibration; faithfulness.json
# comes from benchmarks/faithfulness.py)
OPTIONAL_FILES = ("calibration.json", "reliability.png", "faithfulness.json")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a train.py --output-dir folder")
    p.add_argument("--to", default=model_folder.BUNDLED_DIR)
    p.add_argument("--data-dir")
    args = p.parse_args()
    if os.path.isdir(args.to):
        shutil.rmtree(args.to)
    os.makedirs(args.to)
    if os.path.isfile(os.path.join(args.run, "metrics.json")):
        for name in FILES:
            shutil.copy2(os.path.join(args.run, name), args.to)
        for name in OPTIONAL_FILES:
            if os.path.isfile(os.path.join(args.run, name)):
                shutil.copy2(os.path.join(args.run, name), args.to)
    else:
        model, state = training.load_checkpoint(os.path.join(args.run, training.CHECKPOINT_DIR))
        if model is None:
            sys.exit(f"error: {args.run} has neither metrics.json nor a checkpoint")
        # a fine-tuning run's epochs count from random initialisation
        before = model_folder.epochs_before(state.get("parent"))
        planned = before + ViTConfig.from_dict(state["config"]).recipe.epochs
        preset = (state.get("preset")
                  or fine_tuning.preset_with_architecture(ViTConfig.from_dict(state["config"]))
                  or "custom")
        command = state.get("command") or f"python train.py --preset {preset}"
        export.export_run(
            model, state, data.load_cifar100(args.data_dir), args.to, preset=preset,
            command=f"{command}  # checkpoint after epoch {before + state['epoch']} of {planned}",
            epochs_planned=planned, in_training=True)
    model_folder.verify_model_folder(args.to)
    metrics = json.load(open(os.path.join(args.to, "metrics.json")))
    print(f"bundled {args.run} -> {args.to}: epochs={metrics['epochs']} "
          f"top1={metrics['test_top1']:.4f} top5={metrics['test_top5']:.4f}")


if __name__ == "__main__":
    main()
