"""A token read through ``${oc.env:...}`` reaches no file of a real run, nor its output."""

import json
import os

from recipe_helpers import common_overrides, run_recipe

SECRET = "hf_TopSecretRunToken9"


def test_env_token_through_oc_decode_reaches_no_file(tmp_path, monkeypatch):
    # datasets.load_dataset(token=...) is where a Hub token goes; the nested oc.decode form
    # used to end the run at log_config with an OmegaConf grammar error.
    monkeypatch.setenv("TT_TEST_RUN_TOKEN", SECRET)
    out_dir = tmp_path / "run"
    out = run_recipe(
        "full_finetune_single_device",
        "stories260K/full_single_device",
        common_overrides(out_dir, max_steps_per_epoch=2)
        + ["dataset.token=${oc.decode:${ oc.env:TT_TEST_RUN_TOKEN }}"],
    )
    recorded = json.loads((out_dir / "logs" / "config.json").read_text())
    assert recorded["dataset"]["token"] == "<env:TT_TEST_RUN_TOKEN>"
    assert SECRET not in out.stdout + out.stderr
    for folder, _, names in os.walk(tmp_path):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                assert SECRET.encode() not in f.read(), os.path.join(folder, name)
