"""Benchmark: do the built-in tiny speech backbones transfer? (issue "built-in speech backbones")

For each family (``tiny-wav2vec2``, ``tiny-hubert``): the quickstart's synthetic TARGET task
(12 classes, 80 clips per class, split 60/20/20; the shared parameters of
``params/quickstart.yaml``) trained with each method on the built-in checkpoint (pretrained once
on the synthetic SOURCE task) and on the random initialisation that pretraining started from (the
same config and seed, saved as a folder), over a few seeds. Methods: the quickstart's speech run
(``params/quickstart/linear_wav2vec2.yaml``: a linear probe, mean over frames) and LoRA
(``params/quickstart/lora.yaml``: q, v, r = 8, LR 1e-2) with the same backbone settings.
One CPU thread; the pretraining time of each built-in is read from its ``pretraining.json``.

    .venv/bin/python benchmarks/builtin_speech.py --seeds 0 1 2 \
        --out benchmarks/results/builtin_speech.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEECH_RUN = ROOT / "params" / "quickstart" / "linear_wav2vec2.yaml"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _params(family: str, checkpoint: str, method: str, seed: int) -> dict:
    """The quickstart's shared params + its speech run's backbone settings + the method file."""
    shared = _yaml(ROOT / "params" / "quickstart.yaml")["params"]
    speech = _yaml(SPEECH_RUN)
    backbone = {k: speech[k] for k in ("max_length", "pooling")}
    method_file = ROOT / "params" / "quickstart" / f"{method}.yaml"
    if method == "linear":
        method_file = SPEECH_RUN
    method_params = _yaml(method_file)
    method_params = {k: v for k, v in method_params.items() if k not in ("backbone", "checkpoint")}
    return {**shared, **backbone, **method_params, "experiment": "builtin_speech",
            "run_dir": None, "method": method, "backbone": family, "checkpoint": checkpoint,
            "seed": seed, "data_path": None, "profile": "corrected"}  # fmt: skip


def _random_folder(family: str, builtin, folder: Path) -> Path:
    """The pretraining's starting point (same config, same seed), as a checkpoint folder."""
    from petl_kit.model.build import build_model

    model = build_model(backbone=family, backbone_config=dict(builtin.backbone_config),
                        num_classes=2, method="linear", seed=builtin.recipe.seed)  # fmt: skip
    model.backbone.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["wav2vec2", "hubert"])
    parser.add_argument("--methods", nargs="+", default=["linear", "lora"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("PETL_KIT_OUTPUTS", tempfile.mkdtemp(prefix="builtin_speech-"))
    from petl_kit.backbones import pretrained
    from petl_kit.experiments.runs import run_experiment

    rows, pretraining = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            name = f"tiny-{family}"
            folder = pretrained.builtin_checkpoint(name)
            info = json.loads((folder / "pretraining.json").read_text())
            pretraining[name] = info
            random = _random_folder(family, pretrained.BUILTINS[name], Path(tmp) / family)
            for method in args.methods:
                for weights, ckpt in (("builtin", f"builtin:{name}"), ("random", str(random))):
                    accs, secs = [], []
                    for seed in args.seeds:
                        t0 = time.perf_counter()
                        result = run_experiment(_params(family, ckpt, method, seed))
                        secs.append(time.perf_counter() - t0)
                        accs.append(result.metrics["test"]["accuracy"])
                        print(family, method, weights, seed, round(accs[-1], 3), flush=True)
                    rows.append((name, method, weights, accs, statistics.median(secs)))
    lines = [
        "# Built-in tiny speech backbones: transfer to the synthetic target task",
        "",
        f"`benchmarks/builtin_speech.py --seeds {' '.join(map(str, args.seeds))}`; "
        f"{platform.processor() or platform.machine()}, one CPU thread, torch {torch.__version__}.",
        "Target task: 12 classes, 80 clips per class (576 / 192 / 192), 15 epochs, batch 16; "
        "chance 0.083. `random`: the same config and seed before pretraining.",
        "",
        "| built-in | source test acc | pretraining s |",
        "|---|---|---|",
    ]
    for name, info in pretraining.items():
        lines.append(f"| `{name}` | {info['test_accuracy']:.3f} | {info['seconds']:.0f} (wall) |")
    lines += ["", "| backbone | method | weights | test acc (mean ± std) | per seed | s / run |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name, method, weights, accs, sec in rows:
        mean, std = statistics.fmean(accs), statistics.pstdev(accs)
        per = ", ".join(f"{a:.3f}" for a in accs)
        lines.append(
            f"| `{name}` | {method} | {weights} | {mean:.3f} ± {std:.3f} | {per} | {sec:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
