"""torchtune 0.6.1's recipe keys doing what they say in a real run: the profiler writes a
trace, save_adapter_weights_only writes the adapter and no model, offloading on a CPU
device changes nothing."""

import json

from recipe_helpers import common_overrides, losses, run_recipe

LORA = ("lora_finetune_single_device", "stories260K/lora_single_device")


def test_profiler_trace_and_adapter_only_checkpoint(tmp_path):
    out = tmp_path / "run"
    profiler = (
        f"profiler={{_component_: torchtune.training.setup_torch_profiler, enabled: True, "
        f"output_dir: {out}/profiling_outputs, wait_steps: 0, warmup_steps: 1, active_steps: 1}}"
    )
    run_recipe(*LORA, common_overrides(out, max_steps_per_epoch=3, sample_prompt="null") + [
        profiler, "save_adapter_weights_only=True", "enable_activation_offloading=True",
    ])
    trace = out / "profiling_outputs" / "iteration_2" / "rank0_trace.json"
    assert json.loads(trace.read_text())["traceEvents"], "empty profiler trace"
    saved = {p.name for p in out.iterdir()}
    assert "adapter_0.pt" in saved and "adapter_0_peft" in saved
    assert not [name for name in saved if name.startswith("meta_model")], saved
    # Offloading is a no-op on the CPU: the same losses as a run without it.
    plain = tmp_path / "plain"
    run_recipe(*LORA, common_overrides(plain, max_steps_per_epoch=3, sample_prompt="null"))
    assert losses(out) == losses(plain)
