"""A backbone family is one record: nothing outside ``petl_kit/backbones/`` names a family, a
throwaway record works through ``build_model`` and the methods, and ``load_backbone`` loads every
registered family."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

import petl_kit as pk
from petl_kit.backbones import anatomy
from petl_kit.backbones.extractors import feature_extractor
from petl_kit.backbones.registry import (
    get_family,
    list_backbones,
    load_backbone,
    patch_grid,
    register_family,
    tiny_config,
    unregister_family,
)

PACKAGE = Path(pk.__file__).parent
NAMES = "|".join(sorted({"ast", "wav2vec2", "hubert", "mert", "musicfm", "scratch"}))
Q = "[\"']"
FAMILY_TEST = re.compile(
    "|".join(
        [
            rf"(==|!=)\s*{Q}({NAMES}){Q}",  # x == "ast"
            rf"{Q}({NAMES}){Q}\s*(==|!=)",  # "ast" == x
            rf"\bin\s*[(\[{{]\s*{Q}({NAMES}){Q}",  # x in ("ast", ...)
            rf"startswith\(\s*{Q}({NAMES})",  # name.startswith("ast")
            rf"\bis_({NAMES})\b",  # is_ast
        ]
    )
)


def test_the_family_name_pattern_finds_name_tests():
    for line in ('if model.family == "ast":', "is_ast = True", "if 'mert' != fam.name:",
                 'family in ("wav2vec2", "hubert")', 'name.startswith("musicfm")'):  # fmt: skip
        assert FAMILY_TEST.search(line), line
    for line in ('backbone: str = "ast"', 'experiment = "scratch"', "fam.input_kind == 'fbank'"):
        assert not FAMILY_TEST.search(line), line


def test_no_family_name_test_outside_backbones():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "backbones":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if FAMILY_TEST.search(line):
                found.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not found, "ask the family record instead:\n" + "\n".join(found)


def test_every_family_is_one_record_and_the_lists_are_names():
    assert list_backbones()[:3] == ["ast", "wav2vec2", "hubert"]
    assert {"mert", "musicfm", "scratch"} <= set(list_backbones())
    for listing in (pk.list_backbones, pk.list_methods, pk.list_presets, pk.list_datasets):
        names = listing()
        assert isinstance(names, list) and names and all(isinstance(n, str) for n in names)
    for name in list_backbones():
        assert get_family(name).name == name and pk.FAMILIES[name] is get_family(name)


@pytest.mark.parametrize("family", list_backbones())
def test_load_backbone_loads_every_family_with_keyword_overrides(family, tmp_path):
    torch.manual_seed(0)
    model = pk.load_backbone(family, None, **tiny_config(family))
    record = get_family(family)
    assert model.petl_family == family and isinstance(model, record.model_cls)
    extractor = feature_extractor(model)
    assert extractor.input_kind == record.input_kind
    assert extractor.sample_rate == record.sample_rate
    wave = torch.randn(record.sample_rate)  # 1 s
    values, mask = (extractor(wave), None) if record.input_kind == "fbank" else extractor(wave)
    kwargs = {"attention_mask": mask[None]} if record.takes_attention_mask else {}
    with torch.no_grad():
        hidden = model.eval()(values[None], **kwargs).last_hidden_state
    assert hidden.shape[0] == 1 and hidden.shape[-1] == model.config.hidden_size
    model.save_pretrained(tmp_path / family)  # and back through the family's own loader
    again = load_backbone(family, tmp_path / family)
    assert again.petl_family == family
    before, after = model.state_dict(), again.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture
def fake_ast():
    """A throwaway fbank family: AST's record under another name (and, through ``fields``,
    with some of its reference rules changed)."""
    registered = []

    def make(**fields):
        record = register_family(dataclasses.replace(get_family("ast"), name="fakeast", **fields))
        registered.append(record.name)
        return record

    yield make
    for name in registered:
        unregister_family(name)
    assert "fakeast" not in list_backbones()


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["adapter", "prompt_tuning", "lora"])
def test_a_new_family_works_through_its_record_alone(fake_ast, method):
    fake_ast()
    cfg = pk.get_method(method).test_config
    kw = dict(backbone_config="tiny", num_classes=3, method=method, method_config=cfg, seed=0)
    fake = pk.build_model("fakeast", pooling="CLS", **kw)
    real = pk.build_model("ast", pooling="CLS", **kw)
    assert fake.family == "fakeast" and fake.build_args["backbone"] == "fakeast"
    assert patch_grid(fake.backbone) == patch_grid(real.backbone) is not None
    assert fake.feature_extractor() == real.feature_extractor()  # fbank, L = 100
    assert _trainable(fake) == _trainable(real)  # final LN and finetune_LN as the AST record
    assert "backbone.layernorm.weight" in _trainable(fake)
    x = torch.randn(2, 100, 128)
    mask = torch.ones(2, 100)  # an fbank family takes no attention mask: it is not passed on
    fake.eval(), real.eval()
    with torch.no_grad():
        assert torch.allclose(fake(x, mask), real(x))
    roles = fake.role_layout(12)
    assert roles[0].item() == anatomy.CLS and anatomy.PATCH in roles.tolist()


def test_the_trainable_set_follows_the_record_fields_not_the_name(fake_ast):
    fake_ast(reference_trains_final_norm=False, reference_trains_site_norms=False)
    cfg = {"reduction_rate": 8, "adapter_type": "Houlsby"}
    model = pk.build_model("fakeast", backbone_config="tiny", method="adapter", method_config=cfg)
    assert not any("layernorm" in n for n in _trainable(model))
    ast = pk.build_model("ast", backbone_config="tiny", method="adapter", method_config=cfg)
    assert {n for n in _trainable(ast) if "layernorm" in n} == {
        "backbone.layernorm.weight", "backbone.layernorm.bias",
        *(f"backbone.layers.{i}.layernorm_{w}.{p}" for i in range(2)
          for w in ("before", "after") for p in ("weight", "bias")),
    }  # fmt: skip


def test_a_family_without_special_tokens_refuses_cls_pooling(fake_ast):
    fake_ast(special_tokens=())
    with pytest.raises(pk.ConfigError, match="'CLS' needs CLS/DIST tokens; fakeast has none"):
        pk.build_model("fakeast", backbone_config="tiny", pooling="CLS")


def test_a_family_registers_once_and_is_looked_up_by_its_record(fake_ast):
    record = fake_ast()
    with pytest.raises(ValueError, match="registered twice"):
        register_family(record)
    model = load_backbone("fakeast", None, tiny_config("fakeast"))
    assert anatomy.anatomy_of(model) is anatomy.AST_ANATOMY
