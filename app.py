"""Gradio demo: upload a picture, see the ViT's top-5 CIFAR-100 classes and where it looked.

    python app.py                          # bundled weights, http://127.0.0.1:7860
    python app.py --model USER/REPO@rev    # or MODEL_REPO=USER/REPO; falls back to bundled
    python app.py --share                  # ask Gradio for a public link

API (see README): `classify` (image -> top-5), `explain` (image + options -> maps),
`occlusion` (image -> occlusion map and drops), `batch`. This file is the page's
layout and wiring only: what each event does is in `vit.handlers`.
"""

from __future__ import annotations

import argparse
import functools
import glob
import inspect
import os
import sys

import gradio as gr
import numpy as np
from PIL import Image as PILImage

from vit import handlers, images
from vit.analysis import Analyser
from vit.handlers import ALL_HEADS, FUSIONS
from vit.space import EXAMPLE_TYPES

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = sorted(p for p in glob.glob(os.path.join(HERE, "examples", "*"))
                  if p.lower().endswith(EXAMPLE_TYPES))
# Output images as PNG: Gradio's default, lossy WebP, smears the pixelated
# 32x32 view (up to 54 levels off) and the maps' colours.
# (no "share" button: it posts to a Space's discussions, and its icon hides the titles)
SHOWN = dict(interactive=False, format="png", buttons=["download", "fullscreen"])
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
    in the returned tuple, in gr.update(value=...), or first in (picture,
    caption) gallery items.
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
        if isinstance(value, dict):  # gr.update(value=picture, label=...)
            return {k: convert(v) for k, v in value.items()}
        return value

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        return convert(handler(*args, **kwargs))
    return wrapped


def endpoint(handler, analyser):
    """A vit.handlers function as a Gradio event bound to `analyser`: its
    docstring and signature (less the analyser) describe the API; a UserError
    becomes a one-line gr.Error."""
    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(analyser, *args, **kwargs)
        except handlers.UserError as exc:
            raise gr.Error(str(exc), title=exc.title) from None
    signature = inspect.signature(handler)
    wrapped.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return lossless(wrapped)


def build_demo(analyser: Analyser) -> gr.Blocks:
    info, pred = analyser.info, analyser.predictor
    centre = handlers.centre_patch(analyser)
    lead = analyser.lead_maps()  # most faithful first, by faithfulness.json

    blank = [None] * (len(lead) + 3)
    cleared = (None, None, gr.update(value="", visible=False), centre, None,
               gr.update(value=None), None, *blank)

    @lossless
    def on_image(source, fusion, discard, block, head):
        if source is None:  # cleared
            return cleared
        try:
            page = handlers.new_upload(analyser, source, fusion, discard, block, head)
        except handlers.UserError as exc:
            # Say why where it stays visible (a toast fades), and clear the previous
            # image's results so nothing stale is shown.
            return (*cleared[:2], gr.update(value=f"⚠️ **{exc.title}.** {exc}", visible=True),
                    *cleared[3:])
        return (page.analysis, page.top5, gr.update(value=page.unsure,
                                                    visible=bool(page.unsure)),
                page.patch, page.model_view, gr.update(value=page.class_name),
                page.distance_plot, *labelled(page.maps, fusion, discard, block, head))

    def labelled(pictures, fusion, discard, block, head):
        """The maps with titles that quote the score of the settings they were drawn at."""
        titles = handlers.map_labels(analyser, fusion, discard, block, head)
        return [gr.update(value=p, label=t) for p, t in zip(pictures, titles)] + \
            list(pictures[len(titles):])

    @lossless
    def on_controls(a, patch, fusion, discard, block, head, class_name):
        if a is None:
            return blank
        return labelled(handlers.render(analyser, a, patch, fusion, discard, block, head,
                                        class_name), fusion, discard, block, head)

    @lossless
    def on_select(a, block, head, fusion, evt: gr.SelectData):
        if a is None:
            return centre, None, None
        return handlers.select_patch(analyser, a, *evt.index, block, head, fusion)

    # API endpoints: the handlers' docstrings are what the API page shows
    classify, explain, occlusion, batch = (
        endpoint(h, analyser) for h in (handlers.classify, handlers.explain,
                                        handlers.occlusion, handlers.batch))

    # ---------------------------------------------------------------- layout
    accuracy = (f"test top-1 **{100 * info.test_top1:.1f}%**, top-5 {100 * info.test_top5:.1f}%"
                if info.test_top1 is not None else "accuracy not measured")
    if info.progress:
        accuracy += f" ({info.progress})"
    if info.test_time_flip:
        accuracy += ", each picture classified together with its mirror image"
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
            titles = handlers.map_labels(analyser, "mean", 0.0, pred.num_blocks, ALL_HEADS)
            with gr.Row():
                lead_imgs = [gr.Image(label=title, elem_id=name.replace("_", ""), **SHOWN)
                             for name, title in zip(lead, titles)]
            gr.Markdown("  \n".join(analyser.trust_line(n) for n in (*lead, "raw"))
                        + "  \n" + analyser.rollout_caption + " *Occlusion* greys out each "
                        "patch cell in turn and shows how much the class's probability drops; "
                        "the class map weights attention by its gradient for the chosen class.",
                        elem_id="trust")
            with gr.Row():
                fusion = gr.Radio(list(FUSIONS), value="mean", label="Head fusion")
                discard = gr.Slider(0.0, 0.9, value=0.0, step=0.05, label="Discard ratio")
                block = gr.Slider(1, pred.num_blocks, value=pred.num_blocks, step=1,
                                  label="Block")
                head = gr.Dropdown(handlers.head_choices(pred.num_heads), value=ALL_HEADS,
                                   label="Head")
                class_dd = gr.Dropdown(analyser.labels, value=None,
                                       label="Explain class (default: top-1)")
            with gr.Row():
                raw_img = gr.Image(label=titles[-1], elem_id="raw", **SHOWN)
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
        # always_last: while a render runs, the latest setting (e.g. where a dragged slider
        # stopped) is queued, never dropped (gr.on's default, "once", would drop it)
        gr.on([fusion.change, discard.change, block.change, head.change, class_dd.input],
              on_controls, controls, maps, trigger_mode="always_last", **ui)
        seen.select(on_select, [analysis, block, head, fusion], [patch_state, seen, patch_img],
                    **ui)
        run.click(batch, files, [table, gallery], api_name="batch", **model)

        # Public API endpoints, wired to hidden triggers so the UI stays uncluttered.
        api_image = UploadImage(type="filepath", visible=False)
        api_class = gr.Textbox(visible=False)
        api_options = [gr.Radio(list(FUSIONS), value="mean", visible=False),
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
                   help="USER/REPO[@revision] (or hf://USER/REPO) or a local model folder "
                        "(default: bundled)")
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
    analyser = Analyser.from_spec(args.model, warmup="background")
    if analyser.info.notice:
        print(f"notice: {analyser.info.notice}", flush=True)
    demo = build_demo(analyser)
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
