"""The model card (README.md of a model folder / Hub repo), via huggingface_hub.

`write_model_card(folder)` (re)writes a folder's card from the files in it
(metrics.json, calibration.json, faithfulness.json), so a script that adds
one of them regenerates the card with one call.
"""

from __future__ import annotations

import json
import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .config import ViTConfig

CITATION = """@techreport{krizhevsky2009learning,
  title  = {Learning Multiple Layers of Features from Tiny Images},
  author = {Krizhevsky, Alex},
  institution = {University of Toronto},
  year   = {2009}
}
@inproceedings{dosovitskiy2021vit,
  title     = {An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale},
  author    = {Dosovitskiy, Alexey and others},
  booktitle = {ICLR},
  year      = {2021}
}"""

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A Vision Transformer trained **from scratch on CIFAR-100** (32x32 pixels, 100 classes)
with Keras 3, preset `{{ preset }}` ({{ parameters }} parameters).

| split | top-1 | top-5 | loss |
|---|---|---|---|
| CIFAR-100 test (10,000 images) | {{ top1 }} | {{ top5 }} | {{ loss }} |

Trained for {{ epochs }} epochs in {{ hours }} h on {{ hardware }}
({{ ips }} images/s). Weights sha256: `{{ sha }}`.
{% if stages %}
The epochs and time above are the total since {{ origin }}, over
{{ stages|length }} stages; each later stage fine-tunes the weights the one before it wrote:

| stage | epochs | hours | test top-1 after it | command |
|---|---|---|---|---|
{% for st in stages %}| {{ loop.index }} | {{ st.epochs }} | {{ st.hours }} | {{ st.top1 }} | `{{ st.command }}` |
{% endfor %}
{% elif init_from %}
Fine-tuned from `{{ init_from }}`; the epochs and time above are the fine-tuning's own.
{% endif %}
{% if averaged_epochs %}
The weights are the mean of the checkpoints after epochs {{ averaged_epochs }}
(checkpoint averaging, chosen on the held-out validation split).
{% endif %}{% if test_time_flip %}
**Test-time flip:** the test and validation figures, the calibration and the demo classify
an image by the mean of the logits of it and its left-right mirror image (two forward
passes; see Usage). The training curves, measured during training, use one view.
{% endif %}
{% if epochs_planned %}
**Work in progress:** this is the checkpoint after {{ epochs }} of {{ epochs_planned }}
planned epochs (the learning rate has not finished its cosine decay); the final
model will be more accurate.
{% endif %}
{% if has_curves %}
![training curves](curves.png)
{% endif %}
{% if calibration %}## Calibration

The logits are divided by a temperature **T = {{ calibration.temperature }}** before the
softmax (temperature scaling, Guo et al. 2017), fitted by minimising the negative
log-likelihood on the {{ calibration.fitted_on }}. It changes no prediction, only how
confident they are{% if calibration.direction %}: {{ calibration.direction }}{% endif %}.
{% if calibration.rows %}
| {{ calibration.split }} ({{ calibration.images }} images) | before (T = 1) | after (T = {{ calibration.temperature }}) |
|---|---|---|
{% for row in calibration.rows %}| {{ row.0 }} | {{ row.1 }} | {{ row.2 }} |
{% endfor %}
ECE: expected calibration error over {{ calibration.bins }} equal-width confidence bins
(the mean gap between confidence and accuracy; 0 is perfect).
{% endif %}{% if has_reliability %}
![reliability diagram, before and after temperature scaling](reliability.png)
{% endif %}
**"Not sure"** (threshold **{{ calibration.threshold }}**): {{ calibration.rule }}.
{% if calibration.not_sure_rows %}
| split | images below the threshold | top-1 below | top-1 at or above |
|---|---|---|---|
{% for row in calibration.not_sure_rows %}| {{ row.0 }} | {{ row.1 }} | {{ row.2 }} | {{ row.3 }} |
{% endfor %}{% endif %}
{% endif %}{% if faithfulness %}## Faithfulness of the explanations

