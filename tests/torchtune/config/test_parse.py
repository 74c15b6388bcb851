"""Config loading and every command-line override form."""

import pytest
from omegaconf import OmegaConf

from torchtune.config import ConfigError, apply_overrides, load_config

YAML = """\
output_dir: /tmp/run
seed: 7
model:
  _component_: torch.nn.Linear
  in_features: 4
  out_features: 2
optimizer:
  _component_: torch.optim.SGD
  lr: 0.1
dataset:
  columns: [a, b]
log_dir: ${output_dir}/logs
"""


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(YAML)
    return load_config(str(path))


def test_nested_override_keeps_yaml_types(cfg):
    apply_overrides(cfg, ["optimizer.lr=1e-4", "seed=11", "model.in_features=8", "dataset.flag=true"])
    assert cfg.optimizer.lr == pytest.approx(1e-4) and isinstance(cfg.optimizer.lr, float)
    assert cfg.seed == 11 and isinstance(cfg.seed, int)
    assert cfg.model.in_features == 8
    assert cfg.dataset.flag is True


def test_list_override(cfg):
    apply_overrides(cfg, ["dataset.columns=[1,2,3]", "new_list=[x, y]"])
    assert list(cfg.dataset.columns) == [1, 2, 3]
    assert list(cfg.new_list) == ["x", "y"]


def test_new_keys_nested_and_top_level(cfg):
    apply_overrides(cfg, ["brand_new=5", "model.bias=false", "a.b.c=hello"])
    assert cfg.brand_new == 5
    assert cfg.model.bias is False
    assert cfg.a.b.c == "hello"


def test_delete_key(cfg):
    apply_overrides(cfg, ["~model.out_features", "~seed"])
    assert "out_features" not in cfg.model
    assert "seed" not in cfg


def test_delete_missing_key_names_it(cfg):
    with pytest.raises(ConfigError, match="model.nope"):
        apply_overrides(cfg, ["~model.nope"])


def test_swap_component(cfg):
    apply_overrides(cfg, ["optimizer._component_=torch.optim.AdamW"])
    assert cfg.optimizer._component_ == "torch.optim.AdamW"


def test_null_and_string_values(cfg):
    apply_overrides(cfg, ["seed=null", "output_dir=/data/x", "name='007'"])
    assert cfg.seed is None
    assert cfg.output_dir == "/data/x"
    assert cfg.name == "007"


def test_a_value_ending_in_a_colon_stays_text(cfg):
    # yaml alone reads `ROMEO:` as {ROMEO: None}; a mapping is still one when written as one.
    apply_overrides(cfg, ["prompt=ROMEO:", "speaker=Q: ", "plain=a:b", "mapping={a: null}", "pair=a: b"])
    assert cfg.prompt == "ROMEO:"
    assert cfg.speaker == "Q: "
    assert cfg.plain == "a:b"
    assert OmegaConf.to_container(cfg.mapping) == {"a": None}
    assert OmegaConf.to_container(cfg.pair) == {"a": "b"}


def test_interpolation_follows_override(cfg):
    apply_overrides(cfg, ["output_dir=/elsewhere"])
    assert cfg.log_dir == "/elsewhere/logs"


def test_malformed_override(cfg):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["justakey"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    msg = str(e.value)
    assert str(path) in msg and "yaml syntax error" in msg
    line = int(msg.split(str(path) + ":")[1].split(":")[0])
    assert line in (3, 4)  # the unclosed list is reported where yaml notices it
    assert "\n" not in msg


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="no_such/config"):
        load_config("no_such/config")


def test_non_mapping_config(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(path))


def test_parse_decorator_runs_recipe_main(tmp_path, capsys):
    from torchtune import config

    path = tmp_path / "c.yaml"
    path.write_text(YAML)
    seen = {}

    @config.parse
    def recipe_main(cfg):
        seen["cfg"] = OmegaConf.to_container(cfg, resolve=True)
        return 0

    recipe_main(["--config", str(path), "seed=3", "~dataset"])
    assert seen["cfg"]["seed"] == 3 and "dataset" not in seen["cfg"]
    assert seen["cfg"]["log_dir"] == "/tmp/run/logs"

    with pytest.raises(SystemExit) as e:
        recipe_main(["--config", str(path), "~nothing.here"])
    assert e.value.code == 1
    assert "nothing.here" in capsys.readouterr().err


def test_override_under_an_interpolated_node_leaves_the_source_alone(cfg):
    apply_overrides(cfg, ["val_dataset=${dataset}", "val_dataset.split=test", "val_dataset.columns=[c]"])
    assert cfg.val_dataset.split == "test" and list(cfg.val_dataset.columns) == ["c"]
    assert "split" not in cfg.dataset and list(cfg.dataset.columns) == ["a", "b"]


def test_float_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 2e-5\neps: 1.0e-8\nname: 1e\n")
    cfg = load_config(str(path))
    assert cfg.lr == pytest.approx(2e-5) and isinstance(cfg.lr, float)
    assert cfg.eps == pytest.approx(1e-8)
    assert cfg.name == "1e"
