"""Strict backbone loading: every weight from the checkpoint, or a CheckpointError naming it."""

import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    ASTConfig,
    ASTForAudioClassification,
    HubertConfig,
    HubertForSequenceClassification,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
)

import petl_kit as pk
from petl_kit.backbones.registry import load_backbone, tiny_config
from petl_kit.backbones.strict import summary
from petl_kit.errors import CheckpointError


def saved(tmp_path, name, model):
    folder = tmp_path / name
    model.save_pretrained(folder)
    return folder


def edit_weights(folder, edit):
    """Rewrite ``folder/model.safetensors`` through ``edit(state) -> state``."""
    path = folder / "model.safetensors"
    save_file(edit(load_file(str(path))), str(path), metadata={"format": "pt"})


def test_checkpoint_of_another_family_is_refused_naming_both(tiny_checkpoints):
    folder = tiny_checkpoints["wav2vec2"]
    with pytest.raises(CheckpointError) as err:
        load_backbone("ast", folder)
    msg = str(err.value)
    assert str(folder) in msg and "'wav2vec2' model" in msg
    assert "'audio-spectrogram-transformer'" in msg and "backbone 'ast'" in msg
    with pytest.raises(CheckpointError, match="'hubert' model, not 'wav2vec2'"):
        load_backbone("wav2vec2", tiny_checkpoints["hubert"])
    with pytest.raises(CheckpointError, match="'audio-spectrogram-transformer' model, not 'mert"):
        load_backbone("mert", tiny_checkpoints["ast"])


RENAMED = {"encoder.layer.1.attention.attention.key.bias": "layers.1.attention.k_proj.bias"}


@pytest.mark.parametrize("family", ["ast", "wav2vec2", "hubert"])
def test_a_missing_key_is_refused_naming_it(tmp_path, family):
    model = load_backbone(family, None, tiny_config(family))
    folder = saved(tmp_path, family, model)
    gone = sorted(k for k in load_file(str(folder / "model.safetensors")) if ".1." in k)[0]
    edit_weights(folder, lambda s: {k: v for k, v in s.items() if k != gone})
    with pytest.raises(CheckpointError) as err:
        load_backbone(family, folder)
    msg = str(err.value)
    named = re.search(r"missing keys \['([^']+)'\]", msg).group(1)
    # transformers 5 renames AST's saved keys on load (encoder.layer.1.attention.attention.key
    # -> layers.1.attention.k_proj): the message names the model's key
    assert named == RENAMED.get(gone, gone) and named in model.state_dict()
    assert str(folder) in msg and "allow_new_weights" in msg  # says how to accept it on purpose


