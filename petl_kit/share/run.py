"""A finished run, loaded for use: its model, params, class names and feature pipeline.

>>> run = load_run("outputs/quickstart/linear-20260101-120000-ab12")   # or a `kit` export
>>> run.predict(["dog.wav", "clips/"])        # file, label, probability, one column per class

``predict`` reads audio of any length the way the run's evaluation did: resampled to the
extractor's rate, cut into the run's ``eval_segment`` segments when it has one (the segment
probabilities averaged per clip with its ``segment_aggregate``), else the whole clip through the
extractor (AST: padded or cropped to ``max_length`` frames; waveform models: cropped to
``max_length`` samples when the run set one). Bad files raise the loaders' :class:`AudioError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..errors import AudioError

# what soundfile reads (libsndfile); a folder given to predict contributes these files
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au")
PROGRESS_FROM = 8  # progress=None: a bar from this many inputs on
RUN_FILES = "params.yaml, metrics.json, labels.json and weights/ (build_args.json, " \
    "trainable.safetensors)"  # fmt: skip


@dataclass
class LoadedRun:
    """A trained model ready to predict (see :func:`load_run`).

    Attributes:
        folder: the run folder or ``kit`` export it came from.
        model: the :class:`~petl_kit.model.PetlModel` in eval mode on ``device``.
        params: the run's parameters (``params.yaml``).
        labels: class names; output ``i`` of the model means ``labels[i]``.
        extractor: the feature extractor the run trained with.
        segment: ``eval_segment`` in samples at ``extractor.sample_rate`` (None: whole clips).
        aggregate: how segment outputs become clip probabilities (``'mean_prob'`` |
            ``'mean_sigmoid'``, ``TrainConfig.segment_aggregate``).
        metrics: the run's ``metrics.json``; ``device``: where the model runs.
    """

    folder: Path
    model: Any
    params: dict
    labels: list[str]
    extractor: Any
    segment: int | None
    aggregate: str
    metrics: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def sample_rate(self) -> int:
        return self.extractor.sample_rate

    # ------------------------------------------------------------------ inputs
    def _read(self, source, sample_rate: int | None, channel) -> torch.Tensor:
        from ..data.audio import load_audio, resample

        if isinstance(source, (str, Path)):
            return load_audio(source, self.sample_rate, channel=channel)
        if not isinstance(source, (np.ndarray, torch.Tensor)):
            raise TypeError(
                f"predict: an input is a {type(source).__name__}; give file or folder paths, or "
                "mono waveforms (numpy arrays or tensors of shape [time])"
            )
        wave = torch.as_tensor(np.asarray(source) if isinstance(source, np.ndarray) else source)
        if wave.dim() != 1:
            raise ValueError(
                f"predict: a waveform of shape {tuple(wave.shape)}; expected mono [time] samples"
            )
        if wave.numel() == 0:
            raise AudioError("predict: an empty waveform (0 samples)")
        wave = wave.to(torch.float32)
        rate = self.sample_rate if sample_rate is None else sample_rate
        return resample(wave, rate, self.sample_rate)

    def _pieces(self, wave: torch.Tensor) -> list[torch.Tensor]:
        """The run's evaluation protocol: ⌊T / eval_segment⌋ segments, or the whole clip."""
        from ..data.segments import num_segments

        if self.segment is None:
            return [wave]
        n = num_segments(len(wave), self.segment)
        return [wave[k * self.segment : (k + 1) * self.segment] for k in range(n)]

    def _item(self, piece: torch.Tensor) -> dict:
        feats = self.extractor(piece)
        if self.extractor.input_kind == "waveform":
            return {"input_values": feats[0], "attention_mask": feats[1], "label": 0, "index": 0}
        return {"input_values": feats, "label": 0, "index": 0}

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def _logits(self, items: list[dict], batch_size: int) -> torch.Tensor:
        from ..data.dataset import collate
        from ..training.metrics import forward_batch

        out = []
        for start in range(0, len(items), batch_size):
            batch = collate(items[start : start + batch_size])
            out.append(forward_batch(self.model, batch, self.device)[0].cpu())
        return torch.cat(out)

    def probabilities(
        self,
        inputs,
        *,
        batch_size: int = 16,
        sample_rate: int | None = None,
        channel: str | int = "mean",
        progress: bool | None = None,
    ) -> tuple[list[str], np.ndarray, list[dict]]:
        """``(names, probs [N, C], info)`` for N inputs (folders expanded to their audio files).

        ``info[i]``: ``{'seconds': clip length, 'segments': pieces read}``. Arguments as
        :meth:`predict`.
        """
        from tqdm.auto import tqdm

        from ..training.metrics import aggregate_segments, clip_probabilities

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"predict: batch_size={batch_size!r}; expected a positive int")
        sources = expand_inputs(inputs)
        names = [str(s) if isinstance(s, (str, Path)) else f"array[{i}]"
                 for i, s in enumerate(sources)]  # fmt: skip
        show = len(sources) >= PROGRESS_FROM if progress is None else progress
        pending: list[dict] = []
        logits, clip_of, info = [], [], []
        for i, source in enumerate(tqdm(sources, desc="predict", disable=not show)):
            wave = self._read(source, sample_rate, channel)
            pieces = self._pieces(wave)
            info.append({"seconds": len(wave) / self.sample_rate, "segments": len(pieces)})
            pending += [self._item(p) for p in pieces]
            clip_of += [i] * len(pieces)
            if len(pending) >= batch_size:
                logits.append(self._logits(pending, batch_size))
                pending = []
        if pending:
            logits.append(self._logits(pending, batch_size))
        out = torch.cat(logits)
        if self.segment is not None:
            index = torch.tensor(clip_of)
            probs, _, _ = aggregate_segments(self.task, out, index, index, self.aggregate)
        else:
            probs = clip_probabilities(self.task, out)
        return names, probs.numpy(), info

    def predict(
        self,
        inputs,
        *,
        batch_size: int = 16,
        threshold: float = 0.5,
        sample_rate: int | None = None,
        channel: str | int = "mean",
        progress: bool | None = None,
    ):
        """A table with one row per input clip.

        Args:
            inputs: a path (file or folder), a waveform, or a list of them. Folders contribute
                their audio files (:data:`AUDIO_SUFFIXES`, recursively, sorted). Waveforms are
                mono ``[time]`` arrays at ``sample_rate``.
            batch_size: segments per forward pass.
            threshold: multi-label runs: a tag is on when its probability is at least this.
            sample_rate: rate of the waveforms given as arrays (None: the run's,
                ``self.sample_rate``); files carry their own and are resampled.
            channel: down-mix of multi-channel files: ``'mean'`` or a 0-based channel.
            progress: a tqdm bar over the inputs (None: from :data:`PROGRESS_FROM` inputs on).

        Returns:
            ``pandas.DataFrame``: ``file``, ``seconds``, ``segments``, then by task —
            multiclass: ``label`` (top class), ``probability`` (its probability), one column per
            class; multilabel: ``tags`` (``;``-joined classes at or over ``threshold``),
            ``label``, ``probability``, one column per class; key: ``key`` (e.g. ``'A minor'``),
            ``probability``, one column per key; tempo: ``tempo_bpm`` (the §7.4 read-out of the
            300 bin probabilities, fractional BPM). Class columns are named by the class; if a
            class name clashes with a fixed column, every class column is ``p_<name>``.
        """
        import pandas as pd

        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"predict: threshold={threshold!r}; expected a probability in [0, 1]")
        names, probs, info = self.probabilities(
            inputs, batch_size=batch_size, sample_rate=sample_rate, channel=channel,
            progress=progress,
        )  # fmt: skip
        table = pd.DataFrame({"file": names, **{k: [d[k] for d in info] for k in info[0]}})
        top = probs.argmax(1)
        if self.task == "tempo":
            from ..training.music_tasks import tempo_readout

            table["tempo_bpm"] = tempo_readout(probs)
            return table
        if self.task == "multilabel":
            table["tags"] = [";".join(self.labels[c] for c in np.flatnonzero(row >= threshold))
                             for row in probs]  # fmt: skip
        table["key" if self.task == "key" else "label"] = [self.labels[c] for c in top]
        table["probability"] = probs[np.arange(len(probs)), top]
        columns = list(self.labels)
        if set(columns) & set(table.columns):
            columns = [f"p_{name}" for name in columns]
        return pd.concat([table, pd.DataFrame(probs, columns=columns)], axis=1)


