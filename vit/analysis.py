"""What the demo shows for one image: predictions plus every attention map.

`Explainer` owns the model (one compiled forward + gradients, see
`inference.Predictor`) and turns an `Analysis` into pictures. It has no
Gradio in it, so the app stays a thin UI and all of this is unit-testable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from . import explain, images
from .data import CIFAR100_LABELS
from .inference import Predictor

DISPLAY = 320  # side of every picture the demo shows


@dataclass
class ModelInfo:
    """Where the weights came from and how good they are, for the UI header."""

    source: str
    preset: str = "?"
    parameters: int = 0
    test_top1: float | None = None
    test_top5: float | None = None
    trained: bool = True
    notice: str | None = None
    progress: str | None = None  # e.g. "checkpoint after 17 of 50 epochs"


@dataclass
class Analysis:
    display: np.ndarray  # (DISPLAY, DISPLAY, 3) uint8: the centre square of the upload
    pixels: np.ndarray  # (32, 32, 3) uint8: what the model sees
    probs: np.ndarray  # (classes,)
    attention: list = field(repr=False)  # per block (heads, T, T)
    gradients: dict = field(default_factory=dict, repr=False)  # class -> per block (h, T, T)

    @property
    def top_class(self) -> int:
        return int(np.argmax(self.probs))


class Explainer:
    def __init__(self, model, label_names: list[str], info: ModelInfo,
                 warmup: bool | str = True):
        """warmup: True compiles both XLA programs now; "background" compiles them
        in a thread while the web server starts (XLA releases the GIL) and
        answers eagerly until they are ready, which shortens the cold start;
        False leaves it to the first request."""
        self.predictor = Predictor(model, warmup=False)
        self.labels = list(label_names)
        self.info = info
        self.warmed = None  # the background warm-up thread, if any
        if warmup == "background":
            self.warmed = self.predictor.warmup(background=True)
        elif warmup:
            self.predictor.warmup()

    # ------------------------------------------------------------ loading
    @classmethod
    def from_spec(cls, spec: str | None = None, timeout: float = 3.0, warmup: bool = True):
        """Bundled weights, a local folder, or a Hub repo[@rev] (falls back to bundled)."""
        from . import hub, pretrained

        if spec is None and not pretrained.bundled_available():
            return cls.untrained(warmup=warmup)
        try:
            folder, notice = hub.resolve_model(spec, timeout=timeout)
        except (hub.HubError, ValueError) as exc:  # bad spec, or no Hub and nothing bundled
            explainer = cls.untrained(warmup=warmup)
            explainer.info.notice = (f"Could not load the model {spec!r} ({exc}) and no "
                                     f"bundled weights exist. {explainer.info.notice}")
            return explainer
        try:
            model = pretrained.load_pretrained(folder)
        except pretrained.ModelIntegrityError as exc:
            if spec is None:  # the bundled weights themselves are broken: say so loudly
                raise
            if not pretrained.bundled_available():  # a Space serving a Hub model
                explainer = cls.untrained(warmup=warmup)
                explainer.info.notice = (f"Could not load the model {spec!r} ({exc}). "
                                         f"{explainer.info.notice}")
                return explainer
            explainer = cls.from_spec(None, timeout, warmup)  # the bundled weights
            explainer.info.notice = f"{exc}; using the bundled model instead."
            return explainer
        metrics = _read_json(folder, "metrics.json") or {}
        labels = _read_json(folder, "labels.json") or CIFAR100_LABELS
        source = "bundled weights" if os.path.abspath(folder) == os.path.abspath(
            pretrained.BUNDLED_DIR) else (spec if spec and not notice else folder)
        info = ModelInfo(source=source, preset=metrics.get("preset", "?"),
                         parameters=model.count_params(),
                         test_top1=metrics.get("test_top1"), test_top5=metrics.get("test_top5"),
                         notice=notice)
        if metrics.get("in_training"):
            info.progress = (f"training checkpoint after {metrics.get('epochs')} of "
                             f"{metrics.get('epochs_planned')} epochs")
        return cls(model, labels, info, warmup=warmup)

    @classmethod
    def untrained(cls, preset: str = "compact", warmup: bool = True):
        """Random weights, loudly labelled: for a checkout without bundled weights."""
        import vit

        model = vit.build_vit(vit.get_preset(preset))
        info = ModelInfo(source="random initialisation", preset=preset,
                         parameters=model.count_params(), trained=False,
                         notice="No trained weights were found: this model is UNTRAINED "
                                "and its predictions are random.")
        return cls(model, CIFAR100_LABELS, info, warmup=warmup)

    # ------------------------------------------------------------ analysis
    @property
    def grid(self) -> int:
        return self.predictor.grid_size

    @property
    def has_class_token(self) -> bool:
        return self.predictor.has_class_token

    def analyse(self, source, gradients: bool = True) -> Analysis:
        """Decode an upload (raises images.ImageDecodeError) and run the model once.

        gradients=True also back-propagates the top-1 logit in the same compiled
        program (for the class map); classification alone skips that.
        """
        return self.analyse_image(images.load_image(source), gradients)

    def analyse_image(self, image: Image.Image, gradients: bool = True) -> Analysis:
        square = ImageOps.fit(image, (DISPLAY, DISPLAY), Image.Resampling.LANCZOS)
        pixels = images.to_model_input(image, self.predictor.image_size)
        if not gradients:
            probs, attention = self.predictor.predict(pixels[None])
            return Analysis(np.asarray(square), pixels, probs[0], [a[0] for a in attention])
        probs, attention, grads, top = self.predictor.explain_one(pixels)
        return Analysis(np.asarray(square), pixels, probs, attention, {top: grads})

    def top_k(self, analysis: Analysis, k: int = 5) -> dict[str, float]:
        order = np.argsort(-analysis.probs)[:k]
        return {self.labels[i]: float(analysis.probs[i]) for i in order}

    # ------------------------------------------------------------ pictures
    def model_view(self, analysis: Analysis, patch: int | None = None) -> np.ndarray:
        """The 32x32 input, upscaled pixelated; optionally outlines one patch."""
        view = explain.upscale_pixelated(analysis.pixels, DISPLAY)
        if patch is None:
            return view
        cell = DISPLAY / self.grid
        row, col = divmod(patch, self.grid)
        img = Image.fromarray(view)
        ImageDraw.Draw(img).rectangle(
            [col * cell, row * cell, (col + 1) * cell - 1, (row + 1) * cell - 1],
            outline=(0, 255, 255), width=3)
        return np.asarray(img)

    def _overlay(self, analysis: Analysis, heatmap: np.ndarray, alpha: float) -> np.ndarray:
        return explain.overlay(analysis.display, heatmap, cmap="inferno", alpha=alpha)

    def rollout(self, analysis, fusion="mean", discard=0.0, alpha=0.6) -> np.ndarray:
        heat = explain.attention_rollout(analysis.attention, head_fusion=fusion,
                                         discard_ratio=discard,
                                         has_class_token=self.has_class_token)
        return self._overlay(analysis, heat, alpha)

    def raw(self, analysis, block: int, head: int | None, fusion="mean", alpha=0.6):
        heat = explain.raw_attention(analysis.attention, block, head, fusion,
                                     has_class_token=self.has_class_token)
        return self._overlay(analysis, heat, alpha)

    def patch(self, analysis, block: int, patch: int, head: int | None, fusion="mean",
              alpha=0.6):
        heat = explain.patch_attention(analysis.attention, block, patch, head, fusion,
                                       has_class_token=self.has_class_token)
        return self._overlay(analysis, heat, alpha)

    def patch_at(self, x: float, y: float) -> int:
        return explain.pixel_to_patch(x, y, DISPLAY, self.grid)

    def class_map(self, analysis, class_index: int, alpha=0.6) -> np.ndarray:
        class_index = int(class_index)
        if class_index not in analysis.gradients:
            analysis.gradients[class_index] = self.predictor.class_gradients(
                analysis.pixels, class_index)
        grads = analysis.gradients[class_index]
        heat = explain.gradient_rollout(analysis.attention, grads,
                                        has_class_token=self.has_class_token)
        return self._overlay(analysis, heat, alpha)

    def distance_plot(self, analysis):
        distances = explain.mean_attention_distance(
            analysis.attention, self.grid, self.predictor.patch_px,
            has_class_token=self.has_class_token)
        return explain.plot_attention_distance(distances, self.predictor.patch_px,
                                               self.predictor.image_size)

    @property
    def rollout_caption(self) -> str:
        if self.has_class_token:
            return ("Attention rollout: how much each patch flows into the [CLS] token "
                    "that the classifier reads, across all blocks.")
        return ("Attention rollout, averaged over all tokens: this model has no class "
                "token (its head flattens every patch), so the map shows how much each "
                "patch contributes to all tokens on average, not to one decision token.")


def _read_json(folder: str, name: str):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
