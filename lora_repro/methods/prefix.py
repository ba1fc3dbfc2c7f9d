"""Prefix-embedding and prefix-layer tuning, as the paper defines them (Hu et al. 2021, Section 5.1).

    lora-repro params model=gpt2_medium method=prefix_layer method.prefix_length=14 method.infix_length=0

Both insert virtual tokens: `prefix_length` (l_p) before the input and `infix_length` (l_i) after
the prompt. For a causal LM the prompt ends at its first end-of-sequence token (the separator
between the source and the reference in the NLG data, the last token of a generation prompt);
for an encoder, at its last real token, and its prefix follows its first token ([CLS] or <s>, which
its classifier reads).

- `prefix_embed` (PreEmbed): the virtual tokens' input embeddings train, |Θ| = d_model x (l_p + l_i).
  They start as copies of the embeddings of random vocabulary tokens.
- `prefix_layer` (PreLayer): the virtual tokens' activations after every block are replaced by
  trainable ones, |Θ| = L x d_model x (l_p + l_i); their input embeddings are zero (not trained).
  (The last block's replaced activations reach nothing the caller sees: a causal LM's logits at
  the virtual tokens are dropped, an encoder's classifier reads its first token. They are counted,
  as the paper counts them, but get no gradient.)

This is not PEFT's prefix tuning (trainable keys and values per layer). `apply` returns a
`PrefixModel` around the model: its forward inserts the virtual tokens into input_ids (as a
placeholder token whose embedding a hook replaces), the attention mask, token_type_ids and
token-level labels (ignored there), and maps token-level logits back to the caller's positions
(for a causal LM, position t's logits are those that predict the caller's token t + 1); its
`generate` inserts them into the prompt and returns the prompt followed by the new tokens, so beam
search and the KV cache work unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from lora_repro.architectures import family_of, find_modules, layout_of
from lora_repro.methods import Method, common, register
from lora_repro.settings import NONNEGATIVE_INT, POSITIVE, setting

IGNORE_INDEX = -100


@dataclass
class PrefixEmbedConfig:
    """PreEmbed: trainable embeddings of l_p prefix and l_i infix tokens."""

    name: str = "prefix_embed"
    prefix_length: Optional[int] = setting(None, "l_p: virtual tokens before the input", NONNEGATIVE_INT)
    infix_length: Optional[int] = setting(None, "l_i: virtual tokens after the prompt (a causal LM's first "
                                          "end-of-sequence token; an encoder's last token)", NONNEGATIVE_INT)


@dataclass
class PrefixLayerConfig(PrefixEmbedConfig):
    """PreLayer: trainable activations of the l_p + l_i virtual tokens after every block."""

    name: str = "prefix_layer"
    init_std: float = setting(0.02, "std of the normal init of the trainable activations", POSITIVE)


def validate(cfg: PrefixEmbedConfig, where: str) -> None:
    common.check(cfg, where, required=("prefix_length", "infix_length"))
    if cfg.prefix_length + cfg.infix_length == 0:
        raise ValueError(f"{where}.prefix_length + {where}.infix_length = 0 is not valid: at least one "
                         f"virtual token (l_p + l_i >= 1)")


class PrefixModel(nn.Module):
    """A model with l_p prefix and l_i infix virtual tokens (see the module's docstring)."""

    def __init__(self, model: nn.Module, n_prefix: int, n_infix: int, values: torch.Tensor,
                 blocks: list[nn.Module] | None):
        super().__init__()
        self.model = model
        self.n_prefix, self.n_infix = n_prefix, n_infix
        self.virtual_tokens = nn.Parameter(values)  # (n, d) PreEmbed | (L, n, d) PreLayer
        self.per_layer = blocks is not None
        self.causal = family_of(model).causal_lm
        config = model.config
        eos = config.eos_token_id
        self.separators = [eos] if isinstance(eos, int) else list(eos or [])
        self.placeholder = next(i for i in (0, 1, 2) if i != config.pad_token_id)  # any real id but pad
        self._pending = self._active = None  # the virtual positions of the next / current forward
        model.get_input_embeddings().register_forward_hook(self._embedding_hook)
        for layer, block in enumerate(blocks or []):
            block.register_forward_hook(functools.partial(self._block_hook, layer))

    @property
    def config(self):
        return self.model.config

    # -- where the virtual tokens go -------------------------------------------------------------
    def _layout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """new_pos (B, T+1): where each caller position lands (column T: one past the end);
        virtual_pos (B, l_p + l_i): where each virtual token lands, prefix then infix."""
        batch, width = input_ids.shape
        real = attention_mask.bool()
        length = real.sum(1)
        first = torch.where(length > 0, real.int().argmax(1), 0)  # left padding: the first real token
        split = length  # the infix follows the prompt: the whole input by default ...
        if self.causal and self.separators:  # ... a causal LM's prompt ends at its first separator
            positions = torch.arange(width, device=input_ids.device).expand(batch, -1)
            is_sep = real & torch.isin(input_ids, torch.tensor(self.separators, device=input_ids.device))
            sep_at = torch.where(is_sep, positions, width).min(1).values
            split = torch.where(sep_at < width, sep_at + 1 - first, length)
        # an encoder keeps its first token ([CLS], <s>: what its classifier reads) in front
        start = first if self.causal else first + length.clamp(max=1)
        pos = torch.arange(width + 1, device=input_ids.device).expand(batch, -1)
        new_pos = pos + self.n_prefix * (pos >= start[:, None]) + self.n_infix * (pos >= (first + split)[:, None])
        virtual_pos = torch.cat([start[:, None] + torch.arange(self.n_prefix, device=input_ids.device),
                                 (first + self.n_prefix + split)[:, None]
                                 + torch.arange(self.n_infix, device=input_ids.device)], 1)
        return new_pos, virtual_pos

    @staticmethod
    def _spread(x: torch.Tensor, new_pos, virtual_pos, fill) -> torch.Tensor:
        out = x.new_full((x.shape[0], new_pos.shape[1] - 1 + virtual_pos.shape[1]), fill)
        return out.scatter(1, new_pos[:, :-1], x)

    def _insert(self, input_ids, attention_mask, token_type_ids=None, labels=None) -> tuple[dict, torch.Tensor]:
        if input_ids is None:
            raise ValueError("prefix methods need input_ids: the virtual tokens are inserted among them")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        new_pos, virtual_pos = self._layout(input_ids, attention_mask)
        inputs = {"input_ids": self._spread(input_ids, new_pos, virtual_pos, self.placeholder),
                  "attention_mask": self._spread(attention_mask, new_pos, virtual_pos, 1)}
        if token_type_ids is not None:  # virtual tokens are segment 0
            inputs["token_type_ids"] = self._spread(token_type_ids, new_pos, virtual_pos, 0)
        if labels is not None:  # token-level labels get none at the virtual tokens
            inputs["labels"] = (self._spread(labels, new_pos, virtual_pos, IGNORE_INDEX)
                                if labels.shape == input_ids.shape else labels)
        virtual = torch.zeros_like(inputs["input_ids"], dtype=torch.bool).scatter(1, virtual_pos, True)
        n = virtual_pos.shape[1]
        slot = torch.zeros_like(inputs["input_ids"]).scatter(
            1, virtual_pos, torch.arange(n, device=input_ids.device).expand_as(virtual_pos).contiguous())
        self._pending = (virtual, slot)
        return inputs, new_pos

    # -- hooks: the virtual tokens' embeddings and activations ------------------------------------
    def _embedding_hook(self, module, args, output):
        pending, self._pending = self._pending, None
        if pending is None:  # a forward without virtual tokens (generation after the prompt)
            self._active = None
            return output
        virtual, slot = pending
        if output.shape[0] != virtual.shape[0]:  # beam search repeats each row num_beams times
            repeat = output.shape[0] // virtual.shape[0]
            virtual, slot = virtual.repeat_interleave(repeat, 0), slot.repeat_interleave(repeat, 0)
        self._active = (virtual, slot)
        values = torch.zeros_like(output) if self.per_layer else self.virtual_tokens[slot].to(output.dtype)
        return torch.where(virtual[..., None], values, output)

    def _block_hook(self, layer: int, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if self._active is None or hidden.shape[:2] != self._active[0].shape:
            return output
        virtual, slot = self._active
        hidden = torch.where(virtual[..., None], self.virtual_tokens[layer][slot].to(hidden.dtype), hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    # -- the model's two entry points --------------------------------------------------------------
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        for key in ("position_ids", "inputs_embeds", "past_key_values"):
            if kwargs.get(key) is not None:
                raise ValueError(f"prefix methods insert virtual tokens themselves: {key} is not supported")
        inputs, new_pos = self._insert(input_ids, attention_mask, token_type_ids, labels)
        try:
            out = self.model(**inputs, **kwargs)
        finally:
            self._pending = self._active = None
        logits = getattr(out, "logits", None)
        if logits is not None and logits.dim() == 3 and logits.shape[1] == inputs["input_ids"].shape[1]:
            # the caller's positions; a causal LM's logits at t predict the caller's token t + 1,
            # so they are taken just before where that token landed (after any infix)
            source = new_pos[:, 1:] - 1 if self.causal else new_pos[:, :-1]
            out.logits = logits.gather(1, source[..., None].expand(-1, -1, logits.shape[-1]))
        return out

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        """The inner model's generate on the prompt with its virtual tokens; returns the caller's
        prompt followed by the generated tokens (as `generate` does without virtual tokens)."""
        inputs, _ = self._insert(input_ids, attention_mask)
        try:
            out = self.model.generate(**inputs, **kwargs)
        finally:
            self._pending = self._active = None
        return torch.cat([input_ids, out[:, inputs["input_ids"].shape[1]:]], 1)


def apply(model: nn.Module, cfg: PrefixEmbedConfig, head_modules, seed: int = 0) -> PrefixModel:
    validate(cfg, "method")
    layout = layout_of(model, cfg.name)
    if isinstance(model, PrefixModel) or getattr(model, "_lora_repro_own", None) is not None:
        raise ValueError(f"method={cfg.name!r} must be applied to a fresh model")
    n = cfg.prefix_length + cfg.infix_length
    embeddings = model.get_input_embeddings().weight
    d_model = embeddings.shape[1]
    if cfg.name == "prefix_layer":
        blocks = [module for _, _, module in find_modules(model, layout.block)]
        values = common.seeded_normal((len(blocks), n, d_model), cfg.init_std, common.stream(seed, 0), embeddings)
    else:
        blocks = None
        values = torch.empty(n, d_model, device=embeddings.device, dtype=embeddings.dtype)
        if embeddings.device.type != "meta":  # copies of random vocabulary tokens' embeddings
            rows = torch.randint(embeddings.shape[0], (n,), generator=torch.Generator().manual_seed(seed))
            values = embeddings.detach()[rows.to(embeddings.device)].clone()
    wrapped = PrefixModel(model, cfg.prefix_length, cfg.infix_length, values, blocks)
    return common.train_only(wrapped, ["virtual_tokens"], head_modules, cfg.name, cfg)


register(Method(
    name="prefix_embed", config=PrefixEmbedConfig, apply=apply, save=common.save, load=common.load,
    count=common.count, validate=validate, families=common.families_with_layout(),
    summary="PreEmbed: trainable embeddings of l_p prefix and l_i infix virtual tokens",
))
register(Method(
    name="prefix_layer", config=PrefixLayerConfig, apply=apply, save=common.save, load=common.load,
    count=common.count, validate=validate, families=common.families_with_layout(),
    summary="PreLayer: trainable activations of the virtual tokens after every block",
))
