"""Prompt tuning, VPT style (Jia et al., ECCV 2022; AST reference ``prompt-tuning`` of PETL_AST).

N learned prompt tokens join the sequence that enters the first transformer block (shallow, SPT);
with ``deep=True`` (DPT) every later block gets its own N prompts, which **replace** the previous
block's outputs at the prompt positions. Prompts get no position embedding. Spec ``methods.md`` §6.

Mechanism (design §3): a forward hook on the module whose output is the block-1 input
(:func:`petl_kit.anatomy.block_input`) inserts the shallow prompts; a forward pre-hook on every
block replaces the prompt positions with that block's deep prompts and widens the attention mask
of padded frame-model batches to the prompt tokens (prompts are always attended to).

Layouts (token roles, used by pooling ``ALL``/``CLS``/``PROMPTS``/``SPEECH``/``PROMPTS+SPEECH``):

- AST, ``prompt_keep_dist=False`` (reference, R10): ``[CLS, P_1..P_N, patches]`` (DIST dropped);
- AST, ``prompt_keep_dist=True`` (corrected): ``[CLS, DIST, P_1..P_N, patches]``;
- wav2vec2 / HuBERT (kit extension): ``[P_1..P_N, frames]``, inserted after the positional conv
  (+ encoder LN for post-LN models) and before layer 1.

Init: U(−v, v), v = √(6 / (3·16·16 + D)) = 0.0625 on AST base (:func:`vpt_uniform_bound`); prompts
are bare parameters, so R2 leaves them alone. Prompt dropout (``dropout``) acts on the prompts each
time they are inserted (the reference's prompt projection is the identity).

Trainable: prompts + head (+ final LN on AST, as the reference wrapper).
Counts (AST base): SPT 768·N, DPT 12·768·N = 9,216·N (+ 1,536 + head).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import anatomy
from ..backbones.anatomy import DIST, PATCH, PROMPT
from ..backbones.registry import get_family
from ..config import ConfigError, option
from ._init import vpt_uniform_bound
from .registry import MethodConfig, MethodSpec, register_method


@dataclass(frozen=True)
class PromptTuningConfig(MethodConfig):
    """Prompt-tuning keys (design §4).

    num_prompts: N prompt tokens per block (reference ``prompt_len_prompt`` 25).
    deep: DPT (every block has its own prompts) or SPT (block 1 only).
    dropout: dropout on the prompt tokens (reference ``--drop_prompt`` 0.0).
    prompt_keep_dist: R10, AST only: False (reference: the prompts replace DIST) → True.
    """

    num_prompts: int = 25
    deep: bool = True
    dropout: float = 0.0
    prompt_keep_dist: bool = option(False, True)

    def __post_init__(self):
        if self.num_prompts < 1:
            raise ConfigError(
                f"prompt_tuning method_config: num_prompts = {self.num_prompts}; "
                "expected an int >= 1"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"prompt_tuning method_config: dropout = {self.dropout}; expected 0 <= dropout < 1"
            )


def extend_attention_mask(mask, start: int, n: int):
    """Open ``n`` new positions at ``start`` of a 4-D attention mask ``[B, 1, Tq, Tk]``.

    The new key columns are attended to by every query (True / 0.0); the new query rows copy row 0
    (a padding mask's rows are all the same: they depend on the key only).
    Returns ``[B, 1, Tq + n, Tk + n]``; None stays None.
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise TypeError(
            f"prompt_tuning: cannot widen an attention mask of type {type(mask).__name__}; "
            "use attn_implementation 'sdpa' or 'eager'"
        )
    fill = (torch.ones if mask.dtype == torch.bool else torch.zeros)(
        (*mask.shape[:-1], n), dtype=mask.dtype, device=mask.device
    )
    mask = torch.cat([mask[..., :start], fill, mask[..., start:]], dim=-1)  # keys
    rows = mask[..., :1, :].expand(*mask.shape[:-2], n, mask.shape[-1])
    return torch.cat([mask[..., :start, :], rows, mask[..., start:, :]], dim=-2)  # queries


class PromptTokens(nn.Module):
    """The prompts and the hooks that put them into the sequence.

    Attributes:
        shallow: ``[N, D]`` prompts inserted before block 1.
        deep: ``[L-1, N, D]`` prompts replacing positions ``start..start+N`` before blocks 2..L,
            or None (SPT).
        start: index of the first prompt in the sequence (AST 1 or 2, frame models 0).
        replaces: tokens the shallow prompts replace at ``start`` (1 = the DIST token, R10).

    The hooks are bound methods (not closures), so ``copy.deepcopy`` of the model rebinds them.
    """

    def __init__(
        self,
        n_layers: int,
        num_prompts: int,
        hidden: int,
        deep: bool,
        dropout: float,
        start: int,
        replaces: int,
        bound: float,
    ):
        super().__init__()
        self.shallow = nn.Parameter(torch.empty(num_prompts, hidden).uniform_(-bound, bound))
        self.deep = (
            nn.Parameter(torch.empty(n_layers - 1, num_prompts, hidden).uniform_(-bound, bound))
            if deep and n_layers > 1
            else None
        )
        self.dropout = nn.Dropout(dropout)
        self.num_prompts, self.start, self.replaces = num_prompts, start, replaces

    def _tokens(self, prompts: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # [N, D] -> [B, N, D]
        return self.dropout(prompts).to(like.dtype).expand(like.shape[0], -1, -1)

    def insert(self, module, args, output: torch.Tensor) -> torch.Tensor:
        """Forward hook on the block-1 input module: ``[B, T, D] -> [B, T - replaces + N, D]``."""
        s = self.start
        return torch.cat(
            [output[:, :s], self._tokens(self.shallow, output), output[:, s + self.replaces :]],
            dim=1,
        )

    def before_layer(self, index: int, module, args, kwargs):
        """Forward pre-hook on block ``index``: deep prompts and the widened attention mask."""
        args = list(args)
        hidden = args[0] if args else kwargs["hidden_states"]
        if self.deep is not None and index >= 1:
            s, n = self.start, self.num_prompts
            hidden = torch.cat(
                [hidden[:, :s], self._tokens(self.deep[index - 1], hidden), hidden[:, s + n :]],
                dim=1,
            )
            if args:
                args[0] = hidden
            else:
                kwargs["hidden_states"] = hidden
        in_args = len(args) > 1
        mask = args[1] if in_args else kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.shape[-1] != hidden.shape[1]:
            mask = extend_attention_mask(mask, self.start, hidden.shape[1] - mask.shape[-1])
            if in_args:
                args[1] = mask
            else:
                kwargs["attention_mask"] = mask
        return tuple(args), kwargs


def prompt_roles(seq_len: int, head: tuple[int, ...], num_prompts: int, prompt: int, patch: int):
    """Token roles ``[seq_len]``: ``head`` (special tokens), N prompts, then patches/frames."""
    rest = seq_len - len(head) - num_prompts
    return torch.tensor([*head, *[prompt] * num_prompts, *[patch] * rest])


def apply(model, cfg: PromptTuningConfig) -> None:
    backbone = model.backbone
    blocks = anatomy.layers(backbone)
    special = get_family(model.family).special_tokens  # AST: (CLS, DIST); frame models: ()
    if DIST in special and not cfg.prompt_keep_dist:  # the prompts take DIST's place
        start, replaces = special.index(DIST), 1
        head = special[:start] + special[start + 1 :]
    else:  # the prompts go after the special tokens
        head, start, replaces = special, len(special), 0
    prompts = PromptTokens(
        len(blocks),
        cfg.num_prompts,
        backbone.config.hidden_size,
        cfg.deep,
        cfg.dropout,
        start,
        replaces,
        vpt_uniform_bound(backbone.config),
    )
    model.petl_prompts = prompts
    anatomy.block_input(backbone).register_forward_hook(prompts.insert)
    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(
            functools.partial(prompts.before_layer, i), with_kwargs=True
        )
    model.role_layout = functools.partial(
        prompt_roles, head=head, num_prompts=cfg.num_prompts, prompt=PROMPT, patch=PATCH
    )


register_method(
    MethodSpec(
        name="prompt_tuning",
        config_cls=PromptTuningConfig,
        apply=apply,
        lr=1e-2,
        aliases=("vpt",),
        identity_at_init=lambda cfg: False,
        trains_final_norm=lambda cfg: True,
        paper="Jia et al., ECCV 2022 (VPT); Cappellazzo et al., MLSP 2024 (PETL_AST)",
        test_config={"num_prompts": 3, "deep": True},
    )
)
