"""DatasetSplits containers, AudioDataset, collate and DataLoaders."""

import numpy as np
import pytest
import torch

from petl_kit.data import (
    AudioDataset,
    Clip,
    DatasetError,
    DatasetSplits,
    FbankExtractor,
    SpecAugment,
    WaveformExtractor,
    make_synthetic,
)

PAD = 0.46703


@pytest.fixture(scope="module")
def syn():
    return make_synthetic(
        n_per_class=3, seed=0, clip_seconds=0.5, val_fraction=0.34, test_fraction=0.0
    )


def test_fbank_loaders_shapes_and_specaugment_on_train_only(syn):
    ex = FbankExtractor(max_length=64)
    loaders = syn.loaders(ex, batch_size=5, spec_augment=SpecAugment(8, 20), seed=0)
    assert set(loaders) == {"train", "val"}  # empty test split omitted
    batch = next(iter(loaders["train"]))
    assert batch["input_values"].shape == (5, 64, 128) and "attention_mask" not in batch
    assert batch["labels"].dtype == torch.long and batch["index"].dtype == torch.long
    # 0.5 s -> 48 real frames; pad frames hold 0.46703 except where a mask zeroed them.
    assert torch.all(
        (batch["input_values"][:, 48:] - PAD).abs().lt(1e-4) | (batch["input_values"][:, 48:] == 0)
    )
    train_zeros = sum((b["input_values"] == 0).sum().item() for b in loaders["train"])
    val_zeros = sum((b["input_values"] == 0).sum().item() for b in loaders["val"])
    assert train_zeros > 0 and val_zeros == 0
    assert sum(len(b["index"]) for b in loaders["val"]) == len(syn.val)


def test_train_order_is_seeded_and_eval_is_not_shuffled(syn):
    ex = FbankExtractor(max_length=8)

    def order(seed):
        return torch.cat([b["index"] for b in syn.loaders(ex, batch_size=4, seed=seed)["train"]])

    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    val = syn.loaders(ex, batch_size=4, seed=3)["val"]
    assert torch.equal(torch.cat([b["index"] for b in val]), torch.arange(len(syn.val)))
    plain = syn.loaders(ex, batch_size=4, shuffle_train=False)["train"]
    assert torch.equal(torch.cat([b["index"] for b in plain]), torch.arange(len(syn.train)))
    state = torch.get_rng_state()
    list(val)
    assert torch.equal(state, torch.get_rng_state())  # eval loaders leave the global RNG alone


def test_waveform_batches_are_right_padded_with_mask(tmp_path, write_wav, sine):
    clips = [
        Clip(write_wav("a.wav", sine(0.5, 8000), 8000), 0),  # file: resampled 8k -> 16k
        Clip(sine(0.25, 16000), 1, 16000),
        Clip(sine(0.1, 24000), 1, 24000),  # array at another rate is resampled too
    ]
    ds = DatasetSplits("w", ["a", "b"], "multiclass", clips, [], [])
    batch = next(iter(ds.loaders(WaveformExtractor(), batch_size=3, shuffle_train=False)["train"]))
    assert batch["input_values"].shape == batch["attention_mask"].shape == (3, 8000)
    assert batch["attention_mask"].sum(1).tolist() == [8000, 4000, 1600]
    assert torch.all(batch["input_values"][1, 4000:] == 0)
    assert batch["attention_mask"].dtype == torch.long and batch["labels"].tolist() == [0, 1, 1]
    fixed = next(iter(ds.loaders(WaveformExtractor(max_samples=6000), batch_size=3)["train"]))
    assert fixed["input_values"].shape == (3, 6000)
    with pytest.raises(ValueError, match="spec_augment works on fbank"):
        ds.loaders(WaveformExtractor(), batch_size=2, spec_augment=SpecAugment())


def test_multilabel_labels_are_multi_hot_floats(sine):
    clips = [Clip(sine(0.1, 16000), [0, 2], 16000), Clip(sine(0.1, 16000), [1], 16000)]
    ds = DatasetSplits("ml", ["a", "b", "c"], "multilabel", clips, [], [])
    batch = next(
        iter(ds.loaders(FbankExtractor(max_length=16), batch_size=2, shuffle_train=False)["train"])
    )
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


def test_channel_of_the_dataset_reaches_the_loader(write_wav, sine):
    path = write_wav("st.wav", sine(0.1, 16000, channels=2), 16000, "FLOAT")
    ds = DatasetSplits("st", ["a"], "multiclass", [Clip(path, 0)], [], [], channel=1)
    item = AudioDataset(
        ds.train,
        WaveformExtractor(normalize=False),
        num_classes=1,
        task="multiclass",
        channel=ds.channel,
    )[0]
    assert torch.allclose(item["input_values"], torch.from_numpy(sine(0.1, 16000)) / 2, atol=1e-6)


def test_containers_validate_and_subset(syn):
    assert syn.num_classes == 12 and syn.sizes()["test"] == 0
    sub = syn.subset("train", [2, 0])
    assert sub.train == [syn.train[2], syn.train[0]] and sub.val is syn.val and len(syn.train) > 2
    with pytest.raises(ValueError, match=r"unknown split 'dev'"):
        syn.class_counts("dev")
    with pytest.raises(DatasetError, match=r"train\[0\] has label\(s\) \[5\] outside 0..1"):
        DatasetSplits("x", ["a", "b"], "multiclass", [Clip(np.zeros(10), 5, 16000)], [], [])
    with pytest.raises(DatasetError, match="list label"):
        DatasetSplits("x", ["a", "b"], "multiclass", [Clip(np.zeros(10), [0, 1], 16000)], [], [])
    with pytest.raises(ValueError, match="task must be one of"):
        DatasetSplits("x", ["a"], "regression", [], [], [])
    with pytest.raises(ValueError, match="needs sample_rate"):
        Clip(np.zeros(10, dtype=np.float32), 0)
    with pytest.raises(ValueError, match=r"mono \[time\]"):
        Clip(np.zeros((2, 10)), 0, 16000)
