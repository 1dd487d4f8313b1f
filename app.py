"""Gradio demo: upload a picture, see the ViT's top-5 CIFAR-100 classes and where it looked.

    python app.py                          # bundled weights, http://127.0.0.1:7860
    python app.py --model USER/REPO@rev    # or MODEL_REPO=USER/REPO; falls back to bundled
    python app.py --share                  # ask Gradio for a public link

API (see README): `classify` (image -> top-5) and `explain` (image + options -> maps).
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import sys

import gradio as gr
import numpy as np
from PIL import Image as PILImage

from vit import images
from vit.analysis import Explainer
from vit.space import EXAMPLE_TYPES

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = sorted(p for p in glob.glob(os.path.join(HERE, "examples", "*"))
                  if p.lower().endswith(EXAMPLE_TYPES))
FUSIONS = ["mean", "max", "min"]
ALL_HEADS = "all heads (fused)"
# Output images as PNG: Gradio's default, lossy WebP, smears the pixelated
# 32x32 view (up to 54 levels off) and the maps' colours.
SHOWN = dict(interactive=False, format="png")
PNG_LEVEL = 1  # zlib level: 3.5 ms per 320 px map instead of 12.5 ms at the default 6
MAX_FILE_SIZE = images.MAX_UPLOAD_BYTES


class UploadImage(gr.Image):
    """gr.Image that hands the raw upload to `vit.images`.

    gr.Image opens uploads with Pillow before our code runs, so a bad file
    would fail with Gradio's generic error; this way every bad upload gets our
    one-line message (and 16-bit / transparent images our careful decoding).
    """

    is_template = True  # render with the stock Image frontend

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return payload.url
        return payload.path


def lossless(handler):
    """Return the handler's pictures as PIL images that Gradio saves as fast PNG.

    Pillow reads save() options from `image.encoderinfo`, so Gradio's own
    PNG encoding uses PNG_LEVEL; pictures are (H, W, 3) uint8 arrays, alone,
    in the returned tuple, or first in (picture, caption) gallery items.
    """
    def convert(value):
        if isinstance(value, np.ndarray) and value.ndim == 3 and value.dtype == np.uint8:
            image = PILImage.fromarray(value)
            image.encoderinfo = {"compress_level": PNG_LEVEL}
            return image
        if isinstance(value, tuple):
            return tuple(convert(v) for v in value)
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        return convert(handler(*args, **kwargs))
    return wrapped


def _head_index(head: str) -> int | None:
    return None if head in (None, ALL_HEADS) else int(head.split()[-1]) - 1


def _class_list() -> str:
    """The 100 classes, one click away from the "not sure" notice."""
    from vit.data import CIFAR100_LABELS

    names = ", ".join(n.replace("_", " ") for n in CIFAR100_LABELS)
    return f"<details><summary>The 100 classes it knows</summary><p>{names}</p></details>"


def build_demo(explainer: Explainer) -> gr.Blocks:
    info, pred = explainer.info, explainer.predictor
    centre = (pred.grid_size // 2) * pred.grid_size + pred.grid_size // 2
    heads = [ALL_HEADS] + [f"head {i + 1}" for i in range(pred.num_heads)]
    lead = explainer.lead_maps()  # most faithful first, by faithfulness.json

    def analyse(source, gradients=True):
        if source is None:
            raise gr.Error("Please upload an image first.")
        try:
            return explainer.analyse(source, gradients)
        except images.ImageDecodeError as exc:
            raise gr.Error(str(exc), title="Can't read this image") from None

    def class_index(analysis, class_name):
        if class_name in explainer.labels:
            return explainer.labels.index(class_name)
        return analysis.top_class

    # ---------------------------------------------------------------- UI events
    def render(a, patch, fusion, discard, block, head, class_name):
        """Every map for the current controls, and this image's deletion curves."""
        c, b, h = class_index(a, class_name), int(block) - 1, _head_index(head)
        # (the overlays show the positive part; the curves order by the full maps)
        grids = {"occlusion": explainer.occlusion_grid(a, c),
                 "class_map": explainer.class_grid(a, c),
                 "rollout": explainer.rollout_grid(a, fusion, discard),
                 "raw": explainer.raw_grid(a, b, h, fusion)}
        pictures = {name: explainer.overlay(a, grid) for name, grid in grids.items()}
        return ([pictures[name] for name in lead] + [
            pictures["raw"], explainer.patch(a, b, patch, h, fusion),
            explainer.deletion_plot(a, grids, c)])

    blank = [None] * (len(lead) + 3)
    cleared = (None, None, gr.update(value="", visible=False), centre, None,
               gr.update(value=None), None, *blank)

    @lossless
    def on_image(source, fusion, discard, block, head):
        if source is None:  # cleared
            return cleared
        try:
            a = explainer.analyse(source)
        except images.ImageDecodeError as exc:
            # Say why, and clear the previous image's maps so nothing stale is shown.
            gr.Warning(str(exc), title="Can't read this image")
            return cleared
        doubt = explainer.not_sure(a)
        top = explainer.labels[a.top_class]
        return (a, explainer.top_k(a),
                gr.update(value=f"{doubt}\n\n{_class_list()}" if doubt else "",
                          visible=bool(doubt)),
                centre, explainer.model_view(a, centre), gr.update(value=top),
                explainer.distance_plot(a),
                *render(a, centre, fusion, discard, block, head, top))

    @lossless
    def on_controls(a, patch, fusion, discard, block, head, class_name):
        return blank if a is None else render(a, patch, fusion, discard, block, head,
                                              class_name)

    @lossless
    def on_select(a, block, head, fusion, evt: gr.SelectData):
        if a is None:
            return centre, None, None
        patch = explainer.patch_at(*evt.index)
        return (patch, explainer.model_view(a, patch),
                explainer.patch(a, int(block) - 1, patch, _head_index(head), fusion))

    # ---------------------------------------------------------------- API
    def classify(image):
        """Top-5 CIFAR-100 classes with calibrated confidences for one image."""
        return explainer.top_k(analyse(image, gradients=False))

    def checked_class(class_name):
        if class_name and class_name not in explainer.labels:
            raise gr.Error(f"unknown class {class_name!r}; use a CIFAR-100 class name or '' "
                           "for the top-1 class")

    @lossless
    def explain(image, head_fusion="mean", discard_ratio=0.0, block=0, head=0,
                class_name=None):
        """Rollout, raw attention (block, head; 0 = last block / all heads) and class map."""
        b = int(block) - 1 if block else pred.num_blocks - 1
        if not 0 <= b < pred.num_blocks:
            raise gr.Error(f"block must be 1..{pred.num_blocks}")
        h = int(head) - 1 if head else None
        if h is not None and not 0 <= h < pred.num_heads:
            raise gr.Error(f"head must be 1..{pred.num_heads} (0 = all heads)")
        if head_fusion not in FUSIONS:
            raise gr.Error(f"head_fusion must be one of {FUSIONS}")
        if not 0.0 <= float(discard_ratio) < 1.0:
            raise gr.Error("discard_ratio must be in [0, 1)")
        checked_class(class_name)
        a = analyse(image)
        return (explainer.top_k(a), explainer.rollout(a, head_fusion, float(discard_ratio)),
                explainer.raw(a, b, h, head_fusion),
                explainer.class_map(a, class_index(a, class_name)))

    @lossless
    def occlusion(image, class_name=None):
        """Occlusion map: each patch cell's drop in the class's probability when greyed out."""
        checked_class(class_name)
        a = analyse(image, gradients=False)
        c = class_index(a, class_name)
        drops = explainer.occlusion_grid(a, c)
        return (explainer.top_k(a), explainer.occlusion(a, c),
                {"class": explainer.labels[c], "probability": float(a.probs[c]),
                 "drops": np.round(drops, 6).tolist()})

    # ---------------------------------------------------------------- batch
    @lossless
    def batch(files):
        if not files:
            raise gr.Error("Choose one or more image files.")
        rows, gallery = [], []
        for path in files:
            name = os.path.basename(path)
            try:
                a = explainer.analyse(path, gradients=False)
            except images.ImageDecodeError as exc:
                rows.append([name, "—", None, str(exc)])
                continue
            top = a.top_class
            rows.append([name, explainer.labels[top], round(float(a.probs[top]), 4), ""])
            gallery.append((explainer.rollout(a), f"{name}: {explainer.labels[top]}"))
        return rows, gallery

    # ---------------------------------------------------------------- layout
    accuracy = (f"test top-1 **{100 * info.test_top1:.1f}%**, top-5 {100 * info.test_top5:.1f}%"
                if info.test_top1 is not None else "accuracy not measured")
    if info.progress:
        accuracy += f" ({info.progress})"
    calibrated = ("confidences calibrated on held-out images"
                  if info.temperature != 1.0 else "confidences not calibrated")
    with gr.Blocks(title="ViT on CIFAR-100: where does it look?") as demo:
        gr.Markdown(
            "# Where does the Vision Transformer look?\n"
            "A small ViT trained **from scratch on CIFAR-100** (100 classes, 32×32 pixels). "
            "Upload, drop, paste or snap any picture: it is cropped to its centre square and "
            "shrunk to 32×32, then classified; the maps show which patches it used.  \n"
            f"Model: `{info.preset}` preset, {info.parameters:,} parameters, "
            f"{accuracy}, {calibrated} — source: {info.source}.")
        gr.Markdown(f"⚠️ **{info.notice}**" if info.notice else "", visible=bool(info.notice),
                    elem_id="notice", elem_classes=["notice"])
        analysis, patch_state = gr.State(), gr.State(centre)
        with gr.Tab("Explore"):
            with gr.Row(equal_height=False):
                with gr.Column():
                    image = UploadImage(label="Your image", type="filepath", height=340,
                                        sources=["upload", "clipboard", "webcam"],
                                        elem_id="upload")
                    gr.Examples(EXAMPLES, inputs=image, examples_per_page=24,
                                label="CIFAR-100 test images")
                with gr.Column():
                    label = gr.Label(num_top_classes=5, label="Top-5 classes", elem_id="top5")
                    unsure = gr.Markdown(visible=False, elem_id="unsure",
                                         elem_classes=["notice"])
                    seen = gr.Image(label="What the model sees (32×32) — click a patch",
                                    height=340, elem_id="seen", **SHOWN)
            with gr.Row():
                lead_imgs = [gr.Image(label=explainer.map_label(name), elem_id=name.replace(
                    "_", ""), **SHOWN) for name in lead]
            gr.Markdown("  \n".join(explainer.trust_line(n) for n in (*lead, "raw"))
                        + "  \n" + explainer.rollout_caption + " *Occlusion* greys out each "
                        "patch cell in turn and shows how much the class's probability drops; "
                        "the class map weights attention by its gradient for the chosen class.",
                        elem_id="trust")
            with gr.Row():
                fusion = gr.Radio(FUSIONS, value="mean", label="Head fusion")
                discard = gr.Slider(0.0, 0.9, value=0.0, step=0.05, label="Discard ratio")
                block = gr.Slider(1, pred.num_blocks, value=pred.num_blocks, step=1,
                                  label="Block")
                head = gr.Dropdown(heads, value=ALL_HEADS, label="Head")
                class_dd = gr.Dropdown(explainer.labels, value=None,
                                       label="Explain class (default: top-1)")
            with gr.Row():
                raw_img = gr.Image(label=explainer.map_label("raw") + " of the chosen block "
                                   "and head", elem_id="raw", **SHOWN)
                patch_img = gr.Image(label="Where the selected patch looks",
                                     elem_id="patch", **SHOWN)
                deletion = gr.Plot(label="Deletion curves for this image", show_label=False,
                                   elem_id="deletion")
            distance = gr.Plot(label="Mean attention distance per head", show_label=False)
        with gr.Tab("Batch"):
            files = gr.File(file_count="multiple", file_types=["image"],
                            label="Several images")
            run = gr.Button("Classify all", variant="primary")
            table = gr.Dataframe(headers=["file", "top-1", "confidence", "error"],
                                 interactive=False)
            gallery = gr.Gallery(label="Attention rollout", columns=6, height="auto",
                                 format="png")

        # Every event that runs the model shares one queue slot pool sized for 2 cores.
        model = dict(concurrency_id="model", concurrency_limit=2)
        ui = dict(api_visibility="private", **model)
        maps = [*lead_imgs, raw_img, patch_img, deletion]
        image.change(on_image, [image, fusion, discard, block, head],
                     [analysis, label, unsure, patch_state, seen, class_dd, distance, *maps],
                     **ui)
        controls = [analysis, patch_state, fusion, discard, block, head, class_dd]
        gr.on([fusion.change, discard.change, block.change, head.change, class_dd.input],
              on_controls, controls, maps, **ui)
        seen.select(on_select, [analysis, block, head, fusion], [patch_state, seen, patch_img],
                    **ui)
        run.click(batch, files, [table, gallery], api_name="batch", **model)

        # Public API endpoints, wired to hidden triggers so the UI stays uncluttered.
        api_image = UploadImage(type="filepath", visible=False)
        api_class = gr.Textbox(visible=False)
        api_options = [gr.Radio(FUSIONS, value="mean", visible=False),
                       gr.Number(0.0, visible=False), gr.Number(0, visible=False),
                       gr.Number(0, visible=False), api_class]
        api_label = gr.Label(visible=False)
        api_maps = [gr.Image(visible=False, format="png") for _ in range(3)]
        gr.Button(visible=False).click(classify, api_image, api_label, api_name="classify",
                                       **model)
        gr.Button(visible=False).click(explain, [api_image, *api_options],
                                       [api_label, *api_maps], api_name="explain", **model)
        gr.Button(visible=False).click(occlusion, [api_image, api_class],
                                       [api_label, api_maps[0], gr.JSON(visible=False)],
                                       api_name="occlusion", **model)
    demo.queue()
    return demo


