"""Full preference fine-tuning (DPO, IPO, SimPO, RSO) of a decoder across processes and
machines, with FSDP2.

Each sample is a pair: a prompt with a chosen and a rejected answer. Every weight of the
policy trains; the reference model is a frozen copy loaded through its own checkpointer
(``ref_checkpointer``, the starting weights, also when resuming) and sharded like the
policy. The loss is a config component (``torchtune.rlhf.loss.DPOLoss`` ...) over the summed
log-probabilities of the answer tokens. Checkpoints are ``full_finetune_distributed``'s.

Started through torchrun by ``tune run`` with launcher arguments, one process per device:

    tune run --nproc_per_node 2 full_dpo_distributed --config stories260K/full_dpo_distributed

Distribution as in ``full_finetune_distributed``: every decoder layer of both models is
sharded (FSDP2); rank r reads every world_size-th pair, so one step consumes world_size x
batch_size x gradient_accumulation_steps pairs; the loss is the mean over the global
window's pairs. Rank 0 writes checkpoints and logs; ``batch_size`` in ``recipe_state.pt``
is the global one. Cached reference log-probabilities are computed by every rank for every
pair, once at start-up; the reference model is then freed.

Features (the whole budget; anything else belongs in another recipe):
    - epochs, max_steps_per_epoch, batch size (pairs per rank), gradient accumulation
    - optimizer and lr scheduler as config components, gradient clipping
    - seed, device, dtype (fp32 / bf16), activation checkpointing, torch.compile (per layer,
      policy only)
    - preference loss as a config component; reference-free losses skip the reference
    - reference log-probabilities computed once and cached per sample
      (``cache_reference_log_probs``), or per step
    - padding-free batches: the 2b sequences of b pairs end to end in one row
    - metric logger component with TRL's metrics (rewards/chosen, rewards/rejected,
      rewards/accuracies, rewards/margins, logps/*, logits/*) over all ranks, a tqdm bar,
      peak memory (rank 0)
    - checkpoints at each epoch end and every ``save_every_n_steps``; exact resume
"""

import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from torchtune.modules.moe import training_aux_loss
from torchtune import UserError, UserValueError, config, datasets, modules, rlhf, training, utils
from torchtune.config import Component
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, ResumableSampler, padding_free_collate_dpo

from torchtune.training.checkpointing import check_resume_matches, input_files_in_config, validate_state_dict

log = utils.get_logger("INFO")

# Recipe-state entries too large to broadcast as Python objects: they go into the shards.
_SHARDED_KEYS = ("model", "optimizer")

# Per-step sums kept over an accumulation window, in this order (see _forward_pairs).
_STATS = (
    "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
    "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected",
    "tokens/chosen", "tokens/rejected", "pairs", "num_tokens",
)


@dataclass
class FullDPOParams:
    """Every key a config for this recipe has; `tune validate` checks configs against it."""

    output_dir: str
    model: Component
    tokenizer: Component
    checkpointer: Component
    ref_checkpointer: Component
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


