"""Adapters (Cappellazzo et al., MLSP 2024, "Parameter-efficient transfer learning of audio
spectrogram transformers"; reference ``adapter`` / ``Wav2Vec_adapter``). Spec ``methods.md``
§7 and §10.

Each block's attention and/or FFN sub-layer is wrapped (:class:`AdapterSublayer`); with the
sub-layer's input ``x`` and output ``y`` the wrapper returns, instead of ``y``:

==============  =================================  ===========================================
mode            sub-layer output                   used for
==============  =================================  ===========================================
``parallel``    ``y + A(x)`` [``+ x`` if res]      parallel; ablations ``*-parallel-before``
``sequential``  ``A(y)`` [``+ y`` if res]          sequential; ablations ``*-after`` (res on)
``before``      ``inner(A(x)) + A(x)``             ablations ``*-sequential-before``
==============  =================================  ===========================================

The block then adds its own residual. AST (pre-LN): the attention input is LN1(h) and the FFN
input is z = LN2(h'), so these are exactly the formulas of §7.2 (with ``apply_residual`` as in
R12, in both profiles). Post-LN frame models (wav2vec2/HuBERT base, §10): the attention input is
the un-normalised layer input x and the FFN input is v = LN_att(u); parallel adapters there have
no residual option. Pre-LN ("stable layer norm") frame models use the AST formulas.

Layouts: ``Pfeiffer`` = one adapter per block, at the FFN (R11; ``pfeiffer_location='MHSA'``
moves it), ``Houlsby`` = one at the attention and one at the FFN; ``placement`` selects one of
the eight ablation placements of §7.3 (one adapter per block).

Music layout (``music_adapter_position``; preset ``'music_adapter'``): the music PETL
reference's ``u + f(u)`` adapters after the residual sums or on the sub-layer outputs, with every
per-block LayerNorm trainable (§11, :mod:`.music_adapter`).

Trainable: AST — adapters + the LayerNorm of each adapted sub-layer (LN2; LN1 for attention sites)
+ final LN + head; frame models — adapters + head (+ the unused ``masked_spec_embed`` in the
reference, R24, counted in the ``backbone`` group). Counts (AST, 12 layers, A = block params):
Pfeiffer 12·(A + 1,536) + 1,536 + head; Houlsby 12·(2A + 3,072) + 1,536 + head; frame models
12A (24A Houlsby) [+ 768] + head.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..backbones import anatomy
from ..backbones.registry import get_family, patch_grid
from ..config import ConfigError, option
from . import blocks, music_adapter
from .registry import MethodConfig, MethodPreset, MethodSpec, register_method, register_preset

PLACEMENTS = tuple(
    f"{loc}-{sp}-{ba}"
    for loc in ("MHSA", "FFN")
    for sp in ("parallel", "sequential")
    for ba in ("before", "after")
)
Placement = Literal[
    "MHSA-parallel-before",
    "MHSA-parallel-after",
    "MHSA-sequential-before",
    "MHSA-sequential-after",
    "FFN-parallel-before",
    "FFN-parallel-after",
    "FFN-sequential-before",
    "FFN-sequential-after",
]
DEFAULT_REDUCTION_RATE = 96


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """Adapter options (reference CLI names; quirk switches reference → corrected).

    reduction_rate: r = round(hidden / reduction_rate), Python's round-half-even (default 96
        when ``bottleneck`` is not given). bottleneck: r directly; give one of the two.
    adapter_type: ``'Pfeiffer'`` (one adapter per block) or ``'Houlsby'`` (two).
    seq_or_par: ``'parallel'`` or ``'sequential'`` (both sites for Houlsby).
    adapter_block: ``'bottleneck'`` | ``'conformer'`` | ``'convpass'`` (see :mod:`.blocks`).
    apply_residual: add the sub-layer input (parallel) / output (sequential) to the adapter's
        (R12). Reference default False (the CLI default); corrected default (None): True for
        sequential, False for parallel. The resolved value is stored. Parallel adapters on
        post-LN frame models have no residual option (§10).
    kernel_size: the conformer's depthwise kernel (Convpass's conv is 3 wide, as in the reference).
    placement: one of the eight ablation placements ``'{MHSA|FFN}-{parallel|sequential}-
        {before|after}'`` (§7.3), or None for the Pfeiffer/Houlsby layout (§7.2). A placement
        fixes the location, the mode and the residuals; it sets ``seq_or_par`` and
        ``pfeiffer_location`` to match and ``apply_residual`` to None.
    pfeiffer_location: where the single Pfeiffer adapter sits (R11): ``'FFN'`` | ``'MHSA'``.
    adapter_init: ``'reference_effective'`` → ``'zero_up'`` (R2/R3); ``'written_zero'`` is a
        diagnostic (warns). See :func:`.blocks.init_block`.
    conformer_ln: ``'dead'`` → ``'applied'`` (R5, an AST-reference quirk: in the reference
        profile frame models apply the LN, as the reference's wav2vec2 copy does; an explicit
        ``'dead'`` in the corrected profile is honoured on every backbone).
    convpass_conv: ``'unused'`` → ``'used'`` (R6).
    conformer_axis: ``'sequence'`` (both profiles, R7) or ``'time_per_band'`` (AST extension).
    adapter_act: bottleneck activation, ``'gelu'`` (both profiles) or ``'relu'`` (R15).
    w2v_train_mask_emb: frame models leave ``masked_spec_embed`` trainable (unused; +768 in the
        ``backbone`` group, R24): True → False.
    music_adapter_position: None (the PETL_AST layouts above) or the music reference's layout
        (§11, :mod:`.music_adapter`): one ``u + f(u)`` bottleneck adapter at every sub-layer
        (none on a conformer's conv module) and every per-block LayerNorm trainable, placed
        ``'after_residual'`` (reference, M3) or on the ``'sublayer_output'`` (Houlsby; corrected).
        It needs ``adapter_type='Houlsby'``, ``seq_or_par='sequential'``, ``apply_residual`` True
        (or unset) and ``adapter_block='bottleneck'``; see preset ``'music_adapter'``.
    drop_rate: dropout inside the music adapter (after the activation), the music configs' key;
        music layout only. drop_rate_mode (M11): ``'ignored'`` (the reference accepts the key
        and ignores it; a non-zero value warns) → ``'applied'``.
    """

    reduction_rate: int | None = None
    bottleneck: int | None = None
    adapter_type: Literal["Pfeiffer", "Houlsby"] = "Pfeiffer"
    seq_or_par: Literal["parallel", "sequential"] = "parallel"
    adapter_block: Literal["bottleneck", "conformer", "convpass"] = "conformer"
    apply_residual: bool | None = option(False, None)
    kernel_size: int = 31
    placement: Placement | None = None
    pfeiffer_location: Literal["FFN", "MHSA"] = "FFN"
    adapter_init: Literal["reference_effective", "zero_up", "written_zero"] = option(
        "reference_effective", "zero_up"
    )
    conformer_ln: Literal["dead", "applied"] = option("dead", "applied")
    convpass_conv: Literal["unused", "used"] = option("unused", "used")
    conformer_axis: Literal["sequence", "time_per_band"] = "sequence"
    adapter_act: Literal["gelu", "relu"] = "gelu"
    w2v_train_mask_emb: bool = option(True, False)
    music_adapter_position: Literal["after_residual", "sublayer_output"] | None = None
    drop_rate: float = 0.0
    drop_rate_mode: Literal["ignored", "applied"] = option("ignored", "applied")

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for f in dataclasses.fields(self):  # direct construction: unset quirks follow the profile
            if (
                "profile" in f.metadata
                and getattr(self, f.name) is None
                and f.name != "apply_residual"
            ):
                put(f.name, f.metadata["profile"][self.profile == "corrected"])
        where = "adapter method_config"
        if self.reduction_rate is not None and self.bottleneck is not None:
            raise ConfigError(
                f"{where}: give reduction_rate ({self.reduction_rate}) or bottleneck "
                f"({self.bottleneck}), not both"
            )
        if self.bottleneck is None and self.reduction_rate is None:
            put("reduction_rate", DEFAULT_REDUCTION_RATE)
        for name in ("reduction_rate", "bottleneck", "kernel_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{where}.{name} = {value}; must be a positive int")
        if self.adapter_block != "conformer" and self.conformer_axis != "sequence":
            raise ConfigError(f"{where}.conformer_axis applies to adapter_block='conformer' only")
        if self.adapter_block != "bottleneck" and self.adapter_act != "gelu":
            raise ConfigError(f"{where}.adapter_act applies to adapter_block='bottleneck' only")
        if self.adapter_type == "Houlsby" and self.pfeiffer_location != "FFN":
            raise ConfigError(f"{where}.pfeiffer_location applies to adapter_type='Pfeiffer' only")
        if self.placement is not None:
            location, mode, _ = self.placement.split("-")
            if self.adapter_type == "Houlsby":
                raise ConfigError(
                    f"{where}: placement {self.placement!r} is one adapter per block; "
                    "use adapter_type='Pfeiffer'"
                )
            if self.seq_or_par == "sequential" and mode == "parallel":
                raise ConfigError(
                    f"{where}: seq_or_par='sequential' contradicts {self.placement!r}"
                )
            if self.pfeiffer_location == "MHSA" and location == "FFN":
                raise ConfigError(
                    f"{where}: pfeiffer_location='MHSA' contradicts {self.placement!r}"
                )
            if self.apply_residual:
                raise ConfigError(
                    f"{where}: apply_residual has no effect with a placement (§7.3 fixes the "
                    "residuals); leave it unset"
                )
            put("seq_or_par", mode)
            put("pfeiffer_location", location)
            put("apply_residual", None)
        elif self.apply_residual is None:
            put("apply_residual", self.seq_or_par == "sequential")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"{where}.drop_rate = {self.drop_rate!r}; expected 0 <= p < 1")
        if self.drop_rate and self.music_adapter_position is None:
            raise ConfigError(
                f"{where}.drop_rate = {self.drop_rate} is the music layout's adapter dropout; set "
                "music_adapter_position (pk.method_preset('music_adapter')) or leave it 0"
            )
        if self.music_adapter_position is not None:
            wanted = dict(
                adapter_type="Houlsby", seq_or_par="sequential", apply_residual=True,
                adapter_block="bottleneck", placement=None, adapter_act="gelu",
            )  # fmt: skip
            wrong = {k: getattr(self, k) for k, v in wanted.items() if getattr(self, k) != v}
            if wrong:
                raise ConfigError(
                    f"{where}: music_adapter_position={self.music_adapter_position!r} is the music "
                    f"layout (an u + f(u) bottleneck at every sub-layer); it needs {wanted}, got "
                    f"{wrong} (pk.method_preset('music_adapter') gives a consistent config)"
                )

    def bottleneck_size(self, hidden: int) -> int:
        """r for a backbone of width ``hidden`` (round-half-even, as the reference)."""
        return (
            self.bottleneck if self.bottleneck is not None else round(hidden / self.reduction_rate)
        )


# --------------------------------------------------------------------------- the wrapper
class AdapterSublayer(anatomy.SublayerWrapper):
    """A sub-layer with an adapter ``petl_adapter`` (``[B, T, D] -> [B, T, D]``) around it.

    ``mode``: ``'parallel'`` → ``y + A(x) [+ x]``; ``'sequential'`` → ``A(y) [+ y]``;
    ``'before'`` → ``inner(A(x)) + A(x)`` (x = the sub-layer input, y = its output, ``[+ ·]``
    when ``residual``).
    """

    def __init__(self, inner: nn.Module, adapter: nn.Module, mode: str, residual: bool):
        super().__init__(inner)
        if mode not in ("parallel", "sequential", "before"):
            raise ValueError(f"mode={mode!r}; valid: 'parallel', 'sequential', 'before'")
        self.petl_adapter = adapter
        self.mode, self.residual = mode, residual

    def forward(self, x: torch.Tensor, *args, **kwargs):
        if self.mode == "before":  # D(x) is fed to the sub-layer and added to its output
            x = self.petl_adapter(x)
        return super().forward(x, *args, **kwargs)

    def combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.mode == "before":
            return y + x  # here x is already A(input)
        if self.mode == "parallel":
            out = y + self.petl_adapter(x)
            return out + x if self.residual else out
        out = self.petl_adapter(y)
        return out + y if self.residual else out

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, residual={self.residual}"


def sites(cfg: AdapterConfig) -> list[tuple[str, str, bool]]:
    """``[(sub-layer, mode, residual)]`` adapted in every block (see :class:`AdapterSublayer`)."""
    if cfg.placement is not None:
        location, sp, ba = cfg.placement.split("-")
        which = anatomy.ATTENTION if location == "MHSA" else anatomy.FFN
        if ba == "after":  # §7.3: "parallel, after" = "sequential, after" = y + D(y)
            return [(which, "sequential", True)]
        return [(which, "parallel" if sp == "parallel" else "before", False)]
    res = bool(cfg.apply_residual)
    if cfg.adapter_type == "Houlsby":
        return [(anatomy.ATTENTION, cfg.seq_or_par, res), (anatomy.FFN, cfg.seq_or_par, res)]
    which = anatomy.ATTENTION if cfg.pfeiffer_location == "MHSA" else anatomy.FFN
    return [(which, cfg.seq_or_par, res)]


def identity_at_init(cfg: AdapterConfig) -> bool:
    """A zero block (bottleneck/Convpass with a zero up-projection) in a layout that then
    returns ``y``: parallel without residual, sequential with residual, not 'before'."""
    if cfg.music_adapter_position is not None:
        return True  # W_up = 0 whatever adapter_init says (the music reference's own init)
    if not blocks.zero_at_init(cfg.adapter_block, cfg.adapter_init):
        return False
    return all(
        (mode == "parallel" and not res) or (mode == "sequential" and res)
        for _, mode, res in sites(cfg)
    )


def apply(model, cfg: AdapterConfig) -> None:
    backbone = model.backbone
    anat = anatomy.anatomy_of(backbone)
    hidden = backbone.config.hidden_size
    r = cfg.bottleneck_size(hidden)  # >= 1: build_model checks the spec's bottleneck
    family = get_family(model.family)
    if cfg.music_adapter_position is not None:
        # LayerDrop and HF masking stay as the train-mode policy leaves them (M6 is an option)
        dropout = cfg.drop_rate if cfg.drop_rate_mode == "applied" else 0.0
        if cfg.drop_rate and not dropout:
            warnings.warn(
                f"adapter drop_rate={cfg.drop_rate} is ignored (drop_rate_mode='ignored', the "
                "music reference, M11); drop_rate_mode='applied' uses it",
                stacklevel=3,
            )
        music_adapter.apply_music_layout(model, cfg.music_adapter_position, r, dropout)
        if getattr(backbone, "masked_spec_embed", None) is not None:
            backbone.masked_spec_embed.requires_grad_(cfg.w2v_train_mask_emb)
        return
    grid = patch_grid(backbone)
    if cfg.conformer_axis == "time_per_band" and grid is None:
        raise ConfigError(
            f"adapter conformer_axis='time_per_band' needs an AST patch grid; {model.family} "
            "has frames (use conformer_axis='sequence')"
        )
    if not anat.pre_ln and any(mode == "parallel" and res for _, mode, res in sites(cfg)):
        raise ConfigError(
            f"adapter apply_residual=True with parallel adapters: {model.family} is post-LN and "
            "its parallel adapters have no residual option (spec §10); set apply_residual=False"
        )
    # R5 is a quirk of the AST reference only; its wav2vec2 copy applies the LN
    ln = cfg.conformer_ln
    if not family.reference_dead_conformer_ln and cfg.profile == "reference":
        ln = "applied"
    make = dict(
        kernel_size=cfg.kernel_size,
        act=cfg.adapter_act,
        conformer_ln=ln,
        conformer_axis=cfg.conformer_axis,
        grid=grid if cfg.conformer_axis == "time_per_band" else None,
        convpass_conv=cfg.convpass_conv,
    )
    for layer in anatomy.layers(backbone):
        for which, mode, res in sites(cfg):
            block = blocks.make_block(cfg.adapter_block, hidden, r, **make)
            blocks.init_block(block, cfg.adapter_init, model.family)
            anatomy.wrap_sublayer(
                layer,
                which,
                anat,
                lambda inner, b=block, m=mode, s=res: AdapterSublayer(inner, b, m, s),
            )
    # (LayerNorms that train with the adapters: the spec's wrapped_sites / trains_final_norm)
    blocks.no_masking_no_layerdrop(backbone, cfg.w2v_train_mask_emb)


register_method(
    MethodSpec(
        name="adapter",
        config_cls=AdapterConfig,
        apply=apply,
        lr=5e-3,
        aliases=("adapters", "wav2vec_adapter"),
        identity_at_init=identity_at_init,
        # the PETL_AST layouts train their sites' LNs and the final LN where the family's
        # reference does; the music layout trains every per-block LN itself
        trains_final_norm=lambda cfg: cfg.music_adapter_position is None,
        wrapped_sites=lambda cfg: [] if cfg.music_adapter_position else [w for w, *_ in sites(cfg)],
        bottleneck=lambda cfg, hidden: cfg.bottleneck_size(hidden),
        paper="Cappellazzo et al., MLSP 2024 (PETL_AST); Houlsby et al., ICML 2019; "
        "Pfeiffer et al., EACL 2021",
        test_config={"reduction_rate": 8, "kernel_size": 3, "adapter_type": "Houlsby"},
        needs_grad_steps=2,
    )
)

_MUSIC = dict(
    adapter_type="Houlsby", seq_or_par="sequential", apply_residual=True,
    adapter_block="bottleneck", bottleneck=16, adapter_init="zero_up", w2v_train_mask_emb=False,
)  # fmt: skip
register_preset(
    MethodPreset(
        name="music_adapter",
        method="adapter",
        reference=dict(_MUSIC, music_adapter_position="after_residual"),
        corrected=dict(_MUSIC, music_adapter_position="sublayer_output"),
        doc="music PETL adapter (§11): u + f(u) bottleneck 16 at every sub-layer + per-block "
        "LayerNorms; MERT 6 layers: 322,752",
    )
)
