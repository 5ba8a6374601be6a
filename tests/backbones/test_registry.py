"""Backbone loading: local save_pretrained folders, AST position embeddings, clear errors."""

import pytest
import torch

import petl_kit as pk
from petl_kit.backbones.ast import resize_ast_position_embeddings
from petl_kit.backbones.registry import load_backbone, tiny_config


@pytest.fixture(scope="module")
def ast_1024(tmp_path_factory):
    """A tiny AST saved at the pre-training length (1024 frames: a 12 x 101 patch grid)."""
    torch.manual_seed(0)
    model = load_backbone("ast", None, tiny_config("ast", max_length=1024))
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_()
    folder = tmp_path_factory.mktemp("ast1024")
    model.save_pretrained(folder)
    return folder, model.embeddings.position_embeddings.detach().clone()


def _grid(pos, f, t):
    return pos[0, 2:].reshape(f, t, -1)


def test_local_folder_loads_identical_weights(tiny_checkpoints):
    for family, folder in tiny_checkpoints.items():
        a = load_backbone(family, folder)
        b = load_backbone(family, str(folder))
        for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert na == nb and torch.equal(pa, pb)
        assert a.petl_family == family


def test_corrected_profile_centre_crops_time(ast_1024):
    folder, pos = ast_1024
    model = load_backbone("ast", folder, {"max_length": 100}, pos_embed="crop_interpolate")
    new = model.embeddings.position_embeddings.detach()
    assert new.shape == (1, 2 + 12 * 9, 32)
    assert torch.equal(new[:, :2], pos[:, :2])  # CLS and DIST rows kept
    # t_dim 9 keeps the pretrained time columns 46..54 (spec: 50 - 9 // 2 = 46)
    assert torch.equal(_grid(new, 12, 9), _grid(pos, 12, 101)[:, 46:55])


@pytest.mark.parametrize("length,t_dim,start", [(400, 39, 31), (500, 49, 26), (800, 79, 11)])
def test_crop_windows_of_the_spec(length, t_dim, start):
    pos = torch.randn(1, 2 + 12 * 101, 4)
    new = resize_ast_position_embeddings(pos, (12, 101), (12, t_dim))
    assert torch.equal(_grid(new, 12, t_dim), _grid(pos, 12, 101)[:, start : start + t_dim])


def test_longer_input_interpolates_bilinearly():
    pos = torch.randn(1, 2 + 12 * 101, 4)
    new = resize_ast_position_embeddings(pos, (12, 101), (12, 120))
    grid = _grid(pos, 12, 101).permute(2, 0, 1)[None]
    expect = torch.nn.functional.interpolate(grid, size=(12, 120), mode="bilinear")
    assert torch.allclose(_grid(new, 12, 120), expect[0].permute(1, 2, 0))


def test_reference_profile_zeroes_position_embeddings(ast_1024):
    folder, _ = ast_1024
    ref = pk.build_model(
        "ast", str(folder), {"max_length": 100}, num_classes=3, profile="reference"
    )
    assert ref.backbone.embeddings.position_embeddings.abs().sum() == 0  # quirk R1
    same = pk.build_model(
        "ast", str(folder), {"max_length": 1024}, num_classes=3, profile="reference"
    )
    assert same.backbone.embeddings.position_embeddings.abs().sum() > 0  # fits: loads normally


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(pk.CheckpointError, match="does not exist"):
        load_backbone("ast", tmp_path / "nope")


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(pk.CheckpointError, match="no config.json"):
        load_backbone("ast", tmp_path)


def test_unreachable_hub_checkpoint_says_how_to_supply_a_local_copy():
    with pytest.raises(pk.CheckpointError, match="save_pretrained.*checkpoint='DIR'"):
        load_backbone("wav2vec2", "petl-kit-tests/no-such-model")


def test_unknown_backbone_and_config_key():
    with pytest.raises(pk.ConfigError, match="unknown backbone 'wavlm'.*ast, wav2vec2, hubert"):
        pk.build_model("wavlm")
    with pytest.raises(pk.ConfigError, match="'hidden_sise'"):
        pk.build_model("ast", backbone_config={"hidden_sise": 8})


def test_base_config_sizes_match_the_spec():
    """Params(L) = 85,254,912 + 768 * tokens for AST; 94,371,712 for wav2vec2-base."""
    ast = load_backbone("ast", None, {"max_length": 100})
    assert sum(p.numel() for p in ast.parameters()) == 85_339_392
    w2v = load_backbone("wav2vec2")
    assert sum(p.numel() for p in w2v.parameters()) == 94_371_712
