"""Contract checks every registered method passes on a tiny backbone of every registered family
(design §6): the cases are ``list_backbones() × list_methods()`` from the registries.

Per-method facts come from the registry entry (``identity_at_init``, ``merges``,
``test_config``, ``needs_grad_steps``), never from ``isinstance`` special cases here; per-family
facts from the family record: a method the record does not list must be refused with a clear
error (asserted, not skipped). The checks live in ``tests/methods/conftest.py``.
"""

import pytest

import petl_kit as pk
from petl_kit.backbones.registry import get_family, list_backbones
from tests.methods.conftest import (
    applies,
    check_every_trainable_tensor_changes_output,
    check_identity_at_init,
    check_merge_equals_unmerged,
    check_save_load_round_trip,
    check_training_touches_only_trainable,
)

ALL = [(m, f) for m in pk.list_methods() for f in list_backbones()]
CASES = [c for c in ALL if applies(*c)]
REFUSED = [c for c in ALL if not applies(*c)]


def test_every_pair_is_a_case_or_a_refusal():
    assert len(CASES) + len(REFUSED) == len(pk.list_methods()) * len(list_backbones())
    assert {f for _, f in CASES} == set(list_backbones())  # every family runs some method


@pytest.mark.parametrize("method,family", CASES)
def test_identity_at_init(method, family, family_checkpoints):
    check_identity_at_init(method, family, family_checkpoints)


@pytest.mark.parametrize("method,family", CASES)
def test_training_touches_only_trainable(method, family, family_checkpoints, unused_parameters):
    check_training_touches_only_trainable(
        method, family, family_checkpoints, unused_parameters[family]
    )


@pytest.mark.parametrize("method,family", CASES)
def test_every_trainable_tensor_changes_output(
    method, family, family_checkpoints, unused_parameters
):
    check_every_trainable_tensor_changes_output(
        method, family, family_checkpoints, unused_parameters[family]
    )


@pytest.mark.parametrize("method,family", CASES)
def test_save_load_round_trip(method, family, family_checkpoints, tmp_path):
    check_save_load_round_trip(method, family, family_checkpoints, tmp_path)


@pytest.mark.parametrize("method,family", [c for c in CASES if pk.get_method(c[0]).merges])
def test_merge_equals_unmerged(method, family, family_checkpoints):
    check_merge_equals_unmerged(method, family, family_checkpoints)


@pytest.mark.parametrize("method,family", REFUSED)
def test_a_method_the_family_does_not_take_is_refused(method, family):
    valid = ", ".join(get_family(family).methods)
    with pytest.raises(
        pk.ConfigError,
        match=f"method '{method}' does not apply to backbone '{family}'; valid methods: {valid}",
    ):
        pk.build_model(
            family,
            backbone_config="tiny",
            num_classes=3,
            method=method,
            method_config=pk.get_method(method).test_config,
        )


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(
        pk.ConfigError, match="unknown method 'lorra'.*valid methods: linear, full_ft, bitfit"
    ):
        pk.build_model("ast", backbone_config="tiny", method="lorra")


def test_unknown_method_key_names_the_valid_ones():
    with pytest.raises(pk.ConfigError, match="unknown bitfit method_config key.*'rank'"):
        pk.build_model("ast", backbone_config="tiny", method="bitfit", method_config={"rank": 4})


def test_wrong_typed_method_value():
    with pytest.raises(pk.ConfigError, match="probe_final_ln = 'yes'.*expected bool"):
        pk.build_model(
            "ast", backbone_config="tiny", method="linear", method_config={"probe_final_ln": "yes"}
        )


def test_reference_spellings_are_accepted():
    assert pk.get_method("full-FT").name == "full_ft"
    assert pk.get_method("BitFit").name == "bitfit"
