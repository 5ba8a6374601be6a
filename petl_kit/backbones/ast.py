"""The AST family (Gong et al., Interspeech 2021): patches of a 128-bin log-mel fbank.

Input ``[B, L, 128]`` fbank (the kit's ``FbankExtractor``, 16 kHz, 10 ms frames); 16 × 16 patches
at strides (frequency 10, time 10) form an ``F × T`` grid, read frequency-major after the CLS and
DIST tokens; learned position embeddings cover ``2 + F·T`` tokens, so a checkpoint loaded at a new
``max_length`` has its grid moved (:func:`resize_ast_position_embeddings`, quirk R1 as an option).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import ASTConfig, ASTModel

from ..config import ConfigError
from ..errors import CheckpointError
from .anatomy import AST_ANATOMY, CLS, DIST
from .registry import Family, _from_pretrained, register_family, resolve_checkpoint
from .strict import first

POS = "embeddings.position_embeddings"

FBANK_SHIFT_SECONDS = 0.01  # one fbank frame (Kaldi frame shift 10 ms)


def load_ast(fam: Family, checkpoint, overrides: dict, pos_embed: str) -> ASTModel:
    """Load AST weights strictly at the checkpoint's own input size, then move them to the new
    one; the position-embedding move is recorded in ``petl_load_report``."""
    ckpt = resolve_checkpoint(checkpoint)
    if pos_embed not in ("crop_interpolate", "zeros"):
        raise ConfigError(f"pos_embed={pos_embed!r}; valid: 'crop_interpolate', 'zeros'")
    source = _from_pretrained(fam, ckpt)
    report = source.petl_load_report
    config = ASTConfig.from_dict({**source.config.to_dict(), **overrides})
    if config.to_dict() == source.config.to_dict():
        return source
    model = ASTModel(config)
    state = source.state_dict()
    old_pos = state.pop(POS)
    target = model.state_dict()
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
              for k, v in state.items() if k in target and v.shape != target[k].shape]  # fmt: skip
    if shapes:
        raise CheckpointError(
            f"checkpoint {ckpt!r} does not fit the AST config overrides {overrides}: "
            f"shape-mismatched keys {shapes[:8]}"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt!r} does not fit the AST config overrides {overrides}: unexpected "
            f"keys {first(unexpected)}; to keep fewer blocks, load them all and pass "
            "build_model(encoder_depth=N)"
        )
    new_grid = model.embeddings.get_shape(config)
    old_grid = source.embeddings.get_shape(source.config)
    if tuple(old_pos.shape) == tuple(model.embeddings.position_embeddings.shape):
        new_pos = old_pos
    else:
        if pos_embed == "zeros":
            new_pos = torch.zeros_like(model.embeddings.position_embeddings)  # quirk R1
        else:
            new_pos = resize_ast_position_embeddings(old_pos, old_grid, new_grid)
        report["position_embeddings"] = {
            "key": POS, "from_grid": list(old_grid), "to_grid": list(new_grid), "how": pos_embed
        }  # fmt: skip
    with torch.no_grad():
        model.embeddings.position_embeddings.copy_(new_pos)
    new = sorted(set(missing) - {POS})
    report["newly_initialised"] = sorted({*report["newly_initialised"], *new})
    report["loaded"] = len(target) - len(report["newly_initialised"])
    model.petl_load_report = report
    return model


def _fit_axis(grid: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """Centre-crop ``grid [D, F, T]`` along ``axis`` to ``size``, or bilinearly interpolate up."""
    old = grid.shape[axis]
    if size == old:
        return grid
    if size < old:
        start = old // 2 - size // 2  # AST recipe: 50 - t_dim // 2 for the 101-column grid
        return grid.narrow(axis, start, size)
    target = list(grid.shape[1:])
    target[axis - 1] = size
    return F.interpolate(grid[None], size=tuple(target), mode="bilinear", align_corners=False)[0]


def resize_ast_position_embeddings(
    pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Move AST position embeddings to a new patch grid (spec ``backbones_and_features`` §1.4).

    Args:
        pos: ``[1, 2 + F_old * T_old, D]`` (CLS, DIST, then patches frequency-major).
        old_grid, new_grid: ``(F, T)`` patch grids.

    Returns:
        ``[1, 2 + F_new * T_new, D]``: the special rows unchanged; the patch grid centre-cropped
        where the new axis is shorter and bilinearly interpolated where it is longer.
    """
    (f0, t0), (f1, t1) = old_grid, new_grid
    special, patches = pos[:, :2], pos[:, 2:]
    d = pos.shape[-1]
    grid = patches[0].reshape(f0, t0, d).permute(2, 0, 1)  # [D, F, T]
    grid = _fit_axis(grid, 2, t1)
    grid = _fit_axis(grid, 1, f1)
    patches = grid.permute(1, 2, 0).reshape(1, f1 * t1, d)
    return torch.cat([special, patches], dim=1)


AST = register_family(
    Family(
        name="ast",
        config_cls=ASTConfig,
        model_cls=ASTModel,
        input_kind="fbank",
        sample_rate=16000,
        default_checkpoint="MIT/ast-finetuned-audioset-10-10-0.4593",
        anatomy=lambda config: AST_ANATOMY,
        token_seconds=lambda config: config.time_stride * FBANK_SHIFT_SECONDS,
        special_tokens=(CLS, DIST),
        patch_grid=lambda backbone: backbone.embeddings.get_shape(backbone.config),
        position_embeddings="learned_grid",
        learned_tokens=(
            "embeddings.position_embeddings",
            "embeddings.cls_token",
            "embeddings.distillation_token",
        ),
        takes_attention_mask=False,
        extractor_options=lambda config: dict(
            max_length=config.max_length, num_mel_bins=config.num_mel_bins
        ),
        # PETL_AST's AST wrappers: final LN trainable, finetune_LN, the dead conformer LN (R5)
        reference_trains_final_norm=True,
        reference_trains_site_norms=True,
        reference_dead_conformer_ln=True,
        reference_ft_last_n_layers=None,
        initialiser_inits_conv1d=False,
        tiny=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_length=100,
        ),
        load=load_ast,
        model_types=("audio-spectrogram-transformer",),
    )
)
