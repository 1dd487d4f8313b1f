"""scripts/compare_runs.py: the accuracy-per-CPU-hour table and plot."""

import json
import sys

from tests.conftest import ROOT
from vit.model_folder import write_history_csv

sys.path.insert(0, str(ROOT / "scripts"))
import compare_runs  # noqa: E402


def make_run(folder, preset, seconds_per_epoch, val_top1s, test_top1):
    folder.mkdir()
    history = [{"epoch": i + 1, "val_top1": v, "train_seconds": seconds_per_epoch,
                "images_per_second": 100.0} for i, v in enumerate(val_top1s)]
    write_history_csv(history, str(folder / "history.csv"))
    (folder / "metrics.json").write_text(json.dumps({
        "preset": preset, "parameters": 1000, "images_per_second": 100.0,
        "test_top1": test_top1, "test_top5": 0.9}))
    return str(folder)


def test_table_compares_at_the_shorter_runs_budget(tmp_path, capsys):
    # fast: 4 epochs of 1 h; slow: 2 epochs of 3 h. The budget is the fast run's 4 h.
    fast = make_run(tmp_path / "fast", "compact", 3600, [0.2, 0.3, 0.4, 0.5], 0.51)
    slow = make_run(tmp_path / "slow", "tutorial", 3 * 3600, [0.25, 0.45], 0.46)
    assert compare_runs.main([fast, slow, "--out", str(tmp_path / "plot.png")]) == 0
    out = capsys.readouterr().out
    assert "val top-1 after 4.00 h" in out
    fast_row = next(line for line in out.splitlines() if "`compact`" in line)
    slow_row = next(line for line in out.splitlines() if "`tutorial`" in line)
    assert fast_row.endswith("| 4 | 4.00 | 51.0% | 90.0% | 50.0% |")
    # after 4 h the slow run had finished only its first epoch (3 h)
    assert slow_row.endswith("| 2 | 6.00 | 46.0% | 90.0% | 25.0% |")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert compare_runs.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_a_run_in_training_is_compared_from_its_checkpoint(tmp_path, capsys):
    import vit

    done = make_run(tmp_path / "done", "compact", 3600, [0.2, 0.3, 0.4, 0.5], 0.51)
    running = tmp_path / "running"
    (running / "checkpoint").mkdir(parents=True)
    config = vit.get_preset("tiny").replace(epochs=10)
    (running / "checkpoint" / "latest.json").write_text(json.dumps({
        "epoch": 2, "config": config.to_dict(),  # no "preset": as older checkpoints
        "history": [{"epoch": 1, "val_top1": 0.3, "train_seconds": 3600, "images_per_second": 50},
                    {"epoch": 2, "val_top1": 0.45, "train_seconds": 3600,
                     "images_per_second": 150}]}))
    assert compare_runs.main([done, str(running), "--out", str(tmp_path / "plot.png")]) == 0
    out = capsys.readouterr().out
    assert "val top-1 after 2.00 h" in out  # the run in training sets the budget
    row = next(line for line in out.splitlines() if "running" in line)
    params = vit.build_vit(config).count_params()
    assert row == (f"| `tiny` ({running}) | {params:,} | 100 | 2 of 10 | 2.00 "
                   "| in training | in training | 45.0% |")
    done_row = next(line for line in out.splitlines() if "`compact`" in line)
    assert done_row.endswith("| 30.0% |")


def test_per_epoch_compares_at_the_shorter_runs_last_epoch(tmp_path, capsys):
    # Arms of an ablation that shared a machine: the slow one's hours say nothing
    # about its recipe, so compare epoch 2 with epoch 2.
    fast = make_run(tmp_path / "fast", "compact", 3600, [0.2, 0.3, 0.4], 0.41)
    slow = make_run(tmp_path / "slow", "compact", 5 * 3600, [0.25, 0.35], 0.36)
    plot = tmp_path / "plot.png"
    assert compare_runs.main([fast, slow, "--per-epoch", "--out", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "val top-1 at epoch 2" in out
    rows = {name: next(line for line in out.splitlines() if f"/{name})" in line)
            for name in ("fast", "slow")}
    assert rows["fast"].endswith("| 30.0% |")   # its epoch 2, not its last (40%)
    assert rows["slow"].endswith("| 35.0% |")   # by hours: none (its epoch 1 ended at 5 h)
    assert plot.read_bytes()[:4] == b"\x89PNG"
