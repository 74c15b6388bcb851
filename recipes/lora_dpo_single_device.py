"""LoRA preference fine-tuning (DPO, IPO, SimPO, RSO) of a decoder on one device.

Each sample is a pair: a prompt with a chosen and a rejected answer. The policy is the model
with trainable low-rank adapters; the reference model is the same model with its adapters
switched off (``rlhf.disable_adapters``), so no second copy is held. The loss is a config
component (``torchtune.rlhf.loss.DPOLoss`` ...) over the summed log-probabilities of the
answer tokens. Checkpoints are the LoRA SFT recipe's: the merged model, the adapter alone
(``adapter_{epoch}.pt``, used to resume) and, at the end, the adapter in PEFT format.

Features (the whole budget; anything else belongs in another recipe):
    - epochs, max_steps_per_epoch, batch size (pairs), gradient accumulation
    - optimizer and lr scheduler as config components, gradient clipping
    - seed, device, dtype (fp32 / bf16), activation checkpointing, torch.compile
    - preference loss as a config component; reference-free losses skip the reference
    - reference log-probabilities computed once and cached per sample
      (``cache_reference_log_probs``), or per step
    - padding-free batches: the 2b sequences of b pairs end to end in one row
    - metric logger component with TRL's metrics (rewards/chosen, rewards/rejected,
      rewards/accuracies, rewards/margins, logps/*, logits/*), a tqdm bar, peak memory
    - checkpoints at each epoch end and every ``save_every_n_steps``; exact resume

    tune run lora_dpo_single_device --config stories260K/lora_dpo_single_device
"""

import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Optional

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from torchtune import UserError, UserValueError, config, datasets, modules, rlhf, training, utils
from torchtune.config import Component
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, ResumableSampler, padding_free_collate_dpo
from torchtune.modules.moe import training_aux_loss
from torchtune.modules.peft import (
    get_adapter_params,
    get_merged_lora_ckpt,
    set_trainable_params,
    validate_missing_and_unexpected_for_lora,
)
from torchtune.modules.peft.peft_utils import get_lora_adapter_config
from torchtune.training.checkpointing import check_resume_matches, input_files_in_config

log = utils.get_logger("INFO")

# Per-step sums kept over an accumulation window, in this order (see _forward_pairs).
_STATS = (
    "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
    "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected",
    "tokens/chosen", "tokens/rejected", "pairs", "num_tokens",
)


