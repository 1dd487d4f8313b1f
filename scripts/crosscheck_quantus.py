"""Cross-check vit.faithfulness's deletion curve against Quantus's RegionPerturbation.

    pip install quantus==0.6.0      # plain quantus: the [tensorflow] extra pins keras<3
    python scripts/crosscheck_quantus.py --n 20 [--maps rollout|random] [--data-dir DIR]

Not a runtime dependency: run it in a scratch venv with requirements.txt plus
quantus. For N CIFAR-100 test images, the bundled model (temperature 1, plain
softmax of its logits) and one 8x8 map per image, it computes
(a) our curve: perturbation_curves(..., modes=("deletion",), step=1), the top-1
    probability after greying 0, 1, ..., 64 cells, most relevant first, and
(b) Quantus RegionPerturbation (MoRF, 4x4-px regions, all 64 regions, softmax
    on) with the map repeated to pixels and regions replaced by exactly our
    baseline colour (Predictor.baseline_pixel, in the model's 0-255 scale).
Quantus reports p(original) - p(after k regions), k = 1..64; ours is turned
into the same drop. Maps must have no ties (Quantus breaks ties by an
unstable argsort, we break them at random), which the script asserts.
Last line: `quantus_max_abs_diff=<x> n=<N>`.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vit import data, explain, faithfulness, model_folder  # noqa: E402
from vit.inference import Predictor  # noqa: E402


def default_data_dir():
    shared = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                          "shared", "data", "cifar100")
    return os.environ.get("CIFAR100_DIR") or os.path.normpath(shared)


def colour_replacement(arr, indices, colour, plane, **kwargs):
    """Quantus perturb_func: set flat channel-first indices to colour[channel].

    `arr` is (B, C*H*W) channel-first, so an index's channel is index // (H*W).
    Delegates to Quantus's own replacement with a per-index baseline array.
    """
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    baseline = np.asarray(colour, arr.dtype)[indices // plane]
    return batch_baseline_replacement_by_indices(arr, indices, perturb_baseline=baseline)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--maps", choices=("rollout", "random"), default="rollout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=default_data_dir())
    args = p.parse_args()

    import quantus

    model = model_folder.load_pretrained()
    pred = Predictor(model, temperature=1.0)  # the raw softmax, as Quantus computes it
    images = data.load_cifar100(args.data_dir).x_test[:args.n]
    rng = np.random.default_rng(args.seed)
    grid, px = pred.grid_size, pred.patch_px
    maps, classes = [], []
    for image in images:
        _, attn, _, chosen = pred.explain_one(image)
        maps.append(explain.attention_rollout(attn, has_class_token=pred.has_class_token)
                    if args.maps == "rollout" else rng.random((grid, grid)))
        classes.append(chosen)
    maps, classes = np.asarray(maps, np.float64), np.asarray(classes)
    # No ties, neither in the cells nor in Quantus's per-region sums (3 x 4 x 4 copies).
    sums = np.repeat(np.repeat(maps, px, 1), px, 2)[..., None].repeat(3, -1)
    sums = sums.reshape(len(maps), grid, px, grid, px * 3).sum(axis=(2, 4)).reshape(len(maps), -1)
    for m, s in zip(maps, sums):
        assert len(np.unique(m)) == m.size and len(np.unique(s)) == s.size, "map has ties"
        assert (np.argsort(-s) == np.argsort(-m.ravel())).all()

    t0 = time.perf_counter()
    ours = faithfulness.perturbation_curves(pred.probabilities, images, maps, classes, grid,
                                            pred.baseline_pixel, step=1,
                                            modes=("deletion",))["deletion"]
    t_ours = time.perf_counter() - t0
    ours_drop = ours[:, :1] - ours[:, 1:]  # p(original) - p(k cells greyed), k = 1..64

    metric = quantus.RegionPerturbation(
        patch_size=px, order="morf", regions_evaluation=grid * grid,
        normalise=False, abs=False, perturb_func=colour_replacement,
        perturb_func_kwargs={"colour": pred.baseline_pixel.astype(np.float64),
                             "plane": pred.image_size ** 2},
        return_aggregate=False, disable_warnings=True)
    t0 = time.perf_counter()
    scores = metric(model=model, x_batch=images.astype(np.float32), y_batch=classes,
                    a_batch=np.repeat(np.repeat(maps, px, 1), px, 2),
                    channel_first=False, softmax=True, batch_size=len(images),
                    model_predict_kwargs={"verbose": 0, "batch_size": 256})
    t_quantus = time.perf_counter() - t0
    theirs = np.asarray(scores, np.float64)

    diff = np.abs(ours_drop - theirs)
    worst = np.unravel_index(diff.argmax(), diff.shape)
    print(f"maps={args.maps} baseline={pred.baseline_pixel.tolist()} "
          f"ours {t_ours:.2f}s ({ours.shape[1]} points), quantus {t_quantus:.2f}s "
          f"({theirs.shape[1]} points)")
    print(f"mean |diff| {diff.mean():.2e}; worst image {worst[0]} after {worst[1] + 1} cells: "
          f"ours {ours_drop[worst]:.6f} quantus {theirs[worst]:.6f}")
    print(f"quantus_max_abs_diff={diff.max():.3g} n={len(images)}")


if __name__ == "__main__":
    main()
