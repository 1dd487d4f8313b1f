"""What the demo shows for one image: predictions plus every attention map.

`Analyser` owns the model (one compiled forward + gradients, see
`inference.Predictor`) and turns an `Analysis` into pictures. It has no
Gradio in it, so the app stays a thin UI and all of this is unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from . import explain, faithfulness, images
from .inference import Predictor
from .model_choice import ModelInfo, choose_model, untrained_model

DISPLAY = 320  # side of every picture the demo shows
# The maps the page can lead with, in the order used when no faithfulness.json
# ranks them (the order measured on the bundled model).
LEAD_MAPS = ("occlusion", "class_map", "rollout")
MAP_NAMES = {"occlusion": "Occlusion", "class_map": "Class map", "rollout": "Attention rollout",
             "raw": "Raw attention", "random": "Random order"}


@dataclass
class Analysis:
    display: np.ndarray  # (DISPLAY, DISPLAY, 3) uint8: the centre square of the upload
    pixels: np.ndarray  # (32, 32, 3) uint8: what the model sees
    probs: np.ndarray  # (classes,)
    attention: list = field(repr=False)  # per block (heads, T, T)
    gradients: dict = field(default_factory=dict, repr=False)  # class -> per block (h, T, T)
    occlusion: dict = field(default_factory=dict, repr=False)  # class -> (grid, grid) drops

    @property
    def top_class(self) -> int:
        return int(np.argmax(self.probs))


class Analyser:
    def __init__(self, model, label_names: list[str], info: ModelInfo,
                 warmup: bool | str = True):
        """warmup: True compiles both XLA programs now; "background" compiles them
        in a thread while the web server starts (XLA releases the GIL) and
        answers eagerly until they are ready, which shortens the cold start;
        False leaves it to the first request."""
        self.predictor = Predictor(model, warmup=False, temperature=info.temperature,
                                   test_time_flip=info.test_time_flip)
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
        """The model `model_choice.choose_model` picks for `spec` (Hub, cache,
        bundled, untrained), ready to analyse."""
        return cls(*choose_model(spec, timeout), warmup=warmup)

    @classmethod
    def untrained(cls, preset: str = "compact", warmup: bool = True):
        """Random weights, loudly labelled: for a checkout without bundled weights."""
        return cls(*untrained_model(preset=preset), warmup=warmup)

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

    def overlay(self, analysis: Analysis, heatmap: np.ndarray, alpha: float = 0.6) -> np.ndarray:
        """A (grid, grid) map over the upload's centre square, as the page shows it."""
        return explain.overlay(analysis.display, heatmap, cmap="inferno", alpha=alpha)

    def rollout_grid(self, analysis, fusion="mean", discard=0.0) -> np.ndarray:
        return explain.attention_rollout(analysis.attention, head_fusion=fusion,
                                         discard_ratio=discard,
                                         has_class_token=self.has_class_token)

    def rollout(self, analysis, fusion="mean", discard=0.0, alpha=0.6) -> np.ndarray:
        return self.overlay(analysis, self.rollout_grid(analysis, fusion, discard), alpha)

    def raw_grid(self, analysis, block: int, head: int | None, fusion="mean") -> np.ndarray:
        return explain.raw_attention(analysis.attention, block, head, fusion,
                                     has_class_token=self.has_class_token)

    def raw(self, analysis, block: int, head: int | None, fusion="mean", alpha=0.6):
        return self.overlay(analysis, self.raw_grid(analysis, block, head, fusion), alpha)

    def patch(self, analysis, block: int, patch: int, head: int | None, fusion="mean",
              alpha=0.6):
        heat = explain.patch_attention(analysis.attention, block, patch, head, fusion,
                                       has_class_token=self.has_class_token)
        return self.overlay(analysis, heat, alpha)

    def patch_at(self, x: float, y: float) -> int:
        return explain.pixel_to_patch(x, y, DISPLAY, self.grid)

    def class_map(self, analysis, class_index: int, alpha=0.6) -> np.ndarray:
        return self.overlay(analysis, self.class_grid(analysis, class_index), alpha)

    def occlusion_grid(self, analysis, class_index: int) -> np.ndarray:
        """(grid, grid) drop in the class's probability with each cell greyed out."""
        class_index = int(class_index)
        if class_index not in analysis.occlusion:
            analysis.occlusion[class_index] = faithfulness.occlusion_map(
                self.predictor.probabilities, analysis.pixels, class_index, self.grid,
                self.predictor.baseline_pixel, reference=float(analysis.probs[class_index]))
        return analysis.occlusion[class_index]

    def occlusion(self, analysis, class_index: int, alpha=0.6) -> np.ndarray:
        """Overlay of the cells whose removal lowers the class's probability."""
        return self.overlay(analysis, np.maximum(self.occlusion_grid(analysis, class_index),
                                                  0.0), alpha)

    def class_grid(self, analysis, class_index: int) -> np.ndarray:
        class_index = int(class_index)
        if class_index not in analysis.gradients:
            analysis.gradients[class_index] = self.predictor.class_gradients(
                analysis.pixels, class_index)
        return explain.gradient_rollout(analysis.attention, analysis.gradients[class_index],
                                        has_class_token=self.has_class_token)

    def deletion_plot(self, analysis, grids: dict, class_index: int):
        """This image's deletion curves for the shown maps: one batched forward."""
        names = list(grids)
        curves = faithfulness.perturbation_curves(
            self.predictor.probabilities, analysis.pixels, [grids[n] for n in names],
            [int(class_index)] * len(names), self.grid, self.predictor.baseline_pixel,
            modes=("deletion",))
        return faithfulness.plot_deletion_curves(
            curves["cells"], {MAP_NAMES.get(n, n): c for n, c in zip(names, curves["deletion"])},
            self.labels[int(class_index)], self.dataset_deletion("random"))

    # ------------------------------------------------------------ trust
    def dataset_deletion(self, method: str) -> float | None:
        """Mean deletion AUC of a map over the test images, if measured."""
        methods = (self.info.faithfulness or {}).get("methods", {})
        return (methods.get(method) or {}).get("deletion", {}).get("mean")

    def lead_maps(self) -> list[str]:
        """LEAD_MAPS, most faithful first by the measured deletion scores."""
        order = {name: i for i, name in enumerate(LEAD_MAPS)}
        scores = {name: self.dataset_deletion(name) for name in LEAD_MAPS}
        return sorted(LEAD_MAPS, key=lambda n: (scores[n] is None, scores[n] or 0, order[n]))

    def scored_name(self, method: str, fusion: str = "mean", discard: float = 0.0,
                    block: int | None = None, head: int | None = None) -> str | None:
        """faithfulness.json's name for a map at these settings; None if it cannot be
        scored there. The benchmark scores rollout at each fusion with discard 0 and
        0.9, and raw attention of the last block with the heads averaged (block
        counts from 1)."""
        if method == "rollout":  # an unscored setting's name is simply not in the file
            return faithfulness.rollout_name(fusion, round(float(discard), 2))
        if method == "raw":
            last = block in (None, self.predictor.num_blocks)
            return "raw" if last and head is None and fusion == "mean" else None
        return method

    def map_label(self, method: str, **setting) -> str:
        """A map's title with the deletion score of the map as set (`scored_name`'s
        settings), so a label never quotes a score measured on another setting.
        Short enough to sit beside the image's buttons; the trust lines say the rest."""
        title = MAP_NAMES[method]
        if method == "raw":
            block = setting.get("block") or self.predictor.num_blocks
            head = setting.get("head")
            title += f", block {block}, " + ("all heads" if head is None else f"head {head + 1}")
        if self.dataset_deletion("random") is None:
            return title
        name = self.scored_name(method, **setting)
        score = self.dataset_deletion(name) if name else None
        return f"{title} · " + ("not scored at this setting" if score is None
                                else f"deletion {score:.3f}")

    def trust_line(self, method: str) -> str:
        """One plain sentence: how well this map found the evidence, on test images."""
        score, floor = self.dataset_deletion(method), self.dataset_deletion("random")
        if score is None or floor is None:
            return f"{MAP_NAMES.get(method, method)}: faithfulness not measured for this model."
        n = (self.info.faithfulness or {}).get("n", "?")
        ratio = score / floor if floor else float("nan")
        verdict = ("finds the evidence well" if ratio <= 0.7 else
                   "finds some of the evidence" if ratio <= 0.9 else
                   "does little better than chance" if ratio < 1.0 else
                   "does no better than chance")
        return (f"**{MAP_NAMES.get(method, method)}** {verdict}: greying out the cells it "
                f"marks first lowers the model's confidence in its top-1 class with a "
                f"deletion score of "
                f"{score:.3f}, against {floor:.3f} for cells in random order (lower is "
                f"better; {n} test images).")

    def not_sure(self, analysis) -> str | None:
        """The honest-doubt notice, or None when the top-1 is confident enough.

        Only a calibrated model (calibration.json) makes this claim; the words
        quote the held-out accuracy below the threshold, not a guess.
        """
        rule = self.info.not_sure or {}
        threshold = rule.get("threshold")
        top = float(analysis.probs[analysis.top_class])
        if threshold is None or top >= threshold:
            return None
        held_out = (rule.get("validation") or {}).get("accuracy_below")
        evidence = ("" if held_out is None else
                    f" On held-out images with a top guess below {100 * threshold:.0f}%, "
                    f"that guess was right only {100 * held_out:.0f}% of the time.")
        return (f"**Not sure.** The best guess, *{self.labels[analysis.top_class]}*, is "
                f"{100 * top:.0f}% likely to be right.{evidence} Perhaps the picture "
                "shows none of the 100 classes this model knows.")

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

