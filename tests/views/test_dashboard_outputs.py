"""The dashboard's outputs as a reader sees them: each figure output holds exactly one
non-blank PNG after every change, an empty selection clears the figures and says why, music
comparison folders are read, the Pareto column follows the cost on the x axis, log axes only over
an order of magnitude, integer epoch ticks and a chance line."""

import base64
import io
import json

import numpy as np
import pytest
from matplotlib import pyplot as plt
from PIL import Image

from petl_kit.views import plots, widgets
from petl_kit.views.widgets import Dashboard
from tests.conftest import write_run


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    root = tmp_path / "outputs"
    monkeypatch.setenv("PETL_KIT_OUTPUTS", str(root))
    for seed in (0, 1):
        write_run(root, "exp_a", "lora", seed=seed, trainable=5000, score=0.8 + seed / 10,
                  gflops=1.1)  # fmt: skip
    write_run(root, "exp_a", "bitfit", trainable=1000, score=0.7, gflops=1.3)
    write_run(root, "exp_a", "adapter", trainable=6000, score=0.75, gflops=1.0)
    write_run(root, "exp_a", "linear", dataset="esc50", backbone="wav2vec2", trainable=100,
              score=0.5)  # fmt: skip
    # a music comparison: compare-<id>/<method>/ run folders and the comparison's own record
    compare = root / "music_key" / "compare-20260101-000000-abcd"
    compare.mkdir(parents=True)
    for name, score in (("probing", 0.3), ("lora", 0.6)):
        run = write_run(root, "music_key", name, metric="key_weighted_ascending", score=score)
        run.rename(compare / name)
    record = {"status": "completed", "kind": "compare", "method": "compare",
              "runs": ["probing", "lora"]}  # fmt: skip
    (compare / "metrics.json").write_text(json.dumps(record))
    yield root
    plt.close("all")


def _pngs(output):
    """The PNG payloads an ipywidgets Output holds (every display_data with image/png)."""
    return [o["data"]["image/png"] for o in output.outputs if "image/png" in o.get("data", {})]


def _texts(output):
    return "".join(o.get("text", "") for o in output.outputs if o.get("output_type") == "stream")


def _assert_one_drawn_image(dash, key):
    pngs = _pngs(dash.outputs[key])
    assert len(pngs) == 1 and len(dash.outputs[key].outputs) == 1, dash.outputs[key].outputs
    data = pngs[0] if isinstance(pngs[0], bytes) else base64.b64decode(pngs[0])
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
    assert pixels.std() > 10, f"{key}: a blank figure"  # points, lines and text: not uniform
    assert (pixels < 100).mean() > 0.005, f"{key}: hardly anything drawn"


def test_every_change_leaves_one_image_per_output(outputs):
    plt.close("all")  # figures other tests left open are not the dashboard's
    dash = Dashboard("exp_a")
    c = dash.controls
    changes = (
        {},
        {"dataset": "synthetic"},
        {"cost": "gflops"},
        {"metric": "val_accuracy"},
        {"backbone": "ast"},
        {"experiment": "music_key"},
        {"experiment": "exp_a"},
    )
    for change in changes:
        for key, value in change.items():
            c[key].value = value
        for key in ("pareto", "curves"):
            _assert_one_drawn_image(dash, key)
        assert len(dash.outputs["table"].outputs) == 1
    assert not plt.get_fignums()  # every figure closed after drawing


def test_an_empty_selection_clears_the_figures_and_says_why(outputs):
    dash = Dashboard("exp_a")
    dash.controls["dataset"].value = "esc50"
    assert dash.table["method"].tolist() == ["linear"] and len(_pngs(dash.outputs["pareto"])) == 1
    dash.controls["backbone"].value = "ast"  # nothing trained on esc50 with the AST
    assert dash.table.empty and not dash.figures and not dash.images
    assert "no completed runs in exp_a with dataset esc50 and backbone ast" in _texts(
        dash.outputs["table"]
    )
    assert dash.outputs["pareto"].outputs == () and dash.outputs["curves"].outputs == ()
    dash.controls["dataset"].value = "synthetic"  # something again: drawn again
    for key in ("pareto", "curves"):
        _assert_one_drawn_image(dash, key)


def test_music_comparisons_show_up(outputs):
    dash = Dashboard("music_key")
    assert sorted(dash.table["method"]) == ["lora", "probing"]
    assert dash.controls["metric"].value == "test_key_weighted_ascending"
    _assert_one_drawn_image(dash, "pareto")


def test_pareto_column_follows_the_cost_on_the_x_axis(outputs):
    chosen = widgets.select_runs(widgets.load_runs("exp_a"), dataset="synthetic", backbone="ast")
    by_params = widgets.compare_table(chosen, "test_accuracy", cost="trainable_params")
    by_flops = widgets.compare_table(chosen, "test_accuracy", cost="gflops")
    # adapter: dearest in parameters but cheapest in FLOPs
    assert not by_params.set_index("method").loc["adapter", "pareto"]
    assert by_flops.set_index("method").loc["adapter", "pareto"]
    fig = plots.pareto_plot(by_flops, cost="gflops", score="test_accuracy")
    ax = fig.axes[0]
    front = {tuple(p) for p in np.asarray(ax.collections[1].get_offsets()).round(3)}
    table_front = by_flops[by_flops["pareto"]][["gflops", "test_accuracy"]]
    assert front == {tuple(p) for p in table_front.to_numpy().round(3)}
    assert ax.get_xscale() == "linear"  # 1.0 to 1.3 GFLOPs: no log axis
    assert plots.pareto_plot(by_params, score="test_accuracy").axes[0].get_xscale() == "linear"
    wide = by_params.assign(trainable_params=[10, 1000, 100000])
    assert plots.pareto_plot(wide, score="test_accuracy").axes[0].get_xscale() == "log"


def test_curves_have_integer_epochs_every_metric_and_chance():
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_accuracy": 0.1 * e,
                "val_balanced_accuracy": 0.1 * e} for e in (1, 2, 3)]  # fmt: skip
    fig = plots.learning_curves(history, chance=1 / 12)
    right = fig.axes[1]
    fig.canvas.draw()
    ticks = [t for t in right.get_xticks() if right.get_xlim()[0] <= t <= right.get_xlim()[1]]
    assert all(float(t).is_integer() for t in ticks)
    lines = {line.get_label(): line for line in right.lines}
    # equal values: one line named after both, so neither hides under the other
    assert {"val_accuracy = val_balanced_accuracy", "chance (0.083)"} <= set(lines)
    history[0]["val_balanced_accuracy"] = 0.5
    labels = {line.get_label() for line in plots.learning_curves(history).axes[1].lines}
    assert {"val_accuracy", "val_balanced_accuracy"} <= labels
    assert plots.chance_level("multiclass", 12) == pytest.approx(1 / 12)
    assert plots.chance_level("multilabel", 8) is None
    plt.close("all")
