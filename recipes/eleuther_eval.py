"""Score a model checkpoint on EleutherAI's lm-evaluation-harness tasks.

Features (the whole budget; anything else belongs in another recipe):
    - any checkpoint the configured checkpointer reads (base, fine-tuned, merged LoRA)
    - the harness's tasks by name (``tasks: [hellaswag, ...]``, loaded from the Hub as
      usual), plus task yamls from a local folder (``include_path``)
    - the three request types, batched (``batch_size``) and truncated to
      ``max_seq_length``: loglikelihood (multiple choice), rolling loglikelihood
      (perplexity) and generate_until (greedy or sampled, with the decoder's KV cache)
    - ``limit`` documents per task; device, dtype
    - prints the harness's results table and writes the results as JSON to
      ``{output_dir}/eval_results.json``

Scores follow lm-eval's own transformers model (``HFLM``) for a Llama 2 tokenizer:
contexts and prompts start with BOS; a rolling loglikelihood scores the text given BOS
(as ``HFLM(add_bos_token=False)`` does; by default ``HFLM`` also scores a second BOS). Seeds
are the harness's defaults, so few-shot examples match published runs.

    tune run eleuther_eval --config stories260K/eleuther_evaluation
"""

import difflib
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from torchtune import UserError, UserValueError, config, generation, training, utils
from torchtune.config import Component
from torchtune.training.checkpointing import validate_state_dict

try:
    from lm_eval.api.model import TemplateLM
except ImportError:  # `tune validate` needs only the params below; running needs lm-eval
    TemplateLM = object

log = utils.get_logger("INFO")


@dataclass
class EleutherEvalParams:
    """Every key a config for this recipe has; `tune validate` checks configs against it."""

    output_dir: str
    model: Component
    tokenizer: Component
    checkpointer: Component
    device: str
    dtype: str
    tasks: list[str]
    limit: Optional[float]
    batch_size: int
    max_seq_length: int
    include_path: Optional[str] = None
    # Keys of torchtune 0.6.1's evaluation configs.
    seed: Optional[int] = 1234
    enable_kv_cache: bool = True
    quantizer: Optional[Component] = None
    resume_from_checkpoint: bool = False
    log_level: str = "INFO"



