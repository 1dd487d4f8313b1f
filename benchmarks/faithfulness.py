"""Which map to believe: deletion / insertion AUC and a randomisation sanity check.

    python benchmarks/faithfulness.py --n 1000     # 45-50 min on 2 cores; writes faithfulness.json
    python benchmarks/faithfulness.py --smoke      # a few images, checks the script runs

For N CIFAR-100 test images (fixed seed) every method's map is scored with
vit.faithfulness: deletion (grey out the 8x8 grid's cells most-relevant-first
in steps of 4, area under the top-1 class's probability; lower = better) and
insertion (reveal them on a grey image; higher = better), each with its mean
and 95% interval. The sanity check of Adebayo et al. (2018) is Spearman's
rank correlation between a method's map on the trained model and on a
randomly initialised copy (the same architecture): near 1 means the map
shows the architecture rather than what the model learned.

Methods: random order; raw attention of the last block and of the best block
(chosen on separate test images); attention rollout with mean/max/min head
fusion and discard ratio 0 and 0.9; the gradient-weighted class map (Chefer
et al. 2021); occlusion of one cell, and of a sliding 2x2 window. The top-1
class is explained, with the probabilities the app shows (calibrated when the
folder has calibration.json).

Prints one line per method, `faithfulness <method> deletion=<auc>
insertion=<auc> n=<N>`, then `app_default=<method>` (the map the app leads
with: the best deletion score among the maps it can lead with). Saves the
results as faithfulness.json in the model folder (and refreshes its model
card) unless --no-save.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from _common import add_model_args, chosen_folder, flip_setting, print_table

from vit.faithfulness import rollout_name

ROLLOUTS = {rollout_name(f, d): (f, d) for d in (0.0, 0.9) for f in ("mean", "max", "min")}
DESCRIPTIONS = {
    "random": "cells in random order: the floor every map must beat",
    "raw": "raw attention of the last block, [CLS] row, heads averaged",
    "raw_best": "raw attention of the block that did best on separate test images",
    "class_map": "gradient-weighted attention rollout for the top-1 class (Chefer et al. 2021)",
    "occlusion": "drop in the top-1 probability with each cell greyed out (64 masks)",
    "occlusion_2x2": "the same with a sliding 2x2-cell window (49 masks), averaged per cell",
    **{name: f"attention rollout, {f} over heads, discard ratio {d}"
       for name, (f, d) in ROLLOUTS.items()},
}


def method_maps(pred, image, rng, raw_blocks, class_index=None):
    """{method: (grid, grid) map} for one image; the explained class and probability."""
    from vit import explain, faithfulness

    probs, attn, grads, chosen = pred.explain_one(image, -1 if class_index is None
                                                  else class_index)
    hc = pred.has_class_token
    maps = {"random": rng.random((pred.grid_size, pred.grid_size))}
    for name, block in raw_blocks.items():
        maps[name] = explain.raw_attention(attn, block, has_class_token=hc)
    for name, (fusion, discard) in ROLLOUTS.items():
        maps[name] = explain.attention_rollout(attn, fusion, discard, has_class_token=hc)
    maps["class_map"] = explain.gradient_rollout(attn, grads, has_class_token=hc)
    for name, window in (("occlusion", 1), ("occlusion_2x2", 2)):
        maps[name] = faithfulness.occlusion_map(
            pred.probabilities, image, chosen, pred.grid_size, pred.baseline_pixel,
            window=window, reference=float(probs[chosen]))
    return maps, chosen


def score(pred, images, raw_blocks, seed, step, random_pred=None, progress=None):
    """Per-method lists of deletion AUC, insertion AUC and sanity correlation."""
    from vit import faithfulness

    rng = np.random.default_rng(seed)
    out = {}
    for k, image in enumerate(images):
        maps, chosen = method_maps(pred, image, rng, raw_blocks)
        names = list(maps)
        curves = faithfulness.perturbation_curves(
            pred.probabilities, image, [maps[n] for n in names], [chosen] * len(names),
            pred.grid_size, pred.baseline_pixel, step=step, seed=seed + k)
        dele = faithfulness.area_under_curve(curves["deletion"], curves["cells"])
        ins = faithfulness.area_under_curve(curves["insertion"], curves["cells"])
        sanity = {}
        if random_pred is not None:
            random_maps, _ = method_maps(random_pred, image, rng, raw_blocks, chosen)
            sanity = {n: faithfulness.rank_correlation(maps[n], random_maps[n])
                      for n in names if n != "random"}
        for i, name in enumerate(names):
            row = out.setdefault(name, {"deletion": [], "insertion": [], "sanity": []})
            row["deletion"].append(dele[i])
            row["insertion"].append(ins[i])
            row["sanity"].append(sanity.get(name, np.nan))
        if progress is not None:
            progress.update(k + 1)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p, data=True)
    p.add_argument("--n", type=int, default=1000, help="test images scored (default 1000)")
    p.add_argument("--select", type=int, default=100,
                   help="other test images used to pick raw attention's best block")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, default=4, help="cells per curve step")
    p.add_argument("--no-save", action="store_true", help="do not write faithfulness.json")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.select = 6, 3

    import keras

    from vit import calibration, card, data, faithfulness, model_folder
    from vit.analysis import LEAD_MAPS
    from vit.inference import Predictor

    folder = chosen_folder(args.model)
    if folder is None:
        raise SystemExit("error: no model folder (no bundled weights and no --model)")
    model = model_folder.load_pretrained(folder)
    calibrated = calibration.read_calibration(folder)
    if model_folder.measured_on_other_weights(folder, calibrated):
        raise SystemExit(f"error: {folder}/calibration.json was fitted for other weights; "
                         "re-run scripts/calibrate.py first")
    temperature = calibrated["temperature"] if calibrated else 1.0
    flip = flip_setting(args)  # the app's setting unless forced
    if flip != model_folder.uses_test_time_flip(folder) and not args.no_save:
        print("note: --test-time-flip differs from the folder's setting, so this is not how "
              "the app serves it: faithfulness.json is not written", flush=True)
        args.no_save = True
    pred = Predictor(model, temperature=temperature, test_time_flip=flip)
    keras.utils.set_random_seed(args.seed)
    random_pred = Predictor(keras.models.clone_model(model), temperature=temperature,
                            test_time_flip=flip)
    x_test = data.load_cifar100(args.data_dir).x_test
    order = np.random.default_rng(args.seed).permutation(len(x_test))
    chosen = x_test[order[:args.n]]
    select = x_test[order[args.n:args.n + args.select]]
    print(f"model: {folder} (temperature {temperature:.3f}, test-time flip "
          f"{'on' if flip else 'off'}); {args.n} test images, "
          f"seed {args.seed}; baseline pixel {pred.baseline_pixel.tolist()}", flush=True)

    t0 = time.perf_counter()
    blocks = {f"raw_block{b + 1}": b for b in range(pred.num_blocks)}
    trial = score(pred, select, blocks, args.seed + 1, args.step)
    best = min(blocks, key=lambda n: np.mean(trial[n]["deletion"]))
    print(f"raw attention, deletion AUC per block on {args.select} other test images: "
          + ", ".join(f"{b + 1}: {np.mean(trial[n]['deletion']):.3f}"
                      for n, b in blocks.items()) + f" -> best {best}", flush=True)
    raw_blocks = {"raw": pred.num_blocks - 1, "raw_best": blocks[best]}
    bar = keras.utils.Progbar(args.n, unit_name="image")
    results = score(pred, chosen, raw_blocks, args.seed, args.step, random_pred, bar)
    seconds = time.perf_counter() - t0

    summary = {}
    for name, row in results.items():
        summary[name] = {key: dict(zip(("mean", "ci95"), faithfulness.mean_and_ci95(row[key])))
                         for key in ("deletion", "insertion")}
        rho = faithfulness.mean_and_ci95(row["sanity"])
        summary[name]["sanity_spearman"] = None if np.isnan(rho[0]) else rho[0]
        summary[name]["description"] = DESCRIPTIONS[name]
    summary["raw_best"]["description"] += f" (block {blocks[best] + 1})"
    ranked = sorted(summary, key=lambda n: summary[n]["deletion"]["mean"])
    app_default = min(LEAD_MAPS, key=lambda n: summary[n]["deletion"]["mean"])
    floor = summary["random"]["deletion"]["mean"]

    def fmt(stat):
        return f"{stat['mean']:.3f} ± {stat['ci95']:.3f}"

    print_table(["method", "deletion AUC (lower better)", "vs random", "insertion AUC",
                 "rank corr. with random weights"],
                [[n, fmt(summary[n]["deletion"]), f"{summary[n]['deletion']['mean'] / floor:.2f}x",
                  fmt(summary[n]["insertion"]),
                  "—" if summary[n]["sanity_spearman"] is None
                  else f"{summary[n]['sanity_spearman']:.2f}"] for n in ranked],
                f"Faithfulness on {args.n} CIFAR-100 test images ({seconds / 60:.1f} min)")
    for name in ranked:
        print(f"faithfulness {name} deletion={summary[name]['deletion']['mean']:.4f} "
              f"insertion={summary[name]['insertion']['mean']:.4f} n={args.n}")
    print(f"app_default={app_default}")
    if not args.no_save and not args.smoke:
        record = {"n": args.n, "seed": args.seed, "step": args.step,
                  "command": f"python benchmarks/faithfulness.py --n {args.n}",
                  "baseline": (f"cells greyed out with {pred.baseline_pixel.tolist()}, "
                               "which the model standardises to zero when the whole "
                               "image is greyed"),
                  "input_norm": "image" if pred.per_image else "dataset",
                  "weights_sha256": model_folder.weights_sha256(folder),
                  "test_time_flip": flip,
                  "class": "top-1, probabilities as the app shows them",
                  "app_default": app_default, "methods": {n: summary[n] for n in ranked}}
        with open(os.path.join(folder, "faithfulness.json"), "w") as f:
            json.dump(record, f, indent=2)
        card.write_model_card(folder)
        print(f"wrote {os.path.join(folder, 'faithfulness.json')} and refreshed its model card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