# Small uploads (CIFAR-sized examples) would otherwise sit as a 32 px speck in the
# middle of the input box; large ones already fit it.
CSS = """
.notice { background: #fff3cd; border: 1px solid #e0b400; border-radius: 8px; padding: 4px 12px; }
#upload img { width: 100%; height: 100%; object-fit: contain; }
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=os.environ.get("MODEL_REPO") or None,
                   help="USER/REPO[@revision] or a local model folder (default: bundled)")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    p.add_argument("--host", default=None, help="default: $GRADIO_SERVER_NAME or 127.0.0.1")
    p.add_argument("--port", type=int, default=None,
                   help="default: $GRADIO_SERVER_PORT or 7860")
    return p.parse_args(argv)


def share_server_reachable(timeout: float = 3.0) -> bool:
    """Gradio's tunnel needs api.gradio.app; offline, skip its long failure output."""
    import httpx

    try:
        httpx.head("https://api.gradio.app/", timeout=timeout)
        return True
    except httpx.HTTPError:
        return False


def main(argv=None) -> int:
    args = parse_args(argv)
    share = args.share and share_server_reachable()
    explainer = Explainer.from_spec(args.model, warmup="background")
    if explainer.info.notice:
        print(f"notice: {explainer.info.notice}", flush=True)
    demo = build_demo(explainer)
    demo.launch(server_name=args.host, server_port=args.port, share=share,
                max_file_size=MAX_FILE_SIZE, theme=gr.themes.Soft(), css=CSS,
                prevent_thread_lock=True)
    if args.share and not demo.share_url:  # offline, or the tunnel failed
        print(f"Could not create a public share link (no internet?); the demo is still "
              f"serving locally at {demo.local_url}", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
