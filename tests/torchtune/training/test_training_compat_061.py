"""torchtune 0.6.1's training-side names and keys: the text DiskLogger, the profiler,
activation offloading, CEWithChunkedOutputLoss, dict-form checkpoint_files, FSDP2
custom_sharded_layers, the tensor-parallel plan, and the keys the recipes refuse."""

import fnmatch
import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import OmegaConf

from torchtune import UserValueError
from torchtune.config import check_params
from torchtune.modules.loss import CEWithChunkedOutputLoss, ChunkedCrossEntropyLoss
from torchtune.training import DummyProfiler, get_act_offloading_ctx_manager, setup_torch_profiler
from torchtune.training.checkpointing._core import expand_checkpoint_files
from torchtune.training.metric_logging import DiskLogger


def test_disk_logger_writes_0_6_text_lines_beside_json_lines(tmp_path):
    logger = DiskLogger(tmp_path)
    logger.log_dict({"loss": 1.25, "lr": 0.0001}, step=1)
    logger.log("loss", torch.tensor(0.5), step=2)
    logger.close()
    assert logger.text_path.read_text() == "Step 1 | loss:1.25 lr:0.0001 \nStep 2 | loss:0.5 \n"
    assert logger.path.suffix == ".jsonl" and logger.text_path.stem == logger.path.stem
    expected = [{"step": 1, "loss": 1.25, "lr": 0.0001}, {"step": 2, "loss": 0.5}]
    assert DiskLogger.read(logger.path) == DiskLogger.read(logger.text_path) == expected


def test_disk_logger_file_name_picks_the_form(tmp_path):
    text = DiskLogger(tmp_path, filename="run.txt")
    text.log_dict({"loss": 2.0}, step=3)
    text.close()
    assert (tmp_path / "run.txt").read_text() == "Step 3 | loss:2.0 \n"
    assert not list(tmp_path.glob("*.jsonl"))


def test_profiler_writes_a_chrome_trace_per_cycle(tmp_path):
    profiler, settings = setup_torch_profiler(
        enabled=True, output_dir=str(tmp_path), wait_steps=1, warmup_steps=1, active_steps=2, num_cycles=1
    )
    x = torch.randn(16, 16, requires_grad=True)
    with profiler:
        for _ in range(5):
            (x @ x).sum().backward()
            profiler.step()
    trace = tmp_path / "iteration_4" / "rank0_trace.json"
    events = json.loads(trace.read_text())["traceEvents"]
    assert any("aten::mm" in e.get("name", "") for e in events)
    assert (tmp_path / "iteration_4" / "rank0_key_averages.txt").is_file()
    assert settings.active_steps == 2 and settings.enabled


def test_profiler_disabled_is_a_no_op_and_defaults_follow_0_6():
    profiler, settings = setup_torch_profiler()
    assert isinstance(profiler, DummyProfiler)
    assert (settings.wait_steps, settings.warmup_steps, settings.active_steps, settings.num_cycles) == (5, 3, 2, 1)
    with pytest.raises(UserValueError, match="profiler.output_dir"):
        setup_torch_profiler(enabled=True)


def test_activation_offloading_only_where_there_is_device_memory(caplog):
    cpu_model = torch.nn.Linear(4, 4)
    with caplog.at_level("INFO"):
        ctx = get_act_offloading_ctx_manager(cpu_model, True)
    assert not isinstance(ctx, torch.autograd.graph.save_on_cpu)
    assert "nothing to offload" in caplog.text
    assert not isinstance(get_act_offloading_ctx_manager(cpu_model, False), torch.autograd.graph.save_on_cpu)
    with torch.device("meta"):  # any non-CPU device: the tensors saved for backward move
        accel_model = torch.nn.Linear(4, 4)
    assert isinstance(get_act_offloading_ctx_manager(accel_model, True), torch.autograd.graph.save_on_cpu)


def test_ce_with_chunked_output_loss_both_ways():
    torch.manual_seed(0)
    logits = torch.randn(2, 12, 50)
    labels = torch.randint(0, 50, (2, 12))
    labels[0, :4] = -100
    loss = CEWithChunkedOutputLoss(num_output_chunks=4)
    # This library's recipe contract: full logits, unshifted labels -> (sum, count).
    total, count = loss(logits, labels)
    ref_total, ref_count = ChunkedCrossEntropyLoss(num_output_chunks=4)(logits, labels)
    assert torch.equal(total, ref_total) and torch.equal(count, ref_count)
    # 0.6.1's call: logit chunks and already-shifted labels -> the mean.
    shifted = labels[:, 1:]
    chunks = list(logits[:, :-1].chunk(4, dim=1))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 50), shifted.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss(chunks, shifted), expected, rtol=1e-6, atol=1e-6)