class FullDPORecipeDistributed:
    """Full preference fine-tune with FSDP2 across ranks. See the module docstring for the features.

    Args:
        cfg (DictConfig): the merged config, already validated against FullDPOParams.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self._device = training.init_distributed(cfg.device)
        self._world_size, self._rank = training.get_world_size_and_rank()
        self._is_rank_zero = self._rank == 0
        if not self._is_rank_zero:
            log.setLevel("WARNING")  # info messages once, from rank 0 (all torchtune.* loggers)
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
        self._cache_reference_log_probs = cfg.cache_reference_log_probs
        self._enable_activation_offloading = cfg.enable_activation_offloading

        self._seed_from_config = cfg.seed
        # Every rank must shuffle with the same seed: rank 0's (drawn if the config has none).
        seed = [training.set_seed(cfg.seed)]
        dist.broadcast_object_list(seed, src=0)
        self.seed = training.set_seed(seed[0])
        self.total_epochs = cfg.epochs
        self.max_steps_per_epoch = cfg.max_steps_per_epoch
        self.epochs_run = 0  # epochs fully done
        self.steps_run = 0  # optimizer steps done in the current epoch
        self.global_step = 0  # optimizer steps done in total

    # ------------------------------------------------------------------ checkpoints

    def load_checkpoint(self, cfg_checkpointer: DictConfig) -> dict[str, Any]:
        """Rank 0 reads the model (and, when resuming, the recipe state) through the
        checkpointer; the other ranks receive the recipe state by broadcast, and their
        shards of the weights and optimizer state when those are loaded."""
        checkpoint: dict[str, Any] = {}
        if self._is_rank_zero:
            self._checkpointer = config.instantiate(
                cfg_checkpointer, resume_from_checkpoint=self._resume_from_checkpoint
            )
            self._checkpointer.protect_inputs(self._config_inputs)
            checkpoint = self._checkpointer.load_checkpoint()
        if self._resume_from_checkpoint:
            recipe_state = [{k: v for k, v in checkpoint.items() if k not in _SHARDED_KEYS}]
            dist.broadcast_object_list(recipe_state, src=0)
            checkpoint.update(recipe_state[0])
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
            },
        )
        # The saved position counts optimizer steps: it maps to the same samples only if a
        # step still consumes as many samples (any split into ranks, batch and accumulation).
        saved_batch, saved_accum = checkpoint["batch_size"], checkpoint["gradient_accumulation_steps"]
        per_step = self._world_size * self._batch_size * self._gradient_accumulation_steps
        if saved_batch * saved_accum != per_step:
            raise UserValueError(
                f"Cannot resume: world_size {self._world_size} x batch_size {self._batch_size} x "
                f"gradient_accumulation_steps {self._gradient_accumulation_steps} = {per_step} samples "
                f"per step, but recipe_state.pt was saved with {saved_batch} x {saved_accum} = "
                f"{saved_batch * saved_accum}; the data order continues only with the same samples per step"
            )
        self.epochs_run = checkpoint["epochs_run"]
        self.steps_run = checkpoint["steps_run"]
        self.global_step = checkpoint["global_step"]

    def save_checkpoint(self, epoch: int, step: Optional[int] = None) -> None:
        """Gather the model and the state needed to continue exactly where we are (every
        rank takes part), and write them on rank 0.

        Args:
            epoch (int): the epoch being (or just) trained.
            step (Optional[int]): global step for a mid-epoch checkpoint; None at an epoch end.
        """
        model_state = training.gather_full_model_state_dict(self._model)
        optimizer_state = training.gather_full_optimizer_state_dict(self._model, self._optimizer)
        rng_states = [None] * self._world_size
        dist.all_gather_object(rng_states, training.get_rng_state())
        if not self._is_rank_zero:
            return
        state = {
            "model": model_state,
            "seed": self.seed,
            "epochs_run": self.epochs_run,
            "steps_run": self.steps_run,
            "global_step": self.global_step,
            "total_epochs": self.total_epochs,
            "max_steps_per_epoch": self.max_steps_per_epoch,
            # Global: what a single-device run with the same data order uses.
            "batch_size": self._world_size * self._batch_size,
            "gradient_accumulation_steps": self._gradient_accumulation_steps,
            "world_size": self._world_size,
            "optimizer": optimizer_state,
            "lr_scheduler": self._lr_scheduler.state_dict() if self._lr_scheduler else None,
            "rng_state": rng_states[0],
            "rng_state_per_rank": rng_states,
        }
        intermediate = step is not None or epoch + 1 < self.total_epochs
        self._checkpointer.save_checkpoint(
            state, epoch=epoch, intermediate_checkpoint=intermediate, step=step
        )

    # ------------------------------------------------------------------ setup

    def setup(self, cfg: DictConfig) -> None:
        """Build every component, in dependency order."""
        if self._is_rank_zero:
            # Held until the process ends: a second run on this output_dir stops at once.
            self._output_lock = training.OutputDirLock(cfg.output_dir)
            self._metric_logger = config.instantiate(cfg.metric_logger)
            self._metric_logger.log_config(cfg)
        checkpoint = self.load_checkpoint(cfg.checkpointer)

        # The model is built as the checkpoint was saved (tying read from config.json);
        # rank 0 read it, every rank builds alike.
        layout = [self._checkpointer.model_layout if self._is_rank_zero else None]
        dist.broadcast_object_list(layout, src=0)
        training.tie_like_checkpoint(cfg.model, layout[0])
        self._model = self._setup_model(
            cfg.model,
            cfg.enable_activation_checkpointing,
            cfg.compile,
            checkpoint.get("model", {}),  # rank 0 only
        )
        # Saved activations go to CPU memory during forward (a no-op on a CPU device).
        self._activations_ctx = training.get_act_offloading_ctx_manager(
            self._model, self._enable_activation_offloading
        )
        self._tokenizer = config.instantiate(cfg.tokenizer)
        self._optimizer = self._setup_optimizer(cfg.optimizer)
        self._loss_fn = self._setup_loss(cfg.loss)
        self._ref_model = None
        if self._loss_fn.uses_reference:
            self._ref_model = self._setup_reference_model(cfg.model, cfg.ref_checkpointer)
        self._sampler, self._dataloader = self._setup_data(cfg.dataset, cfg.shuffle)

        self._steps_per_epoch = len(self._dataloader) // self._gradient_accumulation_steps
        if self.max_steps_per_epoch is not None:
            self._steps_per_epoch = min(self._steps_per_epoch, self.max_steps_per_epoch)
        if self._steps_per_epoch == 0:
            raise UserValueError(
                f"dataset: {len(self._dataloader)} batches of batch_size={self._batch_size} per rank "
                f"give no optimizer step with gradient_accumulation_steps={self._gradient_accumulation_steps}"
            )
        self._lr_scheduler = self._setup_lr_scheduler(
            cfg.lr_scheduler,
            num_training_steps=self.total_epochs * self._steps_per_epoch,
        )
        if self._resume_from_checkpoint:
            # After the scheduler is built: building it steps the fresh optimizer's lr,
            # which the saved optimizer state then overwrites with the lr to continue with.
            training.load_full_optimizer_state_dict(self._model, self._optimizer, checkpoint.get("optimizer"))
            if self._lr_scheduler is not None:
                self._lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
            # Last, so that building components above cannot shift the restored RNG. Each
            # rank continues its own stream when the number of ranks is unchanged.
            per_rank = checkpoint.get("rng_state_per_rank")
            same_ranks = per_rank is not None and len(per_rank) == self._world_size
            training.set_rng_state(per_rank[self._rank] if same_ranks else checkpoint["rng_state"])

    def _setup_model(
        self,
        cfg_model: DictConfig,
        enable_activation_checkpointing: bool,
        compile_model: bool,
        model_state_dict: dict[str, torch.Tensor],
    ) -> torch.nn.Module:
        # Built on the meta device, so that no rank ever holds the whole model: rank 0
        # broadcasts the checkpoint one tensor at a time and each rank keeps its shard.
        with training.set_default_dtype(self._dtype), torch.device("meta"):
            model = config.instantiate(cfg_model)
        if self._is_rank_zero:
            validate_state_dict(model, model_state_dict)
            training.check_attention_layout(model, self._checkpointer.model_layout)
        if enable_activation_checkpointing:
            modules.set_activation_checkpointing(model)
        if compile_model:
            for layer in model.layers:
                layer.compile()  # per layer, before sharding, so FSDP's hooks stay outside
        training.shard_model(model, self._device)
        model.to_empty(device=self._device)
        for module in model.modules():
            if isinstance(module, modules.RotaryPositionalEmbeddings):
                module.reset_parameters()  # non-persistent: not in any checkpoint
        training.load_full_model_state_dict(model, model_state_dict)
        log.info(
            f"Model: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{self._dtype} on {self._world_size} x {self._device.type}, sharded per decoder layer"
        )
        return model

    def _setup_reference_model(self, cfg_model: DictConfig, cfg_ref_checkpointer: DictConfig) -> torch.nn.Module:
        """The frozen reference: the starting weights from ``ref_checkpointer`` (rank 0 reads
        them), sharded per decoder layer like the policy, in eval mode, without gradients."""
        state_dict: dict[str, torch.Tensor] = {}
        if self._is_rank_zero:
            ref_checkpointer = config.instantiate(cfg_ref_checkpointer, resume_from_checkpoint=False)
            # The policy's saves must never replace the model the reference reads.
            self._checkpointer.protect_inputs(ref_checkpointer.input_files)
            state_dict = ref_checkpointer.load_checkpoint()["model"]
        with training.set_default_dtype(self._dtype), torch.device("meta"):
            model = config.instantiate(cfg_model)
        if self._is_rank_zero:
            validate_state_dict(model, state_dict, source="reference checkpoint")
            training.check_attention_layout(model, ref_checkpointer.model_layout)
        model.requires_grad_(False)
        training.shard_model(model, self._device)
        model.to_empty(device=self._device)
        for module in model.modules():
            if isinstance(module, modules.RotaryPositionalEmbeddings):
                module.reset_parameters()  # non-persistent: not in any checkpoint
        training.load_full_model_state_dict(model, state_dict)
        log.info("Reference model: a frozen copy of the starting weights, sharded like the policy")
        return model.eval()

    def _setup_optimizer(self, cfg_optimizer: DictConfig) -> torch.optim.Optimizer:
        optimizer = config.instantiate(cfg_optimizer, self._model.parameters())
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
            self._ref_model = None  # no longer needed: free its shards
        sampler = ResumableSampler(
            dataset,
            num_replicas=self._world_size,
            rank=self._rank,
            shuffle=shuffle,
            seed=self.seed,
            # Drop the tail rather than repeat pairs: then each epoch has as many steps
            # as a single-device run with batch_size x world_size.
            drop_last=True,
        )
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
        at every start, resumed or not: the reference (the base weights) never changes.
        Every rank computes every pair, in the same order (each forward gathers shards)."""
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
        with torch.no_grad():
            logits = self._ref_model(
                batch["tokens"], input_pos=batch.get("input_pos"), seq_lens=batch.get("seq_lens")
            )
            logps, _, _ = rlhf.get_batch_log_probs(logits, batch["labels"], batch.get("seq_lens"))
        return logps.chunk(2)

    def _sum_over_ranks(self, values: torch.Tensor) -> list[float]:
        values = values.clone()
        dist.all_reduce(values)
        return values.tolist()

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
        accumulation boundary sum the window's statistics over ranks, scale, clip, step,
        zero, schedule, log and checkpoint."""
        self._model.train()
        grad_accum = self._gradient_accumulation_steps
        for epoch in range(self.epochs_run, self.total_epochs):
            # A resumed run skips exactly the samples the interrupted run consumed.
            self._sampler.set_epoch(epoch, start_index=self.steps_run * grad_accum * self._batch_size)
            pbar = tqdm(
                total=self._steps_per_epoch, initial=self.steps_run, desc=f"epoch {epoch + 1}",
                disable=not self._is_rank_zero,
            )
            window = torch.zeros(len(_STATS), dtype=torch.float64, device=self._device)
            window_start = time.perf_counter()
            for idx, batch in enumerate(self._dataloader):
                if self.steps_run == self._steps_per_epoch:
                    break
                with self._activations_ctx:
                    loss_sum, stats = self._forward_pairs(batch)
                loss_sum.backward()  # FSDP sums the gradients over ranks
                del loss_sum  # free the graph before the next forward
                window += stats
                if (idx + 1) % grad_accum != 0:
                    continue

                # The loss is the mean over the global window's pairs (as TRL's mean over a
                # batch), so 2 ranks x batch 2 and 1 rank x batch 4 give the same update.
                sums = self._sum_over_ranks(window)
                metrics = preference_metrics(sums)
                training.scale_grads_(self._model, 1 / max(sums[_STATS.index("pairs")], 1))
                if not math.isfinite(metrics["loss"]):
                    raise NonFiniteLossError(
                        f"loss is {metrics['loss']} at epoch {epoch + 1}, step {self.global_step + 1}; "
                        "stopping (the last checkpoint written is intact)"
                    )
                grad_norm = None
                if self._clip_grad_norm is not None:
                    grad_norm = torch.nn.utils.clip_grad_norm_(
                        [p for p in self._model.parameters() if p.requires_grad],
                        max_norm=self._clip_grad_norm,
                    ).full_tensor()  # the norm over every rank's shards
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
                if self._is_rank_zero and self.global_step % self._log_every_n_steps == 0:
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
        if self._is_rank_zero:
            self._metric_logger.close()
            self._output_lock.release()
        dist.destroy_process_group()

    def interrupted_note(self) -> str:
        """Where Ctrl-C stopped training and the latest complete checkpoint, for one line."""
        if not self._is_rank_zero:
            return ""  # rank 0 speaks for the job
        return training.interrupted_note(
            self.epochs_run, self.steps_run, self._steps_per_epoch, self.global_step,
            self._checkpointer.latest_checkpoint,
        )


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    """Validate the config, then set up and run distributed full preference fine-tuning."""
    config.validate(cfg, FullDPOParams)  # a ConfigError is printed one line per problem
    config.fill_defaults(cfg, FullDPOParams)
    recipe = FullDPORecipeDistributed(cfg)
    recipe.setup(cfg)
    try:
        recipe.train()
        # Every rank's collectives are done before any rank tears its process group down:
        # a rank was seen to abort in gloo's teardown (SIGABRT, "terminate called without
        # an active exception") after a run had finished; aligning the ranks first narrows it.
        dist.barrier()
    except KeyboardInterrupt:
        raise KeyboardInterrupt(recipe.interrupted_note()) from None
    finally:
        recipe.cleanup()


if __name__ == "__main__":
    sys.exit(recipe_main())
