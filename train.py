"""Train a ViT on CIFAR-100, evaluate it, and write a model folder.

    python train.py --preset compact --data-dir ../shared/data/cifar100
    python train.py --preset compact --output-dir runs/compact --resume   # after Ctrl-C
    python train.py --preset compact --keep-checkpoints 10   # then scripts/average_checkpoints.py
    python train.py --preset tiny --epochs 2 --limit-train 2048            # smoke run
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker",
        "index": 0}}' python train.py --strategy multiworker   # on each machine (index 0, 1, ...)
    python train.py --preset compact --init-from vit/weights --epochs 2 --lr 1e-4 \
        --set warmup_epochs=0 resample_prob=0.5 --output-dir runs/finetune  # fine-tune

Writes OUTPUT_DIR/{config.json, metadata.json, model.weights.h5, labels.json,
metrics.json, history.csv, curves.png, calibration.json, reliability.png,
README.md} and OUTPUT_DIR/checkpoint/ (in a multi-worker run, only the chief does).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="compact", help="tutorial | compact | gpu | tiny")
    p.add_argument("--epochs", type=int, help="default: the preset's")
    p.add_argument("--batch-size", type=int, help="default: the preset's")
    p.add_argument("--lr", type=float, help="peak learning rate; default: the preset's")
    p.add_argument("--weight-decay", type=float, help="AdamW decay; default: the preset's")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="FIELD=VALUE",
                   help="override any ViTConfig field, e.g. resample_prob=0.5 warmup_epochs=0")
    p.add_argument("--init-from", metavar="FOLDER|USER/REPO",
                   help="start from these weights (same architecture): fine-tuning")
    p.add_argument("--data-dir", help="CIFAR-100 python folder (else $CIFAR100_DIR, else download)")
    p.add_argument("--output-dir", help="default: runs/<preset>")
    p.add_argument("--limit-train", type=int, metavar="N", help="use the first N training images")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint")
    p.add_argument("--keep-checkpoints", type=int, metavar="N",
                   help="keep the last N epoch checkpoints (for scripts/average_checkpoints.py); "
                        "default 1, or the resumed run's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", choices=["off", "bf16", "fp16"], default="off")
    p.add_argument("--jit", action="store_true", help="XLA-compile the train step")
    p.add_argument("--strategy", choices=["auto", "mirrored", "default", "multiworker"],
                   default="auto",
                   help="auto: MirroredStrategy when more than one GPU is visible; "
                        "multiworker: data-parallel across the TF_CONFIG cluster")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="split the CPU into N logical devices (to try --strategy mirrored)")
    p.add_argument("--push-to-hub", metavar="USER/REPO",
                   help="after training, upload the output folder (minus checkpoint/) to this Hub repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    return p.parse_args(argv)


def parse_overrides(config, items: list[str]) -> dict:
    """["resample_prob=0.5", "conv_channels=64,128"] -> typed ViTConfig changes."""
    from vit.config import ARCHITECTURE_FIELDS, RECIPE_FIELDS

    fields = set(ARCHITECTURE_FIELDS) | set(RECIPE_FIELDS)
    changes = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{', '.join(sorted(fields))}")
        current = config.get(name)
        try:
            if isinstance(current, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value = text.lower() in ("true", "1")
            elif isinstance(current, tuple):
                value = tuple(int(v) for v in text.split(",") if v)
            else:
                value = type(current)(text)
        except ValueError:
            raise ValueError(f"--set {item!r}: {text!r} is not a valid "
                             f"{type(current).__name__}") from None
        changes[name] = value
    return changes


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.keep_checkpoints is not None and args.keep_checkpoints < 1:
        print("error: --keep-checkpoints must be at least 1", file=sys.stderr)
        return 2
    import tensorflow as tf

    if args.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
    from vit import distribute

    try:  # before any other TF op: a multi-worker strategy configures collectives
        strategy = distribute.select_strategy(args.strategy)
    except distribute.TFConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import vit
    from vit import data, training

    try:
        config = vit.get_preset(args.preset)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size,
                 "learning_rate": args.lr, "weight_decay": args.weight_decay}
    config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    try:
        config = config.replace(**parse_overrides(config, args.set))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    init_from = None
    if args.init_from:
        from vit import hub

        try:
            # strict: never silently start from the bundled model instead
            init_from, notice = hub.resolve_model(args.init_from, strict=True)
        except (hub.HubError, ValueError) as exc:
            print(f"error: --init-from {args.init_from}: {exc}", file=sys.stderr)
            return 2
        if notice:  # e.g. offline, using the cached copy
            print(f"note: {notice}")
        from vit import fine_tuning, model_folder

        try:
            fine_tuning.check_same_architecture(init_from, config)
            overlap = fine_tuning.held_out_overlap(init_from, config)
            if overlap:
                print(f"warning: {overlap}", file=sys.stderr)
            model_folder.verify_model_folder(init_from)
        except (ValueError, model_folder.ModelIntegrityError) as exc:
            print(f"error: --init-from: {exc}", file=sys.stderr)
            return 2
    output_dir = args.output_dir or os.path.join("runs", args.preset)
    try:
        dataset = data.load_cifar100(args.data_dir)
    except data.DataUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python train.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        model, state = training.fit(
            config, dataset, output_dir, seed=args.seed, resume=args.resume,
            limit_train=args.limit_train, jit=args.jit, mixed_precision=args.mixed_precision,
            strategy=strategy,
            verbose="auto" if sys.stdout.isatty() else 2, init_from=init_from,
            init_name=args.init_from, command=command, keep_checkpoints=args.keep_checkpoints,
            preset=args.preset)
    except training.ExistingRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if distribute.is_multi_worker(strategy):
        print(f"{distribute.task_name(strategy)}: final weights sha256 "
              f"{distribute.weights_digest(model)}")
    # only the chief evaluates, writes OUTPUT_DIR and pushes; the others wait for its status
    return distribute.on_chief(strategy, lambda: finish(args, model, state, dataset,
                                                        output_dir, command))


def finish(args, model, state, dataset, output_dir: str, command: str) -> int:
    """Evaluate, write the model folder, push: the end of a run (on the chief)."""
    from vit import export

    # the command that started the run (a resume adds nothing to how to reproduce it)
    command = state.get("command") or command
    metrics = export.export_run(model, state, dataset, output_dir,
                                preset=state.get("preset") or args.preset, command=command)
    print(f"test top1={metrics['test_top1']:.4f} top5={metrics['test_top5']:.4f} "
          f"loss={metrics['test_loss']:.4f} -> {output_dir}")
    if args.push_to_hub:
        from vit import hub

        try:
            info = hub.push_model_folder(output_dir, args.push_to_hub, private=args.private)
        except (hub.HubError, hub.ModelIntegrityError) as exc:
            print(f"error: {exc} (retry with: python -m vit.hub push {output_dir} "
                  f"{args.push_to_hub})", file=sys.stderr)
            return 1
        print(f"pushed to {info.repo_url} (commit {info.oid[:7]})")
    return 0

if __name__ == "__main__":
    sys.exit(main())
