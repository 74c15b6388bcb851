"""Generate text from a model checkpoint, to talk to a base or fine-tuned model.

Features (the whole budget; anything else belongs in another recipe):
    - any checkpoint the configured checkpointer reads: a base model, a full fine-tune, or
      the merged model a LoRA run writes (Meta, HF or torchtune format)
    - the prompt as plain text (``prompt: "Once upon a time"``), or
    - through an instruct template: ``instruct_template: torchtune.data.AlpacaInstructTemplate``
      with the template's columns, ``prompt: {instruction: ..., input: ...}``, or
    - through a chat format: ``chat_format: torchtune.data.Llama2ChatFormat`` with
      ``prompt: "a user message"`` or ``prompt: {system: ..., user: ...}``; or, with a
      tokenizer that has its own chat format (Llama 3's), ``prompt: {system: ..., user: ...}``
    - sampling with ``temperature`` (0 = greedy) and ``top_k``, at most ``max_new_tokens``,
      stopping at EOS, with the decoder's KV cache; seed, device, dtype
    - prints the prompt and its continuation, then logs tokens per second

    tune run generate --config stories260K/generation prompt="Once upon a time"
"""

import sys
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf

from torchtune import UserValueError, config, generation, training, utils
from torchtune.config import Component
from torchtune.data import Message
from torchtune.training.checkpointing import validate_state_dict

log = utils.get_logger("INFO")


@dataclass
class GenerateParams:
    """Every key a config for this recipe has; `tune validate` checks configs against it."""

    model: Component
    tokenizer: Component
    checkpointer: Component
    device: str
    dtype: str
    seed: Optional[int]
    prompt: Union[str, dict]
    max_new_tokens: int
    temperature: float
    top_k: Optional[int]
    instruct_template: Optional[str] = None
    chat_format: Optional[str] = None
    # Keys of torchtune 0.6.1's generation configs.
    output_dir: Optional[str] = None
    enable_kv_cache: bool = True
    quantizer: Optional[Component] = None
    log_level: str = "INFO"



def _check_0_6_keys(cfg: DictConfig) -> None:
    """Honour, or refuse in one line, the keys torchtune 0.6.1's generation configs carry."""
    if cfg.get("quantizer") is not None:
        raise UserValueError("quantizer: quantized generation is not supported; set quantizer: null")
    if not cfg.get("enable_kv_cache", True):
        log.info("enable_kv_cache: False: decoding here always uses the KV cache (same tokens, "
                 "less compute)")
    log.setLevel(cfg.get("log_level", "INFO"))


