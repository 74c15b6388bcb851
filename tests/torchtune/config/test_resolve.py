"""The config a run records: resolved, with environment values kept out."""

import json
import warnings

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from torchtune.config import check_params, resolve_for_record
from torchtune.training.metric_logging import DiskLogger

SECRET = "hf_NotARealTokenButSecret123"


def env_config():
    return OmegaConf.create(
        {
            "token": "${oc.env:TT_TEST_TOKEN}",
            "url": "https://example.invalid/?t=${token}",
            "fallback": "${oc.env:TT_TEST_UNSET,${token}}",
            "nested": {"header": "Bearer ${oc.env:TT_TEST_TOKEN}", "lr": 1e-4},
            "output_dir": "/tmp/run",
            "log_dir": "${output_dir}/logs",
        }
    )


def test_oc_env_resolves_for_the_recipe(monkeypatch):
    monkeypatch.setenv("TT_TEST_TOKEN", SECRET)
    cfg = env_config()
    assert cfg.token == SECRET and cfg.nested.header == f"Bearer {SECRET}"
    assert cfg.fallback == SECRET


def test_recorded_config_never_holds_an_environment_value(monkeypatch):
    monkeypatch.setenv("TT_TEST_TOKEN", SECRET)
    record = resolve_for_record(env_config())
    assert SECRET not in json.dumps(record)
    assert record["token"] == "<env:TT_TEST_TOKEN>"
    assert record["url"] == "https://example.invalid/?t=<env:TT_TEST_TOKEN>"
    assert record["fallback"] == "<env:TT_TEST_UNSET>"
    assert record["nested"] == {"header": "Bearer <env:TT_TEST_TOKEN>", "lr": 1e-4}
    assert record["log_dir"] == "/tmp/run/logs"  # other interpolations still resolve


def test_disk_logger_config_json_has_no_token(tmp_path, monkeypatch):
    monkeypatch.setenv("TT_TEST_TOKEN", SECRET)
    logger = DiskLogger(tmp_path)
    logger.log_config(env_config())
    logger.close()
    written = (tmp_path / "config.json").read_text()
    assert SECRET not in written and "<env:TT_TEST_TOKEN>" in written


def test_unset_variable_is_a_one_line_config_problem():
    from dataclasses import dataclass

    @dataclass
    class P:
        token: str

    cfg = OmegaConf.create({"token": "${oc.env:TT_TEST_SURELY_UNSET}"})
    (problem,) = check_params(cfg, P)
    assert problem.startswith("token: cannot resolve value") and "TT_TEST_SURELY_UNSET" in problem


# Every way OmegaConf lets a value draw on ${oc.env:...}, with what the record shows.
ENV_FORMS = {
    "spaced": ("${ oc.env:TT_TEST_TOKEN}", "<env:TT_TEST_TOKEN>"),
    "spaced_both_sides": ("${  oc.env:TT_TEST_TOKEN  }", "<env:TT_TEST_TOKEN>"),
    "spaced_in_text": ("Bearer ${ oc.env:TT_TEST_TOKEN }", "Bearer <env:TT_TEST_TOKEN>"),
    "decoded": ("${oc.decode:${oc.env:TT_TEST_TOKEN}}", "<env:TT_TEST_TOKEN>"),
    "decoded_in_text": ("a ${oc.decode:${oc.env:TT_TEST_TOKEN}} b", "<env:TT_TEST_TOKEN>"),
    "selected": ("${oc.select:token}", "<env:TT_TEST_TOKEN>"),
    "selected_spaced": ("x?t=${oc.select:spaced}", "x?t=<env:TT_TEST_TOKEN>"),
    "key_in_text": ("x?t=${token}", "x?t=<env:TT_TEST_TOKEN>"),
    "key_of_decoded": ("x?t=${decoded}", "<env:TT_TEST_TOKEN>"),
    "custom_resolver": ("${tt_test_upper:${oc.env:TT_TEST_TOKEN}}", "<env:TT_TEST_TOKEN>"),
    "custom_of_key": ("${tt_test_upper:${token}}", "<env:TT_TEST_TOKEN>"),
    "default_used": ("${oc.env:TT_TEST_UNSET,${token}}", "<env:TT_TEST_UNSET>"),
    "default_unused": ("${oc.env:TT_TEST_TOKEN,fallback}", "<env:TT_TEST_TOKEN>"),
    "name_from_env": ("${oc.env:${oc.env:TT_TEST_TOKEN}}", "<env:TT_TEST_TOKEN>"),
    "two_variables": (
        "${oc.env:TT_TEST_TOKEN}:${oc.env:TT_TEST_OTHER}",
        "<env:TT_TEST_TOKEN>:<env:TT_TEST_OTHER>",
    ),
    "created": ("${oc.create:{k: ${oc.env:TT_TEST_TOKEN}}}", "<env:TT_TEST_TOKEN>"),
    "list": (
        ["${oc.env:TT_TEST_TOKEN}", "${ oc.env:TT_TEST_TOKEN }", 3],
        ["<env:TT_TEST_TOKEN>", "<env:TT_TEST_TOKEN>", 3],
    ),
    "whole_node": ("${headers}", {"auth": "Bearer <env:TT_TEST_TOKEN>", "n": 1}),
    "node_values": ("${oc.dict.values:headers}", ["Bearer <env:TT_TEST_TOKEN>", 1]),
}


