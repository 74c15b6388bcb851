"""LoRA fine-tuning of a decoder across processes and machines, with FSDP2.

Only the low-rank adapters train; the base weights stay frozen (and sharded like the
adapters). Checkpoints hold the merged model (an ordinary model for other tools, in the input
checkpoint's dtype), the adapter alone (``adapter_{epoch}.pt``, used to resume) and, at the
end, the adapter in PEFT format. QLoRA (``qlora_*`` builders) shards the NF4 base weights;
DoRA (``use_dora: True``) trains its magnitudes like the other adapter parameters.

Started through torchrun by ``tune run`` with launcher arguments, one process per device:

    tune run --nproc_per_node 2 lora_finetune_distributed --config stories260K/lora_distributed
    tune run --nproc_per_node 8 lora_finetune_distributed --config llama3_3/70B_qlora
    tune run --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv-backend c10d \
        --rdzv-endpoint HOST:PORT lora_finetune_distributed --config llama2/70B_lora

Every decoder layer's weights, gradients and optimizer state are sharded across the ranks
(FSDP2 ``fully_shard``); the backend follows ``device``: gloo on CPU, NCCL on CUDA. Rank r
reads every world_size-th sample, so one optimizer step consumes world_size x batch_size x
gradient_accumulation_steps samples: the same samples, in the same order, as a single-device
run with batch_size x world_size. The loss is normalised by the target tokens of the whole
global window, so both runs make the same update.

Checkpoints are the single-device recipe's files. Every rank takes part in gathering the full
weights and optimizer state; rank 0 writes them (and the logs). ``batch_size`` in
``recipe_state.pt`` is the global one (world_size x batch_size), so either recipe resumes
the other's checkpoint. Resuming with another number of processes is exact as long as the
samples per optimizer step are unchanged; otherwise the data order cannot continue and the
recipe refuses to resume. Fresh adapters start from the values the single-device recipe
would draw on CPU with the same seed, whatever the number of processes: rank 0 builds the
model on CPU once to draw them (one CPU copy of the model, at start-up only).

QLoRA: NF4 weights cannot be broadcast, nor materialised from the meta device. Rank 0
broadcasts each full-precision base weight as a plain tensor; every rank quantizes it
(exactly as the single-device recipe does) and keeps its dim-0 shard, so a rank holds its
4-bit shards plus one full-precision tensor at a time. Each shard must hold a multiple of
16384 values (NF4 blocks). Saving dequantizes each shard before gathering it.

Features (the whole budget; anything else belongs in another recipe):
    - epochs, max_steps_per_epoch, batch size (per rank), gradient accumulation
    - optimizer and lr scheduler as config components, gradient clipping
    - seed, device, dtype (fp32 / bf16), activation checkpointing, torch.compile (per layer)
    - chunked cross-entropy (fp32 logits one chunk at a time), or the output projection
      fused with it (``LinearCrossEntropyLoss``, the shipped default: no full logits,
      no projection of positions without a target)
    - padding-free batches: unpacked samples go end to end in one row, attention runs per
      sample (``padding_free_collate``); packed datasets keep their rows
    - metric logger component, a tqdm bar (loss, lr, tokens/s), peak memory (rank 0)
    - optional validation dataset, its loss logged every ``validate_every_n_steps``
    - checkpoints at each epoch end and every ``save_every_n_steps``; exact resume
    - an optional greedy sample from ``sample_prompt`` before and after training
"""

import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Optional

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from torchtune import UserError, UserValueError, config, datasets, modules, training, utils
from torchtune.config import Component
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, ResumableSampler, padding_free_collate
from torchtune.generation import generate
from torchtune.modules.moe import training_aux_loss
from torchtune.modules.low_precision import is_nf4
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

# Recipe-state entries too large to broadcast as Python objects: they go into the shards.
_SHARDED_KEYS = ("model", "adapter", "optimizer")


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
    fsdp: Optional[dict] = None  # 0.6.1's {cpu_offload: bool}, same as fsdp_cpu_offload
    custom_sharded_layers: Optional[list[str]] = None
    fsdp_cpu_offload: bool = False
    validation_dataset: Optional[Component] = None
    validate_every_n_steps: Optional[int] = None
    sample_prompt: Optional[str] = None
    sample_max_new_tokens: int = 64
    # A mixture of experts: weight of the router z-loss added to the load-balancing loss.
    router_z_loss_coef: float = 0.0



