"""MusicFM (Won et al., "A foundation model for music informatics", ICASSP 2024), 25 Hz BEST-RQ
conformer, written in the kit around transformers' own ``Wav2Vec2ConformerEncoder``.

Spec ``backbones_and_features.md`` §7 / §7.1. The model, 24 kHz mono waveform in::

    wave [B, S] -> MelSpectrogram(24000, n_fft 2048, hop 240, 128 mels) -> AmplitudeToDB
               (fp32, no grad) -> drop the last frame -> (x - mean) / std       [B, 128, S/240]
        -> Conv2dSubsampling: 2 residual 2-D blocks, stride (2, 2) each          [B, 512, 32, S/960]
           -> ``b c f t -> b t (c f)`` -> Linear(16384 -> 1024)                 [B, S/960, 1024]
        -> Wav2Vec2ConformerEncoder (rotary, depthwise kernel 31), final LN     [B, T, 1024]

so 30 s (720,000 samples) give T = 750 tokens at 25 Hz. Each conformer layer is
``x += ½·FFN1(LN(x)); x += MHSA(LN(x)); x += Conv(x); x += ½·FFN2(LN(x)); x = LN(x)``.
The encoder owns a positional conv (8,389,760 parameters in the full model) that transformers'
encoder never applies; it exists so that parameter counts and checkpoint keys match.

Outputs follow transformers: ``last_hidden_state`` is the encoder's final LN of the last layer;
with ``output_hidden_states=True``, ``hidden_states`` has ``num_hidden_layers + 1`` entries: index 0
is the first layer's input, index i the raw output of layer i, and the last one the final-LN
output (as the published model's encoder returned them). So the music reference's 6-layer latent
is ``hidden_states[-1]`` of a 6-layer model, while index 6 of the 12-layer model is the raw
(un-normalised) layer-6 output.

Published checkpoints load with :func:`load_musicfm` (strict; M9: all 12 layers load, then the
encoder is sliced to the requested depth). The music reference's other MusicFM quirks: M7
(attention dropout at evaluation) is ``MusicFMConfig.eval_attention_dropout``; M6 (BatchNorm
statistics updated in frozen modules) follows ``build_model(options={"frozen_modules_train_mode":
True})``. How the kit's methods reach a conformer block is in :mod:`petl_kit.anatomy`.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import torch
import torchaudio
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import Wav2Vec2ConformerConfig
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import (
    Wav2Vec2ConformerEncoder,
    Wav2Vec2ConformerEncoderLayer,
    Wav2Vec2ConformerPreTrainedModel,
    Wav2Vec2ConformerSelfAttention,
)
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from ..config import ConfigError
from ..errors import CheckpointError

# scalar statistics of the 2048-FFT dB mel spectrogram over the Million Song Dataset
# (MusicFM's ``msd_stats.json``: melspec_2048_mean / melspec_2048_std)
MSD_MEL_MEAN = 6.768444971712967
MSD_MEL_STD = 18.417922652295623


@strict
class MusicFMConfig(Wav2Vec2ConformerConfig):
    """MusicFM 25 Hz: the rotary wav2vec2-conformer-large encoder config plus the front end.

    Encoder fields are those of ``Wav2Vec2ConformerConfig`` with MusicFM's values (hidden 1,024,
    16 heads, FFN 4,096, 12 layers, rotary, depthwise kernel 31, swish, dropouts 0.1, no
    LayerDrop, no SpecAugment embedding). Front end:

    Attributes:
        sample_rate: input rate in Hz (24,000).
        n_fft, hop_length, n_mels: the mel spectrogram (2,048 / 240 / 128; 100 frames per second).
        subsampling_channels: channels of the two residual conv blocks (512).
        mel_mean, mel_std: scalar normalisation of the dB mel (MSD statistics).
        eval_attention_dropout: quirk M7 of the music reference: attention dropout
            (``attention_dropout``) also acts in eval mode, so predictions are stochastic
            (reference True → corrected False).
    """

    model_type = "musicfm"

    hidden_size: int = 1024
    num_hidden_layers: int = 12
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "swish"
    layerdrop: float | int = 0.0
    mask_time_prob: float | int = 0.0
    position_embeddings_type: str | None = "rotary"
    sample_rate: int = 24000
    n_fft: int = 2048
    hop_length: int = 240
    n_mels: int = 128
    subsampling_channels: int = 512
    mel_mean: float = MSD_MEL_MEAN
    mel_std: float = MSD_MEL_STD
    eval_attention_dropout: bool = False

    def __post_init__(self, **kwargs):
        # the front-end fields are checked here: they are the kit's, not transformers'
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "subsampling_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"MusicFM backbone_config {name}={value!r}; expected an int >= 1")
        if self.n_mels % 4:
            raise ConfigError(
                f"MusicFM backbone_config n_mels={self.n_mels}; the conv subsampling halves the "
                "mel axis twice, so it must be a multiple of 4"
            )
        if not isinstance(self.eval_attention_dropout, bool):
            raise ConfigError(
                f"MusicFM backbone_config eval_attention_dropout={self.eval_attention_dropout!r}; "
                "expected True or False"
            )
        if not self.mel_std > 0:
            raise ConfigError(f"MusicFM backbone_config mel_std={self.mel_std!r}; expected > 0")
        super().__post_init__(**kwargs)


class LogMel(nn.Module):
    """``wave [B, S] -> normalised dB mel [B, n_mels, S // hop]``, fp32, never differentiated.

    torchaudio ``MelSpectrogram`` (Hann window n_fft, centre reflect padding, power 2, HTK mel,
    fmin 0, fmax sr/2) and ``AmplitudeToDB`` (no top_db); the last frame is dropped (100 frames
    per second at 24 kHz), then ``(x - mel_mean) / mel_std``. The window and filterbank buffers
    are saved by ``save_pretrained``; :func:`load_musicfm` rebuilds them from the config.
    """

    def __init__(self, config: MusicFMConfig):
        super().__init__()
        # always real tensors: the filterbank cannot be computed on the meta device
        with torch.device("cpu"):
            self.spectrogram = torchaudio.transforms.MelSpectrogram(
                sample_rate=config.sample_rate,
                n_fft=config.n_fft,
                hop_length=config.hop_length,
                n_mels=config.n_mels,
            )
        self.to_db = torchaudio.transforms.AmplitudeToDB()
        self.mean, self.std = config.mel_mean, config.mel_std

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(wave.device.type, enabled=False):
            self.spectrogram.float()  # stays fp32 even after model.half()
            mel = self.to_db(self.spectrogram(wave.float()))[..., :-1]
            return (mel - self.mean) / self.std


class Res2dBlock(nn.Module):
    """Residual 2-D conv block: ``ReLU(BN(conv(ReLU(BN(conv(x))))) + BN(conv(x)))``.

    ``[B, C_in, F, T] -> [B, C_out, F/2, T/2]`` (3×3 kernels, padding 1, stride (2, 2) on the
    first conv and on the shortcut conv).
    """

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int] = (2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv3 = nn.Conv2d(c_in, c_out, 3, padding=1, stride=stride)  # strided shortcut
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + self.bn3(self.conv3(x)))


class Conv2dSubsampling(nn.Module):
    """``mel [B, n_mels, F] -> tokens [B, F/4, hidden]``: two :class:`Res2dBlock` s (``conv``),
    ``b c f t -> b t (c f)`` and ``linear`` = Linear(channels · n_mels/4 → hidden)."""

    def __init__(self, n_mels: int, channels: int, hidden: int):
        super().__init__()
        self.conv = nn.Sequential(Res2dBlock(1, channels), Res2dBlock(channels, channels))
        self.linear = nn.Linear(channels * (n_mels // 4), hidden)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv(mel.unsqueeze(1))  # [B, C, n_mels/4, T]
        b, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)  # b c f t -> b t (c f)
        return self.linear(x)


@contextlib.contextmanager
def _attention_dropout_at_eval(model: nn.Module):
    """M7: the attention modules read ``self.training`` to choose their dropout; flip only that
    flag (not their children's, not the rest of the model) for the duration of a forward."""
    modules = [m for m in model.modules() if isinstance(m, Wav2Vec2ConformerSelfAttention)]
    flags = [m.training for m in modules]
    for m in modules:
        m.training = True
    try:
        yield
    finally:
        for m, flag in zip(modules, flags, strict=True):
            m.training = flag


class MusicFMModel(Wav2Vec2ConformerPreTrainedModel):
    """MusicFM 25 Hz backbone: :class:`LogMel` → :class:`Conv2dSubsampling` (``conv``) →
    ``Wav2Vec2ConformerEncoder`` (``conformer``). See the module docstring for shapes.

    A transformers ``PreTrainedModel``: ``save_pretrained`` / ``from_pretrained`` work on its own
    folders; published ``.pt`` checkpoints load with :func:`load_musicfm`.
    """

    config: MusicFMConfig
    config_class = MusicFMConfig
    base_model_prefix = "musicfm"
    _can_record_outputs = {
        "hidden_states": Wav2Vec2ConformerEncoderLayer,
        "attentions": OutputRecorder(Wav2Vec2ConformerSelfAttention, index=1),
    }

    def __init__(self, config: MusicFMConfig):
        super().__init__(config)
        self.mel = LogMel(config)
        self.conv = Conv2dSubsampling(
            config.n_mels, config.subsampling_channels, config.hidden_size
        )
        self.conformer = Wav2Vec2ConformerEncoder(config)
        self.post_init()

    @property
    def feature_extractor(self) -> nn.Module:
        """The trainable front end (the conv subsampling), as wav2vec2's conv feature encoder."""
        return self.conv

    def freeze_feature_encoder(self) -> None:
        self.conv.requires_grad_(False)

    def _get_feat_extract_output_lengths(self, input_lengths, add_adapter=None):
        """Tokens for ``input_lengths`` samples: S // hop mel frames, then ⌈·/2⌉ twice."""
        frames = torch.div(input_lengths, self.config.hop_length, rounding_mode="floor")
        for _ in range(2):  # kernel 3, padding 1, stride 2
            frames = torch.div(frames - 1, 2, rounding_mode="floor") + 1
        return frames

    @capture_outputs
    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutput:
        """``input_values [B, S]`` (24 kHz waveform), ``attention_mask [B, S]`` (1 = real sample,
        optional) → ``BaseModelOutput(last_hidden_state [B, T, D])``; ``output_hidden_states=True``
        adds ``hidden_states`` (``num_hidden_layers + 1`` tensors ``[B, T, D]``)."""
        for key in ("output_hidden_states", "output_attentions", "return_dict"):
            kwargs.pop(key, None)  # consumed by capture_outputs
        mel = self.mel(input_values)  # [B, n_mels, F]
        hidden = self.conv(mel.to(self.conv.linear.weight.dtype))  # [B, T, D]
        frames = None
        if attention_mask is not None:
            frames = self._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
        dropout_at_eval = self.config.eval_attention_dropout and not self.training
        with _attention_dropout_at_eval(self) if dropout_at_eval else contextlib.nullcontext():
            out = self.conformer(hidden, attention_mask=frames, **kwargs)
        return BaseModelOutput(last_hidden_state=out.last_hidden_state)


# --------------------------------------------------------------------------- published checkpoints
# pre-training parts that transfer does not use: the codebook projection, the CLS token, the
# random-projection quantizer and the mel buffers (rebuilt here from the config)
DROPPED_KEYS = ("linear.weight", "linear.bias", "cls_token")
DROPPED_PREFIXES = ("quantizer_", "preprocessor_")
# weight-norm names of the positional conv before torch's parametrizations
LEGACY_NAMES = {
    "conformer.pos_conv_embed.conv.weight_g": (
        "conformer.pos_conv_embed.conv.parametrizations.weight.original0"
    ),
    "conformer.pos_conv_embed.conv.weight_v": (
        "conformer.pos_conv_embed.conv.parametrizations.weight.original1"
    ),
}
TORCH_SUFFIXES = (".pt", ".ckpt", ".pth", ".bin")


def is_checkpoint_file(checkpoint: str | os.PathLike) -> bool:
    """A checkpoint file (existing, or named like one) rather than a folder or a hub id."""
    path = Path(checkpoint).expanduser()
    return path.is_file() or path.suffix in (*TORCH_SUFFIXES, ".safetensors")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, read safely.

    ``.pt`` / ``.ckpt`` / ``.pth`` / ``.bin``: ``torch.load(weights_only=True)`` (no code runs);
    ``.safetensors``: safetensors. The file may hold a plain state dict or a ``{"state_dict": ...}``
    wrapper (the published MusicFM file, whose keys carry the training module's ``model.``
    prefix); the wrapper and a prefix shared by every key are removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"MusicFM checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif path.suffix in TORCH_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickles with code objects are refused by weights_only
            raise CheckpointError(
                f"cannot read {path} with torch.load(weights_only=True) "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "re-save its state dict alone: torch.save(ckpt['state_dict'], 'musicfm.pt')"
            ) from err
    else:
        raise CheckpointError(
            f"MusicFM checkpoint {path}: unknown file type {path.suffix!r}; valid: "
            f"{', '.join(TORCH_SUFFIXES)}, .safetensors, or a save_pretrained folder"
        )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds no state dict of tensors (plain or under 'state_dict')"
        )
    prefix = "model."
    if state and all(k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def checkpoint_layers(state: dict[str, torch.Tensor]) -> int:
    """Number of conformer layers in a state dict (``conformer.layers.<i>.``)."""
    indices = {int(m.group(1)) for k in state if (m := re.match(r"conformer\.layers\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def transfer_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """``(state for MusicFMModel, dropped keys)``: legacy weight-norm names mapped, pre-training
    parts (:data:`DROPPED_KEYS`, :data:`DROPPED_PREFIXES`) dropped."""
    out, dropped = {}, []
    for key, value in state.items():
        if key in DROPPED_KEYS or key.startswith(DROPPED_PREFIXES):
            dropped.append(key)
        else:
            out[LEGACY_NAMES.get(key, key)] = value
    return out, dropped


def slice_layers(model: MusicFMModel, num_layers: int) -> MusicFMModel:
    """Keep the first ``num_layers`` conformer layers (the encoder's final LN stays), in place."""
    have = len(model.conformer.layers)
    if not 1 <= num_layers <= have:
        raise CheckpointError(f"num_hidden_layers={num_layers}; the checkpoint has {have} layers")
    model.conformer.layers = model.conformer.layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    return model


def load_musicfm(checkpoint: str | os.PathLike, **config_overrides) -> MusicFMModel:
    """Load MusicFM weights strictly, then keep ``num_hidden_layers`` layers (M9).

    Args:
        checkpoint: a published checkpoint file (see :func:`read_state_dict`; keys and shapes of
            spec §7.1, ``weight_g``/``weight_v`` accepted) or a folder written by
            ``MusicFMModel.save_pretrained``.
        config_overrides: :class:`MusicFMConfig` fields. ``num_hidden_layers`` (default: all the
            checkpoint has) is applied by loading every layer and slicing, so a 6-layer model
            from the 12-layer file loads strictly (the music reference's 6-layer strict load
            fails, M9).

    Raises:
        CheckpointError: a missing or unexpected key (named), a shape mismatch, an unreadable file.
    """
    overrides = dict(config_overrides)
    depth = overrides.pop("num_hidden_layers", None)
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        model = MusicFMModel.from_pretrained(str(path), **overrides)
        return slice_layers(model, depth) if depth else model
    state, _ = transfer_state_dict(read_state_dict(path))
    config = MusicFMConfig(**{**overrides, "num_hidden_layers": checkpoint_layers(state)})
    model = MusicFMModel(config)
    expected = {k for k in model.state_dict() if not k.startswith("mel.")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the MusicFM layout (spec §7.1): missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}"
        )
    try:
        model.load_state_dict(state, strict=False)  # every key checked above; mel is rebuilt
    except RuntimeError as err:
        raise CheckpointError(f"{path}: {err}; check the MusicFM backbone_config sizes") from err
    return slice_layers(model, depth) if depth else model


# a tiny random-weight MusicFM for tests and demos (1 s of audio -> 25 tokens of width 32)
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    subsampling_channels=8,
    n_mels=32,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    conv_depthwise_kernel_size=7,
)
