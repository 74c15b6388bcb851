# Labels equal to this index are skipped by torch.nn.functional.cross_entropy (its default
# ignore_index), so prompt tokens, padding and document starts in packed rows add no loss.
CROSS_ENTROPY_IGNORE_IDX = -100
