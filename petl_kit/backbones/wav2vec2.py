"""The wav2vec 2.0 and HuBERT families: frame models over a 16 kHz waveform.

Input ``[B, S]`` waveform; a 7-layer conv feature encoder (total stride 320) gives 50 frames per
second, a positional convolution adds positions, then transformer blocks (post-LN in the base
models, pre-LN with ``do_stable_layer_norm``). MERT (``mert.py``) shares the HuBERT layout.
"""

from __future__ import annotations

import functools
import math

from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

from .anatomy import frame_anatomy
from .registry import Family, register_family

# a tiny random-weight frame model for tests and demos (0.25 s at 16 kHz -> 12 frames of width 32)
TINY_FRAME = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32, 32, 32, 32, 32, 32, 32),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


def conv_hop_seconds(sample_rate: int, config) -> float:
    """Seconds between frames of a conv feature encoder: its total stride over the rate."""
    return math.prod(config.conv_stride) / sample_rate


def frame_family(name: str, config_cls, model_cls, sample_rate: int, default_checkpoint: str,
                 **fields) -> Family:  # fmt: skip
    """The record of a wav2vec2-style frame model (PETL_AST's wav2vec2 wrapper as reference)."""
    return Family(
        name=name,
        config_cls=config_cls,
        model_cls=model_cls,
        input_kind="waveform",
        sample_rate=sample_rate,
        default_checkpoint=default_checkpoint,
        anatomy=functools.partial(frame_anatomy, name),
        token_seconds=functools.partial(conv_hop_seconds, sample_rate),
        position_embeddings="conv",
        takes_attention_mask=True,
        reference_ft_last_n_layers=3,  # the reference fine-tunes the last 3 blocks
        initialiser_inits_conv1d=True,
        tiny=dict(TINY_FRAME),
        **fields,
    )


WAV2VEC2 = register_family(
    frame_family("wav2vec2", Wav2Vec2Config, Wav2Vec2Model, 16000, "facebook/wav2vec2-base-960h",
                 model_types=("wav2vec2",))
)  # fmt: skip
HUBERT = register_family(
    frame_family("hubert", HubertConfig, HubertModel, 16000, "facebook/hubert-base-ls960",
                 model_types=("hubert",))
)  # fmt: skip
