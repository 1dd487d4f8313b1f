"""Training-image augmentation: batched, stateless, exactly replayable.

Every random draw is keyed by a seed derived from (run seed, epoch, step), so a
run resumed from a checkpoint sees exactly the batches the uninterrupted run
would have seen, whatever tf.data's thread timing.

`trivial_augment` is the strong policy (augment="trivial"): TrivialAugment
(Müller & Hutter 2021) with the op ranges AutoAugment uses for CIFAR, drawn
per image. It replaces Keras' `RandAugment`, which this project measured to
destroy 32-px images (at factor=0.5: rotations up to +-180 degrees, shifts up
to half the image, 1-3-bit posterize, one op pair for the whole batch; 11% vs
19% validation top-1 after 3 epochs). Look at docs/augmentation.png:

    python scripts/augmentation_grid.py --data-dir ../shared/data/cifar100
"""

from __future__ import annotations

import tensorflow as tf

# AutoAugment's gray fill for pixels that a rotation, shear or shift uncovers
FILL_VALUE = 128.0


def _seed(base, k):
    """The k-th draw site's seed for this batch: 16 slots per step, so k must stay
    below 16 (0-8 fixed sites, 10-15 the op rounds: config.MAX_AUGMENT_OPS)."""
    return tf.stack([base[0], base[1] * 16 + k])


# --------------------------------------------------------------------------
# basic: crop + flip, and the upload round trip

def random_crop_flip(images, seed, pad=4):
    """Zero-pad by `pad`, crop back at a random offset per image, random h-flip."""
    b = tf.shape(images)[0]
    size = images.shape[1]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform((2, b), _seed(seed, 0), 0, 2 * pad + 1, tf.int32)
    grid = tf.range(size)
    rows = offsets[0][:, None] + grid
    cols = offsets[1][:, None] + grid
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform((b, 1, 1, 1), _seed(seed, 1)) < 0.5
    return tf.where(flip, tf.reverse(out, axis=[2]), out)


def random_resample(images, seed, prob, max_factor=8.0):
    """With probability `prob` per image, the round trip an upload goes through.

    Users' files are large photos that the app shrinks to 32x32 with an
    antialiased filter; a model that has only seen CIFAR's own pixels loses
    ~2 points on test images merely upscaled and shrunk back (README,
    "Uploads"). Here the chosen images are upscaled by a random factor in
    [2, max_factor] (bicubic) and shrunk back with antialiased Lanczos, as
    `vit.images.to_model_input` does, so the blur becomes familiar. The
    choice is per image; the factor is drawn once per batch (one resize for
    the whole batch), so over an epoch every factor is still seen.
    """
    if prob <= 0:
        return images
    b = tf.shape(images)[0]
    size = images.shape[1]
    factor = tf.random.stateless_uniform((), _seed(seed, 7), 2.0, max_factor)
    big = tf.cast(tf.round(factor * size), tf.int32)
    resampled = tf.image.resize(images, tf.stack([big, big]), method="bicubic")
    resampled = tf.image.resize(resampled, (size, size), method="lanczos3", antialias=True)
    resampled = tf.clip_by_value(tf.round(resampled), 0.0, 255.0)
    chosen = tf.random.stateless_uniform((b, 1, 1, 1), _seed(seed, 8)) < prob
    return tf.where(chosen, resampled, images)


# --------------------------------------------------------------------------
# strong: TrivialAugment with Keras preprocessing layers

class BatchSeeds:
    """Stand-in for a Keras SeedGenerator whose draws depend only on `seed`.

    A Keras random layer draws from its SeedGenerator: a variable that every
    call advances, so under tf.data's parallel map the draws depend on thread
    timing and a resumed run cannot replay them. This one returns the k-th
    draw site's seed as fold_in(batch seed, k), with k counted while tracing:
    the same (seed, epoch, step) always gives the same augmentation.
    """

    def __new__(cls, seed):
        import keras

        # a SeedGenerator to Keras' isinstance checks, without its state variable
        generator_cls = type("BatchSeeds", (cls, keras.random.SeedGenerator), {})
        return object.__new__(generator_cls)

    def __init__(self, seed):
        self.base = tf.cast(seed, tf.int64)
        self.draws = 0

    def next(self, ordered=True):
        self.draws += 1
        return tf.random.experimental.stateless_fold_in(self.base, self.draws)


def seeded_call(layer, images, seed):
    """Apply a Keras random preprocessing layer with every draw keyed by `seed`."""
    own = getattr(layer, "generator", None)
    if own is None:  # a deterministic layer (AutoContrast, Equalization)
        return layer(images, training=True)
    # object.__setattr__ keeps the stand-in out of the layer's tracked state
    object.__setattr__(layer, "generator", BatchSeeds(seed))
    try:
        return layer(images, training=True)
    finally:
        object.__setattr__(layer, "generator", own)


class MultiplyBrightness:
    """Scale every pixel by a factor drawn per image (PIL's ImageEnhance.Brightness).

    Written here because Keras' RandomBrightness *adds* a constant: a dim
    photo is a multiplied one (the exposure scales the light), and that is
    the damage uploads show (README, "Robustness").
    """

    def __init__(self, low, high):
        self.low, self.high = low, high

    def __call__(self, images, seed):
        factor = tf.random.stateless_uniform((tf.shape(images)[0], 1, 1, 1), seed,
                                             self.low, self.high)
        return tf.clip_by_value(images * factor, 0.0, 255.0)