def test_checkpoint_files_dict_form():
    files = expand_checkpoint_files({"filename_format": "model-{}-of-{}.safetensors", "max_filename": "00004"})
    assert files == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert expand_checkpoint_files(["a.bin"]) == ["a.bin"]
    with pytest.raises(UserValueError, match="filename_format"):
        expand_checkpoint_files({"filename_format": "model-{}.bin", "max_filename": "2"})
    with pytest.raises(UserValueError, match="exactly the keys"):
        expand_checkpoint_files({"filename_format": "model-{}-of-{}.bin"})


def _tiny_llama():
    from torchtune.models.llama2 import llama2

    return llama2(vocab_size=64, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, max_seq_len=16)


@pytest.fixture
def one_rank_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_custom_sharded_layers_become_fsdp_units(one_rank_group):
    from torch.distributed.fsdp import FSDPModule

    from torchtune.training import shard_model

    model = shard_model(_tiny_llama(), torch.device("cpu"), custom_sharded_layers=["tok_embeddings", "output"])
    assert isinstance(model.tok_embeddings, FSDPModule) and isinstance(model.output, FSDPModule)
    assert all(isinstance(layer, FSDPModule) for layer in model.layers)
    with pytest.raises(UserValueError, match="custom_sharded_layers: no module named 'embed'"):
        shard_model(_tiny_llama(), torch.device("cpu"), custom_sharded_layers=["embed"])


def test_fused_loss_projects_with_the_root_unit_gathered(one_rank_group):
    """LinearCrossEntropyLoss applies the output after the model's forward returned: the
    root unit must still be gathered then (FSDP2 reshards a root given an explicit
    reshard_after_forward=True); a tied output whose embedding is sharded on its own is
    one line."""
    from torchtune.modules.loss import LinearCrossEntropyLoss
    from torchtune.training import shard_model

    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    reference = _tiny_llama()
    expected = torch.nn.functional.cross_entropy(
        reference(tokens)[:, :-1].reshape(-1, 64), tokens[:, 1:].reshape(-1), reduction="sum")
    model = shard_model(reference, torch.device("cpu"))
    loss = LinearCrossEntropyLoss()
    loss.set_model_output(model)
    total, count = loss(model(tokens), tokens)
    assert count == 14
    torch.testing.assert_close(total, expected, atol=1e-4, rtol=1e-5)  # fp32 sums of 14 ~4.2
    total.backward()
    assert model.output.weight.grad is not None

    # Tied: the output is the embedding's weight, gathered only while the embedding runs.
    from torchtune.models.llama3_2 import llama3_2

    tied = llama3_2(vocab_size=64, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, max_seq_len=16)
    split = shard_model(tied, torch.device("cpu"), custom_sharded_layers=["tok_embeddings"])
    loss = LinearCrossEntropyLoss()
    loss.set_model_output(split)
    with pytest.raises(UserValueError, match="drop it from custom_sharded_layers"):
        loss(split(tokens), tokens)


def test_tensor_parallel_plan_names_modules_of_the_decoder():
    from torchtune.models.llama3 import base_llama_tp_plan

    names = [n for n, _ in _tiny_llama().named_modules()]
    for pattern in base_llama_tp_plan():
        assert fnmatch.filter(names, pattern), f"{pattern} matches no module"


def test_distributed_recipe_refuses_what_it_cannot_honour():
    from recipes.full_finetune_distributed import FullFinetuneParams

    cfg = OmegaConf.load("recipes/configs/llama2/7B_full.yaml")
    assert check_params(cfg, FullFinetuneParams) == []
    cfg.optimizer_in_bwd = True
    cfg.tensor_parallel_dim = 2
    problems = check_params(cfg, FullFinetuneParams)
    assert any(p.startswith("optimizer_in_bwd: True is not supported") for p in problems)
    assert any(p.startswith("tensor_parallel_dim: 2 is not supported") for p in problems)
