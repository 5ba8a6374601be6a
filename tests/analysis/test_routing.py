"""The routing recorder, token-grid mapping and diagnostics (``petl_kit.analysis.routing``), its
figures (``petl_kit.views.routing_plots``) and the mixture cost helpers
(``petl_kit.efficiency``)."""

import math

import pytest
import torch

import petl_kit as pk
from petl_kit import efficiency
from petl_kit.analysis import routing
from petl_kit.analysis.routing import RoutingRecorder
from petl_kit.views import routing_plots
from tests.conftest import example_input

CFG = {"reduction_rate": 8, "num_adapters": 3}


def _model(method, family="ast", **cfg):
    return pk.build_model(
        family,
        backbone_config="tiny",
        num_classes=4,
        method=method,
        method_config={**CFG, "expert_init": "reference_effective", **cfg},
        seed=0,
    ).eval()


@pytest.mark.parametrize("family", ["ast", "wav2vec2"])
def test_recorder_shapes_and_sites(family):
    x, mask = example_input(family, batch=3)
    dense = _model("dense_moa", family, adapter_type="Houlsby")
    soft = _model("soft_moa", family, num_slots=2, location="FFN")
    with RoutingRecorder(dense) as rd, RoutingRecorder(soft) as rs:
        dense(x, mask)
        soft(x, mask)
        dense(x, mask)  # a second call is appended along the batch axis
    n = rd.records[(0, "MHSA")][0]["probs"].shape[1]
    assert n == (110 if family == "ast" else rs.get("dispatch", 1).shape[1])
    assert rd.sites == [(0, "MHSA"), (0, "FFN"), (1, "MHSA"), (1, "FFN")]
    assert rs.sites == [(0, "FFN"), (1, "FFN")] and rs.num_layers == 2
    probs = rd.get("probs", 1, "FFN")
    assert probs.shape == (6, n, 3) and torch.allclose(probs.sum(-1), torch.ones(6, n))
    assert rs.get("dispatch", 0).shape == rs.get("combine", 0).shape == (3, n, 3, 2)
    with pytest.raises(KeyError, match="give site="):
        rd.get("probs", 0)
    with pytest.raises(KeyError, match="records.*'probs'"):
        rd.get("dispatch", 0, "MHSA")


def test_grid_mapping_follows_the_ast_patch_order():
    """Token 2 + f·T + t is the patch at frequency row f (from the lowest mel band) and time
    column t: a bright spot in the spectrogram changes exactly the patches that cover it."""
    model = _model("soft_moa")
    layout = routing.token_layout(model, 110)
    assert layout.kind == "patches" and layout.num_special == 2 and layout.grid == (12, 9)
    special, grid = routing.to_grid(torch.arange(110)[None, :, None], layout)
    assert special.flatten().tolist() == [0, 1] and grid[0, 3, 5, 0] == 2 + 3 * 9 + 5
    patches = model.backbone.embeddings.patch_embeddings
    x = torch.zeros(1, 100, 128)
    x[0, 55, 35] = 10.0  # frame 55, mel bin 35
    with torch.no_grad():
        changed = (patches(x) - patches(torch.zeros_like(x))).abs().sum(-1)[0] > 0  # [F·T]
    _, hit = routing.to_grid(torch.cat([torch.zeros(2, dtype=torch.bool), changed])[None], layout)
    fs, ts = layout.stride
    expected = torch.zeros(12, 9, dtype=torch.bool)
    for f in range(12):
        for t in range(9):
            expected[f, t] = f * fs <= 35 < f * fs + layout.patch and t * ts <= 55 < t * ts + 16
    assert expected.sum() == 4 and torch.equal(hit[0], expected)


def test_frame_layout():
    model = _model("dense_moa", "wav2vec2")
    layout = routing.token_layout(model, 12)
    assert layout.kind == "frames" and layout.hop_seconds == pytest.approx(0.02)
    assert routing.frame_times(layout, 3).tolist() == pytest.approx([0.0, 0.02, 0.04])
    with pytest.raises(ValueError, match="frame models map with frame_times"):
        routing.to_grid(torch.zeros(1, 12), layout)


@pytest.mark.parametrize("method", ["dense_moa", "soft_moa"])
def test_outputs_identical_with_recorder_on_and_off(method):
    model = _model(method, normalize=True) if method == "soft_moa" else _model(method)
    x, _ = example_input("ast")
    with torch.no_grad():
        off = model(x)
        with RoutingRecorder(model) as rec:
            on = model(x)
        after = model(x)
    assert torch.equal(on, off) and torch.equal(after, off)
    assert len(rec.records) == 2  # one per layer, one call each
    assert all(m.recorder is None for m in routing.mixture_modules(model))  # off again: no cost
    model.train()
    with RoutingRecorder(model) as rec:  # recording under autograd keeps no graph
        model(x).sum().backward()
    assert not any(t.requires_grad for call in rec.records.values() for t in call[0].values())


def test_recorder_needs_a_mixture_and_is_exclusive():
    with pytest.raises(ValueError, match="no mixture of adapters"):
        RoutingRecorder(pk.build_model("ast", backbone_config="tiny", method="linear"))
    model = _model("dense_moa")
    with RoutingRecorder(model), pytest.raises(RuntimeError, match="already attached"):
        RoutingRecorder(model).__enter__()


