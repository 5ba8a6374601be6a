"""The optimisers of the two recipes, read back from the optimiser's param groups (spec
training.md §1.4 for PETL_AST, §2.2 for the music code)."""

import pytest
import torch

import petl_kit as pk
from petl_kit.config import build
from petl_kit.training.train import TrainConfig, make_optimizer


def _model():
    return pk.build_model("ast", backbone_config="tiny", num_classes=3, method="bitfit", seed=0)


def _groups(**values):
    cfg = build(TrainConfig, {"progress": False, **values})
    opt, _ = make_optimizer(_model(), cfg, total_steps=10)
    return opt, opt.param_groups


def test_music_recipe_is_adam_with_pytorch_defaults():
    # what the music notebooks set: optimizer, weight decay, clipping; nothing else
    opt, groups = _groups(optimizer="adam", weight_decay=0.0, grad_clip=1.0)
    assert type(opt) is torch.optim.Adam
    for group in groups:
        assert group["betas"] == (0.9, 0.999)
        assert group["eps"] == 1e-8
        assert group["weight_decay"] == 0.0


@pytest.mark.parametrize("profile", ["reference", "corrected"])
def test_petl_ast_recipe_is_adamw_098_1e6(profile):
    cfg = build(TrainConfig, {"progress": False}, profile)
    opt, _ = make_optimizer(_model(), cfg, total_steps=10)
    assert type(opt) is torch.optim.AdamW
    assert {(g["betas"], g["eps"], g["weight_decay"]) for g in opt.param_groups} == {
        ((0.9, 0.98), 1e-6, 0.1)
    }


def test_explicit_betas_and_eps_win():
    _, groups = _groups(optimizer="adam", betas=(0.8, 0.9), eps=1e-7)
    assert all(g["betas"] == (0.8, 0.9) and g["eps"] == 1e-7 for g in groups)


def test_the_stored_config_says_what_ran():
    cfg = build(TrainConfig, {"optimizer": "adam"})
    assert cfg.betas == (0.9, 0.999) and cfg.eps == 1e-8
    with pytest.raises(pk.ConfigError, match="betas"):
        build(TrainConfig, {"betas": (0.9, 1.5)})
