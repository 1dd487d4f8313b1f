"""What each demo event and API endpoint does, as plain functions.

app.py lays out the page and wires these to Gradio events; they take the
`analysis.Analyser` first and plain values after, return plain values, and
raise `UserError` (shown as a one-line message) for bad input. No Gradio in
here, so every handler is unit-tested without a server or a browser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import images
from .analysis import Analysis, Analyser
from .data import CIFAR100_LABELS

FUSIONS = ("mean", "max", "min")
ALL_HEADS = "all heads (fused)"


class UserError(ValueError):
    """Bad input from the page or an API client; the message says what to do."""

    def __init__(self, message: str, title: str = "Error"):
        super().__init__(message)
        self.title = title


def head_choices(num_heads: int) -> list[str]:
    return [ALL_HEADS] + [f"head {i + 1}" for i in range(num_heads)]


def head_index(head: str | None) -> int | None:
    return None if head in (None, ALL_HEADS) else int(head.split()[-1]) - 1


def centre_patch(analyser: Analyser) -> int:
    grid = analyser.predictor.grid_size
    return (grid // 2) * grid + grid // 2


def class_list_html() -> str:
    """The 100 classes, one click away from the "not sure" notice."""
    names = ", ".join(n.replace("_", " ") for n in CIFAR100_LABELS)
    return f"<details><summary>The 100 classes it knows</summary><p>{names}</p></details>"


def analyse(analyser: Analyser, source, gradients: bool = True) -> Analysis:
    if source is None:
        raise UserError("Please upload an image first.")
    try:
        return analyser.analyse(source, gradients)
    except images.ImageDecodeError as exc:
        raise UserError(str(exc), title="Can't read this image") from None


def class_index(analyser: Analyser, analysis: Analysis, class_name: str | None) -> int:
    """The named class, or the top-1 class for an empty / unknown name."""
    if class_name in analyser.labels:
        return analyser.labels.index(class_name)
    return analysis.top_class


def checked_class(analyser: Analyser, class_name: str | None) -> None:
    if class_name and class_name not in analyser.labels:
        raise UserError(f"unknown class {class_name!r}; use a CIFAR-100 class name or '' "
                        "for the top-1 class")


# ------------------------------------------------------------------ the page
@dataclass
class Page:
    """Everything the Explore tab shows for a new upload."""

    analysis: Analysis
    top5: dict
    unsure: str  # "" when the model is sure enough
    patch: int
    model_view: np.ndarray
    class_name: str
    distance_plot: object
    maps: list  # render()'s pictures, in the page's order


def render(analyser: Analyser, a: Analysis, patch: int, fusion: str, discard: float,
           block: int, head: str | None, class_name: str | None) -> list:
    """Every map for the current controls, then this image's deletion curves:
    [lead maps (most faithful first)..., raw, patch, deletion plot]."""
    c, b, h = class_index(analyser, a, class_name), int(block) - 1, head_index(head)
    # (the overlays show the positive part; the curves order by the full maps)
    grids = {"occlusion": analyser.occlusion_grid(a, c),
             "class_map": analyser.class_grid(a, c),
             "rollout": analyser.rollout_grid(a, fusion, discard),
             "raw": analyser.raw_grid(a, b, h, fusion)}
    pictures = {name: analyser.overlay(a, grid) for name, grid in grids.items()}
    return ([pictures[name] for name in analyser.lead_maps()] + [
        pictures["raw"], analyser.patch(a, b, patch, h, fusion),
        analyser.deletion_plot(a, grids, c)])


def map_labels(analyser: Analyser, fusion: str, discard: float, block: int,
               head: str | None) -> list[str]:
    """Titles of render()'s lead maps and raw map, each with the score of its setting."""
    setting = {"rollout": dict(fusion=fusion, discard=discard),
               "raw": dict(fusion=fusion, block=int(block), head=head_index(head))}
    return [analyser.map_label(name, **setting.get(name, {}))
            for name in (*analyser.lead_maps(), "raw")]


def new_upload(analyser: Analyser, source, fusion: str, discard: float, block: int,
               head: str | None) -> Page:
    """A new picture: classify it, explain its top-1 class. Raises UserError."""
    a = analyse(analyser, source)
    doubt = analyser.not_sure(a)
    top = analyser.labels[a.top_class]
    centre = centre_patch(analyser)
    return Page(a, analyser.top_k(a), f"{doubt}\n\n{class_list_html()}" if doubt else "",
                centre, analyser.model_view(a, centre), top, analyser.distance_plot(a),
                render(analyser, a, centre, fusion, discard, block, head, top))


def select_patch(analyser: Analyser, a: Analysis, x: float, y: float, block: int,
                 head: str | None, fusion: str):
    """A click on the model's view: (patch, view with the patch marked, where it looks)."""
    patch = analyser.patch_at(x, y)
    return (patch, analyser.model_view(a, patch),
            analyser.patch(a, int(block) - 1, patch, head_index(head), fusion))


# ------------------------------------------------------------------ the API
def classify(analyser: Analyser, image) -> dict:
    """Top-5 CIFAR-100 classes with calibrated confidences for one image."""
    return analyser.top_k(analyse(analyser, image, gradients=False))


def explain(analyser: Analyser, image, head_fusion="mean", discard_ratio=0.0, block=0,
            head=0, class_name=None):
    """(top-5, rollout, raw attention of block/head (0 = last block / all heads), class map)."""
    pred = analyser.predictor
    b = int(block) - 1 if block else pred.num_blocks - 1
    if not 0 <= b < pred.num_blocks:
        raise UserError(f"block must be 1..{pred.num_blocks}")
    h = int(head) - 1 if head else None
    if h is not None and not 0 <= h < pred.num_heads:
        raise UserError(f"head must be 1..{pred.num_heads} (0 = all heads)")
    if head_fusion not in FUSIONS:
        raise UserError(f"head_fusion must be one of {list(FUSIONS)}")
    if not 0.0 <= float(discard_ratio) < 1.0:
        raise UserError("discard_ratio must be in [0, 1)")
    checked_class(analyser, class_name)
    a = analyse(analyser, image)
    return (analyser.top_k(a), analyser.rollout(a, head_fusion, float(discard_ratio)),
            analyser.raw(a, b, h, head_fusion),
            analyser.class_map(a, class_index(analyser, a, class_name)))


def occlusion(analyser: Analyser, image, class_name=None):
    """(top-5, occlusion map, {class, probability, drops}): each patch cell's drop in
    the class's probability when it is greyed out."""
    checked_class(analyser, class_name)
    a = analyse(analyser, image, gradients=False)
    c = class_index(analyser, a, class_name)
    drops = analyser.occlusion_grid(a, c)
    return (analyser.top_k(a), analyser.occlusion(a, c),
            {"class": analyser.labels[c], "probability": float(a.probs[c]),
             "drops": np.round(drops, 6).tolist()})


def batch(analyser: Analyser, files) -> tuple[list, list]:
    """(table rows [file, top-1, confidence, error], rollout gallery) for many files;
    an unreadable file gets its reason in the table instead of failing the batch."""
    if not files:
        raise UserError("Choose one or more image files.")
    rows, gallery = [], []
    for path in files:
        name = os.path.basename(path)
        try:
            a = analyser.analyse(path, gradients=False)
        except images.ImageDecodeError as exc:
            rows.append([name, "—", None, str(exc)])
            continue
        top = a.top_class
        rows.append([name, analyser.labels[top], round(float(a.probs[top]), 4), ""])
        gallery.append((analyser.rollout(a), f"{name}: {analyser.labels[top]}"))
    return rows, gallery