class _LLMEvalWrapper(TemplateLM):
    """Our decoder and tokenizer as an lm-evaluation-harness model (``TemplateLM`` splits
    each (context, continuation) pair into ids; we score ids and generate).

    Args:
        model (torch.nn.Module): a ``TransformerDecoder`` in eval mode.
        tokenizer: a torchtune tokenizer (``encode``, ``decode``, ``bos_id``, ``eos_id``, ``pad_id``).
        device (torch.device): where the model is.
        max_seq_length (int): longest input; longer ones keep their last tokens.
        batch_size (int): sequences per forward pass.
    """

    max_gen_toks = 256  # tokens a generate_until request may add unless its task says; as HFLM

    def __init__(self, model, tokenizer, *, device, max_seq_length, batch_size) -> None:
        super().__init__()
        self._model, self._tokenizer, self._device = model, tokenizer, device
        self._max_seq_length, self._batch_size = max_seq_length, batch_size

    @property
    def eot_token_id(self) -> int:
        return self._tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self._tokenizer.bos_id

    @property
    def max_length(self) -> int:
        return self._max_seq_length

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> list[int]:
        # None (the harness's default) means "as the model expects": Llama 2 wants BOS first.
        return self._tokenizer.encode(string, add_bos=add_special_tokens is not False, add_eos=False)

    def tok_decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens)

    @torch.no_grad()
    def _loglikelihood_tokens(
        self, requests, disable_tqdm: bool = False, **kwargs
    ) -> list[tuple[float, bool]]:
        """For each (strings, context ids, continuation ids): the summed log-probability of
        the continuation and whether greedy decoding would have produced it."""
        results = [None] * len(requests)
        # Longest first, so that the rows of a batch need little padding.
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            # Predict every continuation token; keep the last max_length inputs (as HFLM).
            inputs = [(requests[i][1] + requests[i][2])[-(self.max_length + 1) : -1] for i in rows]
            tokens = torch.full((len(rows), max(map(len, inputs))), self._tokenizer.pad_id, dtype=torch.long)
            for r, ids in enumerate(inputs):
                tokens[r, : len(ids)] = torch.tensor(ids)  # right padding: causal rows never see it
            logits = self._model(tokens.to(self._device))  # [b, s, v]
            for r, (i, ids) in enumerate(zip(rows, inputs)):
                target = torch.tensor(requests[i][2], device=self._device)  # [n]
                # fp32 for the n scored positions only, not the whole [b, s, v] batch.
                scored = F.log_softmax(logits[r, len(ids) - len(target) : len(ids)].float(), dim=-1)  # [n, v]
                results[i] = (
                    scored.gather(-1, target[:, None]).sum().item(),
                    bool((scored.argmax(-1) == target).all()),
                )
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-probability of each whole text given BOS, scored in disjoint windows of
        ``max_length`` tokens, each conditioned on as much preceding text as fits."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows, owners = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            ids = self.tok_encode(text, add_special_tokens=False)
            for context, target in map(
                make_disjoint_window,
                get_rolling_token_windows(ids, self.prefix_token_id, self.max_length, context_len=1),
            ):
                windows.append((None, context, target))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows)):
            totals[i] += logprob
        return totals

    def _generation_settings(self, gen_kwargs: dict) -> tuple:
        """(stop strings, max new tokens, temperature, top_k) from a task's generation kwargs,
        read as lm-eval's ``normalize_gen_kwargs`` does: greedy unless sampling is asked for."""
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None) or []
        until = (until,) if isinstance(until, str) else tuple(until)
        max_gen_toks, max_new_tokens = kwargs.pop("max_gen_toks", None), kwargs.pop("max_new_tokens", None)
        max_new = int(max_gen_toks or max_new_tokens or self.max_gen_toks)
        temperature = float(kwargs.pop("temperature", 0.0))
        do_sample = kwargs.pop("do_sample", None)
        do_sample = temperature > 0 if do_sample is None else do_sample
        temperature = (temperature or 1.0) if do_sample else 0.0
        top_k = kwargs.pop("top_k", None)
        if kwargs:
            log.warning(f"generate_until: ignoring unsupported generation kwargs {sorted(kwargs)}")
        if max_new >= self.max_length:
            raise UserValueError(f"max_gen_toks {max_new} leaves no room for a prompt in "
                             f"max_seq_length {self.max_length}")
        return until, max_new, temperature, top_k

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continue each context until EOS, ``max_gen_toks`` or a stop string (cut off)."""
        results = [None] * len(requests)
        # generate() takes no padding: a batch shares one prompt length and one set of settings.
        groups = defaultdict(list)
        for i, (context, gen_kwargs) in enumerate(req.args for req in requests):
            settings = self._generation_settings(gen_kwargs)
            ids = self.tok_encode(context)[-(self.max_length - settings[1]) :]
            groups[(len(ids), settings)].append((i, ids))
        for (length, (until, max_new, temperature, top_k)), members in groups.items():
            for start in range(0, len(members), self._batch_size):
                batch = members[start : start + self._batch_size]
                out = generation.generate(
                    self._model,
                    torch.tensor([ids for _, ids in batch], device=self._device),
                    max_new_tokens=max_new,
                    temperature=temperature,
                    top_k=top_k,
                    stop_tokens=[self.eot_token_id],
                    pad_id=self._tokenizer.pad_id,
                )  # [b, length + n]
                for (i, _), row in zip(batch, out[:, length:].tolist()):
                    if self.eot_token_id in row:
                        row = row[: row.index(self.eot_token_id)]
                    text = self.tok_decode(row)
                    for stop in until:
                        text = text.split(stop)[0] if stop else text
                    results[i] = text
        return results


class EleutherEvalRecipe:
    """Load a model and score it on lm-eval tasks. See the module docstring.

    Args:
        cfg (DictConfig): the merged config, already validated against EleutherEvalParams.
    """

    def __init__(self, cfg: DictConfig) -> None:
        if TemplateLM is object:
            raise UserError("eleuther_eval needs the lm-eval package: pip install 'lm-eval>=0.4.13,<0.5'")
        self._device = utils.get_device(cfg.device)
        self._dtype = training.get_dtype(cfg.dtype, device=self._device)
        self._output_dir = cfg.output_dir
        self._limit = cfg.limit
        if cfg.batch_size < 1:
            raise UserValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
        if cfg.get("quantizer") is not None:
            raise UserValueError("quantizer: quantized evaluation is not supported; set quantizer: null")
        if cfg.get("resume_from_checkpoint", False):
            raise UserValueError("resume_from_checkpoint: evaluation reads a finished model; set it to False")
        if not cfg.get("enable_kv_cache", True):
            log.info("enable_kv_cache: False: generate_until tasks here always decode with the "
                     "KV cache (same tokens, less compute)")
        log.setLevel(cfg.get("log_level", "INFO"))
        # Python, NumPy and torch seeded alike; lm-eval seeds its few-shot sampling itself.
        training.set_seed(cfg.get("seed", 1234))

    def setup(self, cfg: DictConfig) -> None:
        """Build every component, in dependency order; every input problem surfaces here.
        Tasks come first: a misspelt name should fail before a large model loads."""
        self._task_manager, self._tasks = self._setup_tasks(list(cfg.tasks), cfg.include_path)
        self._tokenizer = config.instantiate(cfg.tokenizer)
        checkpointer = config.instantiate(cfg.checkpointer)
        # Built as the checkpoint was saved (tying from config.json), checked before loading.
        training.tie_like_checkpoint(cfg.model, checkpointer.model_layout)
        self._model_layout = checkpointer.model_layout
        checkpoint = checkpointer.load_checkpoint()
        self._model = self._setup_model(cfg.model, checkpoint["model"])
        if not 1 < cfg.max_seq_length <= self._model.max_seq_len:
            raise UserValueError(f"max_seq_length must be in [2, {self._model.max_seq_len}] (the "
                             f"model's max_seq_len), got {cfg.max_seq_length}")
        self._lm = _LLMEvalWrapper(self._model, self._tokenizer, device=self._device,
                                   max_seq_length=cfg.max_seq_length, batch_size=cfg.batch_size)

    def _setup_tasks(self, tasks: list[str], include_path: Optional[str]) -> tuple:
        """The harness's task index (built-in tasks plus ``include_path``) and the task names,
        each checked against it."""
        from lm_eval.tasks import TaskManager

        if not tasks:
            raise UserValueError("tasks: list at least one lm-eval task name")
        if include_path is not None and not os.path.isdir(include_path):
            raise UserValueError(f"include_path: {include_path} is not a folder")
        manager = TaskManager(include_path=include_path)
        for name in tasks:
            if name not in manager.all_tasks and not os.path.isfile(name):
                close = difflib.get_close_matches(name, manager.all_tasks, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UserValueError(f"tasks: unknown lm-eval task {name!r}{hint} (`lm-eval ls tasks` "
                                 "lists them; include_path adds a folder of task yamls)")
        return manager, tasks

    def _setup_model(
        self, cfg_model: DictConfig, model_state_dict: dict[str, torch.Tensor]
    ) -> torch.nn.Module:
        with training.set_default_dtype(self._dtype), self._device:
            model = config.instantiate(cfg_model)
        validate_state_dict(model, model_state_dict)
        training.check_attention_layout(model, self._model_layout)
        model.load_state_dict(model_state_dict)
        model.eval()
        log.info(f"Model: {sum(p.numel() for p in model.parameters()):,} parameters, "
                 f"{self._dtype} on {self._device}")
        return model

    def evaluate(self) -> dict:
        """Run the tasks; print the results table and write it as JSON.

        Returns:
            dict: the harness's output (``"results"``, ``"versions"``, ``"configs"`` ...).
        """
        from lm_eval.evaluator import simple_evaluate
        from lm_eval.utils import handle_non_serializable, make_table

        output = simple_evaluate(model=self._lm, tasks=self._tasks, task_manager=self._task_manager,
                                 limit=self._limit, log_samples=False)
        print(make_table(output), flush=True)
        if output.get("groups"):
            print(make_table(output, "groups"), flush=True)
        training.check_output_folder(self._output_dir)
        os.makedirs(self._output_dir, exist_ok=True)
        path = os.path.join(self._output_dir, "eval_results.json")
        text = json.dumps(output, indent=2, default=handle_non_serializable)
        training.write_text_atomically(path, text + "\n")  # a symlink there is replaced, not followed
        log.info(f"Results written to {path}")
        return output


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    """Validate the config, then load the model and evaluate it."""
    config.validate(cfg, EleutherEvalParams)  # a ConfigError is printed one line per problem
    config.fill_defaults(cfg, EleutherEvalParams)
    recipe = EleutherEvalRecipe(cfg)
    recipe.setup(cfg)
    recipe.evaluate()


if __name__ == "__main__":
    sys.exit(recipe_main())
