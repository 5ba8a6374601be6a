"""PEFT export of a LoRA run: ``adapter_config.json`` + ``adapter_model.safetensors`` that
``peft.PeftModel.from_pretrained`` loads onto the stock backbone saved beside it in ``base/``.

Layout of ``out``::

    adapter_config.json  adapter_model.safetensors   the LoRA factors (+ trained norms)
    base/                the frozen backbone (save_pretrained; AutoModel / the family's class)
    head/                the kit's head: head.safetensors + head.json (pooling, labels)
    README.md            the model card

Mapping: the kit's ``y = W x + b + s · B(A(x))`` on a module is PEFT's ``lora_A`` = A,
``lora_B`` = B with ``lora_alpha = s · r`` (PEFT scales by ``lora_alpha / r``), no dropout, no
bias; ``target_modules`` are the exact module paths the kit wrapped (a shared Q/K pair appears
under both). Backbone tensors the run also trained (AST's final LayerNorm) go in
``modules_to_save``. The export is checked: the adapted backbone plus the kit's pooling and head
must give the kit's probabilities on a probe clip within :data:`~.export_hf.TOLERANCE`.

Not exported: prompt and prefix tuning. PEFT's prompt / prefix methods are written for language
models (virtual tokens through ``inputs_embeds``, prefixes through ``past_key_values``); the
audio encoders take neither, and the kit's prompts enter every layer (deep prompts) or its
prefixes every attention's keys and values inside the encoder, which PEFT's configs do not
express for these models. Use ``--format kit``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ExportError
from .card import model_card
from .export_hf import KIT, TOLERANCE, probe_clip
from .export_kit import save_base_backbone


def lora_modules(model) -> dict[str, torch.nn.Module]:
    """``{backbone module path: LoRA wrapper}`` of the kit model."""
    return {n: m for n, m in model.backbone.named_modules() if hasattr(m, "petl_lora")}


def extra_trained(model) -> list[str]:
    """Backbone modules (paths) with trained tensors outside LoRA (e.g. AST's final LN)."""
    out = []
    for name in model.trainable_state_dict():
        if name.startswith("backbone.") and "petl_" not in name:
            out.append(name.removeprefix("backbone.").rpartition(".")[0])
    return list(dict.fromkeys(out))


def export_peft(run, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    model = run.model
    if model.method != "lora":
        what = ("PEFT's prompt/prefix configs inject through inputs_embeds / past_key_values, "
                "which the audio encoders do not take" if model.method in
                ("prompt_tuning", "prefix_tuning") else "PEFT has no such method")  # fmt: skip
        raise ExportError(f"cannot export {run.folder} to PEFT: method {model.method!r} "
                          f"({what}); the PEFT format holds LoRA runs; {KIT}")  # fmt: skip
    wrapped = lora_modules(model)
    scalings = {m.scaling for m in wrapped.values()}
    ranks = {m.petl_lora.A.out_features for m in wrapped.values()}
    if len(scalings) != 1 or len(ranks) != 1:
        raise ExportError(f"LoRA with several ranks {ranks} or scalings {scalings}; {KIT}")
    (scaling,), (rank,) = scalings, ranks
    base = save_base_backbone(run, out / "base")
    from ..backbones.registry import get_family

    model_cls = get_family(model.family).model_cls
    extra = extra_trained(model)
    config = LoraConfig(r=rank, lora_alpha=scaling * rank, lora_dropout=0.0, bias="none",
                        target_modules=sorted(wrapped), modules_to_save=extra or None,
                        init_lora_weights=False)  # fmt: skip
    peft_model = get_peft_model(model_cls.from_pretrained(base), config)
    kit_state = model.state_dict()
    with torch.no_grad():
        for path, module in wrapped.items():
            target = peft_model.base_model.model.get_submodule(path)
            for kit_name, peft_name in (("A", "lora_A"), ("B", "lora_B")):
                weight = getattr(module.petl_lora, kit_name).weight.detach().cpu()
                dest = getattr(target, peft_name)["default"].weight
                dest.copy_(weight.reshape(dest.shape))  # Conv1d factors are [.., .., 1]
        for path in extra:
            saved = peft_model.base_model.model.get_submodule(path).modules_to_save["default"]
            for name, tensor in saved.named_parameters():
                tensor.copy_(kit_state[f"backbone.{path}.{name}"].cpu())
    peft_model.save_pretrained(out)
    head = out / "head"
    head.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
              str(head / "head.safetensors"))  # fmt: skip
    (head / "head.json").write_text(json.dumps({
        "pooling": model.pooling, "head": model.build_args["head"], "task": run.task,
        "labels": run.labels}, indent=2))  # fmt: skip
    diff = check_peft(run, out)
    notes = [f"LoRA r = {rank}, scaling s = {scaling:g} (lora_alpha = s·r = {scaling * rank:g}) "
             f"on {len(wrapped)} modules; trained norms in modules_to_save: {extra or 'none'}",
             f"checked against the kit on a probe clip: max |Δp| = {diff:.1e}",
             f"the head reads the backbone output pooled as the kit's `{model.pooling}` (mean "
             "over those tokens; `pk.load_run` on a kit export does all of this)"]  # fmt: skip
    usage = f"""```python
from peft import PeftModel
from transformers import AutoModel

base = AutoModel.from_pretrained("{out}/base")
backbone = PeftModel.from_pretrained(base, "{out}").eval()
hidden = backbone(input_values).last_hidden_state   # features as the run's extractor makes them
# logits = Linear(head/head.safetensors)(mean of hidden over the pooling's tokens)
```"""
    (out / "README.md").write_text(model_card(run, "peft", usage, notes))
    return out


@torch.no_grad()
def check_peft(run, out: Path) -> float:
    """Max |Δ probability| between the kit and the PEFT-loaded backbone + the kit's head on a
    probe clip; raises :class:`ExportError` above the tolerance."""
    from peft import PeftModel

    from ..backbones.registry import get_family
    from ..data.dataset import collate
    from ..training.metrics import clip_probabilities

    model = run.model
    base = get_family(model.family).model_cls.from_pretrained(out / "base")
    backbone = PeftModel.from_pretrained(base, out).eval()
    wave = probe_clip(run)
    kit = run.probabilities([wave], progress=False)[1][0]
    item = run._item(torch.from_numpy(wave))
    batch = collate([item])
    inputs = {"input_values": batch["input_values"]}
    if "attention_mask" in batch and model.options.pass_attention_mask:
        inputs["attention_mask"] = batch["attention_mask"]
    hidden = backbone(**inputs).last_hidden_state.to(run.device)
    logits = model.head(model.pool(hidden)).cpu()
    peft_p = clip_probabilities(run.task, logits)[0].numpy()
    diff = float(abs(peft_p - kit).max())
    if not diff <= TOLERANCE:
        raise ExportError(f"the PEFT export differs from the kit's model by {diff:.2e} in "
                          f"probability on a probe clip (> {TOLERANCE}); {KIT}")  # fmt: skip
    return diff
