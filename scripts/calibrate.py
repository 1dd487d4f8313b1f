"""Fit a model folder's temperature on its validation split; write calibration.json.

    python scripts/calibrate.py vit/weights --data-dir ../shared/data/cifar100

For model folders written before train.py calibrated at export (the bundled
one included). The validation split is the one the folder's own training
held out (the recipe's validation_split in metrics.json, vit.data.train_val_split),
so T is fitted on images the model never trained on; the test split is only
measured. Writes MODEL_FOLDER/{calibration.json, reliability.png} and
regenerates its README.md; the weights are only read.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vit import calibration, card, data, evaluation, export, model_folder  # noqa: E402
from vit.config import ViTConfig  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a model folder (train.py --output-dir, vit/weights, ...)")
    p.add_argument("--data-dir", help="CIFAR-100 python folder (else $CIFAR100_DIR, else download)")
    args = p.parse_args(argv)
    try:
        metrics = model_folder.verify_model_folder(args.folder)
        dataset = data.load_cifar100(args.data_dir)
    except (model_folder.ModelIntegrityError, data.DataUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = ViTConfig.from_dict(metrics["config"]) if metrics.get("config") else None
    split = config.recipe.validation_split if config else None
    if split is None:
        print(f"error: {args.folder}/metrics.json records no config.validation_split, so the "
              "held-out images are unknown", file=sys.stderr)
        return 2
    if not split > 0:
        print(f"error: {args.folder} was trained without a validation split: nothing held "
              "out to fit a temperature on", file=sys.stderr)
        return 2
    model = model_folder.load_pretrained(args.folder)
    flip = config.arch.test_time_flip  # calibrate what the app divides by T
    logits_test = evaluation.predict_logits(model, dataset.x_test, test_time_flip=flip)
    # the recorded test accuracy must be this model's, or the folder is inconsistent
    top1 = evaluation.logit_metrics(logits_test, dataset.y_test)["test_top1"]
    if "test_top1" in metrics and abs(top1 - metrics["test_top1"]) > 1e-3:
        print(f"warning: test top-1 is {top1:.4f} here, metrics.json says "
              f"{metrics['test_top1']:.4f}", file=sys.stderr)
    record = export.calibrate_folder(model, dataset, args.folder, split, logits_test)
    card.write_model_card(args.folder)
    val, test, not_sure = record["validation"], record["test"], record["not_sure"]
    print(f"{args.folder}: temperature {record['temperature']} fitted on the "
          f"{record['fitted_on']}")
    for name, s in (("validation", val), ("test", test)):
        print(f"  {name:10s} ECE {100 * s['ece_before']:.2f}% -> {100 * s['ece_after']:.2f}%  "
              f"NLL {s['nll_before']:.4f} -> {s['nll_after']:.4f}  mean confidence "
              f"{100 * s['mean_confidence_before']:.1f}% -> "
              f"{100 * s['mean_confidence_after']:.1f}%  top-1 {100 * s['top1']:.2f}%")
    for name in ("validation", "test"):
        n = not_sure[name]
        print(f"  not sure below {not_sure['threshold']:.2f} on {name}: "
              f"{json.dumps(n)}")
    print(f"wrote {os.path.join(args.folder, calibration.CALIBRATION_FILE)}, "
          f"{calibration.RELIABILITY_FILE} and README.md")
    print(f"temperature={record['temperature']} val_ece_before={val['ece_before']} "
          f"val_ece_after={val['ece_after']} test_ece_before={test['ece_before']} "
          f"test_ece_after={test['ece_after']} not_sure_threshold={not_sure['threshold']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
