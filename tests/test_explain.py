"""vit.explain against hand-made attention with independent NumPy references.

Grid 2x2 + class token (T = 5) unless stated; references are written out
here rather than calling helpers of the module under test.
"""

import math

import numpy as np
import pytest

from vit import explain

T = 5  # class token + 2x2 patches


def random_attention(rng, blocks=3, heads=2, tokens=T):
    """Row-stochastic (heads, T, T) per block, like softmax output."""
    logits = rng.normal(size=(blocks, heads, tokens, tokens)) * 2.0
    e = np.exp(logits)
    return list(e / e.sum(axis=-1, keepdims=True))


@pytest.fixture
def attn():
    return random_attention(np.random.default_rng(0))


def test_grid_size_from_tokens():
    assert explain.grid_size_from_tokens(5, True) == 2
    assert explain.grid_size_from_tokens(64, False) == 8
    with pytest.raises(ValueError):
        explain.grid_size_from_tokens(6, True)


def test_fuse_heads():
    a = np.array([[[1.0, 4.0], [0.0, 2.0]], [[3.0, 0.0], [2.0, 2.0]]])
    np.testing.assert_allclose(explain.fuse_heads(a, "mean"), [[2, 2], [1, 2]])
    np.testing.assert_allclose(explain.fuse_heads(a, "max"), [[3, 4], [2, 2]])
    np.testing.assert_allclose(explain.fuse_heads(a, "min"), [[1, 0], [0, 2]])
    with pytest.raises(ValueError):
        explain.fuse_heads(a, "median")


def hand_rollout(attn, reduce=np.mean):
    joint = np.eye(T)
    for block in attn:
        a = reduce(block, axis=0) + np.eye(T)
        a = a / a.sum(axis=1)[:, None]
        joint = a @ joint
    return joint


@pytest.mark.parametrize("fusion,reduce", [("mean", np.mean), ("max", np.max),
                                           ("min", np.min)])
def test_rollout_matches_hand_product(attn, fusion, reduce):
    joint = explain.rollout_matrix(attn, head_fusion=fusion)
    expected = hand_rollout(attn, reduce)
    # explicit order: A3 @ A2 @ A1 (first block applied first)
    np.testing.assert_allclose(joint, expected, rtol=1e-12)
    np.testing.assert_allclose(joint.sum(axis=1), np.ones(T), rtol=1e-12)
    heat = explain.attention_rollout(attn, head_fusion=fusion)
    row = expected[0, 1:]
    np.testing.assert_allclose(heat, (row / row.max()).reshape(2, 2), rtol=1e-12)
    assert heat.max() == pytest.approx(1.0)


def test_rollout_block_order_matters(attn):
    reversed_joint = hand_rollout(attn[::-1])
    assert not np.allclose(explain.rollout_matrix(attn), reversed_joint)


def test_rollout_without_class_token_is_mean_over_query_rows():
    attn = random_attention(np.random.default_rng(1), tokens=4)
    joint = np.eye(4)
    for block in attn:
        a = block.mean(axis=0) + np.eye(4)
        joint = (a / a.sum(axis=1, keepdims=True)) @ joint
    mean_row = joint.mean(axis=0)
    heat = explain.attention_rollout(attn, has_class_token=False)
    np.testing.assert_allclose(heat, (mean_row / mean_row.max()).reshape(2, 2))
    # differs from reading row 0 as if it were a class token
    assert not np.allclose(heat.ravel(), joint[0] / joint[0].max())


def test_discard_ratio_zeroes_lowest_but_keeps_class_token_entry():
    fused = np.arange(1.0, 26.0).reshape(5, 5)
    fused[0, 0] = 0.5  # lowest entry, but it is the class token's own
    one_block = [fused[None]]  # one head
    kept = explain._discard_lowest(fused.copy(), 0.2, has_class_token=True)
    # 5 lowest of 25: [0,0]=0.5 (protected), then 2, 3, 4, 5
    expected = fused.copy()
    expected[0, 1:5] = 0.0
    np.testing.assert_array_equal(kept, expected)
    # and rollout uses it: one block, discarded row renormalised with identity
    joint = explain.rollout_matrix(one_block, discard_ratio=0.2)
    a = expected + np.eye(5)
    np.testing.assert_allclose(joint, a / a.sum(axis=1, keepdims=True))
    # without a class token nothing is protected: exactly the 5 lowest go
    no_cls = explain._discard_lowest(fused.copy(), 0.2, has_class_token=False)
    assert not no_cls[0].any() and np.count_nonzero(no_cls) == 20


def test_discard_ratio_changes_rollout(attn):
    plain = explain.attention_rollout(attn)
    assert not np.allclose(plain, explain.attention_rollout(attn, discard_ratio=0.6))
    np.testing.assert_allclose(plain, explain.attention_rollout(attn, discard_ratio=0.0))
    with pytest.raises(ValueError):
        explain.attention_rollout(attn, discard_ratio=1.0)


def test_raw_attention_picks_class_row(attn):
    np.testing.assert_allclose(explain.raw_attention(attn, 1, head=0),
                               attn[1][0, 0, 1:].reshape(2, 2))
    fused = explain.raw_attention(attn, 2, fusion="max")
    np.testing.assert_allclose(fused, attn[2].max(axis=0)[0, 1:].reshape(2, 2))
    no_cls = explain.raw_attention([b[:, 1:, 1:] for b in attn], 0, head=1,
                                   has_class_token=False)
    np.testing.assert_allclose(no_cls, attn[0][1, 1:, 1:].mean(axis=0).reshape(2, 2))