Deletion / insertion (Petsiuk et al. 2018) on {{ faithfulness.n }} test
images{% if faithfulness.seed is not none %} (seed {{ faithfulness.seed }}){% endif %}: patches are removed (or revealed) in the order a map ranks
them, and the area under the explained class's probability curve is measured. A faithful
map has a **low deletion** and a **high insertion** AUC. The sanity column is the Spearman
rank correlation between a map on the trained model and the same method on randomly
initialised weights (Adebayo et al. 2018): a high value means the map shows the
architecture rather than what was learnt.{% if faithfulness.baseline %} Removed patches
are replaced by: {{ faithfulness.baseline }}.{% endif %}

| method | deletion AUC (lower better) | insertion AUC (higher better) | sanity rank correlation |
|---|---|---|---|
{% for row in faithfulness.rows %}| {{ row.name }} | {{ row.deletion }} | {{ row.insertion }} | {{ row.sanity }} |
{% endfor %}
n images: {{ faithfulness.n }} (mean ± 95% confidence interval).{% if faithfulness.app_default %}
The app shows the **{{ faithfulness.app_default }}** map first.{% endif %}{% if faithfulness.command %}
Measured with `{{ faithfulness.command }}`.{% endif %}
{% if faithfulness.descriptions %}
{% for row in faithfulness.descriptions %}- **{{ row.0 }}**: {{ row.1 }}
{% endfor %}{% endif %}
{% endif %}## Usage

```bash
pip install "git+https://github.com/OWNER/REPO"  # the project's `vit` package (Keras 3, TensorFlow)
```

```python
import json, keras, numpy as np
from huggingface_hub import hf_hub_download
from vit.images import to_model_input  # importing vit registers the custom layers

model = keras.saving.load_model("hf://{{ repo_id }}")
labels = json.load(open(hf_hub_download("{{ repo_id }}", "labels.json")))
pixels = to_model_input("photo.jpg")[None]  # centre crop, 32x32 RGB 0-255; the model normalises itself
{% if test_time_flip %}logits = (model(pixels) + model(pixels[:, :, ::-1])) / 2  # test-time flip: the image and its mirror
{% else %}logits = model(pixels)
{% endif %}{% if calibration %}probs = keras.ops.softmax(logits / {{ calibration.temperature }}).numpy()[0]  # calibrated (T above)
{% else %}probs = keras.ops.softmax(logits).numpy()[0]
{% endif %}for i in np.argsort(probs)[::-1][:5]:
    print(f"{labels[i]}: {probs[i]:.1%}")
```