class GenerateRecipe:
    """Load a model, encode one prompt and sample a continuation. See the module docstring.

    Args:
        cfg (DictConfig): the merged config, already validated against GenerateParams.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self._device = utils.get_device(cfg.device)
        self._dtype = training.get_dtype(cfg.dtype, device=self._device)
        self._max_new_tokens = cfg.max_new_tokens
        self._temperature = cfg.temperature
        self._top_k = cfg.top_k
        if cfg.temperature < 0:
            raise UserValueError(f"temperature must be >= 0 (0 is greedy), got {cfg.temperature}")
        if cfg.top_k is not None and cfg.top_k < 1:
            raise UserValueError(f"top_k must be >= 1 or null, got {cfg.top_k}")
        if cfg.max_new_tokens < 1:
            raise UserValueError(f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
        self.seed = training.set_seed(cfg.seed)
        _check_0_6_keys(cfg)

    def setup(self, cfg: DictConfig) -> None:
        """Build every component, in dependency order; every input problem surfaces here.
        The prompt comes first: a mistake in it should fail before a large model loads."""
        self._tokenizer = config.instantiate(cfg.tokenizer)
        self._prompt_tokens = self._setup_prompt(
            OmegaConf.to_container(cfg.prompt) if isinstance(cfg.prompt, DictConfig) else cfg.prompt,
            cfg.instruct_template,
            cfg.chat_format,
        )
        checkpointer = config.instantiate(cfg.checkpointer)
        # Built as the checkpoint was saved (tying from config.json), checked before loading.
        training.tie_like_checkpoint(cfg.model, checkpointer.model_layout)
        self._model_layout = checkpointer.model_layout
        checkpoint = checkpointer.load_checkpoint()
        self._model = self._setup_model(cfg.model, checkpoint["model"])
        if len(self._prompt_tokens) + self._max_new_tokens > self._model.max_seq_len:
            raise UserValueError(
                f"prompt ({len(self._prompt_tokens)} tokens) + max_new_tokens ({self._max_new_tokens}) "
                f"exceeds the model's max_seq_len ({self._model.max_seq_len})"
            )

    def _setup_model(
        self, cfg_model: DictConfig, model_state_dict: dict[str, torch.Tensor]
    ) -> torch.nn.Module:
        with training.set_default_dtype(self._dtype), self._device:
            model = config.instantiate(cfg_model)
        validate_state_dict(model, model_state_dict)
        training.check_attention_layout(model, self._model_layout)
        model.load_state_dict(model_state_dict)
        model.eval()
        # Set up once here, so that generate() reuses the cache instead of building its own.
        model.setup_caches(batch_size=1, dtype=self._dtype)
        log.info(
            f"Model: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{self._dtype} on {self._device}"
        )
        return model

    def _setup_prompt(
        self,
        prompt: Union[str, Mapping[str, str]],
        instruct_template: Optional[str],
        chat_format: Optional[str],
    ) -> list[int]:
        """The prompt's token ids (BOS first, no EOS); each way it can be wrong is one line."""
        if instruct_template and chat_format:
            raise UserValueError("set at most one of instruct_template and chat_format, not both")
        if instruct_template:
            template = config.resolve_component(instruct_template, key="instruct_template")
            if not isinstance(prompt, Mapping):
                raise UserValueError(
                    f"prompt: with instruct_template, give the template's columns as a "
                    f"mapping, e.g. {{instruction: ..., input: ...}}; got {prompt!r}"
                )
            known = set(template.required_columns) | set(template.optional_columns)
            unknown = sorted(set(prompt) - known)
            if unknown:
                raise UserValueError(f"prompt: {unknown} are not columns of {instruct_template} "
                                 f"(it takes {sorted(known)})")
            for column in template.required_columns:
                if not str(prompt.get(column) or "").strip():
                    raise UserValueError(f"prompt is empty: prompt.{column} is required by {instruct_template}")
            text = template.format(prompt)
        elif chat_format:
            fmt = config.resolve_component(chat_format, key="chat_format")
            turns = {"user": prompt} if isinstance(prompt, str) else dict(prompt)
            unknown = sorted(set(turns) - {"system", "user"})
            if unknown:
                raise UserValueError(f"prompt: {unknown} are not allowed with chat_format; "
                                 "give a string or {system: ..., user: ...}")
            if not str(turns.get("user") or "").strip():
                raise UserValueError("prompt is empty: chat_format needs a user message (prompt.user)")
            messages = [Message(role, turns[role]) for role in ("system", "user") if turns.get(role)]
            # One user turn formats to exactly one segment: the text the answer follows.
            text = fmt.format(messages)[0].content
        elif isinstance(prompt, Mapping) and hasattr(self._tokenizer, "tokenize_messages"):
            # The tokenizer's own chat format (Llama 3's): the conversation so far and an
            # open assistant header, the text the answer follows.
            return self._chat_prompt_tokens(prompt)
        elif isinstance(prompt, Mapping) and hasattr(self._tokenizer, "prompt_template"):
            # A tokenizer built the 0.6.1 way (llama2_tokenizer's prompt_template).
            return self._templated_prompt_tokens(prompt, self._tokenizer.prompt_template)
        else:
            if not isinstance(prompt, str):
                raise UserValueError("prompt: a mapping needs instruct_template or chat_format "
                                 "(or a tokenizer with a chat format); otherwise give plain text")
            if not prompt.strip():
                raise UserValueError("prompt is empty: give some text to continue")
            text = prompt
        return self._tokenizer.encode(text, add_bos=True, add_eos=False)

    @staticmethod
    def _chat_messages(prompt: Mapping[str, str]) -> list[Message]:
        unknown = sorted(set(prompt) - {"system", "user"})
        if unknown:
            raise UserValueError(f"prompt: {unknown} are not allowed in a chat prompt; "
                                 "give {system: ..., user: ...}")
        if not str(prompt.get("user") or "").strip():
            raise UserValueError("prompt is empty: a chat prompt needs a user message (prompt.user)")
        return [Message(role, prompt[role]) for role in ("system", "user") if prompt.get(role)]

    def _templated_prompt_tokens(self, prompt: Mapping[str, str], template) -> list[int]:
        """BOS, then each message as the template formats it (as 0.6.1 encoded a prompt
        with a ``prompt_template``); with no template, the messages' plain text."""
        messages = self._chat_messages(prompt)
        if template is not None:
            messages = template(messages, inference=True)
        tokens = [self._tokenizer.bos_id]
        for message in messages:
            tokens += self._tokenizer.encode(message.content, add_bos=False, add_eos=False)
        return tokens

    def _chat_prompt_tokens(self, prompt: Mapping[str, str]) -> list[int]:
        messages = self._chat_messages(prompt)
        messages.append(Message("assistant", ""))
        tokens, _ = self._tokenizer.tokenize_messages(messages, add_end_tokens=False)
        return tokens

    def generate(self) -> list[int]:
        """Sample a continuation of the prompt; print the text and log tokens per second.

        Returns:
            list[int]: the prompt's ids followed by the generated ids (ending with EOS if the
            model produced one within ``max_new_tokens``).
        """
        prompt = torch.tensor(self._prompt_tokens, device=self._device)
        start = time.perf_counter()
        tokens = generation.generate(
            self._model,
            prompt,
            max_new_tokens=self._max_new_tokens,
            temperature=self._temperature,
            top_k=self._top_k,
            # Llama 3 ends a turn with <|eot_id|>, not EOS: stop at any of the tokenizer's.
            stop_tokens=list(getattr(self._tokenizer, "stop_tokens", [self._tokenizer.eos_id])),
            pad_id=self._tokenizer.pad_id,
        ).tolist()
        elapsed = time.perf_counter() - start
        num_new = len(tokens) - len(self._prompt_tokens)
        print(self._tokenizer.decode(tokens), flush=True)
        log.info(
            f"{num_new} tokens in {elapsed:.2f} s: {num_new / elapsed:.1f} tokens/s "
            f"(seed {self.seed})"
        )
        return tokens


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    """Validate the config, then load the model and generate."""
    config.validate(cfg, GenerateParams)  # a ConfigError is printed one line per problem
    config.fill_defaults(cfg, GenerateParams)
    recipe = GenerateRecipe(cfg)
    recipe.setup(cfg)
    recipe.generate()


if __name__ == "__main__":
    sys.exit(recipe_main())
