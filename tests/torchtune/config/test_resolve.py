"""The config a run records: resolved, with environment values kept out."""

import json

from omegaconf import OmegaConf

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
