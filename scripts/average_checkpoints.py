"""Average a run's last epoch checkpoints, choosing how many on the validation split.

    python train.py --preset compact --keep-checkpoints 10 --output-dir runs/compact
    python scripts/average_checkpoints.py runs/compact --data-dir ../shared/data/cifar100 \\
        --out runs/compact-avg

RUN is a finished train.py folder. Its epoch checkpoints are the ones that
`train.py --keep-checkpoints N` left in RUN/checkpoint/, unless SNAPSHOTS
names other copies of them (epoch-NNNN.keras files). For each candidate K
(--candidates), the weights of the last K snapshots are averaged
(`vit.training.average_weights`) and scored on the run's held-out validation
split; the best K wins (the smallest K on ties), and K=1 is the run itself.
The test split is used only once, to report the winner, so the choice cannot
be tuned on it. Writes a model folder like train.py's, whose metrics.json
records the averaged epochs and every candidate's validation top-1.
--test-time-flip on makes the folder classify by the mean logits of each image
and its mirror (scored that way here, and served that way by the app).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402

from vit import data, evaluation, export, model_folder, training  # noqa: E402
from vit.config import ViTConfig  # noqa: E402


def epoch_of(path: str) -> int:
    epoch = training.checkpoint_epoch(path)
    if epoch is None:
        raise SystemExit(f"error: {path} is not an epoch-NNNN.keras checkpoint")
    return epoch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a finished train.py --output-dir folder")
    p.add_argument("snapshots", nargs="*",
                   help="epoch-NNNN.keras checkpoints of that run (default: RUN/checkpoint/)")
    p.add_argument("--candidates", type=int, nargs="+", default=[1, 3, 5, 10])
    p.add_argument("--data-dir")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--test-time-flip", choices=("run", "on", "off"), default="run",
                   help="serve (and score every candidate) by the mean logits of each image "
                        "and its mirror: as the run's config says, or set it here")
    args = p.parse_args(argv)

    state = training.read_checkpoint_state(os.path.join(args.run, training.CHECKPOINT_DIR))
    if state is None:
        raise SystemExit(f"error: {args.run} has no {training.CHECKPOINT_DIR}/{training.LATEST}")
    with open(os.path.join(args.run, "metrics.json")) as f:
        run_metrics = json.load(f)
    config = ViTConfig.from_dict(state["config"])
    if args.test_time_flip != "run":  # inference only: the weights mean the same
        config = config.replace(test_time_flip=args.test_time_flip == "on")
        state = {**state, "config": config.to_dict()}
    flip = config.arch.test_time_flip
    snapshots = sorted(args.snapshots or training.epoch_checkpoints(
        os.path.join(args.run, training.CHECKPOINT_DIR)), key=epoch_of)
    if not snapshots:
        raise SystemExit(f"error: no epoch-NNNN.keras checkpoints in {args.run}/checkpoint "
                         "(train with --keep-checkpoints N, or name copies as SNAPSHOTS)")
    candidates = sorted({k for k in args.candidates if 1 <= k <= len(snapshots)})
    if not candidates:
        raise SystemExit(f"error: no candidate in {args.candidates} fits "
                         f"{len(snapshots)} checkpoint(s)")
    if len(snapshots) == 1:
        print("warning: only one checkpoint, so there is nothing to average "
              "(train with --keep-checkpoints N to keep N)", file=sys.stderr)
    epochs = [epoch_of(path) for path in snapshots]
    if epochs[-1] != state["epoch"]:
        raise SystemExit(f"error: the last snapshot is epoch {epochs[-1]}, "
                         f"the run ended at epoch {state['epoch']}")
    if epochs != list(range(epochs[0], epochs[-1] + 1)):
        raise SystemExit(f"error: the snapshots must be consecutive epochs, once each; "
                         f"got {epochs}")
    dataset = data.load_cifar100(args.data_dir)
    precision = (training.checkpoint_precision(state) or run_metrics.get("mixed_precision")
                 or "off")
    training.set_precision(precision)
    _, (x_val, y_val) = data.train_val_split(dataset.x_train, dataset.y_train,
                                             config.recipe.validation_split)
    models = [keras.saving.load_model(path, compile=False) for path in snapshots]
    model = keras.saving.load_model(snapshots[-1], compile=False)  # scratch: gets each mean
    final_weights = models[-1].get_weights()
    scores, val = {}, {}
    for k in candidates:
        model.set_weights(training.average_weights(models[-k:]) if k > 1 else final_weights)
        val[k] = evaluation.evaluate(model, x_val, y_val, test_time_flip=flip)
        scores[k] = val[k]["test_top1"]
        print(f"last {k:2d} epochs ({epochs[-k]}-{epochs[-1]}): "
              f"validation top-1 {scores[k]:.4f}", flush=True)
    best = max(scores, key=lambda k: (scores[k], -k))
    model.set_weights(training.average_weights(models[-best:]) if best > 1 else final_weights)
    extra = {"averaging_val_top1": {str(k): round(v, 4) for k, v in scores.items()},
             # the chosen weights' own validation scores, not the last epoch's
             "val_top1": val[best]["test_top1"], "val_top5": val[best]["test_top5"],
             "val_loss": val[best]["test_loss"]}
    command = run_metrics["command"]
    then = []
    if best > 1:  # numbered like history.csv: from random initialisation
        before = model_folder.epochs_before(state.get("parent"))
        first, last = before + epochs[-best], before + epochs[-1]
        extra["averaged_epochs"] = [first, last]
        then.append(f"mean of epochs {first}-{last}")
    if args.test_time_flip != "run":
        then.append(f"--test-time-flip {args.test_time_flip}")
    if then:
        command += f"  # then: python scripts/average_checkpoints.py ({', '.join(then)})"
    state = {**state, "mixed_precision": precision,  # and what the finished run recorded:
             **{k: run_metrics[k] for k in ("train_images", "val_images", "replicas")
                if k in run_metrics}}
    metrics = export.export_run(
        model_folder.without_optimizer(model), state, dataset, args.out, preset=run_metrics["preset"],
        command=command, **extra)
    print(f"chose the last {best} epoch(s) on validation -> {args.out}: "
          f"test top1={metrics['test_top1']:.4f} top5={metrics['test_top5']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
