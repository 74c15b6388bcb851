"""OptimizerInBackward: each parameter stepped from its gradient hook equals one optimizer
stepping all of them after backward, bit for bit."""

import copy
from functools import partial

import pytest
import torch
from torch import nn

from torchtune.training import OptimizerInBackward, get_cosine_schedule_with_warmup


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 50))


def batches(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 50, (4, 7), generator=g) for _ in range(n)]


def loss_of(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())


BUILDERS = {
    "adamw": partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
    "adamw-fused": partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1, fused=True),
    "sgd-momentum": partial(torch.optim.SGD, lr=1e-1, momentum=0.9),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_steps_in_backward_equal_one_optimizer_bit_for_bit(name):
    build = BUILDERS[name]
    reference, in_bwd = tiny_model(), tiny_model()
    optimizer = build(reference.parameters())
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=6)
    wrapper = OptimizerInBackward(in_bwd.named_parameters(), build)
    wrapper_scheduler = get_cosine_schedule_with_warmup(wrapper.lead, num_warmup_steps=2, num_training_steps=6)

    for step, tokens in enumerate(batches(6)):
        loss_of(reference, tokens).backward()
        last_step_lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        loss_of(in_bwd, tokens).backward()
        # the first update waits for step(), after backward; later ones happen in backward
        assert all((p.grad is None) == (step > 0) for p in in_bwd.parameters())
        wrapper.step()
        assert all(p.grad is None for p in in_bwd.parameters())
        wrapper_scheduler.step()

    for (n, a), b in zip(reference.named_parameters(), in_bwd.parameters()):
        assert torch.equal(a, b), n
    # Every parameter's optimizer followed the lead's schedule: each copied the lead's lr
    # right before it stepped, so it holds the lr of the last step; the lead holds the next.
    others = {opt.param_groups[0]["lr"] for opt in list(wrapper.optimizers.values())[1:]}
    assert others == {last_step_lr}
    assert wrapper.lead.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] != last_step_lr


def test_frozen_parameters_get_no_optimizer_and_do_not_move():
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.clone()
    wrapper = OptimizerInBackward(model.named_parameters(), BUILDERS["adamw"])
    assert "0.weight" not in wrapper.optimizers and len(wrapper.optimizers) == 4
    loss_of(model, batches(1)[0]).backward()
    wrapper.step()
    assert torch.equal(model[0].weight, frozen)


def test_state_dict_round_trip_continues_exactly():
    straight = tiny_model()
    wrapper = OptimizerInBackward(straight.named_parameters(), BUILDERS["adamw-fused"])
    data = batches(4)
    for tokens in data[:2]:
        loss_of(straight, tokens).backward()
        wrapper.step()
    saved_model, saved_optimizer = copy.deepcopy(straight.state_dict()), copy.deepcopy(wrapper.state_dict())
    for tokens in data[2:]:
        loss_of(straight, tokens).backward()

    resumed = tiny_model()
    resumed.load_state_dict(saved_model)
    resumed_wrapper = OptimizerInBackward(resumed.named_parameters(), BUILDERS["adamw-fused"])
    resumed_wrapper.load_state_dict(saved_optimizer)
    for tokens in data[2:]:
        loss_of(resumed, tokens).backward()
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_loading_a_single_optimizers_state_says_which_option():
    model = tiny_model()
    single = torch.optim.AdamW(model.parameters())
    wrapper = OptimizerInBackward(model.named_parameters(), BUILDERS["adamw"])
    with pytest.raises(ValueError, match="optimizer_in_bwd=False"):
        wrapper.load_state_dict(single.state_dict())


def test_loading_other_parameter_names_lists_them():
    model = tiny_model()
    wrapper = OptimizerInBackward(model.named_parameters(), BUILDERS["adamw"])
    state = wrapper.state_dict()
    state["9.weight"] = state.pop("3.weight")
    with pytest.raises(ValueError, match=r"missing: \['3.weight'\], unexpected: \['9.weight'\]"):
        wrapper.load_state_dict(state)


def test_removed_hooks_update_nothing():
    model = tiny_model()
    wrapper = OptimizerInBackward(model.named_parameters(), BUILDERS["adamw"])
    loss_of(model, batches(1)[0]).backward()
    wrapper.step()  # from here on, backward would step
    wrapper.remove_hooks()
    before = copy.deepcopy(model.state_dict())
    loss_of(model, batches(1)[0]).backward()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is not None for p in model.parameters())


def test_no_trainable_parameter_is_an_error():
    model = tiny_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter requires grad"):
        OptimizerInBackward(model.named_parameters(), BUILDERS["adamw"])
