"""Compare trained models by accuracy per CPU-hour: the README's preset table.

    python scripts/compare_runs.py vit/weights runs/tutorial --out docs/presets.png
    python scripts/compare_runs.py vit/weights runs/compact-mix   # a run still in training

Each argument is a model folder written by train.py (metrics.json and
history.csv; a fine-tuned model's history covers every stage), or the
--output-dir of a run still in training (its checkpoint's history; no test
scores yet), which tells early whether a new recipe is on course. Prints a
Markdown table: parameters, training images/s, epochs, CPU hours, test
top-1/top-5, and the validation top-1 each run had reached when the shortest
run ended, which is the fair comparison when budgets differ (a longer run is
then mid-schedule, so this slightly favours the shorter one). --out plots
validation top-1 against cumulative CPU hours.

--per-epoch compares at equal epochs instead (the table's last column is the
validation top-1 at the shortest run's last epoch; the plot's x axis is the
epoch): the fair axis for an ablation whose arms ran side by side on a shared
machine, where wall hours measure the neighbours as much as the recipe.

    python scripts/compare_runs.py runs/pilot-basic runs/pilot-trivial --per-epoch
"""

import argparse
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vit.model_folder import read_history_csv  # noqa: E402


def load_run(folder: str) -> dict:
    if not os.path.isfile(os.path.join(folder, "metrics.json")) and \
            os.path.isfile(os.path.join(folder, "checkpoint", "latest.json")):
        return load_run_in_training(folder)
    with open(os.path.join(folder, "metrics.json")) as f:
        metrics = json.load(f)
    history = read_history_csv(os.path.join(folder, "history.csv"))
    hours = cumulative_hours(history)
    elapsed = 3600 * hours[-1] if hours else 0.0
    if abs(elapsed - metrics.get("train_seconds", elapsed)) > 60:
        print(f"warning: {folder}: history.csv covers {elapsed / 3600:.2f} h of the "
              f"{metrics['train_seconds'] / 3600:.2f} h in metrics.json", file=sys.stderr)
    return {"folder": folder, "metrics": metrics, "history": history, "hours": hours}


def load_run_in_training(folder: str) -> dict:
    """A train.py run that has not finished: its checkpoint's history, no test scores."""
    import vit
    from vit import fine_tuning, training
    from vit.config import ViTConfig

    state = training.read_checkpoint_state(os.path.join(folder, training.CHECKPOINT_DIR))
    history = state["history"]
    seconds = sum(row["train_seconds"] for row in history)
    images = sum(row["train_seconds"] * row["images_per_second"] for row in history)
    config = ViTConfig.from_dict(state["config"])
    metrics = {"preset": state.get("preset") or fine_tuning.preset_with_architecture(config) or "?",
               "parameters": vit.build_vit(config).count_params(),
               "images_per_second": images / seconds if seconds else None,
               "epochs": f"{state['epoch']} of {config.recipe.epochs}", "train_seconds": seconds,
               "test_top1": None, "test_top5": None}
    return {"folder": folder, "metrics": metrics, "history": history,
            "hours": cumulative_hours(history)}


def cumulative_hours(history: list[dict]) -> list[float]:
    """Hours of training when each epoch ended."""
    return list(itertools.accumulate(row["train_seconds"] / 3600 for row in history))


def _percent(value) -> str:
    return "in training" if value is None else f"{100 * value:.1f}%"


def val_top1_at(run: dict, hours: float) -> float | None:
    """Validation top-1 after the last epoch finished within `hours` of training."""
    reached = [row.get("val_top1") for row, h in zip(run["history"], run["hours"])
               if h <= hours + 1e-9]
    return reached[-1] if reached else None


def val_top1_at_epoch(run: dict, epoch: int) -> float | None:
    """Validation top-1 after the run's `epoch`-th epoch (counting every stage)."""
    rows = run["history"]
    return rows[epoch - 1].get("val_top1") if 0 < epoch <= len(rows) else None


def table(runs: list[dict], per_epoch: bool = False) -> str:
    if per_epoch:
        budget = min(len(run["history"]) for run in runs)
        last = f"val top-1 at epoch {budget}"
    else:
        budget = min(run["hours"][-1] for run in runs)
        last = f"val top-1 after {budget:.2f} h"
    lines = [f"| model | parameters | train img/s | epochs | CPU hours | test top-1 | test top-5 "
             f"| {last} |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        m = run["metrics"]
        at = val_top1_at_epoch(run, budget) if per_epoch else val_top1_at(run, budget)
        epochs = m.get("epochs", len(run["history"]))
        hours = m.get("train_seconds", 3600 * run["hours"][-1]) / 3600
        lines.append(
            f"| `{m.get('preset', '?')}` ({run['folder']}) | {m.get('parameters', 0):,} "
            f"| {m.get('images_per_second') or 0:.0f} | {epochs} | {hours:.2f} "
            f"| {_percent(m['test_top1'])} | {_percent(m['test_top5'])} "
            f"| {'–' if at is None else f'{100 * at:.1f}%'} |")
    return "\n".join(lines)


def plot(runs: list[dict], path: str, per_epoch: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for run in runs:
        m = run["metrics"]
        x = range(1, len(run["history"]) + 1) if per_epoch else run["hours"]
        ax.plot(x, [100 * row.get("val_top1", float("nan")) for row in run["history"]],
                marker=".", label=f"{m.get('preset', '?')}, {run['folder']} "
                                  f"({m.get('parameters', 0) / 1e6:.1f}M params, "
                                  f"test {_percent(m['test_top1'])})")
    ax.set_xlabel("epoch" if per_epoch else "hours of training")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("CIFAR-100: accuracy per epoch" if per_epoch
                 else "CIFAR-100: accuracy per CPU-hour")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="train.py model folders")
    p.add_argument("--out", help="also write the validation-vs-CPU-hours plot here (PNG)")
    p.add_argument("--per-epoch", action="store_true",
                   help="compare at equal epochs, not equal hours (arms run side by side)")
    args = p.parse_args(argv)
    try:
        runs = [load_run(folder) for folder in args.folders]
        if any(not run["history"] for run in runs):
            raise ValueError("a folder has an empty history.csv")
        print(table(runs, args.per_epoch))
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {exc!s}", file=sys.stderr)
        return 2
    if args.out:
        plot(runs, args.out, args.per_epoch)
        print(f"plot -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