def expand_inputs(inputs) -> list:
    """``inputs`` as a flat list: folders become their audio files (sorted), a single path or
    waveform a list of one. A folder without audio files is an :class:`AudioError`."""
    if isinstance(inputs, (str, Path, np.ndarray, torch.Tensor)):
        inputs = [inputs]
    if not isinstance(inputs, Iterable):
        raise TypeError(f"predict: inputs must be paths or waveforms, got {type(inputs).__name__}")
    out: list = []
    for item in inputs:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            files = sorted(p for p in Path(item).rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)  # fmt: skip
            if not files:
                raise AudioError(f"folder {item} holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
            out += files
        else:
            out.append(item)
    if not out:
        raise ValueError("predict: no input given; pass files, folders or waveforms")
    return out


# ---------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def run_labels(folder: Path, params: dict) -> list[str]:
    """The class names of a run: ``labels.json``, else (runs written before it existed) the
    class list of the run's dataset, loaded as the run loaded it."""
    path = folder / "labels.json"
    if path.is_file():
        return list(json.loads(path.read_text()))
    from ..data import load_dataset
    from ..experiments.runs import dataset_options

    try:
        return list(load_dataset(params["dataset"], params.get("data_path"),
                                 **dataset_options(params)).classes)  # fmt: skip
    except Exception as err:
        raise FileNotFoundError(
            f"{path} not found and the run's dataset {params.get('dataset')!r} (data_path "
            f"{params.get('data_path')!r}) cannot be loaded here to read its class names "
            f"({type(err).__name__}: {err}); write labels.json (a JSON list of the class names, "
            "in label order) into the run folder"
        ) from err


def segment_protocol(params: dict) -> tuple[int | None, str]:
    """``(eval_segment, segment_aggregate)`` the run evaluated with (profile defaults filled)."""
    import dataclasses

    from ..config import build
    from ..training.train import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"profile"}
    values = {k: params[k] for k in names if k in params}
    cfg = build(TrainConfig, values, params.get("profile", "corrected"))
    return cfg.eval_segment, cfg.segment_aggregate


