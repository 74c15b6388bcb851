"""Full fine-tuning of a decoder on one device.

Features (the whole budget; anything else belongs in another recipe):
    - epochs, max_steps_per_epoch, batch size, gradient accumulation
    - optimizer and lr scheduler as config components, gradient clipping
    - optimizer step in backward (``optimizer_in_bwd``): each parameter is updated as soon
      as its gradient exists and the gradient is dropped, so no full set of gradients is
      ever held (no clipping or accumulation then)
    - on CPU (glibc), the forward's activations get pages of their own, so freed
      activations do not stay resident as heap holes
    - seed, device, dtype (fp32 / bf16), activation checkpointing, torch.compile
    - chunked cross-entropy (fp32 logits one chunk at a time), or the output projection
      fused with it (``LinearCrossEntropyLoss``, the shipped default: no full logits,
      no projection of positions without a target)
    - padding-free batches: unpacked samples go end to end in one row, attention runs per
      sample (``padding_free_collate``); packed datasets keep their rows
    - metric logger component, a tqdm bar (loss, lr, tokens/s), peak memory
    - optional validation dataset, its loss logged every ``validate_every_n_steps``
    - checkpoints at each epoch end and every ``save_every_n_steps``; exact resume

    tune run full_finetune_single_device --config stories260K/full_single_device
"""

import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional, Union

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from torchtune.modules.moe import training_aux_loss
from torchtune import UserError, UserValueError, config, datasets, modules, training, utils
from torchtune.config import Component
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, ResumableSampler, padding_free_collate
from torchtune.training.checkpointing import check_resume_matches, input_files_in_config, validate_state_dict

log = utils.get_logger("INFO")


@dataclass
class FullFinetuneParams:
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
    profiler: Optional[Component] = None
    enable_activation_offloading: bool = False
    validation_dataset: Optional[Component] = None
    validate_every_n_steps: Optional[int] = None
    optimizer_in_bwd: bool = False

    @staticmethod
    def combination_problems(cfg: DictConfig) -> list[str]:
        """Settings that are each valid but cannot work together."""
        problems = []
        if cfg.get("optimizer_in_bwd", False):
            if cfg.get("clip_grad_norm") is not None:
                problems.append(
                    "optimizer_in_bwd: True steps each parameter before the global gradient "
                    f"norm exists; set clip_grad_norm: null (it is {cfg.clip_grad_norm}) or "
                    "optimizer_in_bwd: False"
                )
            if cfg.get("gradient_accumulation_steps", 1) != 1:
                problems.append(
                    "optimizer_in_bwd: True steps during every backward, so it cannot "
                    "accumulate gradients; set gradient_accumulation_steps: 1 (it is "
                    f"{cfg.gradient_accumulation_steps}) or optimizer_in_bwd: False"
                )
        return problems
    # A mixture of experts: weight of the router z-loss added to the load-balancing loss.
    router_z_loss_coef: float = 0.0



