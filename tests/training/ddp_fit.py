"""One ``fit`` of a tiny AST, as a script: ``python ddp_fit.py OUT METHOD`` trains in this process;
``torchrun --nproc-per-node 2 ddp_fit.py OUT METHOD`` trains the same run data-parallel over two
CPU processes (gloo). Process 0 saves the trainable weights, history and metrics to OUT
(``torch.save``) for ``test_distributed.py`` to compare."""

import sys

import torch
from torch.utils.data import DataLoader

import petl_kit as pk
from petl_kit.config import build
from petl_kit.data import collate
from petl_kit.training import distributed
from petl_kit.training.train import TrainConfig, fit

# 25 train clips in global batches of 8: 8, 8, 8 and a last one of a single clip, which leaves
# the second process a stand-in of weight 0
SIZES, BATCH = (25, 12, 12), 8


def loaders():
    """Class-dependent random fbanks [L=32, F=32] (class c lifts mel rows 10c..10c+10)."""
    g = torch.Generator().manual_seed(123)
    out = {}
    for offset, (split, size) in enumerate(zip(("train", "val", "test"), SIZES, strict=True)):
        items = []
        for i in range(size):
            x = 0.3 * torch.randn(32, 32, generator=g)
            x[:, 10 * (i % 3) : 10 * (i % 3) + 10] += 1.0
            items.append({"input_values": x, "label": i % 3, "index": i})
        out[split] = DataLoader(items, batch_size=BATCH, shuffle=split == "train",
                                collate_fn=collate,
                                generator=torch.Generator().manual_seed(offset))  # fmt: skip
    return out


# small settings of the methods the test trains (the tiny backbone is 32 wide)
METHOD_CONFIG = {"lora": {"rank": 4}, "soft_moa": {"reduction_rate": 8}}


def main(out: str, method: str) -> None:
    config = pk.tiny_config("ast", max_length=32, num_mel_bins=32)
    model = pk.build_model(backbone="ast", backbone_config=config, num_classes=3, method=method,
                           method_config=METHOD_CONFIG.get(method), seed=0)  # fmt: skip
    cfg = build(TrainConfig, {"epochs": 3, "lr": 0.01, "progress": False, "device": "cpu"})
    result = fit(model, loaders(), cfg)
    if distributed.is_main():
        state = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        torch.save({"state": state, "fit": result.to_dict()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
