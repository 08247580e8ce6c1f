"""The PNG learning curves runs and scripts/replicate.py write: a grid with a title naming env,
method and run, updates counted from 1; comparisons one panel per method."""

import json
import struct

from opid_train.metrics import plot_comparison, plot_curves, run_title


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_a_runs_curves_are_a_grid_titled_with_env_method_and_run(tmp_path):
    run = tmp_path / "alf-opid-seed0"
    run.mkdir()
    (run / "config.yaml").write_text("env: OPID/ALFWorld-v0\nenv_kwargs: {level: easy}\nalgo: opid\n")
    keys = ["success", "score", "loss", "pg_loss", "kl", "pg_clipfrac", "format_invalid_rate", "mean_steps"]
    (run / "metrics.jsonl").write_text("".join(json.dumps({"update": u, **{k: u / 10 for k in keys}}) + "\n"
                                               for u in range(12)))
    assert run_title(run) == "OPID/ALFWorld-v0 (easy) · OPID · alf-opid-seed0"
    width, height = png_size(plot_curves(run / "metrics.jsonl", tmp_path / "curves.png"))
    assert width / height < 3 and height >= 450  # 2 rows of 4 panels, not one 2560 x 280 strip (was 2560 x 280)


def test_a_comparison_gives_each_method_its_own_panel(tmp_path):
    curves = {f"method {m}": [[0.5 + 0.01 * (m + s + u) for u in range(10)] for s in range(3)] for m in range(9)}
    width, height = png_size(plot_comparison(curves, tmp_path / "cmp.png", "success", "study", reference="method 0"))
    assert 0.5 < width / height < 2  # a 3 x 3 grid (one panel held all nine bands: 840 x 480)
    assert plot_comparison({"empty": []}, tmp_path / "none.png", "success", "study") is None
