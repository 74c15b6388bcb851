"""LoRA fine-tuning of a decoder on one device, with QLoRA and DoRA as model options.

Only the low-rank adapters train; the base weights stay frozen. Checkpoints hold the
merged model (an ordinary model for other tools, in the input checkpoint's dtype), the
adapter alone (``adapter_{epoch}.pt``, used to resume) and, at the end, the adapter in PEFT
format. A ``qlora_*`` builder (or ``quantize_base: True``) keeps the frozen weights in NF4,
quantized as they load; ``use_dora: True`` adds DoRA's magnitude vectors.

Features (the whole budget; anything else belongs in another recipe):
    - epochs, max_steps_per_epoch, batch size, gradient accumulation
    - optimizer and lr scheduler as config components, gradient clipping
    - seed, device, dtype (fp32 / bf16), activation checkpointing, torch.compile
    - chunked cross-entropy (fp32 logits one chunk at a time), or the output projection
      fused with it (``LinearCrossEntropyLoss``, the shipped default: no full logits,
      no projection of positions without a target)
    - padding-free batches: unpacked samples go end to end in one row, attention runs per
      sample (``padding_free_collate``); packed datasets keep their rows
    - metric logger component, a tqdm bar (loss, lr, tokens/s), peak memory
    - optional validation dataset, its loss logged every ``validate_every_n_steps``
    - checkpoints at each epoch end and every ``save_every_n_steps``; exact resume
    - an optional greedy sample from ``sample_prompt`` before and after training

    tune run lora_finetune_single_device --config stories260K/lora_single_device
    tune run lora_finetune_single_device --config llama3_2/1B_qlora_single_device
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

from torchtune import UserError, UserValueError, config, datasets, modules, training, utils
from torchtune.config import Component
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, ResumableSampler, padding_free_collate
from torchtune.generation import generate
from torchtune.modules.moe import training_aux_loss
from torchtune.modules.peft import (
    get_adapter_params,
    get_merged_lora_ckpt,
    initialize_dora_magnitudes,
    set_trainable_params,
    validate_missing_and_unexpected_for_lora,
)
from torchtune.modules.peft.peft_utils import get_lora_adapter_config
from torchtune.training.checkpointing import check_resume_matches, input_files_in_config

log = utils.get_logger("INFO")


@dataclass
class LoRAFinetuneParams:
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
    save_adapter_weights_only: bool = False
    low_cpu_ram: bool = False
    validation_dataset: Optional[Component] = None
    validate_every_n_steps: Optional[int] = None
    sample_prompt: Optional[str] = None
    sample_max_new_tokens: int = 64
    # A mixture of experts: weight of the router z-loss added to the load-balancing loss.
    router_z_loss_coef: float = 0.0



class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or inf; training stops and the last checkpoint stays."""


class LoRAFinetuneRecipeSingleDevice:
    """LoRA fine-tune on a single device. See the module docstring for the features.

    Args:
        cfg (DictConfig): the merged config, already validated against LoRAFinetuneParams.
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
        self._save_adapter_weights_only = cfg.save_adapter_weights_only
        self._batch_size = cfg.batch_size
        self._lora_rank = cfg.model.lora_rank
        self._lora_alpha = cfg.model.lora_alpha
        self._sample_prompt = cfg.sample_prompt
        self._sample_max_new_tokens = cfg.sample_max_new_tokens

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
            # NF4 base weights (QLoRA) are dequantized; everything is written in the dtype of
            # the input checkpoint, whatever the compute dtype.
            state["model"] = get_merged_lora_ckpt(
                model_state, rank=self._lora_rank, alpha=self._lora_alpha, dtype=self._save_dtype
            )
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
        # Read from the built LoRA layers, so it cannot disagree with the builder's defaults.
        self._adapter_config = get_lora_adapter_config(self._model)
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
        base_model_groups: Iterable[dict[str, torch.Tensor]],
        adapter_state_dict: Optional[dict[str, torch.Tensor]],
    ) -> torch.nn.Module:
        # Never model.to(dtype): it would dequantize NF4 weights. NF4 layers quantize the
        # full-precision base weights as they load, one module at a time. On CPU the large
        # temporaries of building and quantizing get pages of their own, returned at once,
        # rather than holes in the heap that would stay resident through training.
        # Checked on a meta-device copy first: a config that does not fit the checkpoint
        # fails before the model is built.
        base_model_groups = training.check_checkpoint_fits(
            lambda: config.instantiate(cfg_model), base_model_groups, self._checkpointer.model_layout
        )
        with training.activations_in_own_pages(self._device):
            with training.set_default_dtype(self._dtype), self._device:
                model = config.instantiate(cfg_model)
            base = training.load_state_dict_in_groups(model, base_model_groups)
        # The merged model is written in the input's dtype (the first floating tensor's).
        self._save_dtype = base.dtype or self._dtype
        # DoRA's magnitudes start as the row norms of the loaded base weights; a resumed
        # adapter then brings its own.
        initialize_dora_magnitudes(model)
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
            f"(rank {self._lora_rank}, alpha {self._lora_alpha})"
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
        return config.instantiate(cfg_lr_scheduler, self._optimizer, num_training_steps=num_training_steps)

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

    def log_sample(self, when: str) -> None:
        """Log a greedy continuation of ``sample_prompt`` (if set), to see what training did."""
        if not self._sample_prompt:
            return
        prompt = self._tokenizer.encode(self._sample_prompt, add_bos=True, add_eos=False)
        # Generation needs logits, which the model leaves to the loss while training.
        skip_output_layer, self._model.skip_output_layer = self._model.skip_output_layer, False
        try:
            tokens = generate(
                self._model,
                torch.tensor(prompt, device=self._device),
                max_new_tokens=self._sample_max_new_tokens,
                temperature=0.0,
                stop_tokens=[self._tokenizer.eos_id],
            )
        finally:
            self._model.skip_output_layer = skip_output_layer
        text = self._tokenizer.decode(tokens.flatten().tolist())
        log.info(f"Sample {when} training:\n{text}")

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
                    with self._activations_ctx:
                        loss_sum, num_tokens = self._forward_loss(batch)
                    loss_sum.backward()
                    window_loss += loss_sum.detach()
                    # Frees the step's graph now rather than when the next forward returns:
                    # its small blocks would sit among that forward's activations in the heap.
                    del loss_sum
                    window_tokens += num_tokens
                    window_input_tokens += self._num_input_tokens(batch)
                    if (idx + 1) % grad_accum != 0:
                        continue

                    # Normalise by the target tokens of the whole window, so that
                    # batch 4 x 1 and batch 2 x 2 give the same update.
                    training.scale_grads_(self._model, 1 / window_tokens.clamp(min=1))
                    loss = window_loss / window_tokens.clamp(min=1)
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(
                            f"loss is {loss.item()} at epoch {epoch + 1}, step {self.global_step + 1}; "
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
    """Validate the config, then set up and run LoRA fine-tuning."""
    config.validate(cfg, LoRAFinetuneParams)  # a ConfigError is printed one line per problem
    config.fill_defaults(cfg, LoRAFinetuneParams)
    recipe = LoRAFinetuneRecipeSingleDevice(cfg)
    recipe.setup(cfg)
    try:
        recipe.log_sample("before")
        recipe.train()
        recipe.log_sample("after")
    except KeyboardInterrupt:
        raise KeyboardInterrupt(recipe.interrupted_note()) from None
    finally:
        recipe.cleanup()


if __name__ == "__main__":
    sys.exit(recipe_main())
