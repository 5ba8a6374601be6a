"""``build_model``: backbone + method + pooling + head, freezing, merging (saving: .persist).

>>> model = build_model(backbone="ast", backbone_config=tiny_config("ast"), num_classes=10,
...                     method="bitfit")
>>> logits = model(features)            # features [B, L, 128] -> logits [B, 10]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backbones import anatomy
from ..backbones.anatomy import PATCH, truncate_encoder
from ..backbones.extractors import feature_extractor
from ..backbones.registry import Family, get_family, load_backbone, tiny_config
from ..config import TASKS, ConfigError, as_dict, build, check_profile
from ..methods import MethodSpec, get_method, make_config, padding
from ..methods.reparam import follow_mode
from .heads import HEADS, LAYER_AGGREGATIONS, make_head
from .options import ModelOptions, eval_attention_dropout
from .pooling import canonical_pooling, pool_roles


class PetlModel(nn.Module):
    """A backbone with a PETL method applied, a pooling and a linear head.

    Attributes:
        backbone: the Hugging Face model (methods have been applied to it in place).
        head: ``Linear(hidden, num_classes)`` (PyTorch default init).
        family, method, method_config, task, pooling, options, build_args.
        role_layout: ``f(seq_len) -> LongTensor[seq_len]`` of token roles; prompt methods replace
            it when they insert tokens.
    """

    def __init__(
        self,
        backbone,
        num_classes: int,
        task: str,
        pooling: str,
        options: ModelOptions,
        head: str = "linear",
        layer_aggregation: str = "last",
    ):
        super().__init__()
        self.backbone = backbone
        self.family = backbone.petl_family
        self.task = task
        self.pooling = pooling
        self.options = options
        self.layer_aggregation = layer_aggregation
        num_states = len(anatomy.layers(backbone)) + 1
        self.head = make_head(
            head, backbone.config.hidden_size, num_classes, layer_aggregation, num_states
        )
        self.role_layout = self._default_roles
        self.method = ""
        self.method_config: Any = None
        self.build_args: dict[str, Any] = {}

    @property
    def family_record(self) -> Family:
        """The backbone family's record (what the kit knows about ``self.family``)."""
        return get_family(self.family)

    # ------------------------------------------------------------------ forward
    def _default_roles(self, seq_len: int) -> torch.Tensor:
        special = list(self.family_record.special_tokens)  # AST: CLS, DIST; frame models: none
        return torch.tensor(special + [PATCH] * (seq_len - len(special)))

    def encode(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Run the backbone.

        Args:
            input_values: ``[B, L, n_mels]`` fbank (AST) or ``[B, S]`` waveform (frame models):
                the family record's ``input_kind``.
            attention_mask: ``[B, S]`` 1 for real samples, optional; used where the family's
                backbone takes one (``Family.takes_attention_mask``: frame models). When it is
                passed to the backbone (``options.pass_attention_mask``), injected modules see
                the batch's ``[B, T]`` real frames during the call (:mod:`..methods.padding`).

        Returns:
            ``(hidden [B, T, D], valid [B, T] bool | None)``: the last hidden state (after the
            final LN where the backbone has one) and which positions are real frames.
        """
        if not self.family_record.takes_attention_mask:
            return self.backbone(input_values).last_hidden_state, None
        mask = attention_mask if self.options.pass_attention_mask else None
        # injected token-mixing modules (Soft-MoA) read the real frames (methods.padding)
        with padding.valid_frames(self._mask_frames(input_values, mask)):
            hidden = self.backbone(input_values, attention_mask=mask).last_hidden_state
        return hidden, self._valid_frames(hidden, attention_mask)

    def encode_layers(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Every hidden state of the backbone (layer-wise probing, spec §6.4).

        Returns:
            ``(states, valid)``: ``states`` is a tuple of ``num_layers + 1`` tensors
            ``[B, T, D]``: the first block's input, then each block's output; the last one is
            the backbone's output as :meth:`encode` gives it (after the final LN where there is
            one). A block that LayerDrop skipped repeats its input (the stream it left
            unchanged), so the count never varies. ``valid`` as in :meth:`encode`.
        """
        blocks = anatomy.layers(self.backbone)
        states: list[torch.Tensor | None] = [None] * (len(blocks) + 1)

        def keep(i):
            def hook(module, args, out):
                states[i] = out[0] if isinstance(out, tuple) else out

            return hook

        # hooks, not HF's output_hidden_states: it drops the blocks LayerDrop skipped
        handles = [anatomy.block_input(self.backbone).register_forward_hook(keep(0))]
        handles += [block.register_forward_hook(keep(i + 1)) for i, block in enumerate(blocks)]
        try:
            hidden, frames = self.encode(input_values, attention_mask)
        finally:
            for handle in handles:
                handle.remove()
        for i in range(1, len(states)):
            if states[i] is None:
                states[i] = states[i - 1]
        states[-1] = hidden
        return tuple(states), frames

    def _mask_frames(self, input_values: torch.Tensor, mask: torch.Tensor | None):
        """``[B, T]`` bool of real frames for a sample mask ``[B, S]`` (None: no mask)."""
        if mask is None:
            return None
        length = torch.tensor(input_values.shape[-1])
        count = getattr(self.backbone, "_get_feat_extract_output_lengths", None)
        frames = int((count or self.backbone.frames_for)(length))  # HF models | the scratch CNN
        return self.backbone._get_feature_vector_attention_mask(frames, mask).bool()

    def _valid_frames(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None):
        if attention_mask is None or not self.options.masked_pooling:
            return None
        frames = self.backbone._get_feature_vector_attention_mask(
            hidden.shape[1] - self._extra_tokens(hidden.shape[1]), attention_mask
        )
        return frames.bool()

    def _extra_tokens(self, seq_len: int) -> int:
        return int((self.role_layout(seq_len) != PATCH).sum())

    def pool(self, hidden: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the tokens whose role is in the pooling set: ``[B, T, D] -> [B, D]``."""
        return pool_roles(hidden, self.role_layout(hidden.shape[1]), self.pooling, frames)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """``[B, L, n_mels]`` or ``[B, S]`` → logits ``[B, num_classes]``."""
        if self.layer_aggregation != "last":  # pool every hidden state: [B, L + 1, D] to the head
            states, frames = self.encode_layers(input_values, attention_mask)
            return self.head(torch.stack([self.pool(h, frames) for h in states], dim=1))
        hidden, frames = self.encode(input_values, attention_mask)
        return self.head(self.pool(hidden, frames))

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True):
        """Train mode for what trains; frozen sub-trees go to eval unless the profile says not."""
        super().train(mode)
        keep_train = self.options.frozen_modules_train_mode
        if keep_train is None:  # the reference: the family's code (M6), else the method's (R26)
            keep_train = self.family_record.reference_train_mode
        if keep_train is None:
            keep_train = get_method(self.method).plain_wrapper if self.method else True
        if mode and not keep_train:
            self.backbone.eval()
            _train_trainable(self.backbone)
        follow_mode(self, mode)  # music LoRA / SSF reference: merge on eval (M5)
        return self

    # ------------------------------------------------------------------ merging
    def _mergeable(self) -> list[nn.Module]:
        if not get_method(self.method).merges:
            raise ValueError(f"method {self.method!r} does not merge into the backbone")
        return [m for m in self.backbone.modules() if callable(getattr(m, "merge", None))]

    @torch.no_grad()
    def merge(self, unload: bool = False) -> PetlModel:
        """Fold the method's weights into the frozen backbone weights (idempotent).

        Calls ``merge()`` on every backbone sub-module that has one (e.g. ``LoRALinear``); the
        merged forward costs no more than the plain backbone's. Merged weights are for inference.
        ``unload=True`` then swaps every such wrapper for the plain module its ``unload()`` returns
        (e.g. ``nn.Linear``), so the model has no extra modules; this cannot be undone and the
        method's parameters leave the model (export only: ``save_trained`` no longer applies).
        """
        for module in self._mergeable():
            module.merge()
        if unload:
            for name, module in list(self.backbone.named_modules()):
                if name and callable(getattr(module, "unload", None)):
                    anatomy.replace_module(self.backbone, name, module.unload())
        return self

    @torch.no_grad()
    def unmerge(self) -> PetlModel:
        """Undo :meth:`merge` (idempotent): ``unmerge()`` on every sub-module that has one."""
        for module in self._mergeable():
            if callable(getattr(module, "unmerge", None)):
                module.unmerge()
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, keeping merged weights consistent: modules merged at
        the time (``merge_on_eval`` in eval mode) are unmerged before the load and merged with
        the loaded factors after it, so a best-epoch snapshot of the factors loads exactly."""
        merged = [m for m in self.backbone.modules() if getattr(m, "merged", False) is True]
        with torch.no_grad():
            for module in merged:
                module.unmerge()
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        with torch.no_grad():
            for module in merged:
                module.merge()
        return out

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable parameters, the buffers of injected (``petl_``) modules and the running
        statistics of every BatchNorm (they move in train mode, trainable or not: MusicFM's
        front end, the scratch baseline, the reference profile's frozen modules), detached."""
        state = {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}
        for n, b in self.named_buffers():
            if ".petl_" in f".{n}" or n.startswith("petl_"):
                state[n] = b.detach()
        for name, module in self.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for n, b in module.named_buffers(prefix=name, recurse=False):
                    state[n] = b.detach()
        return state

    def feature_extractor(self, **kwargs):
        """The extractor the backbone's family takes (see ``backbones.feature_extractor``); a
        waveform one normalises over the padding or not as ``options.norm_over_padding`` says
        (R27) unless ``kwargs`` say it."""
        if self.family_record.input_kind == "waveform":
            kwargs.setdefault("norm_over_padding", self.options.norm_over_padding)
        return feature_extractor(self.backbone, **kwargs)


def _train_trainable(module: nn.Module, name: str = "") -> None:
    """Train mode for sub-trees that train whole (every parameter trainable) and for injected
    ``petl_`` modules; everything else stays in eval (dropout, LayerDrop, HF masking off).

    So full fine-tuning keeps its blocks' dropout, a PETL method's frozen blocks run as in
    inference while its adapters (BatchNorm, dropout) train — as the reference PETL wrappers do.
    """
    params = list(module.parameters())
    if name.startswith("petl_") or (params and all(p.requires_grad for p in params)):
        module.train()
        return
    for child_name, child in module.named_children():
        _train_trainable(child, child_name)


def build_model(
    backbone: str = "ast",
    checkpoint: str | None = None,
    backbone_config: dict[str, Any] | str | None = None,
    num_classes: int = 2,
    method: str = "linear",
    method_config: dict[str, Any] | None = None,
    task: str = "multiclass",
    pooling: str = "ALL",
    profile: str = "corrected",
    options: dict[str, Any] | None = None,
    seed: int | None = None,
    encoder_depth: int | None = None,
    head: str = "linear",
    layer_aggregation: str = "last",
) -> PetlModel:
    """Build backbone + method + pooling + head (design §4).

    Args:
        backbone: a registered family (``list_backbones()``: ``'ast'``, ``'wav2vec2'``,
            ``'hubert'``, ``'mert'``, ``'musicfm'``, ``'scratch'``).
        checkpoint: None (base config, random weights), HF id, local folder or ``'builtin:...'``.
        backbone_config: config overrides, or ``'tiny'`` for the family's tiny test config.
        num_classes: head outputs C.
        method: a name from :func:`list_methods` (reference spellings accepted).
        method_config: the method's keys (design §4 table); unknown keys are errors.
        task: ``'multiclass'`` | ``'multilabel'``.
        pooling: ``'ALL'`` | ``'CLS'`` | ``'CLS_DIST'`` | ``'PROMPTS'`` | ``'SPEECH'`` |
            ``'PROMPTS+SPEECH'``.
        profile: ``'corrected'`` or ``'reference'`` (reproduce the published code's behaviour).
        options: :class:`ModelOptions` overrides (each quirk switch on its own).
        seed: seeds torch before the head and the method's modules are initialised.
        encoder_depth: keep only the first N transformer blocks (None = all). The music
            reference keeps 6 (quirk M2). The checkpoint loads whole, then the blocks are sliced.
        head: ``'linear'`` | ``'mlp'`` (the music reference's probe head; see :mod:`.heads`).
        layer_aggregation: ``'last'`` | ``'weighted_sum'`` | ``'conv1d'``: which hidden states
            feed the head (layer-wise probing, see :mod:`.heads`).
    """
    check_profile(profile)
    family = get_family(backbone)
    spec, cfg = _method_for(family, method, method_config, profile)
    opts = build(ModelOptions, options, profile, owner="model options")
    pool = _check_head_args(family, task, pooling, num_classes, head, layer_aggregation)
    overrides = (
        tiny_config(family.name) if backbone_config == "tiny" else dict(backbone_config or {})
    )
    eval_attention_dropout(family, overrides, opts, options)
    if seed is not None:
        torch.manual_seed(seed)
    net = load_backbone(family.name, checkpoint, overrides, pos_embed=opts.pos_embed)
    if encoder_depth is not None:
        truncate_encoder(net, encoder_depth)
    net.requires_grad_(False)
    model = PetlModel(net, num_classes, task, pool, opts, head, layer_aggregation)
    apply_method(model, spec, cfg)
    model.build_args = dict(
        backbone=family.name,
        checkpoint=checkpoint,
        backbone_config=overrides,
        num_classes=num_classes,
        method=spec.name,
        method_config={k: v for k, v in as_dict(cfg).items() if k != "profile"},
        task=task,
        pooling=pool,
        profile=profile,
        options={k: v for k, v in as_dict(opts).items() if k != "profile"},
        encoder_depth=encoder_depth,
        head=head,
        layer_aggregation=layer_aggregation,
    )
    return model.train()


def _method_for(family: Family, method: str, values: dict | None, profile: str):
    """``(spec, config)`` of ``method`` on ``family``, refused where the family does not take it."""
    spec = get_method(method)
    if family.methods is not None and spec.name not in family.methods:
        raise ConfigError(
            f"method {spec.name!r} does not apply to backbone {family.name!r}; valid methods: "
            f"{', '.join(family.methods)}"
        )
    return spec, make_config(spec.name, values, profile)


def _check_head_args(
    family: Family, task: str, pooling: str, num_classes: int, head: str, aggregation: str
) -> str:
    """Validate task, pooling, classes and head; returns the canonical pooling name."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    pool = canonical_pooling(pooling, family)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r}; expected a positive int")
    if head not in HEADS or aggregation not in LAYER_AGGREGATIONS:
        make_head(head, 1, 1, aggregation, 1)  # raises the ConfigError naming the choices
    return pool


def apply_method(model: PetlModel, spec: MethodSpec, cfg) -> None:
    """Apply ``spec`` to the frozen ``model``, then the "which parameters train" rules that
    several methods share, from the spec's fields and the family's record (the reference's
    LayerNorms; see :class:`~petl_kit.methods.registry.MethodSpec`)."""
    hidden = model.backbone.config.hidden_size
    if spec.bottleneck is not None and (r := spec.bottleneck(cfg, hidden)) < 1:
        raise ConfigError(
            f"{spec.name} method_config: reduction_rate={cfg.reduction_rate} gives r = "
            f"round({hidden} / {cfg.reduction_rate}) = {r}; choose reduction_rate < {2 * hidden} "
            "or give bottleneck"
        )
    spec.apply(model, cfg)
    family, backbone = model.family_record, model.backbone
    if family.reference_trains_site_norms and (sites := spec.wrapped_sites(cfg)):
        anat = anatomy.anatomy_of(backbone)
        for layer in anatomy.layers(backbone):  # finetune_LN: the LN of each wrapped sub-layer
            for which in sites:
                anatomy.layer_norm(layer, which, anat).requires_grad_(True)
    norm = anatomy.final_norm(backbone)
    if family.reference_trains_final_norm and spec.trains_final_norm(cfg) and norm is not None:
        norm.requires_grad_(True)
    model.method, model.method_config = spec.name, cfg


def num_layers(model: PetlModel) -> int:
    return len(anatomy.layers(model.backbone))