class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or inf; training stops and the last checkpoint stays."""


class FullFinetuneRecipeSingleDevice:
    """Full fine-tune on a single device. See the module docstring for the features.

    Args:
        cfg (DictConfig): the merged config, already validated against FullFinetuneParams.
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
        self._log_peak_memory_stats = cfg.log_peak_memory_stats
        self._save_every_n_steps = cfg.save_every_n_steps
        self._validate_every_n_steps = cfg.validate_every_n_steps
        self._resume_from_checkpoint = cfg.resume_from_checkpoint
        self._gradient_accumulation_steps = cfg.gradient_accumulation_steps
        self._clip_grad_norm = cfg.clip_grad_norm
        self._enable_activation_offloading = cfg.enable_activation_offloading
        self._batch_size = cfg.batch_size
        self._optimizer_in_bwd = cfg.get("optimizer_in_bwd", False)

        if cfg.validation_dataset is not None and not cfg.validate_every_n_steps:
            raise UserValueError("validate_every_n_steps: must be a positive int when validation_dataset is set")
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
        checkpoint = self._checkpointer.load_checkpoint()
        if self._resume_from_checkpoint:
            self._update_recipe_state(checkpoint)
        return checkpoint

    def _update_recipe_state(self, checkpoint: dict[str, Any]) -> None:
        if self._seed_from_config is None:
            self.seed = checkpoint["seed"]  # a random seed was drawn: keep the run's own
        check_resume_matches(
            {"optimizer_in_bwd": False, **checkpoint},  # states written before the option
            {
                "seed": self.seed,
                "total_epochs": self.total_epochs,
                "max_steps_per_epoch": self.max_steps_per_epoch,
                "batch_size": self._batch_size,
                "gradient_accumulation_steps": self._gradient_accumulation_steps,
                "optimizer_in_bwd": self._optimizer_in_bwd,
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
        state = {
            "model": self._model.state_dict(),
            "seed": self.seed,
            "epochs_run": self.epochs_run,
            "steps_run": self.steps_run,
            "global_step": self.global_step,
            "total_epochs": self.total_epochs,
            "max_steps_per_epoch": self.max_steps_per_epoch,
            "batch_size": self._batch_size,
            "gradient_accumulation_steps": self._gradient_accumulation_steps,
            "optimizer_in_bwd": self._optimizer_in_bwd,
            "optimizer": self._optimizer.state_dict(),
            "lr_scheduler": self._lr_scheduler.state_dict() if self._lr_scheduler else None,
            "rng_state": training.get_rng_state(),
        }
        intermediate = step is not None or epoch + 1 < self.total_epochs
        self._checkpointer.save_checkpoint(
            state, epoch=epoch, intermediate_checkpoint=intermediate, step=step
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
            checkpoint["model"],
        )
        self._tokenizer = config.instantiate(cfg.tokenizer)
        # Saved activations go to CPU memory during forward (a no-op on a CPU device).
        self._activations_ctx = training.get_act_offloading_ctx_manager(
            self._model, self._enable_activation_offloading
        )
        self._profiler = self._setup_profiler(cfg.profiler)
        self._optimizer = self._setup_optimizer(cfg.optimizer)
        self._loss_fn = self._setup_loss(cfg.loss)
        self._sampler, self._dataloader = self._setup_data(cfg.dataset, cfg.shuffle)
        self._val_dataloader = None
        if cfg.validation_dataset is not None:
            _, self._val_dataloader = self._setup_data(cfg.validation_dataset, shuffle=False, key="validation_dataset")

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

    def _setup_profiler(self, cfg_profiler: Optional[DictConfig]):
        """``torch.profiler`` from the ``profiler`` node (0.6.1's block), or a no-op."""
        if cfg_profiler is None:
            return training.DummyProfiler()
        profiler, _ = config.instantiate(cfg_profiler)
        return profiler

    def _setup_model(
        self,
        cfg_model: DictConfig,
        enable_activation_checkpointing: bool,
        compile_model: bool,
        model_state_dict: dict[str, torch.Tensor],
    ) -> torch.nn.Module:
        # Checked on a meta-device copy first: a config that does not fit the checkpoint
        # fails before the model is built.
        training.check_checkpoint_fits(
            lambda: config.instantiate(cfg_model), [model_state_dict], self._checkpointer.model_layout
        )
        with training.set_default_dtype(self._dtype), self._device:
            model = config.instantiate(cfg_model)
        validate_state_dict(model, model_state_dict)
        model.load_state_dict(model_state_dict)
        if enable_activation_checkpointing:
            modules.set_activation_checkpointing(model)
        log.info(
            f"Model: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{self._dtype} on {self._device}"
        )
        if compile_model:
            model.compile()
        return model

    def _setup_optimizer(
        self, cfg_optimizer: DictConfig
    ) -> Union[torch.optim.Optimizer, training.OptimizerInBackward]:
        if self._optimizer_in_bwd:
            return training.OptimizerInBackward(
                self._model.named_parameters(),
                lambda params: config.instantiate(cfg_optimizer, params),
            )
        return config.instantiate(cfg_optimizer, self._model.parameters())

    def _setup_loss(self, cfg_loss: DictConfig) -> torch.nn.Module:
        loss_fn = config.instantiate(cfg_loss)
        if hasattr(loss_fn, "set_model_output"):
            # The loss applies the output projection itself, a chunk of target positions at
            # a time; the model's forward then returns its final hidden states.
            loss_fn.set_model_output(self._model)
        return loss_fn

    def _setup_lr_scheduler(
        self, cfg_lr_scheduler: Optional[DictConfig], num_training_steps: int
    ) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
        if cfg_lr_scheduler is None:
            return None
        # With the optimizer in backward the scheduler drives the lead optimizer, whose
        # hyperparameters every other parameter's optimizer copies before it steps.
        optimizer = self._optimizer.lead if self._optimizer_in_bwd else self._optimizer
        return config.instantiate(cfg_lr_scheduler, optimizer, num_training_steps=num_training_steps)

    def _setup_data(
        self, cfg_dataset: DictConfig, shuffle: bool, key: str = "dataset"
    ) -> tuple[ResumableSampler, DataLoader]:
        dataset = config.instantiate(cfg_dataset, self._tokenizer)
        # Every sample must fit the model's positions: refuse now, not at the batch that
        # holds the first long one.
        datasets.check_sample_lengths(dataset, self._model.max_seq_len, key)
        sampler = ResumableSampler(dataset, shuffle=shuffle, seed=self.seed)
        dataloader = DataLoader(
            dataset,
            batch_size=self._batch_size,
            sampler=sampler,
            drop_last=True,  # equal batches, so accumulation windows are comparable
            # Its own generator: starting an epoch must not draw from the global RNG,
            # whose state a mid-epoch resume restores.
            generator=torch.Generator().manual_seed(self.seed),
            # Unpacked samples go end to end in one row: no compute on padding, same loss.
            collate_fn=partial(
                padding_free_collate,
                padding_idx=self._tokenizer.pad_id,
                ignore_idx=CROSS_ENTROPY_IGNORE_IDX,
            ),
        )
        return sampler, dataloader

    # ------------------------------------------------------------------ training

    def _forward_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and target-token count of one batch."""
        batch = {k: v.to(self._device) for k, v in batch.items()}
        logits = self._model(
            batch["tokens"],
            mask=batch.get("mask"),
            input_pos=batch.get("input_pos"),
            seq_lens=batch.get("seq_lens"),
        )
        loss_sum, num_tokens = self._loss_fn(logits, batch["labels"])
        aux = training_aux_loss(self._model, self._router_z_loss_coef)  # a mixture of experts' load balancing
        self._aux_loss = None if aux is None else aux.detach()
        if aux is not None:  # times the tokens: the step divides the sum by them
            loss_sum = loss_sum + aux * num_tokens
        return loss_sum, num_tokens

    def _num_input_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens that are not padding (prompt and response): what tokens/s counts."""
        return int((batch["tokens"] != self._tokenizer.pad_id).sum())

    @torch.no_grad()
    def _validation_loss(self) -> float:
        self._model.eval()
        total, count = 0.0, 0
        for batch in self._val_dataloader:
            loss_sum, num_tokens = self._forward_loss(batch)
            total, count = total + loss_sum.item(), count + num_tokens.item()
        self._model.train()
        return total / max(count, 1)

    def _check_finite(self, loss: torch.Tensor, epoch: int) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss.item()} at epoch {epoch + 1}, step {self.global_step + 1}; "
                "stopping (the last checkpoint written is intact)"
            )

    def train(self) -> None:
        """The training loop: forward, loss, backward; on an accumulation boundary scale,
        clip, step, zero, schedule, log and checkpoint."""
        self._model.train()
        grad_accum = self._gradient_accumulation_steps
        with self._profiler:
            for epoch in range(self.epochs_run, self.total_epochs):
                # A resumed run skips exactly the samples the interrupted run consumed.
                self._sampler.set_epoch(epoch, start_index=self.steps_run * grad_accum * self._batch_size)
                pbar = tqdm(total=self._steps_per_epoch, initial=self.steps_run, desc=f"epoch {epoch + 1}")
                window_loss = torch.zeros((), device=self._device)
                window_tokens = torch.zeros((), dtype=torch.long, device=self._device)
                window_input_tokens = 0
                window_start = time.perf_counter()
                for idx, batch in enumerate(self._dataloader):
                    if self.steps_run == self._steps_per_epoch:
                        break
                    with training.activations_in_own_pages(self._device), self._activations_ctx:
                        loss_sum, num_tokens = self._forward_loss(batch)
                    window_loss += loss_sum.detach()
                    window_tokens += num_tokens
                    window_input_tokens += self._num_input_tokens(batch)
                    if self._optimizer_in_bwd:
                        # Parameters are stepped inside backward (from the second step on), so
                        # the loss is normalised and checked before backward reaches the weights.
                        loss = window_loss / window_tokens.clamp(min=1)
                        self._check_finite(loss, epoch)
                        (loss_sum / num_tokens.clamp(min=1)).backward()
                        # Frees the step's graph now rather than when the next forward returns:
                        # its small blocks would sit among that forward's activations in the
                        # heap and keep the holes between them from merging (~0.1 GiB of peak).
                        del loss_sum
                    else:
                        loss_sum.backward()
                        del loss_sum  # the graph's blocks, now (see above)
                        if (idx + 1) % grad_accum != 0:
                            continue
                        # Normalise by the target tokens of the whole window, so that
                        # batch 4 x 1 and batch 2 x 2 give the same update.
                        training.scale_grads_(self._model, 1 / window_tokens.clamp(min=1))
                        loss = window_loss / window_tokens.clamp(min=1)
                        self._check_finite(loss, epoch)
                    grad_norm = None
                    if self._clip_grad_norm is not None:
                        grad_norm = torch.nn.utils.clip_grad_norm_(
                            self._model.parameters(), max_norm=self._clip_grad_norm
                        )
                    lr = self._optimizer.param_groups[0]["lr"]  # the lr this step uses
                    self._optimizer.step()
                    self._optimizer.zero_grad(set_to_none=True)
                    if self._lr_scheduler is not None:
                        self._lr_scheduler.step()
                    self._profiler.step()
                    self.steps_run += 1
                    self.global_step += 1

                    elapsed = time.perf_counter() - window_start
                    tokens_per_second = window_input_tokens / elapsed
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:.0f}")
                    if self.global_step % self._log_every_n_steps == 0:
                        metrics = {
                            "loss": loss.item(),
                            "lr": lr,
                            "num_tokens": window_input_tokens,
                            "tokens_per_second": tokens_per_second,
                        }
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
                    if (
                        self._val_dataloader is not None
                        and self.global_step % self._validate_every_n_steps == 0
                    ):
                        self._metric_logger.log_dict(
                            {"val_loss": self._validation_loss()}, step=self.global_step
                        )
                    if self._save_every_n_steps and self.global_step % self._save_every_n_steps == 0:
                        self.save_checkpoint(epoch=epoch, step=self.global_step)

                    window_loss.zero_()
                    window_tokens.zero_()
                    window_input_tokens = 0
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
    """Validate the config, then set up and run full fine-tuning."""
    config.validate(cfg, FullFinetuneParams)  # a ConfigError is printed one line per problem
    config.fill_defaults(cfg, FullFinetuneParams)
    recipe = FullFinetuneRecipeSingleDevice(cfg)
    recipe.setup(cfg)
    try:
        recipe.train()
    except KeyboardInterrupt:
        raise KeyboardInterrupt(recipe.interrupted_note()) from None
    finally:
        recipe.cleanup()


if __name__ == "__main__":
    sys.exit(recipe_main())
