"""The from-scratch baseline: a small CNN over 128-bin log-mel at 24 kHz, trained with full FT.

The music paper compares key and tempo against "a small model trained from scratch" whose
architecture, inputs and numbers were not published (spec ``datasets_and_protocols.md`` §7.7).
This model is therefore a **kit design, not the paper's**: a short-chunk CNN front end (Won et
al., "Evaluation of CNN-based automatic music tagging models", SMC 2020: 3×3 conv → norm → ReLU
→ pool blocks on log-mel) followed by dilated 1-D temporal convolutions (as in Böck & Davies'
TCN tempo/beat models), so that a frame sees several seconds — enough for beat periodicity, which
a plain 2-D CNN with a short receptive field misses.

Input: the mono 24 kHz waveform ``[B, S]`` (the kit's ``WaveformExtractor``); the log-mel is
computed inside the model, as MusicFM does, with MusicFM's settings: n_fft 2048, hop 240
(100 frames/s), 128 HTK mel bands up to 12 kHz, power → dB. So the baseline sees the same audio
as the pretrained backbones, and a ``build_model(backbone="scratch", method="full_ft")`` run is
an ordinary run: ``backbone="scratch"`` is a family registered at the end of this file.

Shapes: ``[B, S]`` → log-mel ``[B, 1, 128, F]`` (F = S // 240 + 1) → CNN ``[B, C, 128 / 2^k,
F / 4]`` → per-frame ``Linear(C · mel', D)`` → ``[B, T, D]``, T = ceil-free ``F // 4`` (25 Hz) →
temporal convs (same length) → ``last_hidden_state [B, T, D]``; the kit's pooling and head follow.

Only full fine-tuning applies: the model has no transformer blocks for a PETL method to wrap
(its ``encoder.layers`` is empty), and training a random-init network with most of it frozen
would measure nothing. Building it with any other method is an error. Under
``profile="reference"``, full FT's ``ft_last_n_layers="auto"`` means the wav2vec2 quirk (the last
three blocks), which this model does not have: pass ``ft_last_n_layers=None`` (as the music
notebooks do) to train it whole under either profile.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from ..config import ConfigError
from .anatomy import frame_anatomy
from .registry import Family, register_family

__all__ = ["ScratchConfig", "ScratchModel", "TINY_SCRATCH"]

TINY_SCRATCH = dict(channels=[8, 16, 16, 16], hidden_size=32, temporal_layers=2)


class ScratchConfig(PretrainedConfig):
    """Config of :class:`ScratchModel` (defaults = the kit's baseline, ~0.3 M parameters).

    Args (defaults):
        sample_rate (24000), n_fft (2048), hop_length (240), n_mels (128), f_max (12000.0):
            the log-mel front end (MusicFM's).
        channels ([16, 32, 64, 64]): output channels of the 3×3 conv blocks; every block halves
            the mel axis, the first two also halve time (100 → 25 frames/s).
        hidden_size (128): D of the per-frame features (the head's input).
        temporal_layers (2): dilated Conv1d(D, D, 5) blocks, dilations 2, 4, ...; receptive field
            at 25 Hz with 2 layers ≈ 1 + 4·(2 + 4) = 25 frames = 1 s plus the CNN's.
        dropout (0.1): after each temporal block.
    """

    model_type = "petl_scratch"

    def __init__(self, sample_rate: int = 24000, n_fft: int = 2048, hop_length: int = 240,
                 n_mels: int = 128, f_max: float = 12000.0, channels=(16, 32, 64, 64),
                 hidden_size: int = 128, temporal_layers: int = 2, dropout: float = 0.1,
                 **kwargs):  # fmt: skip
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_mels, self.f_max = n_mels, f_max
        self.channels = [int(c) for c in channels]
        self.hidden_size, self.temporal_layers, self.dropout = hidden_size, temporal_layers, dropout
        super().__init__(**kwargs)
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ConfigError(f"scratch backbone_config channels={channels!r}; need positive ints")
        if n_mels % 2 ** len(self.channels):
            raise ConfigError(
                f"scratch backbone_config: n_mels={n_mels} must be divisible by "
                f"2**len(channels) = {2 ** len(self.channels)} (each conv block halves it)"
            )


class LogMel(nn.Module):
    """``[B, S]`` waveform → ``[B, 1, n_mels, S // hop + 1]`` dB log-mel: torchaudio's
    ``MelSpectrogram`` (Hann window, centred reflect padding, power 2, HTK mel) + ``AmplitudeToDB``
    defaults. No parameters and no buffers: the window and filterbank are made on first use per
    device, so checkpoints hold only learnt weights and meta-device construction works."""

    def __init__(self, cfg: ScratchConfig):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop = cfg.sample_rate, cfg.n_fft, cfg.hop_length
        self.n_mels, self.f_max = cfg.n_mels, cfg.f_max
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._tables:
            fb = torchaudio.functional.melscale_fbanks(
                self.n_fft // 2 + 1, 0.0, self.f_max, self.n_mels, self.sample_rate
            )  # [n_fft // 2 + 1, n_mels]
            self._tables[device] = (torch.hann_window(self.n_fft).to(device), fb.to(device))
        return self._tables[device]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        window, fb = self._table(wave.device)
        with torch.autocast(wave.device.type, enabled=False):  # dB of tiny powers needs fp32
            spec = torch.stft(wave.float(), self.n_fft, self.hop, window=window, center=True,
                              pad_mode="reflect", return_complex=True).abs() ** 2  # fmt: skip
            mel = torch.einsum("bfk,fm->bmk", spec, fb)  # [B, n_mels, frames]
            return (10.0 * torch.log10(mel.clamp_min(1e-10)))[:, None]


def _block(c_in: int, c_out: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(1, c_out),
        nn.ReLU(),
        nn.MaxPool2d(pool),
    )


class TemporalBlock(nn.Module):
    """Residual dilated ``Conv1d(D, D, 5)`` → norm → ReLU → dropout on ``[B, D, T]`` (same T)."""

    def __init__(self, dim: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 5, padding=2 * dilation, dilation=dilation, bias=False)
        self.norm = nn.GroupNorm(1, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(torch.relu(self.norm(self.conv(x))))


class _NoBlocks(nn.Module):
    """What the anatomy sees as the transformer encoder: no blocks. Only ``full_ft`` applies to
    this family (``Family.methods``), so no method looks further."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList()


class ScratchPreTrainedModel(PreTrainedModel):
    config_class = ScratchConfig
    base_model_prefix = "scratch"
    main_input_name = "input_values"

    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's own inits (Kaiming-uniform convs, norms at 1/0) are what CNN baselines use
        pass


class ScratchModel(ScratchPreTrainedModel):
    """The from-scratch baseline (module docstring). Output: ``BaseModelOutput`` whose
    ``last_hidden_state`` is ``[B, T, D]`` at 25 frames/s; ``hidden_states`` (on request) are the
    per-frame projection and each temporal block's output."""

    def __init__(self, config: ScratchConfig):
        super().__init__(config)
        self.feature_extractor = LogMel(config)  # no parameters: full_ft's freeze is a no-op
        blocks, c_in = [], 1
        for i, c in enumerate(config.channels):
            blocks.append(_block(c_in, c, (2, 2) if i < 2 else (2, 1)))
            c_in = c
        self.cnn = nn.Sequential(*blocks)
        mel_out = config.n_mels // 2 ** len(config.channels)
        self.project = nn.Sequential(nn.Linear(c_in * mel_out, config.hidden_size), nn.ReLU())
        self.temporal = nn.ModuleList(
            TemporalBlock(config.hidden_size, 2 ** (i + 1), config.dropout)
            for i in range(config.temporal_layers)
        )
        self.encoder = _NoBlocks()
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ):
        """``input_values [B, S]`` → ``last_hidden_state [B, T, D]`` (``attention_mask`` is
        accepted for the kit's frame-model calling convention; valid frames come from
        :meth:`_get_feature_vector_attention_mask`)."""
        x = self._standardise(self.feature_extractor(input_values), attention_mask)  # [B,1,M,F]
        x = self.cnn(x)  # [B, C, M', F // 4]
        b, c, m, t = x.shape
        h = self.project(x.permute(0, 3, 1, 2).reshape(b, t, c * m))  # [B, T, D]
        states = [h]
        h = h.transpose(1, 2)  # [B, D, T]
        for block in self.temporal:
            h = block(h)
            states.append(h.transpose(1, 2))
        h = h.transpose(1, 2)  # [B, T, D]
        return BaseModelOutput(
            last_hidden_state=h, hidden_states=tuple(states) if output_hidden_states else None
        )

    def _standardise(self, mel: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Per-clip zero mean, unit variance of the dB log-mel over its real frames: level is a
        nuisance, and padding (-100 dB) must not shift the statistics."""
        frames = torch.ones(mel.shape[0], mel.shape[-1], device=mel.device)
        if mask is not None:
            valid = (mask.sum(-1) // self.config.hop_length + 1).clamp(1, mel.shape[-1])
            frames = (torch.arange(mel.shape[-1], device=mel.device)[None] < valid[:, None]).float()
        w = frames[:, None, None, :]  # [B, 1, 1, F]
        count = w.sum((1, 2, 3), keepdim=True) * mel.shape[2]
        mean = (mel * w).sum((1, 2, 3), keepdim=True) / count
        var = ((mel - mean) ** 2 * w).sum((1, 2, 3), keepdim=True) / count
        return (mel - mean) / torch.sqrt(var + 1e-5) * w

    def frames_for(self, num_samples: torch.Tensor | int):
        """Output frames for ``num_samples`` input samples: mel frames S // hop + 1, then // 4."""
        return (num_samples // self.config.hop_length + 1) // 4

    def _get_feature_vector_attention_mask(
        self, feature_vector_length: int, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """``[B, S]`` sample mask → ``[B, T]`` long frame mask (1 on frames of real audio)."""
        lengths = self.frames_for(attention_mask.sum(-1)).clamp(1, feature_vector_length)
        frames = torch.arange(feature_vector_length, device=attention_mask.device)
        return (frames[None] < lengths[:, None]).long()


# the from-scratch music baseline: no blocks for a PETL method, so full FT only (module docstring)
SCRATCH = register_family(
    Family(
        name="scratch",
        config_cls=ScratchConfig,
        model_cls=ScratchModel,
        input_kind="waveform",
        sample_rate=24000,
        default_checkpoint="",
        anatomy=lambda config: frame_anatomy("scratch", config),
        token_seconds=lambda config: 4 * config.hop_length / config.sample_rate,  # 25 Hz
        position_embeddings="none",
        takes_attention_mask=True,
        reference_ft_last_n_layers=3,  # the wav2vec2 quirk; it has no blocks (module docstring)
        initialiser_inits_conv1d=True,
        tiny=dict(TINY_SCRATCH),
        methods=("full_ft",),
    )
)
