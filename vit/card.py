"""The model card (README.md of a model folder / Hub repo), via huggingface_hub."""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

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
{% endif %}
{% if epochs_planned %}
**Work in progress:** this is the checkpoint after {{ epochs }} of {{ epochs_planned }}
planned epochs (the learning rate has not finished its cosine decay); the final
model will be more accurate.
{% endif %}
{% if has_curves %}
![training curves](curves.png)
{% endif %}
## Usage

```python
import keras, numpy as np
import vit  # registers the custom layers (pip install -r requirements.txt from the project)

model = keras.saving.load_model("hf://{{ repo_id }}")
pixels = np.zeros((1, 32, 32, 3), "uint8")  # raw RGB 0-255; the model normalises itself
probs = keras.ops.softmax(model(pixels)).numpy()
```

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
  including images of none of them. Confidences are not calibrated probabilities.
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


def build_model_card(metrics: dict, repo_id: str | None = None,
                     has_curves: bool = True) -> ModelCard:
    """A card with a model-index (test top-1/top-5) the Hub can display."""
    import json

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
        averaged_epochs="–".join(map(str, metrics["averaged_epochs"]))
        if metrics.get("averaged_epochs") else None)
