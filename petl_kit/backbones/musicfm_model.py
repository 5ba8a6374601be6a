"""The MusicFM 25 Hz model (spec ``backbones_and_features.md`` §7): its config, the log-mel
front end, the conv subsampling and transformers' ``Wav2Vec2ConformerEncoder``.

Shapes and the published checkpoints' loading are described in :mod:`.musicfm`, the family file.
"""

from __future__ import annotations

import contextlib

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
