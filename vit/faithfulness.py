"""Does a map point at what the model used? Occlusion and deletion/insertion tests.

A map is only worth showing if the cells it ranks highest carry the
evidence. Deletion (Petsiuk et al. 2018, RISE; the "positive perturbation"
test of Chefer et al. 2021) greys out the patch cells most-relevant-first
and tracks the explained class's probability: the faster it falls, the
better the map (lower area under the curve). Insertion starts from a fully
greyed image and reveals cells most-relevant-first (higher area = better).
A random order is the floor any map must beat.

Masking baseline: `Predictor.baseline_pixel`, the colour a fully greyed
image turns into 0 in the model's own `Preprocess` layer, the most neutral
input it knows: the CIFAR-100 training mean colour for a dataset-normalised
model, a grey of the same lightness for a per-image normalised one
(input_norm="image"; there a partly greyed image is standardised by its
remaining contrast, so its AUCs are not comparable with the other kind's).
Either way a greyed cell carries no texture or edges. Blurring (RISE's insertion baseline) would leave the
coarse colour of a 4x4 cell in place, which at 32 px is much of what is there.

Everything here takes `probabilities`: a function from uint8 images
(B, H, W, 3) to class probabilities (B, classes), e.g.
`vit.inference.Predictor.probabilities`, which runs every perturbed image
of a curve, or every mask of an occlusion map, as one compiled batch.
Written here rather than taken from Quantus: see the README ("Which map
to believe") for why.
"""

from __future__ import annotations

import operator

import numpy as np

from .images import pixels_uint8

STEP = 4  # cells per curve step: 64 cells -> 17 points from 0 to 64 cells


def rollout_name(fusion: str, discard: float) -> str:
    """The name faithfulness.json gives attention rollout at these settings
    ("rollout", "rollout_max", "rollout_min_d0.9", ...): the benchmark writes it,
    the app looks scores up by it."""
    return f"rollout{'' if fusion == 'mean' else '_' + fusion}" + (
        "" if discard == 0 else f"_d{discard:g}")


def check_class_index(class_index, num_classes: int, top1: bool = False) -> int:
    """The index as an int, or ValueError if it names no class.

    Checked on every path because nothing downstream would complain: XLA's
    gather clamps an out-of-range index and NumPy wraps a negative one, so a
    typo would silently explain another class. top1=True also allows -1
    ("the top-1 class", decided inside the compiled program).
    """
    try:
        if isinstance(class_index, (bool, np.bool_)):
            raise TypeError
        index = operator.index(class_index)
    except TypeError:
        raise ValueError(f"class index must be an integer, got {class_index!r}") from None
    if not (-1 if top1 else 0) <= index < num_classes:
        extra = " (or -1 for the top-1 class)" if top1 else ""
        raise ValueError(f"class index {index} is outside 0..{num_classes - 1}{extra}")
    return index


def cell_masks(grid: int, image_size: int, window: int = 1) -> np.ndarray:
    """(M, H, W) bool masks of every `window` x `window` square of grid cells.

    window=1 gives one mask per cell (row-major, M = grid**2); window=2 gives
    the (grid-1)**2 overlapping 2x2 squares a sliding occlusion uses.
    """
    if image_size % grid:
        raise ValueError(f"a {grid}x{grid} grid does not tile {image_size} px")
    if not 1 <= window <= grid:
        raise ValueError(f"window must be 1..{grid}, got {window}")
    cell = image_size // grid
    span = grid - window + 1
    masks = np.zeros((span * span, image_size, image_size), bool)
    for i in range(span):
        for j in range(span):
            masks[i * span + j, i * cell:(i + window) * cell,
                  j * cell:(j + window) * cell] = True
    return masks


def occlusion_map(probabilities, image: np.ndarray, class_index: int, grid: int,
                  baseline, window: int = 1, reference: float | None = None) -> np.ndarray:
    """(grid, grid) drop in the class's probability when a region is greyed out.

    Zeiler & Fergus (2014): the direct measure of what the model used, at
    the cost of one forward pass per mask, all in one batch. Positive = the
    region supported the class; negative = it argued against it. With
    window > 1 each cell gets the mean drop of the windows covering it.
    `reference` is the unmasked image's probability if the caller has it.
    """
    image = pixels_uint8(image)
    masks = cell_masks(grid, image.shape[0], window)
    batch = np.where(masks[..., None], pixels_uint8(baseline), image[None])
    if reference is None:
        batch = np.concatenate([image[None], batch])
    probs = np.asarray(probabilities(batch))
    probs = probs[:, check_class_index(class_index, probs.shape[-1])]
    if reference is None:
        reference, probs = probs[0], probs[1:]
    drops = float(reference) - probs
    if window == 1:
        return drops.reshape(grid, grid)
    span = grid - window + 1
    total, count = np.zeros((grid, grid)), np.zeros((grid, grid))
    for k, drop in enumerate(drops):
        i, j = divmod(k, span)
        total[i:i + window, j:j + window] += drop
        count[i:i + window, j:j + window] += 1
    return total / count