@pytest.fixture
def env_forms(monkeypatch):
    """A config holding each of ENV_FORMS, the token set to SECRET."""
    monkeypatch.setenv("TT_TEST_TOKEN", SECRET)
    monkeypatch.setenv("TT_TEST_OTHER", SECRET[::-1])
    monkeypatch.delenv("TT_TEST_UNSET", raising=False)
    with warnings.catch_warnings():  # OmegaConf 2.4 renames register_new_resolver
        warnings.simplefilter("ignore")
        OmegaConf.register_new_resolver("tt_test_upper", lambda s: s.upper())
    cfg = OmegaConf.create(
        {
            "token": "${oc.env:TT_TEST_TOKEN}",
            "headers": {"auth": "Bearer ${oc.env:TT_TEST_TOKEN}", "n": 1},
            **{name: text for name, (text, _) in ENV_FORMS.items()},
        }
    )
    yield cfg
    OmegaConf.clear_resolver("tt_test_upper")


@pytest.mark.parametrize("form", sorted(ENV_FORMS))
def test_every_env_form_is_masked(env_forms, form):
    if form != "name_from_env":  # (it names a variable called like the token: unset)
        value = env_forms[form]  # the recipe still reads the real value ...
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        assert SECRET in json.dumps(value) or SECRET.upper() in json.dumps(value)
    record = resolve_for_record(env_forms)  # ... and the record never does
    assert record[form] == ENV_FORMS[form][1]
    text = json.dumps(record)
    assert SECRET not in text and SECRET.upper() not in text and SECRET[::-1] not in text


def test_record_leaves_omegaconf_as_it_was(env_forms):
    from omegaconf.basecontainer import BaseContainer

    before = dict(BaseContainer._resolvers)
    resolve_for_record(env_forms)
    assert dict(BaseContainer._resolvers) == before
    # Nothing of the record's resolution sticks to the config or to the resolvers.
    assert env_forms.key_in_text == f"x?t={SECRET}"
    assert env_forms.custom_resolver == SECRET.upper()

    class Interrupt(BaseException):  # not an OmegaConf error, so it leaves the record
        pass

    def interrupt(_):
        raise Interrupt()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        OmegaConf.register_new_resolver("tt_test_interrupt", interrupt)
    try:
        before = dict(BaseContainer._resolvers)
        with pytest.raises(Interrupt):
            resolve_for_record(OmegaConf.create({"a": "${tt_test_interrupt:1}"}))
        assert dict(BaseContainer._resolvers) == before
    finally:
        OmegaConf.clear_resolver("tt_test_interrupt")


def test_record_keeps_what_fails_to_resolve_as_written(monkeypatch):
    monkeypatch.setenv("TT_TEST_TOKEN", SECRET)
    cfg = OmegaConf.create(
        {"a": "${nope}", "b": "???", "c": {"d": "${c}"}, "e": "${oc.env:TT_TEST_TOKEN}"}
    )
    assert resolve_for_record(cfg) == {
        "a": "${nope}", "b": "???", "c": {"d": "${c}"}, "e": "<env:TT_TEST_TOKEN>"
    }


def test_tensorboard_event_files_have_no_token(tmp_path, env_forms):
    pytest.importorskip("tensorboard")
    from torchtune.training.metric_logging import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path / "tb")
    logger.log_config(env_forms)
    logger.close()
    written = b"".join(p.read_bytes() for p in (tmp_path / "tb").rglob("*") if p.is_file())
    assert b"<env:TT_TEST_TOKEN>" in written and b"x?t=<env:TT_TEST_TOKEN>" in written
    for secret in (SECRET, SECRET.upper(), SECRET[::-1]):
        assert secret.encode() not in written


def test_disk_logger_records_every_env_form_without_the_token(tmp_path, env_forms):
    # The nested oc.decode form used to end the run at log_config with a grammar error.
    logger = DiskLogger(tmp_path)
    logger.log_config(env_forms)
    logger.close()
    written = (tmp_path / "config.json").read_text()
    assert json.loads(written)["decoded"] == "<env:TT_TEST_TOKEN>"
    for secret in (SECRET, SECRET.upper(), SECRET[::-1]):
        assert secret not in written


def test_wandb_logger_sends_the_masked_config(env_forms, monkeypatch):
    # wandb is not a dependency and a test run has no network, so a stand-in module
    # records what WandBLogger hands to run.config.update.
    import sys
    import types

    from torchtune.training.metric_logging import WandBLogger

    sent = []
    run = types.SimpleNamespace(
        config=types.SimpleNamespace(update=lambda d, allow_val_change: sent.append(d)),
        finish=lambda: None,
    )
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(run=run))
    logger = WandBLogger(project="x")
    logger.log_config(env_forms)
    logger.close()
    (config,) = sent
    assert config == resolve_for_record(env_forms)
    assert config["token"] == "<env:TT_TEST_TOKEN>" and config["decoded"] == "<env:TT_TEST_TOKEN>"
    assert SECRET not in json.dumps(config)


def test_type_errors_show_env_values_masked(monkeypatch):
    from dataclasses import dataclass

    monkeypatch.setenv("TT_TEST_TOKEN", SECRET)

    @dataclass
    class P:
        steps: int = 0
        size: int = 0
        shape: dict = None

    cfg = OmegaConf.create(
        {
            "steps": "${oc.env:TT_TEST_TOKEN}",
            "size": "${oc.decode:'[${oc.env:TT_TEST_TOKEN}'}",  # fails on the token's text
            "shape": "${oc.env:TT_TEST_UNSET_TOO}",
        }
    )
    steps, size, shape = check_params(cfg, P)
    assert steps == "steps: expected int, got '<env:TT_TEST_TOKEN>' (str)"
    assert size.startswith("size: cannot resolve value derived from <env:TT_TEST_TOKEN>")
    assert shape.startswith("shape: cannot resolve value") and "TT_TEST_UNSET_TOO" in shape
    assert SECRET not in steps + size + shape
