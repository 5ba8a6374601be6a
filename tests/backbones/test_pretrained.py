"""Built-in pretrained checkpoint: made once, cached, reused, locked; on a tiny recipe."""

import dataclasses
import json

import pytest
import torch
from filelock import FileLock

import petl_kit as pk
from petl_kit.backbones import pretrained
from petl_kit.backbones.registry import resolve_checkpoint
from petl_kit.config import ConfigError

# 3 clips per class (1 train / 1 val / 1 test), one epoch: seconds instead of a minute
QUICK = {"n_per_class": 3, "epochs": 1, "batch_size": 16, "warmup_steps": 0}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PETL_KIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_default(monkeypatch):
    monkeypatch.delenv("PETL_KIT_CACHE", raising=False)
    assert pretrained.cache_dir().parts[-2:] == (".cache", "petl_kit")


def test_pretrained_once_then_reused(cache, monkeypatch):
    folder = pretrained.builtin_checkpoint("tiny-ast", recipe=QUICK)
    canonical = f"tiny-ast-v{pretrained.BUILTINS['tiny-ast'].version}"
    assert folder.parent == cache and folder.name.startswith(canonical + "-")  # own folder
    assert {"config.json", "model.safetensors", "pretraining.json"} <= {
        f.name for f in folder.iterdir()
    }
    info = json.loads((folder / "pretraining.json").read_text())
    assert info["task"] == "synthetic source" and len(info["classes"]) == 16
    assert info["recipe"]["epochs"] == 1 and 0.0 <= info["test_accuracy"] <= 1.0
    assert info["seconds"] > 0 and len(info["history"]) == 1
    assert not [p for p in cache.iterdir() if "-tmp-" in p.name]  # temp folder renamed away

    def boom(*args, **kwargs):
        raise AssertionError("pretrained a second time")

    monkeypatch.setattr(pretrained, "pretrain", boom)
    assert pretrained.builtin_checkpoint("tiny-ast", recipe=QUICK) == folder
    config = json.loads((folder / "config.json").read_text())
    for key, value in pretrained.TINY_AST.items():
        assert config[key] == value, key


def test_builtin_through_build_model_is_reproducible(cache, monkeypatch):
    quick = dataclasses.replace(pretrained.BUILTINS["tiny-ast"],
                                recipe=pretrained.PretrainRecipe(**QUICK))  # fmt: skip
    monkeypatch.setitem(pretrained.BUILTINS, "tiny-ast", quick)
    canonical = cache / f"tiny-ast-v{quick.version}"
    assert not canonical.exists()
    # the first call pretrains inside build_model; it must not shift the seeded head init
    models = [pk.build_model(checkpoint="builtin:tiny-ast", num_classes=12, method="bitfit", seed=3)
              for _ in range(2)]  # fmt: skip
    assert resolve_checkpoint("builtin:tiny-ast") == str(canonical)
    a, b = (m.state_dict() for m in models)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    emb = models[0].backbone.embeddings.position_embeddings
    assert emb.abs().sum() > 0  # learned / initialised, not HF's zeros
    assert models[0].backbone.config.hidden_size == pretrained.TINY_AST["hidden_size"]
    x = torch.zeros(2, 100, 128)
    assert models[0](x).shape == (2, 12)


def test_waits_on_the_lock_of_another_process(cache):
    cache.mkdir(parents=True)
    folder_name = pretrained._folder_name("tiny-ast", pretrained.BUILTINS["tiny-ast"], QUICK)
    with FileLock(str(cache / folder_name) + ".lock"):
        with pytest.raises(TimeoutError, match="another process is pretraining 'tiny-ast'"):
            pretrained.builtin_checkpoint("tiny-ast", recipe=QUICK, timeout=0.2)


def test_unknown_names_are_errors_listing_the_valid_ones(cache):
    with pytest.raises(ConfigError, match="unknown built-in checkpoint 'tiny-vit'.*'tiny-ast'"):
        pretrained.builtin_checkpoint("tiny-vit")
    with pytest.raises(ConfigError, match="'tiny-ast'"):
        resolve_checkpoint("builtin:nope")
    with pytest.raises(ConfigError, match="unknown recipe key.*'epoch'.*valid keys"):
        pretrained.builtin_checkpoint("tiny-ast", recipe={"epoch": 1})
    assert not cache.exists() or not list(cache.iterdir())


# tiny-mert: 2 chord clips per class (train / val / test fractions of 24 x 2), one epoch
QUICK_MERT = {"n_per_class": 3, "epochs": 1, "batch_size": 24, "warmup_steps": 0}


def test_tiny_mert_is_cached_and_reloads_as_a_mert_backbone(cache, monkeypatch):
    folder = pretrained.builtin_checkpoint("tiny-mert", recipe=QUICK_MERT)
    assert folder.name.startswith(f"tiny-mert-v{pretrained.BUILTINS['tiny-mert'].version}-")
    info = json.loads((folder / "pretraining.json").read_text())
    assert info["task"] == "synthetic_music chords" and len(info["classes"]) == 24
    assert info["classes"][0] == "C:maj" and info["recipe"]["pooling"] == "ALL"
    config = json.loads((folder / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "layerdrop", "mask_time_prob"):
        assert config[key] == pretrained.TINY_MERT[key], key
    assert tuple(config["conv_kernel"]) == pretrained.TINY_MERT["conv_kernel"]

    def boom(*args, **kwargs):
        raise AssertionError("pretrained a second time")

    monkeypatch.setattr(pretrained, "pretrain", boom)
    assert pretrained.builtin_checkpoint("tiny-mert", recipe=QUICK_MERT) == folder
    # reloadable onto the mert family: the weights are the pretrained ones, bit for bit
    model = pk.build_model(backbone="mert", checkpoint=str(folder), num_classes=24,
                           method="linear", seed=0)  # fmt: skip
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    state = model.backbone.state_dict()
    for key, value in saved.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    assert model.backbone.petl_family == "mert"
    assert model(torch.randn(2, 24000)).shape == (2, 24)
    # every backbone weight moved in pretraining, the conv feature encoder included
    fresh = pk.build_model(backbone="mert", backbone_config=dict(pretrained.TINY_MERT),
                           num_classes=24, method="linear", seed=0)  # fmt: skip
    fresh = fresh.backbone.state_dict()  # the same seeded init the pretraining started from
    conv = "feature_extractor.conv_layers.0.conv.weight"
    assert not torch.equal(state[conv], fresh[conv])