def relevance_order(heatmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cell indices (row-major), most relevant first; ties in random order.

    Many maps have ties (a class map is zero wherever the gradient is
    negative): breaking them by index would favour the top of the image.
    """
    flat = np.asarray(heatmap, np.float64).ravel()
    return np.lexsort((rng.permutation(flat.size), -flat))


def _curve_steps(cells: int, step: int) -> np.ndarray:
    steps = np.arange(0, cells + 1, step)
    return steps if steps[-1] == cells else np.append(steps, cells)


def perturbation_curves(probabilities, images: np.ndarray, heatmaps, classes,
                        grid: int, baseline, step: int = STEP, seed: int = 0,
                        modes=("deletion", "insertion")) -> dict:
    """Deletion and/or insertion curves of N maps.

    `images` is (N, H, W, 3), one image per map, or one (H, W, 3) image that
    all N maps explain. Returns {"cells": (K,) cells removed/revealed at each
    point, "deletion": (N, K), "insertion": (N, K)}: the probability of
    classes[i] as 0, step, 2*step, ... of the most relevant cells of
    heatmaps[i] are greyed out (deletion) or revealed on a grey image
    (insertion). Every perturbed image goes through `probabilities` in one
    call; the end points (each distinct image, and the all-grey image, which
    is the same for all) are run once, not once per curve.
    """
    images = pixels_uint8(images)
    n = len(heatmaps)
    if images.ndim == 3:
        images, owner = images[None], np.zeros(n, int)
    elif len(images) == n:
        owner = np.arange(n)
    else:
        raise ValueError(f"{len(images)} images for {n} maps")
    if len(classes) != n:
        raise ValueError(f"{len(classes)} classes for {n} maps")
    cell_mask = cell_masks(grid, images.shape[1])  # (P, H, W)
    cells = _curve_steps(grid * grid, step)
    inner = cells[1:-1]
    rng = np.random.default_rng(seed)
    grey = np.broadcast_to(pixels_uint8(baseline), images.shape[1:])
    batch, starts = [images, grey[None]], {}
    offset = len(images) + 1
    for mode in modes:
        if mode not in ("deletion", "insertion"):
            raise ValueError(f"unknown mode {mode!r}")
        for i in range(n):
            ranks = np.empty(grid * grid, int)
            ranks[relevance_order(heatmaps[i], rng)] = np.arange(grid * grid)
            chosen = ranks[None, :] < inner[:, None]  # (K-2, P): first inner[k] cells
            region = (np.einsum("kp,phw->khw", chosen, cell_mask) > 0)[..., None]
            image = images[owner[i]]
            batch.append(np.where(region, grey, image) if mode == "deletion"
                         else np.where(region, image, grey))
            starts[mode, i] = offset
            offset += len(inner)
    probs = np.asarray(probabilities(np.concatenate(batch)))
    classes = [check_class_index(c, probs.shape[-1]) for c in classes]
    result = {"cells": cells}
    for mode in modes:
        curves = np.empty((n, len(cells)))
        for i in range(n):
            c = classes[i]
            middle = probs[starts[mode, i]:starts[mode, i] + len(inner), c]
            full, empty = probs[owner[i], c], probs[len(images), c]
            ends = (full, empty) if mode == "deletion" else (empty, full)
            curves[i] = np.concatenate([[ends[0]], middle, [ends[1]]])
        result[mode] = curves
    return result


def area_under_curve(curves: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Trapezoid area over the fraction of cells perturbed (x from 0 to 1)."""
    x = np.asarray(cells, np.float64) / cells[-1]
    y = np.asarray(curves, np.float64)
    return ((y[..., 1:] + y[..., :-1]) / 2 * np.diff(x)).sum(axis=-1)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps (average ranks for ties); nan if one is flat.

    The sanity check of Adebayo et al. (2018) compares a map on the trained
    model with the same method on randomly initialised weights: a high
    correlation means the map shows the architecture, not what was learned.
    """
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    sorted_values = values[order]
    # average the ranks of equal values
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        if e - s > 1:
            ranks[order[s:e]] = (s + e - 1) / 2
    return ranks


def mean_and_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% interval (1.96 standard errors)."""
    values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else 0.0
    return float(values.mean()), float(half)


def plot_deletion_curves(cells: np.ndarray, curves: dict, class_name: str,
                         random_auc: float | None = None):
    """Small figure: one image's deletion curve per map, with each curve's area.

    The legend carries every curve's area (lower = the map found the
    evidence faster); `random_auc` is the dataset's random-order floor.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = 100 * np.asarray(cells) / cells[-1]
    for name, curve in curves.items():
        auc = float(area_under_curve(np.asarray(curve), cells))
        ax.plot(x, 100 * np.asarray(curve), marker=".", label=f"{name} (area {auc:.3f})")
    if random_auc is not None:
        ax.plot([], [], " ", label=f"(random order: area {random_auc:.3f} on average)")
    ax.set_title(f"Greying out the top cells first: P({class_name})", fontsize="medium")
    ax.set_xlabel("cells greyed out, most relevant first (%)")
    ax.set_ylabel("probability (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    return fig
