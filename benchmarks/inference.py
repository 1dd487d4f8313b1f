"""Single-image latency and batch throughput of the serving path (vit.inference.Predictor).

    python benchmarks/inference.py                  # bundled weights (or --model FOLDER)
    python benchmarks/inference.py --smoke          # quick check

Measures, on random 32x32 uint8 images (latency does not depend on content):
  (a) logits only: a separate tf.function(jit_compile=True) over the plain classifier;
  (b) logits + all attention: Predictor.predict (what `classify` runs);
  (c) classify + all maps: Predictor.predict + rollout + raw + patch map + class
      gradients + gradient rollout + mean attention distance (model and NumPy
      compute only, no image encoding). Target: p50 <= 5 ms on the 2-core CPU;
  (c') the same without the class map, i.e. without the backward pass;
  (d) batch-64 throughput (images/s) with and without attention;
  (e) the occlusion map: 64 masked copies through Predictor.probabilities in
      one batch (target <= 30 ms), and (e') the sliding 2x2 window (49 masks);
  (f) one image's deletion curves for the page's 4 maps (62 images, one batch);
plus eager `model(x)` and `model.predict(x)` single-image latency for contrast.
Every path runs the folder's test-time flip setting (two views per image when
on; --test-time-flip on|off forces it, and (a) then runs both views too).
Every latency is the median over --repeats runs of p50 / p95 of --iters calls.

Last line: `p50_ms=... p95_ms=... maps_p50_ms=... batch64_ips=... ...` where
p50/p95 are (b), maps_p50_ms is (c), batch64_ips is (d) without attention
(`batch64_attn_ips` with), `logits_p50_ms` is (a), `occlusion_p50_ms` is (e),
`curves_p50_ms` is (f); `gflops_per_image` is one image classified (one
forward pass, or two with the test-time flip).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np
from _common import (add_model_args, flip_setting, forward_flops, load_model, print_table,
                     repeated_latency, time_calls)


def maps_steps(pred, image, class_map: bool = True):
    """The per-request compute of classify + every explanation, as named steps.

    class_map=False leaves out the class-specific map, and with it the
    backward pass: one forward (Predictor.predict) feeds the other maps.
    """
    from vit import explain

    hc, last = pred.has_class_token, pred.num_blocks - 1
    centre = (pred.grid_size // 2) * pred.grid_size + pred.grid_size // 2
    state = {}

    def forward_backward():  # what the app's first view runs: one compiled program
        _, state["attn"], state["grads"], _ = pred.explain_one(image)

    def forward():
        state["attn"] = [a[0] for a in pred.predict(image[None])[1]]

    steps = [
        ("explain_one (fwd+bwd)", forward_backward) if class_map
        else ("Predictor.predict (fwd)", forward),
        ("attention rollout", lambda: explain.attention_rollout(state["attn"],
                                                                has_class_token=hc)),
        ("raw attention", lambda: explain.raw_attention(state["attn"], last,
                                                        has_class_token=hc)),
        ("patch map", lambda: explain.patch_attention(state["attn"], last, centre,
                                                      has_class_token=hc)),
        ("gradient rollout", lambda: explain.gradient_rollout(state["attn"], state["grads"],
                                                              has_class_token=hc)),
        ("attention distance", lambda: explain.mean_attention_distance(
            state["attn"], pred.grid_size, pred.patch_px, has_class_token=hc)),
    ]
    return [step for step in steps if class_map or step[0] != "gradient rollout"]


def batch_ips(fn, batch: np.ndarray, repeats: int, iters: int) -> float:
    """Images/s: batch size over the median batch time of each repeat, median of repeats."""
    rates = [len(batch) / (statistics.median(time_calls(lambda: fn(batch), iters, 1)) / 1000)
             for _ in range(repeats)]
    return statistics.median(rates)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(p)
    p.add_argument("--repeats", type=int, default=5, help="runs per measurement (median)")
    p.add_argument("--iters", type=int, default=200, help="calls per run of the fast paths")
    p.add_argument("--batch-iters", type=int, default=20, help="batches per run")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.iters, args.batch_iters = 2, 5, 2

    import tensorflow as tf

    from vit.inference import Predictor

    model, described = load_model(args.model)
    flip = flip_setting(args)
    t0 = time.perf_counter()
    pred = Predictor(model, warmup=True, test_time_flip=flip)  # compiles both programs
    compile_s = time.perf_counter() - t0
    size = pred.image_size
    views = "on (2 views per image)" if flip else "off"
    print(f"model: {described}\n{pred.num_blocks} blocks x {pred.num_heads} heads, "
          f"{pred.num_tokens} tokens; test-time flip {views}; "
          f"XLA compile + warm-up {compile_s:.1f} s")

    spec = tf.TensorSpec((None, size, size, 3), tf.uint8)

    def logits(im):  # the network alone, on the views the Predictor runs
        x = tf.cast(im, tf.float32)
        return model(tf.concat([x, tf.reverse(x, [2])], 0) if flip else x, training=False)

    logits_fn = tf.function(logits, input_signature=[spec], jit_compile=True)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8)
    cycle = itertools.cycle(range(len(pool)))

    def one(fn):
        return lambda: fn(pool[next(cycle)])

    def all_maps(image, class_map=True):
        for _, step in maps_steps(pred, image, class_map):
            step()

    from vit import faithfulness

    grid, base = pred.grid_size, pred.baseline_pixel

    def occlusion(image, window=1):
        return faithfulness.occlusion_map(pred.probabilities, image, 0, grid, base,
                                          window=window, reference=0.5)

    maps4 = [np.random.default_rng(i).random((grid, grid)) for i in range(4)]

    def curves(image):
        return faithfulness.perturbation_curves(pred.probabilities, image, maps4, [0] * 4,
                                                grid, base, modes=("deletion",))

    r, n = args.repeats, args.iters
    slow_n = max(2, n // 4)
    occ_n = max(2, n // 10)
    paths = [
        ("(a) logits only, XLA", one(lambda im: logits_fn(tf.constant(im[None])).numpy()), n),
        ("(b) logits + attention (Predictor.predict)", one(lambda im: pred.predict(im[None])), n),
        ("(c) classify + all maps", one(all_maps), n),
        ("(c') classify + all maps except the class map (forward only)",
         one(lambda im: all_maps(im, class_map=False)), n),
        ("(e) occlusion map, 64 masks in one batch", one(occlusion), occ_n),
        ("(e') occlusion, sliding 2x2 window (49 masks)", one(lambda im: occlusion(im, 2)),
         occ_n),
        ("(f) deletion curves of 4 maps (62 images, one batch)", one(curves), occ_n),
        ("eager model(x)", one(lambda im: model(tf.constant(im[None], tf.float32),
                                                training=False).numpy()), slow_n),
        ("model.predict(x)", one(lambda im: model.predict(im[None].astype(np.float32),
                                                          verbose=0)), slow_n),
    ]
    latency = {}
    for name, fn, iters in paths:
        latency[name] = repeated_latency(fn, r, iters)
    print_table(["single image", "p50 ms", "p95 ms"],
                [[k, f"{a:.2f}", f"{b:.2f}"] for k, (a, b) in latency.items()],
                f"Latency (median of {r} runs; {n} calls each, {slow_n} for the slow ones)")

    image = pool[0]
    steps = maps_steps(pred, image)
    for _, step in steps:  # fill the shared state once
        step()
    rows = [[name, f"{repeated_latency(step, r, n)[0]:.3f}"] for name, step in steps]
    print_table(["step of (c)", "p50 ms"], rows, "Where (c) spends its time")

    plain = batch_ips(lambda b: logits_fn(tf.constant(b)).numpy(), pool, r, args.batch_iters)
    attn = batch_ips(pred.predict, pool, r, args.batch_iters)
    print_table(["batch of 64", "images/s"],
                [["(d) logits only, XLA", f"{plain:.0f}"],
                 ["(d) logits + attention (Predictor.predict)", f"{attn:.0f}"]],
                "Throughput")

    p50, p95 = latency[paths[1][0]]
    maps, forward_maps = latency[paths[2][0]][0], latency[paths[3][0]][0]
    occ, curve_ms = latency[paths[4][0]][0], latency[paths[6][0]][0]
    flops = forward_flops(model) * (2 if flip else 1)  # per image classified: both views
    verdict = "meets" if maps <= 5.0 else "MISSES"
    print(f"\n(c) classify + all maps p50 = {maps:.2f} ms: {verdict} the <= 5 ms target "
          f"(without the class map's backward pass: {forward_maps:.2f} ms)")
    print(f"(e) occlusion p50 = {occ:.1f} ms: {'meets' if occ <= 30 else 'MISSES'} the "
          f"<= 30 ms target. One image is {flops / 1e6:.0f} MFLOP, so 64 masks are "
          f"{64 * flops / 1e9:.1f} GFLOP: {64 * flops / occ / 1e6:.0f} GFLOP/s achieved, "
          f"{plain * flops / 1e9:.0f} GFLOP/s at batch-64 throughput")
    print(f"p50_ms={p50:.3f} p95_ms={p95:.3f} maps_p50_ms={maps:.3f} batch64_ips={plain:.1f} "
          f"batch64_attn_ips={attn:.1f} logits_p50_ms={latency[paths[0][0]][0]:.3f} "
          f"forward_maps_p50_ms={forward_maps:.3f} occlusion_p50_ms={occ:.2f} "
          f"curves_p50_ms={curve_ms:.2f} gflops_per_image={flops / 1e9:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
