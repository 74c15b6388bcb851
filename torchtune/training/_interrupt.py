"""What a run says when Ctrl-C stops it: where, and what it can resume from."""

from typing import Optional


def interrupted_note(
    epochs_run: int,
    steps_run: int,
    steps_per_epoch: int,
    global_step: int,
    latest_checkpoint: Optional[str],
) -> str:
    """One line for ``interrupted: ...``: where training stopped and the latest complete
    checkpoint (the save a run resumes from), or that there is none.

    Args:
        epochs_run (int): epochs fully done (the epoch in progress is the next one).
        steps_run (int): optimizer steps done in the epoch in progress.
        steps_per_epoch (int): optimizer steps an epoch has.
        global_step (int): optimizer steps done in all.
        latest_checkpoint (Optional[str]): the folder of the newest resumable save.

    Example:
        >>> interrupted_note(0, 12, 40, 12, None)
        'stopped in epoch 1 after step 12 of 40 (global step 12); no checkpoint to resume from was saved'
    """
    where = (
        f"stopped in epoch {epochs_run + 1} after step {steps_run} of {steps_per_epoch} "
        f"(global step {global_step})"
    )
    if latest_checkpoint is None:
        return f"{where}; no checkpoint to resume from was saved"
    return (
        f"{where}; the latest complete checkpoint is in {latest_checkpoint} (resume with "
        "resume_from_checkpoint=True and its recipe_state.pt)"
    )
