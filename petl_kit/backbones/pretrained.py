"""Built-in pretrained backbones: tiny models pretrained on a synthetic SOURCE task, so the
quickstart and the music notebooks are real transfer learning without a download.

``builtin_checkpoint("tiny-ast")`` returns a folder written by ``ASTModel.save_pretrained`` (plus
``pretraining.json``). The first call pretrains it (about a minute on two CPU cores) and caches it
in ``<cache_dir()>/tiny-ast-v2/``; later calls, and ``build_model(checkpoint="builtin:tiny-ast")``
(through ``backbones.resolve_checkpoint``), reuse it. ``"tiny-mert"`` is the same for backbone
``"mert"`` (``<cache_dir()>/tiny-mert-v1/``, a ``HubertModel.save_pretrained`` folder).
``"tiny-wav2vec2"`` and ``"tiny-hubert"`` are the same for the 16 kHz waveform families
(``<cache_dir()>/tiny-wav2vec2-v1/``, ``tiny-hubert-v1/``).
A file lock makes parallel processes (pytest workers, papermill kernels) wait for one pretraining
instead of each running their own, and the folder appears by an atomic rename, so a half-written
checkpoint is never seen.

tiny-ast: the source task (16 classes: which of 8 frequency bands carries the event × steady vs
pulsed) teaches frequency localisation and temporal modulation; the synthetic TARGET task (12
classes of spectro-temporal structure) is different, so pretrained features help without giving
away labels.

tiny-wav2vec2, tiny-hubert: tiny-ast's source task from the waveform (about 50 s of one CPU
thread each, source test accuracy 0.71 / 0.73); a linear probe on the target task reaches about
1.7x the random init's accuracy (``benchmarks/results/builtin_speech.md``).

tiny-mert: the source task is ``synthetic_music`` "chords" (24 classes: root × major/minor triad,
any inversion, register and timbre). It teaches pitch-class features; the key task (a progression's
tonal centre, relative keys sharing every note) still has to be learnt on top of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch.utils.data import DataLoader

from ..config import ConfigError, as_dict, build
from .anatomy import get_path
from .registry import get_family

# hidden 64, 3 blocks of 4 heads, FFN 128 (~120 K parameters). 1-s clips at 16 kHz give 98
# frames, so L = 100; 128 mel bins as AST. Non-overlapping 16 × 16 patches (stride 16, not AST's
# 10) make an 8 × 6 grid + CLS + DIST = 50 tokens: 2.3× cheaper than stride 10 (110 tokens), with
# similar source and target accuracy when measured, which keeps quickstart runs to seconds.
TINY_AST = dict(
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=128,
    max_length=100,
    num_mel_bins=128,
    frequency_stride=16,
    time_stride=16,
)


@dataclass(frozen=True)
class PretrainRecipe:
    """How a built-in is pretrained (full fine-tuning of a random-init backbone + head).

    n_per_class (clips per source class before the 60/20/20 split), data_seed (make_synthetic
    seed), epochs, batch_size, lr (AdamW, cosine to 0 after warmup_steps), weight_decay, seed
    (model init and training), pooling (of the pretraining head; 'CLS' learns ~25 points faster
    than 'ALL' here, which needs every patch token to be useful), freq_mask / time_mask
    (SpecAugment widths on the train features; 0 = off).
    """

    n_per_class: int = 200
    data_seed: int = 0
    epochs: int = 16
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.05
    seed: int = 0
    pooling: str = "CLS"
    freq_mask: int = 0
    time_mask: int = 0


# MERT-shaped (HuBERT layout, post-LN, 24 kHz in, 75 frames/s out) with hidden 64, 3 blocks of
# 4 heads, FFN 128 (~0.28 M parameters). Its conv feature encoder is two layers, kernel 1024 /
# stride 160 (a learnt 43-ms filterbank) then kernel 3 / stride 2 (total stride 320 as MERT):
# MERT's seven short kernels (10, 3, ..., receptive field 400 samples) learnt no pitch in a minute
# of CPU pretraining (chance on the source task), the long first kernel reaches 0.9. Dropout,
# LayerDrop and time masking are 0: at this size and budget they only slow learning.
TINY_MERT = dict(
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=(128, 64),
    conv_kernel=(1024, 3),
    conv_stride=(160, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.0,
)


# wav2vec 2.0 / HuBERT-shaped (post-LN, 16 kHz in, 50 frames/s out), the tiny-mert recipe at
# 16 kHz: hidden 64, 3 blocks of 4 heads, FFN 128, a 2-layer conv encoder (kernel 1024 / stride
# 160, a learnt 64-ms filterbank, then kernel 3 / stride 2: total stride 320 as the base models).
# The base models' 7 short kernels (receptive field 400 samples) resolve no frequency bands in a
# minute of CPU pretraining; dropout, LayerDrop and time masking are 0 for the same reason as MERT.
TINY_SPEECH = {**TINY_MERT}


@dataclass(frozen=True)
class Builtin:
    """One built-in checkpoint: what it is and how it is made. Bump ``version`` whenever the
    recipe, the config or the synthetic source data change: caches are keyed by it.

    ``data``: ``'synthetic'`` (``make_synthetic(task)``) or ``'synthetic_music'``
    (``make_synthetic_music(task)``); ``data_options``: their extra arguments.
    """

    description: str
    family: str
    backbone_config: dict
    task: str
    version: int = 1
    recipe: PretrainRecipe = field(default_factory=PretrainRecipe)
    data: str = "synthetic"
    data_options: dict = field(default_factory=dict)


SPEECH_RECIPE = PretrainRecipe(
    n_per_class=80, epochs=12, lr=2e-3, warmup_steps=20, weight_decay=0.01, pooling="ALL"
)

BUILTINS: dict[str, Builtin] = {
    "tiny-ast": Builtin(
        description="tiny AST (hidden 64, 3 layers, 4 heads, L=100 frames, 128 mels, patch stride "
        "16) pretrained on the synthetic source task (16 classes: frequency band x steady/pulsed)",
        family="ast",
        backbone_config=TINY_AST,
        task="source",
        version=2,  # v1: a 12-epoch draft recipe (source test accuracy 0.85 vs 0.89)
    ),
    "tiny-mert": Builtin(
        description="tiny MERT (HuBERT layout, hidden 64, 3 layers, 4 heads, 24 kHz, 2-layer conv "
        "encoder with a 1024-sample first kernel) pretrained on the synthetic music source task "
        "(24 chords: root x major/minor)",
        family="mert",
        backbone_config=TINY_MERT,
        task="chords",
        data="synthetic_music",
        data_options={"clip_seconds": 1.0},
        # measured: 36 s of one CPU thread (65 s wall on a busy 2-core machine), test acc 0.975
        recipe=PretrainRecipe(
            n_per_class=24, epochs=16, lr=2e-3, warmup_steps=20, weight_decay=0.01, pooling="ALL"
        ),  # fmt: skip
    ),
    "tiny-wav2vec2": Builtin(
        description="tiny wav2vec 2.0 (hidden 64, 3 layers, 4 heads, 16 kHz, 2-layer conv encoder "
        "with a 1024-sample first kernel) pretrained on the synthetic source task (16 classes: "
        "frequency band x steady/pulsed)",
        family="wav2vec2",
        backbone_config=TINY_SPEECH,
        task="source",
        recipe=SPEECH_RECIPE,
    ),
    "tiny-hubert": Builtin(
        description="tiny HuBERT (hidden 64, 3 layers, 4 heads, 16 kHz, 2-layer conv encoder with "
        "a 1024-sample first kernel) pretrained on the synthetic source task (16 classes: "
        "frequency band x steady/pulsed)",
        family="hubert",
        backbone_config=TINY_SPEECH,
        task="source",
        recipe=SPEECH_RECIPE,
    ),
}


def cache_dir() -> Path:
    """``$PETL_KIT_CACHE`` if set, else ``~/.cache/petl_kit``."""
    env = os.environ.get("PETL_KIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "petl_kit"


def _get(name: str) -> Builtin:
    if name not in BUILTINS:
        valid = "; ".join(f"{k!r}: {b.description}" for k, b in BUILTINS.items())
        raise ConfigError(f"unknown built-in checkpoint {name!r}; valid: {valid}")
    return BUILTINS[name]


def _folder_name(name: str, builtin: Builtin, overrides: dict) -> str:
    base = f"{name}-v{builtin.version}"
    if not overrides:
        return base
    # a reduced or changed recipe gets its own folder, never the canonical one
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    return f"{base}-{digest}"


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in ("config.json", "pretraining.json"))


def builtin_checkpoint(
    name: str = "tiny-ast",
    *,
    recipe: dict | None = None,
    progress: bool = False,
    timeout: float = 1800.0,
) -> Path:
    """The folder of built-in checkpoint ``name``, pretrained once and cached.

    Args:
        name: a key of :data:`BUILTINS` (``'tiny-ast'``).
        recipe: :class:`PretrainRecipe` overrides (e.g. a smaller budget for tests); the result is
            cached in its own folder ``<name>-v<version>-<hash>``.
        progress: show tqdm bars while pretraining.
        timeout: seconds to wait for another process that is pretraining the same checkpoint.

    Returns:
        ``<cache_dir()>/<name>-v<version>[-<hash>]/`` holding ``config.json``,
        ``model.safetensors`` and ``pretraining.json``.
    """
    builtin = _get(name)
    overrides = dict(recipe or {})
    full_recipe = build(PretrainRecipe, {**asdict(builtin.recipe), **overrides}, owner="recipe")
    root = cache_dir()
    folder = root / _folder_name(name, builtin, overrides)
    if _complete(folder):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder) + ".lock")
    try:
        with lock.acquire(timeout=timeout):
            if _complete(folder):  # another process finished it while we waited
                return folder
            print(f"petl_kit: pretraining built-in {name!r} once; caching it in {folder}",
                  file=sys.stderr)  # fmt: skip
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-tmp-", dir=root))
            try:
                with _isolated():
                    # 64-wide matrices gain nothing from more threads, and on a shared CPU extra
                    # threads spin against other processes: measured 75 ms vs 570 ms a step
                    torch.set_num_threads(1)
                    pretrain(builtin, full_recipe, tmp, name=name, progress=progress)
                if folder.exists():  # an incomplete leftover (no pretraining.json)
                    shutil.rmtree(folder)
                os.replace(tmp, folder)  # atomic on one file system
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except Timeout as err:
        raise TimeoutError(
            f"waited {timeout:.0f} s for {lock.lock_file}: another process is pretraining "
            f"{name!r} (the lock is released when it finishes or dies); try again later"
        ) from err
    return folder


@contextmanager
def _isolated():
    """Leave the caller's global state as it was: ``build_model(seed=...)`` seeds torch, then
    resolves ``builtin:`` (which may pretrain here), then initialises the head: without this the
    first, pretraining call would get a different head than every later, cached one."""
    py, np_state = random.getstate(), np.random.get_state()
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())  # fmt: skip
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        torch.set_num_threads(threads)


def _feature_loaders(splits, extractor, recipe: PretrainRecipe) -> dict[str, DataLoader]:
    """Loaders over fbanks computed once (not per epoch), in ``data.collate`` batch format."""
    from ..data import SpecAugment, collate

    augment = None
    if recipe.freq_mask or recipe.time_mask:
        augment = SpecAugment(freq_mask=recipe.freq_mask, time_mask=recipe.time_mask)

    def train_collate(items):
        batch = collate(items)
        batch["input_values"] = augment(batch["input_values"])
        return batch

    def item(i, clip):
        features = extractor(clip.source)
        if isinstance(features, tuple):  # waveform: (values [S], attention_mask [S])
            return {"input_values": features[0], "attention_mask": features[1],
                    "label": clip.label, "index": i}  # fmt: skip
        return {"input_values": features, "label": clip.label, "index": i}

    loaders = {}
    for offset, split in enumerate(("train", "val", "test")):
        items = [item(i, c) for i, c in enumerate(splits.split(split))]
        is_train = split == "train"
        loaders[split] = DataLoader(
            items,
            batch_size=recipe.batch_size,
            shuffle=is_train,
            collate_fn=train_collate if is_train and augment is not None else collate,
            generator=torch.Generator().manual_seed(recipe.seed + offset),
        )
    return loaders


def pretrain(builtin: Builtin, recipe: PretrainRecipe, folder: Path, *, name: str = "",
             progress: bool = False) -> dict:  # fmt: skip
    """Pretrain ``builtin`` from random init on its synthetic task and write it to ``folder``.

    Every parameter trains (``full_ft``; frame models' conv feature encoder too). The family's
    learned tokens (``Family.learned_tokens``: AST's position embeddings and CLS/DIST tokens)
    start from N(0, 0.02) as in ViT/DeiT rather than Hugging Face's zeros. Returns the
    ``pretraining.json`` record (recipe, history, val/test accuracy, seconds, versions).
    """
    import transformers

    from .. import __version__
    from ..data import make_synthetic
    from ..data.music.synthetic import make_synthetic_music
    from ..model.build import build_model
    from ..training.train import TrainConfig, fit

    start = time.perf_counter()
    make = {"synthetic": make_synthetic, "synthetic_music": make_synthetic_music}[builtin.data]
    splits = make(builtin.task, n_per_class=recipe.n_per_class, seed=recipe.data_seed,
                  **builtin.data_options)  # fmt: skip
    model = build_model(backbone=builtin.family, backbone_config=dict(builtin.backbone_config),
                        num_classes=splits.num_classes, method="full_ft", seed=recipe.seed,
                        pooling=recipe.pooling, method_config=
                        {"ft_last_n_layers": "all", "freeze_feature_encoder": False})  # fmt: skip
    with torch.no_grad():
        for path in get_family(builtin.family).learned_tokens:
            get_path(model.backbone, path).normal_(0.0, 0.02)
    loaders = _feature_loaders(splits, model.feature_extractor(), recipe)
    cfg = build(
        TrainConfig,
        {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "lr": recipe.lr,
         "warmup_steps": recipe.warmup_steps, "weight_decay": recipe.weight_decay,
         "seed": recipe.seed, "select": "best_val", "progress": progress,
         "device": "cpu"},  # CPU on every machine: the same checkpoint wherever it is made
    )  # fmt: skip
    result = fit(model, loaders, cfg)
    model.backbone.save_pretrained(folder)
    info = {
        "name": name,
        "version": builtin.version,
        "description": builtin.description,
        "task": f"{builtin.data} {builtin.task}",
        "classes": splits.classes,
        "sizes": splits.sizes(),
        "recipe": asdict(recipe),
        "train_config": as_dict(cfg),
        "backbone_config": dict(builtin.backbone_config),
        "best_epoch": result.best_epoch,
        "val_accuracy": result.val.get("accuracy"),
        "test_accuracy": result.test.get("accuracy"),
        "history": result.history,
        "seconds": round(time.perf_counter() - start, 1),
        "versions": {"petl_kit": __version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
    }  # fmt: skip
    (folder / "pretraining.json").write_text(json.dumps(info, indent=2))
    return info
