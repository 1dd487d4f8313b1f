"""A Keras 3 Vision Transformer for CIFAR-100, with attention explanations.

`import vit` registers the custom layers, so `keras.saving.load_model` can
rebuild saved models (locally or from `hf://`).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from .config import PRESETS, ViTConfig, get_preset  # noqa: E402
from .layers import (  # noqa: E402
    ClassTokenPool, ConvTokenizer, DropPath, PatchEncoder, Patches, Preprocess,
    SelfAttention, TransformerBlock,
)
from .model import block_names, build_vit, with_attention  # noqa: E402
from .model_folder import load_pretrained  # noqa: E402

__all__ = [
    "PRESETS", "ViTConfig", "get_preset", "build_vit", "with_attention", "block_names",
    "load_pretrained",
    "ClassTokenPool", "ConvTokenizer", "DropPath", "PatchEncoder", "Patches",
    "Preprocess", "SelfAttention", "TransformerBlock",
]
