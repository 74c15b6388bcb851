"""Per-sequence log-probabilities of the answer tokens, from a batch of logits."""

from typing import Optional

import torch

from torchtune.data import CROSS_ENTROPY_IGNORE_IDX


def sequence_ids(labels: torch.Tensor, seq_lens: Optional[torch.Tensor]) -> torch.Tensor:
    """Which sequence each position belongs to, numbered row-major.

    Args:
        labels (torch.Tensor): [b, s]; only its shape is used.
        seq_lens (Optional[torch.Tensor]): [b, n] lengths of the sequences each row holds end
            to end (zero-padded), as padding-free batches give them; None: one per row.

    Returns:
        torch.Tensor: long [b, s]; with ``seq_lens`` the k-th non-zero length overall is
        sequence k, otherwise row i is sequence i.
    """
    b, s = labels.shape
    if seq_lens is None:
        return torch.arange(b, device=labels.device)[:, None].expand(b, s)
    lengths = seq_lens.flatten()
    lengths = lengths[lengths > 0]
    ids = torch.repeat_interleave(torch.arange(lengths.numel(), device=labels.device), lengths)
    return ids.view(b, s)


def get_batch_log_probs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    seq_lens: Optional[torch.Tensor] = None,
    ignore_idx: int = CROSS_ENTROPY_IGNORE_IDX,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of each sequence's targets (``labels[:, 1:]`` predicted from
    ``logits[:, :-1]``, as everywhere in torchtune), in fp32.

    Args:
        logits (torch.Tensor): [b, s, v].
        labels (torch.Tensor): [b, s], ``ignore_idx`` where there is no target (prompt, padding).
        seq_lens (Optional[torch.Tensor]): [b, n] for padding-free rows (see ``sequence_ids``);
            each sequence's first label must be ``ignore_idx`` so no target crosses a boundary.
        ignore_idx (int): the label of positions without a target.

    Returns:
        tuple[torch.Tensor, torch.Tensor, torch.Tensor]: for each of the N sequences, [N]
        each: the summed log-probability of its targets, its number of targets, and the sum
        over its targets of the mean logit over the vocabulary (what TRL logs as logits).
    """
    ids = sequence_ids(labels, seq_lens)
    num_seqs = int(ids.max()) + 1 if ids.numel() else 0
    targets = labels[:, 1:]
    mask = targets != ignore_idx
    ids = ids[:, 1:][mask]  # [t]
    # Only positions with a target are normalised: the prompt costs no log_softmax.
    picked = logits[:, :-1][mask].float()  # [t, v]
    token_logps = torch.log_softmax(picked, dim=-1).gather(-1, targets[mask][:, None]).squeeze(-1)
    zeros = torch.zeros(num_seqs, dtype=torch.float32, device=logits.device)
    logps = zeros.index_add(0, ids, token_logps)
    counts = torch.zeros(num_seqs, dtype=torch.long, device=logits.device).index_add(
        0, ids, torch.ones_like(ids)
    )
    mean_logits = zeros.index_add(0, ids, picked.detach().mean(-1))
    return logps, counts, mean_logits
