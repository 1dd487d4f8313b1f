"""Attention explanations for ONE image, in plain NumPy.

Every function takes `attn`: a sequence of per-block arrays (heads, T, T)
of softmax probabilities (row = query token, column = key token), as
returned by `vit.with_attention` for one image. Tokens are patches in
row-major grid order, preceded by the class token (index 0) when the model
has one. Keeping this free of any deep-learning framework makes every map
unit-testable against hand computations and reusable with other backends.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

from .images import pixels_uint8

FUSIONS = ("mean", "max", "min")


def grid_size_from_tokens(num_tokens: int, has_class_token: bool = True) -> int:
    """Side of the square patch grid, so callers need not pass it around."""
    patches = num_tokens - int(has_class_token)
    side = math.isqrt(max(patches, 0))
    if side * side != patches or side == 0:
        raise ValueError(f"{num_tokens} tokens (class token: {has_class_token}) "
                         "do not form a square grid of patches")
    return side


def fuse_heads(a: np.ndarray, fusion: str = "mean") -> np.ndarray:
    """(heads, T, T) -> (T, T): heads attend to different things; pick how to combine."""
    a = np.asarray(a, dtype=np.float64)
    if fusion == "mean":
        return a.mean(axis=0)
    if fusion == "max":
        return a.max(axis=0)
    if fusion == "min":
        return a.min(axis=0)
    raise ValueError(f"unknown head fusion {fusion!r}; choose from {FUSIONS}")


def _normalise_max(heatmap: np.ndarray) -> np.ndarray:
    """Scale to max 1 for display; an all-zero map stays zero instead of NaN."""
    heatmap = np.maximum(heatmap, 0.0)
    peak = heatmap.max()
    return heatmap / peak if peak > 0 else np.zeros_like(heatmap)


def _patch_map(matrix: np.ndarray, has_class_token: bool) -> np.ndarray:
    """Token x token matrix -> (grid, grid) map over the patch (key) tokens.

    With a class token the classifier reads token 0, so its row is *the*
    explanation. Without one (Flatten head) every token feeds the classifier,
    so we average the rows of all query tokens: how much each patch
    contributes on average to all tokens, not to one prediction vector.
    """
    grid = grid_size_from_tokens(matrix.shape[-1], has_class_token)
    row = matrix[0, 1:] if has_class_token else matrix.mean(axis=0)
    return row.reshape(grid, grid)


def _discard_lowest(fused: np.ndarray, ratio: float, has_class_token: bool) -> np.ndarray:
    """Zero the lowest `ratio` of entries: rollout is dominated by noise otherwise.

    As in jacobgil/vit-explain, the candidates are all T*T entries and the
    class token's own entry [0, 0] is never dropped, so the class token keeps
    a path to itself through every block.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError("discard_ratio must be in [0, 1)")
    count = int(fused.size * ratio)
    if count == 0:
        return fused
    flat = fused.flatten()
    lowest = np.argsort(flat, kind="stable")[:count]
    if has_class_token:
        lowest = lowest[lowest != 0]
    flat[lowest] = 0.0
    return flat.reshape(fused.shape)


def rollout_matrix(attn, head_fusion: str = "mean", discard_ratio: float = 0.0,
                   has_class_token: bool = True) -> np.ndarray:
    """(T, T) joint attention A_L @ ... @ A_1 of Abnar & Zuidema (2020).

    Each A_l = rownorm(fuse(heads) + I): the identity accounts for the
    residual connection, and renormalising keeps every row a distribution.
    """
    joint = None
    for block in attn:
        fused = _discard_lowest(fuse_heads(block, head_fusion), discard_ratio,
                                has_class_token)
        a = fused + np.eye(fused.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        joint = a if joint is None else a @ joint
    if joint is None:
        raise ValueError("attn holds no blocks")
    return joint


def attention_rollout(attn, head_fusion: str = "mean", discard_ratio: float = 0.0,
                      has_class_token: bool = True) -> np.ndarray:
    """(grid, grid) map in [0, 1]: attention propagated through all blocks.

    Raw attention of the last block ignores that tokens already mixed in
    earlier blocks; rollout follows the flow back to the input patches.
    """
    joint = rollout_matrix(attn, head_fusion, discard_ratio, has_class_token)
    return _normalise_max(_patch_map(joint, has_class_token))


def _block_matrix(attn, block: int, head: int | None, fusion: str) -> np.ndarray:
    a = np.asarray(attn[block], dtype=np.float64)
    return a[head] if head is not None else fuse_heads(a, fusion)


def raw_attention(attn, block: int, head: int | None = None, fusion: str = "mean",
                  has_class_token: bool = True) -> np.ndarray:
    """(grid, grid) probabilities of one block, for one head or fused heads.

    Unnormalised, so values compare across blocks and heads; `overlay`
    rescales for display. Without a class token: mean over query rows.
    """
    return _patch_map(_block_matrix(attn, block, head, fusion), has_class_token)


def patch_attention(attn, block: int, patch_index: int, head: int | None = None,
                    fusion: str = "mean", has_class_token: bool = True) -> np.ndarray:
    """(grid, grid): where query patch `patch_index` (row-major, 0-based) looks.

    The class-token offset is added here, so callers think in patches only;
    the returned probabilities exclude the class-token key.
    """
    matrix = _block_matrix(attn, block, head, fusion)
    offset = int(has_class_token)
    grid = grid_size_from_tokens(matrix.shape[-1], has_class_token)
    if not 0 <= patch_index < grid * grid:
        raise IndexError(f"patch_index {patch_index} outside a {grid}x{grid} grid")
    return matrix[patch_index + offset, offset:].reshape(grid, grid)


def pixel_to_patch(x: float, y: float, image_size, grid_size: int) -> int:
    """Row-major patch index under a click at (x, y) on a displayed image.

    `image_size` is the displayed side, or (width, height); clicks on or past
    the border are clamped so any click maps to a valid patch.
    """
    width, height = (image_size, image_size) if np.isscalar(image_size) else image_size
    col = min(max(int(x * grid_size / width), 0), grid_size - 1)
    row = min(max(int(y * grid_size / height), 0), grid_size - 1)
    return row * grid_size + col


def gradient_rollout(attn, grads, has_class_token: bool = True) -> np.ndarray:
    """(grid, grid) class-specific relevance in [0, 1] (Chefer et al. 2021).

    Rollout explains no class in particular. Weighting each head by the
    gradient of the class logit keeps only attention that raises that class:
    A_bar = mean_heads(relu(grad * attn)), then R = I; R += A_bar @ R per
    block, first block first (the update rule of "Transformer
    Interpretability Beyond Attention Visualization", with the grad * attn
    relevance of their follow-up "Generic Attention-model Explainability").
    The identity (each token's relevance to itself) is subtracted before
    reading rows, so zero gradients give an all-zero map.
    """
    relevance = None
    for a, g in zip(attn, grads, strict=True):
        a = np.asarray(a, dtype=np.float64)
        weighted = np.maximum(np.asarray(g, dtype=np.float64) * a, 0.0).mean(axis=0)
        if relevance is None:
            relevance = np.eye(a.shape[-1])
        relevance = relevance + weighted @ relevance
    if relevance is None:
        raise ValueError("attn holds no blocks")
    added = relevance - np.eye(relevance.shape[-1])
    return _normalise_max(_patch_map(added, has_class_token))


@functools.lru_cache(maxsize=8)
def patch_distances(grid_size: int, patch_px: float) -> np.ndarray:
    """(P, P) Euclidean distances in pixels between patch centres (read-only, cached)."""
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)
    centres = np.stack([rows, cols], axis=-1) * float(patch_px)
    distances = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    distances.flags.writeable = False
    return distances