def test_unexpected_and_shape_mismatched_keys_are_refused(tmp_path, tiny_checkpoints):
    folder = saved(tmp_path, "w2v", load_backbone("wav2vec2", tiny_checkpoints["wav2vec2"]))
    edit_weights(folder, lambda s: {**s, "encoder.extra_gate.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \['encoder\.extra_gate\.weight"):
        load_backbone("wav2vec2", folder)
    with pytest.raises(CheckpointError) as err:  # 64-wide feed-forward in the file, 48 asked
        load_backbone("wav2vec2", tiny_checkpoints["wav2vec2"], intermediate_size=48)
    assert "shape-mismatched" in str(err.value)
    assert "feed_forward.intermediate_dense" in str(err.value)
    assert str(tiny_checkpoints["wav2vec2"]) in str(err.value)


def test_fewer_layers_in_the_config_than_the_checkpoint_is_refused(tiny_checkpoints):
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.1\..*encoder_depth"):
        load_backbone("hubert", tiny_checkpoints["hubert"], num_hidden_layers=1)


TASKS = {
    "ast": (ASTForAudioClassification, ASTConfig, {"num_labels": 3}, ["classifier"]),
    "wav2vec2": (Wav2Vec2ForCTC, Wav2Vec2Config, {"vocab_size": 12}, ["lm_head"]),
    "hubert": (
        HubertForSequenceClassification, HubertConfig, {"num_labels": 3},
        ["classifier", "projector"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(TASKS))
def test_task_checkpoint_heads_are_dropped_by_name_and_the_base_loads_exactly(tmp_path, family):
    task_cls, config_cls, extra, heads = TASKS[family]
    torch.manual_seed(0)
    task = task_cls(config_cls(**tiny_config(family), **extra))
    folder = saved(tmp_path, family, task)
    model = load_backbone(family, folder)
    report = model.petl_load_report
    assert sorted({k.split(".")[0] for k in report["dropped"]}) == heads
    assert all(k.split(".")[0] in heads for k in report["dropped"])
    assert report["newly_initialised"] == [] and report["loaded"] == len(model.state_dict())
    base = getattr(task, task.base_model_prefix).state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, base[name]), name
    assert f"{len(report['dropped'])} dropped ({', '.join(heads)})" in summary(report)


def test_more_layers_than_the_checkpoint_need_the_explicit_switch(tiny_checkpoints):
    folder = tiny_checkpoints["wav2vec2"]  # 2 layers
    with pytest.raises(CheckpointError) as err:
        load_backbone("wav2vec2", folder, num_hidden_layers=3)
    assert "encoder.layers.2." in str(err.value) and str(folder) in str(err.value)
    assert "'encoder.layers.2.*'" in str(err.value)  # the switch to pass, spelled out
    switch = {"num_hidden_layers": 3, "allow_new_weights": ["encoder.layers.2.*"]}
    model = pk.build_model("wav2vec2", str(folder), switch, num_classes=2)
    report = model.backbone.petl_load_report
    assert report["newly_initialised"] and all(
        k.startswith("encoder.layers.2.") for k in report["newly_initialised"]
    )
    assert report["allow_new_weights"] == ["encoder.layers.2.*"]
    # AST loads at the checkpoint's size first, then moves weights: the same rule holds
    with pytest.raises(CheckpointError, match=r"layers\.2\."):
        load_backbone("ast", tiny_checkpoints["ast"], num_hidden_layers=3)
    ast = load_backbone("ast", tiny_checkpoints["ast"], num_hidden_layers=3,
                        allow_new_weights=["layers.2.*"])  # fmt: skip
    assert all(k.startswith("layers.2.") for k in ast.petl_load_report["newly_initialised"])


class Bomb:
    """Unpickling this calls os.system; weights_only must refuse it before it runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("family", ["wav2vec2", "mert"])
def test_a_pickle_bomb_is_refused_naming_the_file_and_never_runs(tmp_path, family):
    folder = tmp_path / "bomb"
    folder.mkdir()
    config_cls = Wav2Vec2Config if family == "wav2vec2" else HubertConfig
    config = config_cls(**tiny_config(family)).to_dict()
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "exploded"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"encoder.layer_norm.weight": Bomb(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError) as err:
        load_backbone(family, folder)
    assert str(folder / "pytorch_model.bin") in str(err.value)
    assert "weights_only" in str(err.value) and "refused to unpickle" in str(err.value)
    assert not marker.exists()


def test_a_file_where_a_folder_is_expected_says_so(tmp_path, tiny_checkpoints):
    path = tmp_path / "ast.pt"
    torch.save(load_backbone("ast", tiny_checkpoints["ast"]).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_backbone("ast", path)
    assert re.search(rf"{re.escape(str(path))}.* is a file; .*save_pretrained", str(err.value))
    assert "does not exist" not in str(err.value)


def test_load_reports_say_where_weights_came_from(tiny_checkpoints):
    random = load_backbone("ast", None, tiny_config("ast")).petl_load_report
    assert random["source"] == "random" and random["newly_initialised"]
    assert "random weights (checkpoint=None)" in summary(random)
    plain = load_backbone("hubert", tiny_checkpoints["hubert"]).petl_load_report
    assert plain["dropped"] == {} and plain["newly_initialised"] == []
    moved = load_backbone("ast", tiny_checkpoints["ast"], max_length=200,
                          pos_embed="zeros").petl_load_report  # fmt: skip
    assert moved["position_embeddings"] == {
        "key": "embeddings.position_embeddings", "from_grid": [12, 9], "to_grid": [12, 19],
        "how": "zeros",
    }  # fmt: skip
    assert moved["newly_initialised"] == []  # moved, not new: no switch needed
    assert "[12, 9] -> [12, 19] by zeros" in summary(moved)


def test_builtin_checkpoints_load_strictly():
    for name in ("tiny-ast", "tiny-mert"):
        family = name.removeprefix("tiny-")
        report = load_backbone(family, f"builtin:{name}").petl_load_report
        assert report["source"] == "checkpoint" and report["newly_initialised"] == []
        assert report["loaded"] > 0
        assert report["checkpoint"] == f"builtin:{name}" and Path(report["folder"]).is_dir()


def test_a_run_writes_its_load_report(tmp_path, tiny_checkpoints):
    params = dict(
        experiment="t", method="linear", dataset="synthetic", data_path=None, n_per_class=3,
        backbone="ast", checkpoint=str(tiny_checkpoints["ast"]), max_length=100, epochs=1,
        batch_size=8, lr=None, seed=0, profile="corrected", device="cpu", progress=False,
    )  # fmt: skip
    result = pk.run_experiment(params, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "load_report.json").read_text())
    assert report["checkpoint"] == str(tiny_checkpoints["ast"]) and report["loaded"] > 0
    assert report["newly_initialised"] == []
    assert result.load_summary().startswith(f"backbone ast from {tiny_checkpoints['ast']}")


def test_encoder_depth_records_the_blocks_it_drops(tiny_checkpoints):
    model = pk.build_model("wav2vec2", str(tiny_checkpoints["wav2vec2"]), encoder_depth=1,
                           num_classes=2)  # fmt: skip
    report = model.backbone.petl_load_report
    assert report["dropped"] and all(k.startswith("encoder.layers.1.") for k in report["dropped"])
    assert report["loaded"] == len(model.backbone.state_dict())
