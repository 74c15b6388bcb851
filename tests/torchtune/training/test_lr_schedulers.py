import math

import pytest
import torch

from torchtune.training import get_cosine_schedule_with_warmup


def _optimizer(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _expected(step, warmup, total, cycles):
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1 + math.cos(math.pi * cycles * 2 * progress)))


@pytest.mark.parametrize("warmup,total,cycles", [(3, 10, 0.5), (0, 8, 0.5), (2, 12, 1.5)])
def test_cosine_schedule_matches_formula(warmup, total, cycles):
    opt = _optimizer(0.1)
    sched = get_cosine_schedule_with_warmup(opt, warmup, total, num_cycles=cycles)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 * _expected(s, warmup, total, cycles) for s in range(total + 1)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_cosine_schedule_shape():
    opt = _optimizer(1.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=4, num_training_steps=20)
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0
    assert lrs[4] == pytest.approx(1.0)  # peak right after warmup
    assert lrs[12] == pytest.approx(0.5)  # half-way through the decay
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:5]))
    assert all(a > b for a, b in zip(lrs[4:20], lrs[5:21]))


def test_cosine_schedule_resumes_from_state_dict():
    opt = _optimizer(0.1)
    sched = get_cosine_schedule_with_warmup(opt, 2, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    opt2 = _optimizer(0.1)
    opt2.load_state_dict(opt.state_dict())
    sched2 = get_cosine_schedule_with_warmup(opt2, 2, 10)
    sched2.load_state_dict(sched.state_dict())
    opt.step(), sched.step(), opt2.step(), sched2.step()
    expected = pytest.approx(0.1 * _expected(6, 2, 10, 0.5))
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == expected


def test_cosine_schedule_rejects_negative_steps():
    with pytest.raises(ValueError, match="num_warmup_steps"):
        get_cosine_schedule_with_warmup(_optimizer(), -1, 10)