def trivial_augment_ops():
    """The 13 non-identity ops with AutoAugment's CIFAR ranges at 32x32.

    Each op draws its strength per image, uniformly over the whole range, as
    TrivialAugment does. Ranges (PIL enhance factors 0.1-1.9 map onto each
    Keras layer's own parametrisation):
      rotate +-30 deg; shear x / y up to 0.3; translate x / y up to 10 px;
      brightness x0.1-1.9 (multiplied); contrast x0.1-1.9; colour: towards
      grey by 0-90%; sharpness: blur ... sharpen (PIL 0.1-1.9); posterize to
      4-7 bits; solarize above a threshold in 0-255; autocontrast; equalize.
    """
    import keras

    L = keras.layers
    common = dict(dtype="float32")  # input work stays float32 under mixed precision
    geometric = dict(fill_mode="constant", fill_value=FILL_VALUE, **common)
    return {
        "rotate": L.RandomRotation(30 / 360, **geometric),
        "shear_x": L.RandomShear(x_factor=0.3, y_factor=0.0, **geometric),
        "shear_y": L.RandomShear(x_factor=0.0, y_factor=0.3, **geometric),
        "translate_x": L.RandomTranslation(0.0, 10 / 32, **geometric),
        "translate_y": L.RandomTranslation(10 / 32, 0.0, **geometric),
        "brightness": MultiplyBrightness(0.1, 1.9),
        # RandomContrast draws from [1 - lower, 1 + upper]; a bare 0.9 would
        # only ever raise the contrast (lower clips to 0)
        "contrast": L.RandomContrast((0.9, 0.9), value_range=(0, 255), **common),
        "color": L.RandomColorDegeneration((0.0, 0.9), value_range=(0, 255), **common),
        "sharpness": L.RandomSharpness((0.05, 0.95), value_range=(0, 255), **common),
        "posterize": L.RandomPosterization((4, 8), value_range=(0, 255), **common),
        "solarize": L.Solarization(threshold_factor=(0.0, 1.0), value_range=(0, 255),
                                   **common),
        "autocontrast": L.AutoContrast(value_range=(0, 255), **common),
        "equalize": L.Equalization(value_range=(0, 255), **common),
    }


def _apply(op, images, seed):
    """A Keras layer gets its draws from `seed`; any other op is op(images, seed)."""
    import keras

    if isinstance(op, keras.Layer):
        return seeded_call(op, images, seed)
    return op(images, seed)


def trivial_augment(images, seed, ops, num_ops=1):
    """Each image gets `num_ops` ops, each chosen per image from identity + `ops`.

    num_ops=1 is TrivialAugment; 2 is RandAugment's N=2 with TrivialAugment's
    per-image uniform strengths. At 32x32 every op is cheap, so each one runs
    on the whole batch and every image keeps the result of its own choice:
    no per-image control flow, and the graph is the same for every batch.
    """
    b = tf.shape(images)[0]
    for r in range(num_ops):
        round_seed = _seed(seed, 10 + r)
        outs = [images] + [
            tf.clip_by_value(_apply(op, images, tf.random.experimental.stateless_fold_in(
                round_seed, i)), 0.0, 255.0)
            for i, op in enumerate(ops.values())]
        choice = tf.random.stateless_uniform((b,), round_seed, 0, len(outs), tf.int32)
        images = tf.gather(tf.stack(outs, axis=1), choice, axis=1, batch_dims=1)
    return images


# --------------------------------------------------------------------------
# label mixing

def _beta(alpha, seed):
    a = tf.random.stateless_gamma((), _seed(seed, 2), alpha=alpha)
    b = tf.random.stateless_gamma((), _seed(seed, 3), alpha=alpha)
    return a / (a + b)


def mix_batch(images, labels, seed, mixup_alpha=0.0, cutmix_alpha=0.0):
    """Mixup or CutMix with the reversed batch (one of them per batch, 50/50)."""
    images = tf.cast(images, tf.float32)
    partner_x, partner_y = tf.reverse(images, [0]), tf.reverse(labels, [0])
    use_cutmix = cutmix_alpha > 0 and (
        mixup_alpha <= 0 or tf.random.stateless_uniform((), _seed(seed, 4)) < 0.5)

    def mixup():
        lam = _beta(mixup_alpha, seed)
        return lam * images + (1 - lam) * partner_x, lam

    def cutmix():
        lam = _beta(cutmix_alpha, seed)
        h, w = images.shape[1], images.shape[2]
        cut = tf.sqrt(1.0 - lam)
        ch, cw = tf.cast(cut * h, tf.int32), tf.cast(cut * w, tf.int32)
        cy = tf.random.stateless_uniform((), _seed(seed, 5), 0, h, tf.int32)
        cx = tf.random.stateless_uniform((), _seed(seed, 6), 0, w, tf.int32)
        y0, y1 = tf.maximum(cy - ch // 2, 0), tf.minimum(cy + ch // 2, h)
        x0, x1 = tf.maximum(cx - cw // 2, 0), tf.minimum(cx + cw // 2, w)
        ys, xs = tf.range(h)[:, None], tf.range(w)[None, :]
        box = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
        box = tf.cast(box, tf.float32)[None, :, :, None]
        lam = 1.0 - tf.reduce_sum(box) / (h * w)
        return images * (1 - box) + partner_x * box, lam

    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, labels
    mixed, lam = tf.cond(use_cutmix, cutmix, mixup) if isinstance(use_cutmix, tf.Tensor) \
        else (cutmix() if use_cutmix else mixup())
    return mixed, lam * labels + (1 - lam) * partner_y