(`OWNER/REPO`: the project's GitHub repository.)

Every block's attention comes out of the same forward pass with
`vit.with_attention(model)`; the project's Gradio app turns it into rollout,
per-head and class-specific maps.

## Training

```
{{ command }}
```

Config:

```json
{{ config_json }}
```

## Limitations

- Inputs are 32x32 RGB; larger photos are downscaled, so fine detail is lost.
- It knows only the 100 CIFAR-100 classes and will name one of them for any image,
  including images of none of them. {{ confidence_note }}
- CIFAR-100 is small, old and web-sourced; biases of the 80 Million Tiny Images
  collection carry over. Not for any consequential decision.

## Citation

```bibtex
{{ citation }}
```
"""


def _stage_rows(metrics: dict) -> list[dict]:
    """Card rows for a multi-stage (fine-tuned) model; the last stage's accuracy
    is the model's own."""
    stages = metrics.get("stages") or []
    rows = []
    for i, st in enumerate(stages):
        top1 = st.get("test_top1", metrics.get("test_top1") if i == len(stages) - 1 else None)
        rows.append({"epochs": st.get("epochs", "?"),
                     "hours": f"{st.get('train_seconds', 0) / 3600:.2f}",
                     "top1": f"{100 * top1:.2f}%" if top1 is not None else "?",
                     # a "|" would end the Markdown table cell
                     "command": str(st.get("command", "?")).replace("|", "\\|")})
    return rows


def _pct(value, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _calibration_context(record: dict | None) -> dict | None:
    """What the card's Calibration section shows: the test split if measured."""
    if not record:
        return None
    split = "test" if record.get("test") else "validation"
    s = record.get(split) or {}
    rows = [(name, fmt(s[f"{key}_before"]), fmt(s[f"{key}_after"]))
            for name, key, fmt in (("ECE", "ece", _pct),
                                   ("NLL (mean, nats)", "nll", lambda v: f"{v:.3f}"),
                                   ("mean top-1 confidence", "mean_confidence", _pct))
            if f"{key}_before" in s and f"{key}_after" in s]
    if "top1" in s:
        rows.append(("top-1 accuracy", _pct(s["top1"]), _pct(s["top1"])))
    t = record["temperature"]
    not_sure = record.get("not_sure") or {}
    return {
        "temperature": f"{t:.4g}", "fitted_on": record.get("fitted_on", "validation split"),
        "direction": ("T < 1 sharpens the softmax of an under-confident model" if t < 1 else
                      "T > 1 softens the softmax of an over-confident model" if t > 1 else ""),
        "split": "CIFAR-100 " + split, "images": f"{s.get('images', 0):,}", "rows": rows,
        "bins": record.get("bins", 15),
        "rule": str(not_sure.get("rule", "")).rstrip(".") or "no rule recorded",
        "threshold": f"{not_sure.get('threshold', 0):.2f}",
        "not_sure_rows": [(name, _pct(n["fraction_below"]), _pct(n["accuracy_below"]),
                           _pct(n["accuracy_above"]))
                          for name, n in (("validation", not_sure.get("validation")),
                                          ("test", not_sure.get("test"))) if n]}


def _faithfulness_context(record: dict | None) -> dict | None:
    """Rows of the Faithfulness section from a benchmark's faithfulness.json."""
    if not record:
        return None

    def cell(m):
        m = m or {}
        if m.get("mean") is None:
            return "–"
        ci = f" ± {m['ci95']:.3f}" if m.get("ci95") is not None else ""
        return f"{m['mean']:.3f}{ci}"

    methods = record.get("methods") or {}
    rows = [{"name": f"**{name}**" if name == record.get("app_default") else name,
             "deletion": cell(m.get("deletion")), "insertion": cell(m.get("insertion")),
             "sanity": "–" if m.get("sanity_spearman") is None
             else f"{m['sanity_spearman']:.2f}"}
            for name, m in methods.items()]
    return {"n": f"{record.get('n', '?'):,}" if isinstance(record.get("n"), int)
            else record.get("n", "?"),
            "seed": record.get("seed"), "command": record.get("command"),
            "baseline": record.get("baseline"), "app_default": record.get("app_default"),
            "rows": rows,
            "descriptions": [(name, m["description"]) for name, m in methods.items()
                             if m.get("description")]}


def _confidence_note(record: dict | None) -> str:
    if not record:
        return "Confidences are not calibrated probabilities."
    test = record.get("test") or record.get("validation") or {}
    return (f"Confidences are temperature-scaled (T = {record['temperature']:.4g}, fitted on "
            f"held-out CIFAR-100 training images; test ECE {_pct(test.get('ece_after'))}): "
            "on CIFAR-like images a confidence of p% is right about p% of the time, but on "
            "photos unlike CIFAR-100 they may still be over- or under-confident.")


def write_model_card(folder: str, repo_id: str | None = None) -> ModelCard:
    """(Re)write folder/README.md from the files in it; returns the card.

    Reads metrics.json, calibration.json and faithfulness.json
    (optional sections), and shows curves.png / reliability.png if present.
    """
    from .calibration import read_calibration
    from .model_folder import measured_on_other_weights

    path = os.path.join(folder, "metrics.json")
    metrics = {}
    if os.path.isfile(path):
        with open(path) as f:
            metrics = json.load(f)
    faithfulness = None
    path = os.path.join(folder, "faithfulness.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                faithfulness = json.load(f)
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None

    def has(name):
        return os.path.isfile(os.path.join(folder, name))

    calibration = read_calibration(folder)
    # a card describes these weights: measurements of others are left out
    if measured_on_other_weights(folder, calibration):
        calibration = None
    if measured_on_other_weights(folder, faithfulness):
        faithfulness = None
    card = build_model_card(metrics, repo_id=repo_id, has_curves=has("curves.png"),
                            calibration=calibration, faithfulness=faithfulness,
                            has_reliability=has("reliability.png") and calibration is not None)
    card.save(os.path.join(folder, "README.md"))
    return card


def build_model_card(metrics: dict, repo_id: str | None = None, has_curves: bool = True,
                     calibration: dict | None = None, faithfulness: dict | None = None,
                     has_reliability: bool = False) -> ModelCard:
    """A card with a model-index (test top-1/top-5) the Hub can display, and the
    Calibration / Faithfulness sections when their records are given."""
    preset = metrics.get("preset", "custom")
    name = f"vit-cifar100-{preset}"
    results = [
        EvalResult(task_type="image-classification", task_name="Image Classification",
                   dataset_type="cifar100", dataset_name="CIFAR-100", dataset_split="test",
                   metric_type="accuracy", metric_name=f"{metric} accuracy",
                   metric_value=round(float(metrics[key]), 4),
                   metric_config=metric)
        for metric, key in (("top1", "test_top1"), ("top5", "test_top5")) if key in metrics
    ]
    data = ModelCardData(
        model_name=name, library_name="keras", pipeline_tag="image-classification",
        license="apache-2.0", datasets=["cifar100"], metrics=["accuracy"],
        tags=["vision-transformer", "vit", "keras", "image-classification", "cifar100",
              "attention-rollout"],
        eval_results=results or None)
    return ModelCard.from_template(
        data, template_str=TEMPLATE, model_name=name, preset=preset,
        parameters=f"{metrics.get('parameters', 0):,}",
        top1=f"{100 * metrics.get('test_top1', 0):.2f}%",
        top5=f"{100 * metrics.get('test_top5', 0):.2f}%",
        loss=f"{metrics.get('test_loss', 0):.3f}",
        epochs=metrics.get("epochs", "?"),
        hours=f"{metrics.get('train_seconds', 0) / 3600:.2f}",
        hardware=metrics.get("hardware", "CPU"),
        ips=f"{metrics.get('images_per_second') or 0:.0f}",
        sha=metrics.get("weights_sha256", "?"),
        repo_id=repo_id or f"USER/{name}",
        command=metrics.get("command", "python train.py"),
        config_json=json.dumps(metrics.get("config", {}), indent=2),
        citation=CITATION, has_curves=has_curves,
        epochs_planned=metrics.get("epochs_planned") if metrics.get("in_training") else None,
        init_from=metrics.get("init_from"),
        stages=_stage_rows(metrics),
        # an old fine-tune recorded only its own stage: its start is not random
        origin=(f"`{metrics['stages'][0]['init_from']}`"
                if (metrics.get("stages") or [{}])[0].get("init_from")
                else "random initialisation"),
        test_time_flip=ViTConfig.from_dict(metrics.get("config") or {}).arch.test_time_flip,
        averaged_epochs="–".join(map(str, metrics["averaged_epochs"]))
        if metrics.get("averaged_epochs") else None,
        calibration=_calibration_context(calibration), has_reliability=has_reliability,
        confidence_note=_confidence_note(calibration),
        faithfulness=_faithfulness_context(faithfulness))