@dataclass
class LoRADPOParams:
    """Every key a config for this recipe has; `tune validate` checks configs against it."""

    output_dir: str
    model: Component
    tokenizer: Component
    checkpointer: Component
    resume_from_checkpoint: bool
    dataset: Component
    seed: Optional[int]
    shuffle: bool
    batch_size: int
    epochs: int
    max_steps_per_epoch: Optional[int]
    gradient_accumulation_steps: int
    optimizer: Component
    loss: Component
    device: str
    dtype: str
    enable_activation_checkpointing: bool
    compile: bool
    metric_logger: Component
    log_every_n_steps: int
    log_peak_memory_stats: bool
    # Optional keys; torchtune 0.6.1 configs leave some out and add others.
    lr_scheduler: Optional[Component] = None
    clip_grad_norm: Optional[float] = None
    save_every_n_steps: Optional[int] = None
    cache_reference_log_probs: bool = False
    save_adapter_weights_only: bool = False
    enable_activation_offloading: bool = False
    # A mixture of experts: weight of the router z-loss added to the load-balancing loss.
    router_z_loss_coef: float = 0.0


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or inf; training stops and the last checkpoint stays."""


def preference_metrics(sums: list[float]) -> dict[str, float]:
    """TRL's per-step metrics from the window's sums: means over pairs, logits over tokens."""
    s = dict(zip(_STATS, sums))
    pairs = max(s["pairs"], 1)
    metrics = {k: s[k] / pairs for k in _STATS[:7]}
    metrics["logits/chosen"] = s["logits/chosen"] / max(s["tokens/chosen"], 1)
    metrics["logits/rejected"] = s["logits/rejected"] / max(s["tokens/rejected"], 1)
    return metrics


class LoRADPORecipeSingleDevice:
    """LoRA preference fine-tune on a single device. See the module docstring for the features.

    Args:
        cfg (DictConfig): the merged config, already validated against LoRADPOParams.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self._device = utils.get_device(cfg.device)
        self._dtype = training.get_dtype(cfg.dtype, device=self._device)
        self._output_dir = cfg.output_dir
        # Files the config names (tokenizer, data): no save may replace them.
        self._config_inputs = input_files_in_config(cfg, cfg.output_dir)
        self._log_every_n_steps = cfg.log_every_n_steps
        # A mixture of experts: weight of the router z-loss (ST-MoE), added to the
        # load-balancing loss; 0 leaves it out.
        self._router_z_loss_coef = cfg.get("router_z_loss_coef", 0.0)
        self._aux_loss: Optional[torch.Tensor] = None  # the last forward's, logged
        self._log_peak_memory_stats = cfg.log_peak_memory_stats
        self._save_every_n_steps = cfg.save_every_n_steps
        self._resume_from_checkpoint = cfg.resume_from_checkpoint
        self._gradient_accumulation_steps = cfg.gradient_accumulation_steps
        self._clip_grad_norm = cfg.clip_grad_norm
        self._batch_size = cfg.batch_size
        self._lora_rank = cfg.model.lora_rank
        self._lora_alpha = cfg.model.lora_alpha
        self._cache_reference_log_probs = cfg.cache_reference_log_probs
        self._save_adapter_weights_only = cfg.save_adapter_weights_only
        self._enable_activation_offloading = cfg.enable_activation_offloading

        self._seed_from_config = cfg.seed
        self.seed = training.set_seed(cfg.seed)
        self.total_epochs = cfg.epochs
        self.max_steps_per_epoch = cfg.max_steps_per_epoch
        self.epochs_run = 0  # epochs fully done
        self.steps_run = 0  # optimizer steps done in the current epoch
        self.global_step = 0  # optimizer steps done in total

    # ------------------------------------------------------------------ checkpoints

    def load_checkpoint(self, cfg_checkpointer: DictConfig) -> dict[str, Any]:
        """Read the model (and, when resuming, the recipe state) through the checkpointer."""
        self._checkpointer = config.instantiate(
            cfg_checkpointer, resume_from_checkpoint=self._resume_from_checkpoint
        )
        self._checkpointer.protect_inputs(self._config_inputs)
        # The model streams in, a decoder layer at a time (loaded by _setup_model).
        checkpoint = self._checkpointer.load_checkpoint(stream_model=True)
        if self._resume_from_checkpoint:
            self._update_recipe_state(checkpoint)
        return checkpoint

    def _update_recipe_state(self, checkpoint: dict[str, Any]) -> None:
        if self._seed_from_config is None:
            self.seed = checkpoint["seed"]  # a random seed was drawn: keep the run's own
        check_resume_matches(
            checkpoint,
            {
                "seed": self.seed,
                "total_epochs": self.total_epochs,
                "max_steps_per_epoch": self.max_steps_per_epoch,
                "batch_size": self._batch_size,
                "gradient_accumulation_steps": self._gradient_accumulation_steps,
            },
        )
        self.epochs_run = checkpoint["epochs_run"]
        self.steps_run = checkpoint["steps_run"]
        self.global_step = checkpoint["global_step"]

    def save_checkpoint(self, epoch: int, step: Optional[int] = None) -> None:
        """Write the model and the state needed to continue exactly where we are.

        Args:
            epoch (int): the epoch being (or just) trained.
            step (Optional[int]): global step for a mid-epoch checkpoint; None at an epoch end.
        """
        model_state = {k: v.cpu() for k, v in self._model.state_dict().items()}
        adapter_keys = set(get_adapter_params(self._model))
        state = {
            "adapter": {k: v for k, v in model_state.items() if k in adapter_keys},
            "adapter_config": self._adapter_config,
            "seed": self.seed,
            "epochs_run": self.epochs_run,
            "steps_run": self.steps_run,
            "global_step": self.global_step,
            "total_epochs": self.total_epochs,
            "max_steps_per_epoch": self.max_steps_per_epoch,
            "batch_size": self._batch_size,
            "gradient_accumulation_steps": self._gradient_accumulation_steps,
            "optimizer": self._optimizer.state_dict(),
            "lr_scheduler": self._lr_scheduler.state_dict() if self._lr_scheduler else None,
            "rng_state": training.get_rng_state(),
        }
        if not self._save_adapter_weights_only:
            # The merged model is an ordinary model for other tools; training resumes
            # from the base weights plus the adapter.
            state["model"] = get_merged_lora_ckpt(model_state, rank=self._lora_rank, alpha=self._lora_alpha)
        intermediate = step is not None or epoch + 1 < self.total_epochs
        self._checkpointer.save_checkpoint(
            state, epoch=epoch, intermediate_checkpoint=intermediate, step=step,
            adapter_only=self._save_adapter_weights_only,
        )

    # ------------------------------------------------------------------ setup

    def setup(self, cfg: DictConfig) -> None:
        """Build every component, in dependency order."""
        # Held until the process ends: a second run on this output_dir stops at once.
        self._output_lock = training.OutputDirLock(cfg.output_dir)
        self._metric_logger = config.instantiate(cfg.metric_logger)
        self._metric_logger.log_config(cfg)
        checkpoint = self.load_checkpoint(cfg.checkpointer)

        # The model is built as the checkpoint was saved (tying read from config.json).
        training.tie_like_checkpoint(cfg.model, self._checkpointer.model_layout)
        self._model = self._setup_model(
            cfg.model,
            cfg.enable_activation_checkpointing,
            cfg.compile,
            base_model_groups=checkpoint.pop("model"),
            adapter_state_dict=checkpoint.get("adapter") if self._resume_from_checkpoint else None,
        )
        # Saved activations go to CPU memory during forward (a no-op on a CPU device).
        self._activations_ctx = training.get_act_offloading_ctx_manager(
            self._model, self._enable_activation_offloading
        )
        # Read from the built LoRA layers, so it cannot disagree with the builder's defaults.
        self._adapter_config = get_lora_adapter_config(self._model)
        self._tokenizer = config.instantiate(cfg.tokenizer)
        self._optimizer = self._setup_optimizer(cfg.optimizer)
        self._loss_fn = self._setup_loss(cfg.loss)
        self._sampler, self._dataloader = self._setup_data(cfg.dataset, cfg.shuffle)

        self._steps_per_epoch = len(self._dataloader) // self._gradient_accumulation_steps
        if self.max_steps_per_epoch is not None:
            self._steps_per_epoch = min(self._steps_per_epoch, self.max_steps_per_epoch)
        if self._steps_per_epoch == 0:
            raise UserValueError(
                f"dataset: {len(self._dataloader)} batches of batch_size={self._batch_size} give "
                f"no optimizer step with gradient_accumulation_steps={self._gradient_accumulation_steps}"
            )
        self._lr_scheduler = self._setup_lr_scheduler(
            cfg.lr_scheduler,
            num_training_steps=self.total_epochs * self._steps_per_epoch,
        )
        if self._resume_from_checkpoint:
            # After the scheduler is built: building it steps the fresh optimizer's lr,
            # which the saved optimizer state then overwrites with the lr to continue with.
            self._optimizer.load_state_dict(checkpoint["optimizer"])
            if self._lr_scheduler is not None:
                self._lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
            # Last, so that building components above cannot shift the restored RNG.
            training.set_rng_state(checkpoint["rng_state"])

    def _setup_model(
        self,
        cfg_model: DictConfig,
        enable_activation_checkpointing: bool,
        compile_model: bool,
        base_model_groups: Iterable[dict[str, torch.Tensor]],
        adapter_state_dict: Optional[dict[str, torch.Tensor]],
    ) -> torch.nn.Module:
        # Checked on a meta-device copy first: a config that does not fit the checkpoint
        # fails before the model is built.
        base_model_groups = training.check_checkpoint_fits(
            lambda: config.instantiate(cfg_model), base_model_groups, self._checkpointer.model_layout
        )
        with training.set_default_dtype(self._dtype), self._device:
            model = config.instantiate(cfg_model)
        base = training.load_state_dict_in_groups(model, base_model_groups)
        lora_missing = lora_unexpected = None
        if adapter_state_dict is not None:
            lora_missing, lora_unexpected = model.load_state_dict(adapter_state_dict, strict=False)
        validate_missing_and_unexpected_for_lora(
            model,
            base_missing=base.missing_keys,
            base_unexpected=base.unexpected_keys,
            lora_missing=lora_missing,
            lora_unexpected=lora_unexpected,
        )
        adapter_params = get_adapter_params(model)
        set_trainable_params(model, adapter_params)
        log.info(
            f"LoRA: {sum(p.numel() for p in adapter_params.values()):,} trainable parameters "
            f"(rank {self._lora_rank}, alpha {self._lora_alpha}); the reference is the model "
            "with its adapters off"
        )
        if enable_activation_checkpointing:
            modules.set_activation_checkpointing(model)
        log.info(
            f"Model: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{self._dtype} on {self._device}"
        )
        if compile_model:
            model.compile()
        return model

    def _setup_optimizer(self, cfg_optimizer: DictConfig) -> torch.optim.Optimizer:
        trainable = [p for p in self._model.parameters() if p.requires_grad]
        optimizer = config.instantiate(cfg_optimizer, trainable)
        return optimizer

    def _setup_loss(self, cfg_loss: DictConfig) -> torch.nn.Module:
        loss_fn = config.instantiate(cfg_loss)
        if not hasattr(loss_fn, "uses_reference"):
            raise UserValueError(
                f"loss: {cfg_loss._component_} is not a preference loss (torchtune.rlhf.loss.DPOLoss, "
                "IPOLoss, SimPOLoss, RSOLoss)"
            )
        return loss_fn

    def _setup_lr_scheduler(
        self, cfg_lr_scheduler: Optional[DictConfig], num_training_steps: int
    ) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
        if cfg_lr_scheduler is None:
            return None
        return config.instantiate(cfg_lr_scheduler, self._optimizer, num_training_steps=num_training_steps)

    def _setup_data(
        self, cfg_dataset: DictConfig, shuffle: bool, key: str = "dataset"
    ) -> tuple[ResumableSampler, DataLoader]:
        dataset = config.instantiate(cfg_dataset, self._tokenizer)
        # Every sample must fit the model's positions: refuse now, not at the batch that
        # holds the first long one.
        datasets.check_sample_lengths(dataset, self._model.max_seq_len, key)
        # Chosen and rejected sequences of a batch go end to end in one row: no padding.
        collate = partial(
            padding_free_collate_dpo, padding_idx=self._tokenizer.pad_id, ignore_idx=CROSS_ENTROPY_IGNORE_IDX
        )
        if self._cache_reference_log_probs and self._loss_fn.uses_reference:
            dataset = rlhf.ReferenceLogProbsDataset(dataset, self._reference_log_probs(dataset, collate))
        sampler = ResumableSampler(dataset, shuffle=shuffle, seed=self.seed)
        dataloader = DataLoader(
            dataset,
            batch_size=self._batch_size,
            sampler=sampler,
            drop_last=True,  # equal batches, so accumulation windows are comparable
            # Its own generator: starting an epoch must not draw from the global RNG,
            # whose state a mid-epoch resume restores.
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=collate,
        )
        return sampler, dataloader

    @torch.no_grad()
    def _reference_log_probs(self, dataset, collate) -> torch.Tensor:
        """[len(dataset), 2] reference log-probabilities (chosen, rejected), in order. Runs
        at every start, resumed or not: the reference (the base weights) never changes."""
        out = []
        for batch in DataLoader(dataset, batch_size=self._batch_size, collate_fn=collate):
            chosen, rejected = self._reference_forward(batch)
            out.append(torch.stack([chosen, rejected], dim=1).cpu())
        log.info(f"Reference log-probabilities cached for {len(dataset)} pairs")
        return torch.cat(out)

    # ------------------------------------------------------------------ training

    def _log_probs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Per-sequence summed log-probabilities, answer-token counts and summed mean logits
        of the batch's 2b sequences (chosen first)."""
        logits = self._model(batch["tokens"], input_pos=batch.get("input_pos"), seq_lens=batch.get("seq_lens"))
        return rlhf.get_batch_log_probs(logits, batch["labels"], batch.get("seq_lens"))

    def _reference_forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference model's log-probabilities of the chosen and rejected answers, [b] each."""
        batch = {k: v.to(self._device) for k, v in batch.items()}
        with rlhf.disable_adapters(self._model):
            logps, _, _ = self._log_probs(batch)
        return logps.chunk(2)

    def _forward_pairs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed loss of the batch's pairs, and the sums of ``_STATS``."""
        reference = (None, None)
        if "reference_chosen_logps" in batch:
            reference = (batch["reference_chosen_logps"], batch["reference_rejected_logps"])
        elif self._loss_fn.uses_reference:
            reference = self._reference_forward(batch)
        batch = {k: v.to(self._device) for k, v in batch.items()}
        logps, counts, mean_logits = self._log_probs(batch)
        # A mixture of experts' load balancing, of this (policy) forward; times the pairs:
        # the step divides the summed loss by them.
        aux = training_aux_loss(self._model, self._router_z_loss_coef)
        self._aux_loss = None if aux is None else aux.detach()
        (chosen, rejected), (n_chosen, n_rejected) = logps.chunk(2), counts.chunk(2)
        reference = tuple(r.to(self._device) if r is not None else None for r in reference)
        losses, chosen_rewards, rejected_rewards = self._loss_fn(
            chosen, rejected, *reference, chosen_num_tokens=n_chosen, rejected_num_tokens=n_rejected
        )
        logits_chosen, logits_rejected = mean_logits.chunk(2)
        stats = torch.stack([
            losses.detach().sum(),
            chosen_rewards.sum(),
            rejected_rewards.sum(),
            (chosen_rewards > rejected_rewards).float().sum(),
            (chosen_rewards - rejected_rewards).sum(),
            chosen.detach().sum(),
            rejected.detach().sum(),
            logits_chosen.sum(),
            logits_rejected.sum(),
            n_chosen.sum().float(),
            n_rejected.sum().float(),
            torch.tensor(float(chosen.numel()), device=self._device),
            torch.tensor(float(batch["tokens"].numel()), device=self._device),
        ]).double()
        if aux is not None:
            return losses.sum() + aux * chosen.numel(), stats
        return losses.sum(), stats

    def train(self) -> None:
        """The training loop: forward (reference, then policy), loss, backward; on an
        accumulation boundary scale, clip, step, zero, schedule, log and checkpoint."""
        self._model.train()
        grad_accum = self._gradient_accumulation_steps
        for epoch in range(self.epochs_run, self.total_epochs):
            # A resumed run skips exactly the samples the interrupted run consumed.
            self._sampler.set_epoch(epoch, start_index=self.steps_run * grad_accum * self._batch_size)
            pbar = tqdm(total=self._steps_per_epoch, initial=self.steps_run, desc=f"epoch {epoch + 1}")
            window = torch.zeros(len(_STATS), dtype=torch.float64, device=self._device)
            window_start = time.perf_counter()
            for idx, batch in enumerate(self._dataloader):
                if self.steps_run == self._steps_per_epoch:
                    break
                with self._activations_ctx:
                    loss_sum, stats = self._forward_pairs(batch)
                loss_sum.backward()
                del loss_sum  # free the graph before the next forward
                window += stats
                if (idx + 1) % grad_accum != 0:
                    continue

                # The loss is the mean over the window's pairs (as TRL's mean over a batch),
                # so batch 4 x 1 and batch 2 x 2 give the same update.
                sums = window.tolist()
                metrics = preference_metrics(sums)
                training.scale_grads_(self._model, 1 / max(sums[_STATS.index("pairs")], 1))
                if not torch.isfinite(torch.tensor(metrics["loss"])):
                    raise NonFiniteLossError(
                        f"loss is {metrics['loss']} at epoch {epoch + 1}, step {self.global_step + 1}; "
                        "stopping (the last checkpoint written is intact)"
                    )
                grad_norm = None
                if self._clip_grad_norm is not None:
                    grad_norm = torch.nn.utils.clip_grad_norm_(
                        [p for p in self._model.parameters() if p.requires_grad],
                        max_norm=self._clip_grad_norm,
                    )
                lr = self._optimizer.param_groups[0]["lr"]  # the lr this step uses
                self._optimizer.step()
                self._optimizer.zero_grad(set_to_none=True)
                if self._lr_scheduler is not None:
                    self._lr_scheduler.step()
                self.steps_run += 1
                self.global_step += 1

                num_tokens = int(sums[_STATS.index("num_tokens")])
                tokens_per_second = num_tokens / (time.perf_counter() - window_start)
                pbar.update(1)
                pbar.set_postfix(
                    loss=f"{metrics['loss']:.4f}", acc=f"{metrics['rewards/accuracies']:.2f}", lr=f"{lr:.2e}"
                )
                if self.global_step % self._log_every_n_steps == 0:
                    metrics.update(lr=lr, num_tokens=num_tokens, tokens_per_second=tokens_per_second)
                    if grad_norm is not None:
                        metrics["grad_norm"] = grad_norm.item()
                    if self._aux_loss is not None:
                        metrics["aux_loss"] = self._aux_loss.item()
                    if self._log_peak_memory_stats:
                        metrics.update(training.get_memory_stats(self._device))
                    self._metric_logger.log_dict(metrics, step=self.global_step)
                    pbar.write(
                        f"step {self.global_step} | "
                        + " ".join(f"{k}: {v:.4g}" for k, v in metrics.items())
                    )
                if self._save_every_n_steps and self.global_step % self._save_every_n_steps == 0:
                    self.save_checkpoint(epoch=epoch, step=self.global_step)

                window.zero_()
                window_start = time.perf_counter()
            pbar.close()
            self.epochs_run += 1
            self.steps_run = 0
            self.save_checkpoint(epoch=epoch)

    def cleanup(self) -> None:
        self._metric_logger.close()
        self._output_lock.release()

    def interrupted_note(self) -> str:
        """Where Ctrl-C stopped training and the latest complete checkpoint, for one line."""
        return training.interrupted_note(
            self.epochs_run, self.steps_run, self._steps_per_epoch, self.global_step,
            self._checkpointer.latest_checkpoint,
        )


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    """Validate the config, then set up and run LoRA preference fine-tuning."""
    config.validate(cfg, LoRADPOParams)  # a ConfigError is printed one line per problem
    config.fill_defaults(cfg, LoRADPOParams)
    recipe = LoRADPORecipeSingleDevice(cfg)
    recipe.setup(cfg)
    try:
        recipe.train()
    except KeyboardInterrupt:
        raise KeyboardInterrupt(recipe.interrupted_note()) from None
    finally:
        recipe.cleanup()


if __name__ == "__main__":
    sys.exit(recipe_main())