def mean_attention_distance(attn, grid_size: int, patch_px: float,
                            has_class_token: bool = True) -> np.ndarray:
    """(blocks, heads) mean attention distance in pixels.

    The ViT analogue of a receptive field (Dosovitskiy et al. 2020; keras-io
    "Investigating Vision Transformer representations"): per query patch the
    attention-weighted distance to the key patches, averaged over queries.
    Class-token rows and columns are dropped and each row renormalised over
    the patches, so the number is a distance, not diluted by [CLS] attention.
    """
    offset = int(has_class_token)
    distances = patch_distances(grid_size, patch_px)
    a = np.stack([np.asarray(block, np.float64) for block in attn])[..., offset:, offset:]
    totals = a.sum(axis=-1, keepdims=True)  # (blocks, heads, P, 1)
    weighted = np.einsum("bhqk,qk->bhq", a, distances)
    per_query = np.divide(weighted, totals[..., 0], out=np.zeros_like(weighted),
                          where=totals[..., 0] > 0)
    return per_query.mean(axis=-1)


def plot_attention_distance(distances: np.ndarray, patch_px: float, image_size: int):
    """Figure: each head's mean distance per block, as in the keras-io plot.

    Early heads mixing local and global distances, later ones mostly global,
    is the classic sign that a ViT learned locality by itself.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    distances = np.asarray(distances)
    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)  # Agg: renders without a display, no pyplot state
    ax = fig.add_subplot()
    blocks = np.arange(1, distances.shape[0] + 1)  # 1-based, like the app's controls
    for head in range(distances.shape[1]):
        ax.scatter(blocks, distances[:, head], label=f"head {head + 1}", alpha=0.8)
    ax.set_title(f"Mean attention distance ({patch_px}px patches, "
                 f"{image_size}x{image_size} image)")
    ax.set_xlabel("Network depth (block)")
    ax.set_ylabel("Attention distance (pixels)")
    ax.set_xticks(blocks)
    ax.set_ylim(0, max(float(image_size), float(distances.max(initial=0)) * 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncols=2)
    return fig


def _size_hw(size) -> tuple[int, int]:
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


def upscale_pixelated(image: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour upscale to `size` (side or (height, width)).

    Shows the 32x32 image exactly as the model sees it, without smoothing
    that would invent detail.
    """
    height, width = _size_hw(size)
    pil = Image.fromarray(pixels_uint8(image))
    return np.asarray(pil.resize((width, height), Image.Resampling.NEAREST))


def overlay(image: np.ndarray, heatmap: np.ndarray, cmap: str = "inferno",
            alpha: float = 0.5, size=None) -> np.ndarray:
    """uint8 (H, W, 3): colourised heatmap alpha-blended onto an RGB image (0-255).

    The coarse (grid, grid) map is upsampled bicubically, so patch borders do
    not look like model output; it is rescaled to max 1 first. `size` (side
    or (height, width)) upscales the image pixelated and the map smoothly.
    """
    import matplotlib

    image = pixels_uint8(image)[..., :3]
    if size is not None:
        image = upscale_pixelated(image, size)
    height, width = image.shape[:2]
    heat = _normalise_max(np.asarray(heatmap, dtype=np.float64)).astype(np.float32)
    heat = Image.fromarray(heat).resize((width, height), Image.Resampling.BICUBIC)
    heat = np.clip(np.asarray(heat), 0.0, 1.0)
    colours = matplotlib.colormaps[cmap](heat)[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