def test_diagnostics():
    probs = torch.softmax(torch.randn(4, 10, 5), -1)
    assert torch.allclose(routing.expert_load(probs).sum(), torch.tensor(1.0))
    uniform = torch.full((2, 3, 4), 0.25)
    assert torch.allclose(routing.routing_entropy(uniform), torch.full((2, 3), math.log(4)))
    assert routing.routing_entropy(torch.tensor([1.0, 0.0])) == 0
    d = torch.softmax(torch.randn(2, 10, 3, 2), dim=1)
    assert torch.allclose(routing.slot_coverage(d).sum(1), torch.full((2,), 6.0))
    eff = routing.effective_tokens_per_slot(d)
    assert eff.shape == (2, 3, 2) and ((eff >= 1) & (eff <= 10)).all()
    c = torch.softmax(torch.randn(4, 10, 6), -1).reshape(4, 10, 3, 2)
    by_class = routing.load_by_class(c, [0, 2, 0, 2], num_classes=3)
    assert by_class.shape == (3, 3) and torch.isnan(by_class[1]).all()
    assert torch.allclose(by_class[0], routing.per_example_load(c)[[0, 2]].mean(0))


def test_summary_table():
    x, _ = example_input("ast")
    for method, cols in (
        ("dense_moa", set()),
        ("soft_moa", {"dispatch_entropy", "tokens_per_slot"}),
    ):
        model = _model(method)
        with RoutingRecorder(model) as rec:
            model(x)
        table = rec.summary()
        assert len(table) == 2 and {"layer", "site", "load", "entropy", *cols} <= set(table.columns)
        assert ((table.entropy > 0) & (table.entropy <= 1)).all()


def test_flops_soft_cheaper_than_dense():
    x, _ = example_input("ast")
    flops = {
        m: efficiency.flops_per_example(_model(m, num_adapters=7, reduction_rate=4), x)
        for m in ("dense_moa", "soft_moa")
    }
    assert 0 < flops["soft_moa"]["method"] < flops["dense_moa"]["method"]
    assert flops["dense_moa"]["total"] > flops["dense_moa"]["method"]
    fwd_bwd = efficiency.flops_per_example(_model("soft_moa"), x, backward=True)["total"]
    assert fwd_bwd > flops["soft_moa"]["total"]


def test_step_seconds_interleaves():
    x, _ = example_input("ast")
    models = {m: _model(m) for m in ("dense_moa", "soft_moa")}
    times = efficiency.step_seconds(models, x, torch.tensor([0, 1]), repeats=2, warmup=1)
    assert {k: len(v["wall"]) for k, v in times.items()} == {"dense_moa": 2, "soft_moa": 2}
    assert all(t > 0 for v in times.values() for clock in ("wall", "cpu") for t in v[clock])


def test_figures():
    import matplotlib

    matplotlib.use("Agg")
    model = _model("soft_moa", num_slots=2)
    dense = _model("dense_moa")
    x, _ = example_input("ast")
    with RoutingRecorder(model) as rec, RoutingRecorder(dense) as rd:
        model(x)
        dense(x)
    _, grid = rec.on_grid("dispatch", 1)
    figs = [
        routing_plots.plot_slot_dispatch(x[0], grid[0]),
        routing_plots.plot_combine(rec.get("combine", 1)[0]),
        routing_plots.plot_load_by_class(
            routing.load_by_class(rec.get("combine", 1), [0, 1]), ["a", "b"]
        ),
        routing_plots.plot_probs_over_time(rd.get("probs", 0)[0], rd.layout(110)),
    ]
    assert all(len(f.axes) >= 1 for f in figs)


def test_record_loader_aligns_clips_and_labels():
    model = _model("soft_moa").train()
    x, _ = example_input("ast", batch=4)
    loader = [
        {"input_values": x[:2], "labels": torch.tensor([0, 1])},
        {"input_values": x[2:], "labels": torch.tensor([2, 3])},
    ]
    rec, inputs, labels = routing.record_loader(model, loader, max_batches=None)
    assert model.training  # mode restored
    assert torch.equal(inputs, x) and labels.tolist() == [0, 1, 2, 3]
    assert rec.get("combine", 1).shape[0] == 4
    with RoutingRecorder(model) as one:
        model.eval()(x[2:3])
    assert torch.allclose(one.get("dispatch", 0)[0], rec.get("dispatch", 0)[2], atol=1e-6)
    rec, inputs, _ = routing.record_loader(model, loader, max_batches=1)
    assert inputs.shape[0] == rec.get("dispatch", 0).shape[0] == 2


def test_mixture_costs_table_and_figure():
    import matplotlib

    matplotlib.use("Agg")
    x, _ = example_input("ast")
    models = {m: _model(m) for m in ("dense_moa", "soft_moa")}
    table = efficiency.mixture_costs(models, x, torch.tensor([0, 1]), repeats=1, warmup=0)
    assert list(table.index) == ["dense_moa", "soft_moa"]
    assert {"trainable", "gflops", "method_mflops", "step_ms", "step_cpu_ms"} <= set(table.columns)
    table = table.reset_index(names="model").assign(experts=3, accuracy=0.5)
    assert len(routing_plots.plot_mixture_comparison(table).axes) >= 4


@pytest.mark.parametrize(
    "method,family", [("soft_moa", "ast"), ("soft_moa", "wav2vec2"), ("dense_moa", "wav2vec2")]
)
def test_plot_clip_picks_the_figure(method, family):
    import matplotlib

    matplotlib.use("Agg")
    model = _model(method, family, adapter_type="Houlsby")
    x, mask = example_input(family)
    with RoutingRecorder(model) as rec:
        model(x, mask)
    fig = routing_plots.plot_clip(rec, x, clip=1, layer=-1, site="FFN")
    assert "layer 1 FFN" in " ".join(a.get_title() for a in fig.axes)