class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or inf; training stops and the last checkpoint stays."""


class LoRAFinetuneRecipeDistributed:
    """LoRA fine-tune with FSDP2 across ranks. See the module docstring for the features.

    Args:
        cfg (DictConfig): the merged config, already validated against LoRAFinetuneParams.
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
        self._log_peak_memory_stats = cfg.log_peak_memory_stats
        self._save_every_n_steps = cfg.save_every_n_steps
        self._validate_every_n_steps = cfg.validate_every_n_steps
        self._resume_from_checkpoint = cfg.resume_from_checkpoint
        self._gradient_accumulation_steps = cfg.gradient_accumulation_steps
        self._clip_grad_norm = cfg.clip_grad_norm
        self._enable_activation_offloading = cfg.enable_activation_offloading
        self._custom_sharded_layers = cfg.custom_sharded_layers
        self._fsdp_cpu_offload = cfg.fsdp_cpu_offload or bool((cfg.fsdp or {}).get("cpu_offload", False))
        self._save_adapter_weights_only = cfg.save_adapter_weights_only
        self._batch_size = cfg.batch_size
        self._lora_rank = cfg.model.lora_rank
        self._lora_alpha = cfg.model.lora_alpha
        self._sample_prompt = cfg.sample_prompt
        self._sample_max_new_tokens = cfg.sample_max_new_tokens

        if cfg.validation_dataset is not None and not cfg.validate_every_n_steps:
            raise UserValueError("validate_every_n_steps: must be a positive int when validation_dataset is set")
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
            # The model streams in, a decoder layer at a time (loaded by _setup_model).
            checkpoint = self._checkpointer.load_checkpoint(stream_model=True)
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
            # Global: what a single-device run with the same data order uses.
            "batch_size": self._world_size * self._batch_size,
            "gradient_accumulation_steps": self._gradient_accumulation_steps,
            "world_size": self._world_size,
            "optimizer": optimizer_state,
            "lr_scheduler": self._lr_scheduler.state_dict() if self._lr_scheduler else None,
            "rng_state": rng_states[0],
            "rng_state_per_rank": rng_states,
        }
        if not self._save_adapter_weights_only:
            # The merged model is an ordinary model for other tools; training resumes
            # from the base weights plus the adapter.
            # Written in the dtype of the input checkpoint, whatever the compute dtype.
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
        if self._is_rank_zero:
            # Held until the process ends: a second run on this output_dir stops at once.
            self._output_lock = training.OutputDirLock(cfg.output_dir)
            self._metric_logger = config.instantiate(cfg.metric_logger)
            self._metric_logger.log_config(cfg)
        checkpoint = self.load_checkpoint(cfg.checkpointer)
        self._save_dtype = self._dtype  # rank 0: the input's, once loaded

        # The model is built as the checkpoint was saved (tying read from config.json);
        # rank 0 read it, every rank builds alike.
        layout = [self._checkpointer.model_layout if self._is_rank_zero else None]
        dist.broadcast_object_list(layout, src=0)
        training.tie_like_checkpoint(cfg.model, layout[0])
        self._model = self._setup_model(
            cfg.model,
            cfg.enable_activation_checkpointing,
            cfg.compile,
            base_model_groups=checkpoint.pop("model", ()),  # rank 0 only
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

    def _full_state_dict_on_rank_zero(
        self,
        cfg_model: DictConfig,
        base_model_groups: Iterable[dict[str, torch.Tensor]],
        adapter_state_dict: Optional[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """The initial weights, base and adapter: built on CPU as the single-device recipe
        builds them (NF4 weights quantized as each layer streams in), so that fresh adapters
        draw the same values from the same seed and every rank gets the same NF4 codes."""
        base_model_groups = training.check_checkpoint_fits(
            lambda: config.instantiate(cfg_model), base_model_groups, self._checkpointer.model_layout
        )
        with training.activations_in_own_pages(torch.device("cpu")):
            with training.set_default_dtype(self._dtype), torch.device("cpu"):
                model = config.instantiate(cfg_model)
            base = training.load_state_dict_in_groups(model, base_model_groups)
        base_missing, base_unexpected = base.missing_keys, base.unexpected_keys
        # The merged model is written in the input's dtype (the first floating tensor's).
        self._save_dtype = base.dtype or self._dtype
        initialize_dora_magnitudes(model)  # from the base weights; a resumed adapter brings its own
        lora_missing = lora_unexpected = None
        if adapter_state_dict is not None:
            lora_missing, lora_unexpected = model.load_state_dict(adapter_state_dict, strict=False)
        validate_missing_and_unexpected_for_lora(
            model,
            base_missing=base_missing,
            base_unexpected=base_unexpected,
            lora_missing=lora_missing,
            lora_unexpected=lora_unexpected,
        )
        return model.state_dict()

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
        full_state_dict = {}
        if self._is_rank_zero:
            full_state_dict = self._full_state_dict_on_rank_zero(
                cfg_model, base_model_groups, adapter_state_dict
            )
        # The sharded model is built on the meta device: rank 0 broadcasts the weights one
        # tensor at a time and each rank keeps its shard.
        with training.set_default_dtype(self._dtype), torch.device("meta"):
            model = config.instantiate(cfg_model)
        quantized = any(is_nf4(p) for p in model.parameters())
        if quantized:
            if self._world_size == 1:  # torchao's NF4 all-gather hooks expect 2+ ranks
                raise UserValueError(
                    "QLoRA in the distributed recipe needs 2 or more processes (torchao's NF4 "
                    "FSDP2 all-gather fails on 1); on one device use lora_finetune_single_device"
                )
            training.check_nf4_shardable(model, self._world_size)
            if self._fsdp_cpu_offload and self._device.type != "cpu":
                raise UserValueError(
                    "fsdp_cpu_offload: not supported with an NF4 (QLoRA) base; the 4-bit shards stay on the GPU"
                )
        adapter_params = get_adapter_params(model)
        set_trainable_params(model, adapter_params)
        log.info(
            f"LoRA: {sum(p.numel() for p in adapter_params.values()):,} trainable parameters "
            f"(rank {self._lora_rank}, alpha {self._lora_alpha})"
        )
        if enable_activation_checkpointing:
            modules.set_activation_checkpointing(model)
        if compile_model:
            for layer in model.layers:
                layer.compile()  # per layer, before sharding, so FSDP's hooks stay outside
        training.shard_model(
            model, self._device,
            custom_sharded_layers=self._custom_sharded_layers, cpu_offload=self._fsdp_cpu_offload,
        )
        if not quantized:
            # (to_empty cannot allocate NF4 tensors: a QLoRA model gets every parameter
            # replaced as it loads. Never model.to(dtype) either: it would dequantize them.)
            model.to_empty(device=self._device)
        for module in model.modules():
            if isinstance(module, modules.RotaryPositionalEmbeddings):
                module.to_empty(device=self._device, recurse=False)
                module.reset_parameters()  # non-persistent: not in any checkpoint
        training.load_full_model_state_dict(model, full_state_dict)
        log.info(
            f"Model: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{self._dtype} on {self._world_size} x {self._device.type}, sharded per decoder layer"
        )
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
        sampler = ResumableSampler(
            dataset,
            num_replicas=self._world_size,
            rank=self._rank,
            shuffle=shuffle,
            seed=self.seed,
            # Drop the tail rather than repeat samples: then each epoch has as many steps
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

    def _sum_over_ranks(self, *values: Any) -> list[float]:
        totals = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device)
        dist.all_reduce(totals)
        return totals.tolist()

    @torch.no_grad()
    def _validation_loss(self) -> float:
        self._model.eval()
        total, count = 0.0, 0
        for batch in self._val_dataloader:
            loss_sum, num_tokens = self._forward_loss(batch)
            total, count = total + loss_sum.item(), count + num_tokens.item()
        self._model.train()
        total, count = self._sum_over_ranks(total, count)
        return total / max(count, 1)

    def log_sample(self, when: str) -> None:
        """Log a greedy continuation of ``sample_prompt`` (if set), to see what training did.
        Every rank decodes: each forward gathers the sharded weights."""
        if not self._sample_prompt:
            return
        prompt = self._tokenizer.encode(self._sample_prompt, add_bos=True, add_eos=False)
        # No stop token: every rank must run the same number of forwards. Cut at EOS after.
        # Generation needs logits, which the model leaves to the loss while training.
        skip_output_layer, self._model.skip_output_layer = self._model.skip_output_layer, False
        try:
            tokens = generate(
                self._model,
                torch.tensor(prompt, device=self._device),
                max_new_tokens=self._sample_max_new_tokens,
                temperature=0.0,
            ).tolist()
        finally:
            self._model.skip_output_layer = skip_output_layer
        eos = self._tokenizer.eos_id
        if eos in tokens[len(prompt):]:
            tokens = tokens[: tokens.index(eos, len(prompt)) + 1]
        log.info(f"Sample {when} training:\n{self._tokenizer.decode(tokens)}")

    def train(self) -> None:
        """The training loop: forward, loss, backward; on an accumulation boundary sum the
        window's loss and tokens over ranks, scale, clip, step, zero, schedule, log and
        checkpoint."""
        self._model.train()
        grad_accum = self._gradient_accumulation_steps
        with self._profiler:
            for epoch in range(self.epochs_run, self.total_epochs):
                # A resumed run skips exactly the samples the interrupted run consumed.
                self._sampler.set_epoch(epoch, start_index=self.steps_run * grad_accum * self._batch_size)
                pbar = tqdm(
                    total=self._steps_per_epoch, initial=self.steps_run, desc=f"epoch {epoch + 1}",
                    disable=not self._is_rank_zero,
                )
                window_loss = torch.zeros((), device=self._device)
                window_tokens = torch.zeros((), dtype=torch.long, device=self._device)
                window_input_tokens = 0
                window_start = time.perf_counter()
                for idx, batch in enumerate(self._dataloader):
                    if self.steps_run == self._steps_per_epoch:
                        break
                    with self._activations_ctx:
                        loss_sum, num_tokens = self._forward_loss(batch)
                    loss_sum.backward()  # FSDP sums the gradients over ranks
                    window_loss += loss_sum.detach()
                    # Frees the step's graph now rather than when the next forward returns:
                    # its small blocks would sit among that forward's activations in the heap.
                    del loss_sum
                    window_tokens += num_tokens
                    window_input_tokens += self._num_input_tokens(batch)
                    if (idx + 1) % grad_accum != 0:
                        continue

                    # Normalise by the target tokens of the whole global window, so that
                    # 2 ranks x batch 2 and 1 rank x batch 4 give the same update.
                    loss_total, tokens_total, input_tokens_total = self._sum_over_ranks(
                        window_loss, window_tokens, window_input_tokens
                    )
                    training.scale_grads_(self._model, 1 / max(tokens_total, 1))
                    loss = loss_total / max(tokens_total, 1)
                    if not math.isfinite(loss):
                        raise NonFiniteLossError(
                            f"loss is {loss} at epoch {epoch + 1}, step {self.global_step + 1}; "
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
                    self._profiler.step()
                    self.steps_run += 1
                    self.global_step += 1

                    elapsed = time.perf_counter() - window_start
                    tokens_per_second = input_tokens_total / elapsed
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:.0f}")
                    if self._is_rank_zero and self.global_step % self._log_every_n_steps == 0:
                        metrics = {
                            "loss": loss,
                            "lr": lr,
                            "num_tokens": int(input_tokens_total),  # over all ranks
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
                        val_loss = self._validation_loss()  # every rank evaluates its shard
                        if self._is_rank_zero:
                            self._metric_logger.log_dict({"val_loss": val_loss}, step=self.global_step)
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
    """Validate the config, then set up and run distributed LoRA fine-tuning."""
    config.validate(cfg, LoRAFinetuneParams)  # a ConfigError is printed one line per problem
    config.fill_defaults(cfg, LoRAFinetuneParams)
    recipe = LoRAFinetuneRecipeDistributed(cfg)
    recipe.setup(cfg)
    try:
        recipe.log_sample("before")
        recipe.train()
        recipe.log_sample("after")
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