def _check_frozen_weights_known(model, folder: Path) -> None:
    """A random-init backbone (checkpoint None) is rebuilt with new random weights: only a run
    that trained every backbone tensor (and so stored it) can be loaded faithfully."""
    if model.build_args.get("checkpoint") is not None:
        return
    stored = set(model.trainable_state_dict())
    frozen = [n for n, _ in model.named_parameters() if n not in stored]
    if frozen:
        raise ValueError(
            f"run {folder} trained on a random-init backbone (checkpoint None) whose frozen "
            f"weights ({len(frozen)} tensors, e.g. {frozen[0]}) were never stored, so it cannot "
            "be rebuilt; train from a checkpoint (a folder, hub id or 'builtin:...')"
        )


def load_run(
    folder: str | Path, *, device: str = "cpu", checkpoint: str | None = None
) -> LoadedRun:
    """Load a completed run folder (``outputs/<experiment>/<run-id>/``) or a ``kit`` export.

    Args:
        folder: holds :data:`RUN_FILES` (``labels.json`` may be missing in older runs, see
            :func:`run_labels`).
        device: where the model runs (``'cpu'``, ``'cuda'``, ``'auto'``).
        checkpoint: replaces the recorded backbone checkpoint (e.g. a local copy elsewhere).

    Raises:
        FileNotFoundError naming the missing file; ValueError when the run did not complete.
    """
    from ..backbones.registry import get_family
    from ..model import load_trained
    from ..training.train import pick_device

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"run folder {folder} not found; expected a folder with {RUN_FILES}"
        )
    for name in ("params.yaml", "weights"):
        if not (folder / name).exists():
            raise FileNotFoundError(
                f"{folder / name} not found; a run folder (or kit export) holds {RUN_FILES}"
            )
    params = _read_yaml(folder / "params.yaml")
    metrics_file = folder / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    if metrics and metrics.get("status") != "completed":
        raise ValueError(
            f"run {folder} did not complete (metrics.json status {metrics.get('status')!r}); "
            "only a completed run has trained weights to load"
        )
    if checkpoint is None and (folder / "backbone" / "config.json").is_file():
        checkpoint = str(folder / "backbone")  # a kit export carries its frozen backbone
    dev = pick_device(device)
    model = load_trained(folder / "weights", checkpoint=checkpoint).eval().to(dev)
    _check_frozen_weights_known(model, folder)
    labels = run_labels(folder, params)
    num_classes = model.build_args["num_classes"]
    if len(labels) != num_classes:
        raise ValueError(
            f"{folder}: {len(labels)} class names in labels.json but the model has "
            f"{num_classes} outputs"
        )
    fbank = get_family(model.family).input_kind == "fbank"
    # as experiments.runs._train: max_length is frames for fbank models (in the backbone config)
    # and a waveform crop (max_samples) for the others
    extractor = model.feature_extractor(
        **({} if fbank else {"max_samples": params.get("max_length")})
    )
    segment, aggregate = segment_protocol(params)
    return LoadedRun(folder, model, params, labels, extractor, segment, aggregate, metrics, dev)
