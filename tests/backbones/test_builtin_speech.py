"""The built-in tiny speech backbones (tiny-wav2vec2, tiny-hubert): made once and cached, loaded
strictly, pretrained (not the random init) and transferring to the synthetic target task.

The canonical checkpoints are used, as the music tests use ``builtin:tiny-mert``: pretrained once
into ``cache_dir()`` (about a minute of one CPU thread each), then reused by every later session.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

import petl_kit as pk
from petl_kit.backbones import pretrained
from petl_kit.data import make_synthetic

SPEECH = {"tiny-wav2vec2": "wav2vec2", "tiny-hubert": "hubert"}
# probe test accuracy, built-in vs random init, measured on data seeds 1 / 2: 0.198 vs 0.094,
# 0.240 vs 0.042 (chance 0.083); the margin leaves half the smaller gap for library changes
MARGIN = 0.05


@pytest.fixture(scope="session")
def speech_folders():
    return {name: pretrained.builtin_checkpoint(name) for name in SPEECH}


def _random_backbone(name: str):
    builtin = pretrained.BUILTINS[name]
    return pk.build_model(backbone=builtin.family, backbone_config=dict(builtin.backbone_config),
                          num_classes=12, method="linear", seed=builtin.recipe.seed)  # fmt: skip


@pytest.mark.parametrize("name", sorted(SPEECH))
def test_speech_builtin_is_cached_and_loads_every_weight(name, speech_folders, monkeypatch):
    folder = speech_folders[name]
    assert folder.name == f"{name}-v{pretrained.BUILTINS[name].version}"
    info = json.loads((folder / "pretraining.json").read_text())
    assert info["task"] == "synthetic source" and len(info["classes"]) == 16
    assert info["test_accuracy"] > 0.5  # chance 1/16; measured 0.71 (wav2vec2)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("pretrained a second time")

    monkeypatch.setattr(pretrained, "pretrain", boom)
    assert pretrained.builtin_checkpoint(name) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

    model = pk.build_model(backbone=SPEECH[name], checkpoint=f"builtin:{name}", num_classes=12,
                           method="linear", seed=0)  # fmt: skip
    assert model.backbone.petl_family == SPEECH[name]
    saved = load_file(str(folder / "model.safetensors"))
    state = model.backbone.state_dict()
    assert set(saved) == set(state)  # every weight of the backbone comes from the folder
    for key, value in saved.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    assert model(torch.randn(2, 16000)).shape == (2, 12)
    # pretraining moved the weights away from the init it started from, conv encoder included
    fresh = _random_backbone(name).backbone.state_dict()
    for key in ("feature_extractor.conv_layers.0.conv.weight",
                "encoder.layers.2.attention.q_proj.weight"):  # fmt: skip
        assert not torch.equal(state[key], fresh[key]), key


def _pooled_features(model, clips) -> torch.Tensor:
    """Mean over frames of the frozen backbone's last hidden state: ``[N, hidden]``."""
    extractor = model.feature_extractor()
    with torch.no_grad():
        values = torch.stack([torch.as_tensor(extractor(c.source)[0]) for c in clips])
        return model.backbone(values).last_hidden_state.mean(dim=1)


def _probe_accuracy(model, splits) -> float:
    """A logistic-regression probe on pooled frozen features: fit on train, score on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, test = splits.split("train"), splits.split("test")
    x_train, x_test = _pooled_features(model, train), _pooled_features(model, test)
    scaler = StandardScaler().fit(x_train.numpy())
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train.numpy()),
                                                  [c.label for c in train])  # fmt: skip
    return probe.score(scaler.transform(x_test.numpy()), [c.label for c in test])


def test_tiny_wav2vec2_transfers_to_the_target_task(speech_folders):
    splits = make_synthetic("target", n_per_class=40, seed=1)  # 288 / 96 / 96 clips
    torch.manual_seed(0)
    builtin = pk.build_model(backbone="wav2vec2", checkpoint="builtin:tiny-wav2vec2",
                             num_classes=12, method="linear", seed=0).eval()  # fmt: skip
    random = _random_backbone("tiny-wav2vec2").eval()
    pre, rand = _probe_accuracy(builtin, splits), _probe_accuracy(random, splits)
    assert pre >= rand + MARGIN, (pre, rand)


def test_the_quickstart_probes_tiny_wav2vec2_and_the_demo_pretrains_it_first():
    from pathlib import Path

    from petl_kit.__main__ import _builtins_of
    from petl_kit.experiments.sweep import plan_sweep

    specs = plan_sweep(Path(__file__).resolve().parents[2] / "params" / "quickstart.yaml")
    speech = [s for s in specs if s.resolved["checkpoint"] == "builtin:tiny-wav2vec2"]
    assert [(s.name, s.resolved["backbone"]) for s in speech] == [("linear_wav2vec2", "wav2vec2")]
    assert speech[0].resolved["max_length"] == 16000  # samples: 1 s at 16 kHz
    assert _builtins_of(specs) == ["tiny-ast", "tiny-wav2vec2"]