def test_patch_attention_skips_class_token_offset(attn):
    # patch 2 = bottom-left cell = token 3 with a class token
    got = explain.patch_attention(attn, 0, patch_index=2, head=1)
    np.testing.assert_allclose(got, attn[0][1, 3, 1:].reshape(2, 2))
    no_cls = [b[:, 1:, 1:] for b in attn]
    got = explain.patch_attention(no_cls, 0, 2, has_class_token=False)
    np.testing.assert_allclose(got, attn[0][:, 3, 1:].mean(axis=0).reshape(2, 2))
    with pytest.raises(IndexError):
        explain.patch_attention(attn, 0, patch_index=4)


def test_pixel_to_patch_corners_and_clamping():
    assert explain.pixel_to_patch(0, 0, 256, 4) == 0
    assert explain.pixel_to_patch(255, 0, 256, 4) == 3
    assert explain.pixel_to_patch(0, 255, 256, 4) == 12
    assert explain.pixel_to_patch(255, 255, 256, 4) == 15
    assert explain.pixel_to_patch(256, 300, 256, 4) == 15
    assert explain.pixel_to_patch(-5, -1, 256, 4) == 0
    assert explain.pixel_to_patch(70, 10, (128, 64), 2) == 1  # (width, height)


def test_gradient_rollout_zero_grads_gives_zeros(attn):
    heat = explain.gradient_rollout(attn, [np.zeros_like(a) for a in attn])
    assert heat.shape == (2, 2)
    assert np.all(np.isfinite(heat)) and not heat.any()
    no_cls = [b[:, 1:, 1:] for b in attn]
    heat = explain.gradient_rollout(no_cls, [np.zeros_like(a) for a in no_cls],
                                    has_class_token=False)
    assert np.all(np.isfinite(heat)) and not heat.any()


def test_gradient_rollout_matches_hand_computation():
    rng = np.random.default_rng(2)
    attn = random_attention(rng, blocks=2)
    grads = [rng.normal(size=a.shape) for a in attn]
    r = np.eye(T)
    for a, g in zip(attn, grads):
        a_bar = np.mean(np.where(g * a > 0, g * a, 0.0), axis=0)
        r = r + a_bar @ r
    row = r[0, 1:]
    heat = explain.gradient_rollout(attn, grads)
    np.testing.assert_allclose(heat, (row / row.max()).reshape(2, 2))
    # negative gradients are clipped: flipping all signs changes the map
    flipped = explain.gradient_rollout(attn, [-g for g in grads])
    assert not np.allclose(heat, flipped)


def test_mean_attention_distance_uniform_and_diagonal():
    p = 8
    uniform = np.full((2, T, T), 1.0 / T)  # class-token mass gets renormalised away
    # every patch of a 2x2 grid sees distances 0, p, p, p*sqrt(2)
    expected = p * (2 + math.sqrt(2)) / 4
    got = explain.mean_attention_distance([uniform, uniform, uniform], 2, p)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, expected)
    diagonal = np.broadcast_to(np.eye(T), (2, T, T))
    np.testing.assert_allclose(explain.mean_attention_distance([diagonal], 2, p), 0.0)


def test_mean_attention_distance_one_far_head():
    # head 0 looks at the opposite corner, head 1 at the right neighbour
    opposite = np.zeros((4, 4))
    opposite[[0, 1, 2, 3], [3, 2, 1, 0]] = 1.0
    neighbour = np.zeros((4, 4))
    neighbour[[0, 1, 2, 3], [1, 0, 3, 2]] = 1.0
    block = np.stack([opposite, neighbour])
    got = explain.mean_attention_distance([block], 2, 4, has_class_token=False)
    np.testing.assert_allclose(got, [[4 * math.sqrt(2), 4.0]])


def test_plot_attention_distance():
    fig = explain.plot_attention_distance(np.array([[1.0, 5.0], [9.0, 12.0]]), 8, 32)
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert len(ax.collections) == 2  # one scatter per head
    np.testing.assert_allclose(ax.collections[1].get_offsets(), [[1, 5], [2, 12]])


def test_overlay_shape_dtype_and_alpha():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    heat = rng.random((4, 4))
    out = explain.overlay(image, heat)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    np.testing.assert_array_equal(explain.overlay(image, heat, alpha=0.0), image)
    big = explain.overlay(image, heat, alpha=0.0, size=128)
    assert big.shape == (128, 128, 3)
    np.testing.assert_array_equal(big, np.repeat(np.repeat(image, 4, 0), 4, 1))
    # alpha=1 shows only the colormap: the hottest cell's corner is bright yellow
    hot = np.zeros((4, 4))
    hot[0, 0] = 1.0
    full = explain.overlay(image, hot, alpha=1.0)
    assert full[0, 0].sum() > 600 and full[-1, -1].sum() < 30


def test_upscale_pixelated_is_nearest_neighbour():
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out = explain.upscale_pixelated(image, 6)
    assert out.shape == (6, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(np.repeat(image, 3, 0), 3, 1))


def test_float_images_are_0_to_255():
    """One convention (vit.images): floats hold 0-255, rounded; 0-1 floats are refused."""
    image = np.random.default_rng(4).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    shifted = image - 0.4  # rounds back to `image`; a plain cast would truncate to image-1...
    heat = np.random.default_rng(5).random((2, 2))
    np.testing.assert_array_equal(explain.upscale_pixelated(shifted, 16),
                                  explain.upscale_pixelated(image, 16))
    np.testing.assert_array_equal(explain.overlay(shifted, heat), explain.overlay(image, heat))
    for call in (explain.upscale_pixelated, lambda im, _: explain.overlay(im, heat)):
        with pytest.raises(ValueError, match="multiply by 255"):
            call(image / 255.0, 16)  # ...and 0-1 floats would show a black image
