"""Each preference loss, its gradient and its logged rewards equal TRL's implementation
(trl is a test-only reference) for the same policy and reference log-probabilities.

TRL 1.x computes the DPO-family losses inside ``DPOTrainer._compute_loss`` (sigmoid, ipo,
hinge), which takes a model; here it gets a stand-in whose per-token log-probabilities sum
to the given per-sequence values, with ``precompute_ref_logps`` so the reference values come
from the inputs. SimPO and label-smoothed sigmoid live in ``CPOTrainer.cpo_loss``, a plain
function of the log-probabilities.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from torchtune.rlhf.loss import DPOLoss, IPOLoss, RSOLoss, SimPOLoss

trl = pytest.importorskip("trl")

B = 6


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # Summed log-probabilities of a few dozen tokens, and answer lengths 1..40.
    pc, pr, rc, rr = (-60 * torch.rand(B, generator=g, dtype=torch.float64) for _ in range(4))
    nc = torch.randint(1, 40, (B,), generator=g)
    nr = torch.randint(1, 40, (B,), generator=g)
    return pc, pr, rc, rr, nc, nr


def _trl_dpo_trainer(loss_type: str, beta: float, pc, pr, rc, rr, nc, nr):
    """(loss, metrics) from trl's DPOTrainer._compute_loss on the given log-probabilities."""
    from trl.trainer.dpo_trainer import DPOTrainer

    lengths = torch.cat([nc, nr])
    width = int(lengths.max()) + 1
    completion_mask = (torch.arange(width)[None, :] >= 1) & (torch.arange(width)[None, :] <= lengths[:, None])
    completion_mask = completion_mask.long()
    # Per-token values summing to the per-sequence ones (the rest exact zeros).
    log_probs = torch.cat([torch.cat([pc, pr])[:, None], torch.zeros(2 * B, width - 2, dtype=pc.dtype)], dim=1)
    zeros = torch.zeros(2 * B, width - 1, dtype=pc.dtype)
    outputs = SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    class Model:
        training = True

        def __call__(self, **kwargs):
            return outputs

    trainer = SimpleNamespace(
        model=Model(),
        accelerator=SimpleNamespace(device="cpu", gather=lambda x: x, gather_for_metrics=lambda x: x),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=0.0, use_weighting=False,
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * B, width, dtype=torch.long),
        "attention_mask": torch.ones(2 * B, width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = DPOTrainer._compute_loss(trainer, trainer.model, inputs, return_outputs=False)
    return loss, {k: v[0] for k, v in trainer._metrics["train"].items()}


def _trl_cpo_loss(loss_type: str, beta: float, label_smoothing: float, chosen, rejected, simpo_gamma: float = 0.0):
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    trainer = SimpleNamespace(
        alpha=0.0, loss_type=loss_type, beta=beta, label_smoothing=label_smoothing,
        simpo_gamma=simpo_gamma, accelerator=SimpleNamespace(device="cpu"),
    )
    return CPOTrainer.cpo_loss(trainer, chosen, rejected)


def _grads(fn, *tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward()
    return out.detach(), [t.grad for t in leaves]


def _ours(loss_fn, pc, pr, rc, rr, nc, nr):
    def run(pc, pr):
        losses, cr, rj = loss_fn(pc, pr, rc, rr, chosen_num_tokens=nc, rejected_num_tokens=nr)
        run.rewards = (cr, rj)
        return losses.mean()
    value, grads = _grads(run, pc, pr)
    return value, grads, run.rewards


def _theirs(trl_fn, pc, pr):
    return _grads(trl_fn, pc, pr)


@pytest.mark.parametrize(
    "ours, loss_type, beta",
    [(DPOLoss(beta=0.1), "sigmoid", 0.1), (DPOLoss(beta=0.5), "sigmoid", 0.5),
     (IPOLoss(tau=0.1), "ipo", 0.1), (RSOLoss(gamma=0.2), "hinge", 0.2)],
    ids=["dpo-0.1", "dpo-0.5", "ipo", "rso-hinge"],
)
def test_matches_trl_dpo_trainer(ours, loss_type, beta):
    pc, pr, rc, rr, nc, nr = _inputs()
    value, grads, (cr, rj) = _ours(ours, pc, pr, rc, rr, nc, nr)
    trl_value, trl_grads = _theirs(lambda a, b: _trl_dpo_trainer(loss_type, beta, a, b, rc, rr, nc, nr)[0], pc, pr)
    torch.testing.assert_close(value, trl_value, atol=1e-6, rtol=0)
    for g, t in zip(grads, trl_grads):
        torch.testing.assert_close(g, t, atol=1e-6, rtol=0)
    # The logged metrics too: rewards, accuracies, margins, log-probabilities.
    _, metrics = _trl_dpo_trainer(loss_type, beta, pc, pr, rc, rr, nc, nr)
    mine = {
        "rewards/chosen": cr.mean().item(), "rewards/rejected": rj.mean().item(),
        "rewards/accuracies": (cr > rj).double().mean().item(), "rewards/margins": (cr - rj).mean().item(),
        "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item(),
    }
    for k, v in mine.items():
        assert abs(v - metrics[k]) < 1e-6, (k, v, metrics[k])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_dpo_label_smoothing_matches_trl_conservative_sigmoid(label_smoothing):
    """TRL 1.x dropped label smoothing from DPOTrainer's sigmoid; its CPO sigmoid keeps the
    conservative-DPO form, which on the log-ratios pi - ref is exactly DPO's."""
    pc, pr, rc, rr, nc, nr = _inputs(1)
    value, grads, _ = _ours(DPOLoss(beta=0.1, label_smoothing=label_smoothing), pc, pr, rc, rr, nc, nr)

    def trl(a, b):
        losses, _, _ = _trl_cpo_loss("sigmoid", 0.1, label_smoothing, a - rc, b - rr)
        return losses.mean()

    trl_value, trl_grads = _theirs(trl, pc, pr)
    torch.testing.assert_close(value, trl_value, atol=1e-6, rtol=0)
    for g, t in zip(grads, trl_grads):
        torch.testing.assert_close(g, t, atol=1e-6, rtol=0)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_simpo_matches_trl_cpo(label_smoothing):
    """SimPO is reference-free over average log-probabilities (TRL's CPO trainer averages
    them for loss_type="simpo" before cpo_loss)."""
    pc, pr, _, _, nc, nr = _inputs(2)
    loss = SimPOLoss(beta=2.0, gamma=0.5, label_smoothing=label_smoothing)
    assert not loss.uses_reference
    value, grads, (cr, rj) = _ours(loss, pc, pr, None, None, nc, nr)

    def trl(a, b):
        losses, trl.cr, trl.rj = _trl_cpo_loss("simpo", 2.0, label_smoothing, a / nc, b / nr, simpo_gamma=0.5)
        return losses.mean()

    trl_value, trl_grads = _theirs(trl, pc, pr)
    torch.testing.assert_close(value, trl_value, atol=1e-6, rtol=0)
    for g, t in zip(grads, trl_grads):
        torch.testing.assert_close(g, t, atol=1e-6, rtol=0)
    torch.testing.assert_close(cr, trl.cr, atol=1e-6, rtol=0)
    torch.testing.assert_close(rj, trl.rj, atol=1e-6, rtol=0)


def test_dpo_formula_and_checks():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -2.5))
    losses, cr, rj = DPOLoss(beta=0.5)(pc, pr, rc, rr)
    h = (-1.0 + 2.0) - (-3.0 + 2.5)
    torch.testing.assert_close(losses, -torch.nn.functional.logsigmoid(torch.tensor([0.5 * h])))
    torch.testing.assert_close(cr, torch.tensor([0.5]))
    torch.testing.assert_close(rj, torch.tensor([-0.25]))
    with pytest.raises(ValueError, match="chosen_num_tokens"):
        IPOLoss()(pc, pr, rc, rr)
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOLoss(label_smoothing=0.5)
