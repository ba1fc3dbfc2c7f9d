"""The LoRA layer: h = W x + (alpha / r) * B A dropout(x), one (A, B) per adapted slice of W.

A wrapper holds the frozen base module (nn.Linear, out x in; or transformers' Conv1D, in x out)
and one low-rank pair per target it carries. A plain projection carries one target over its whole
output; GPT-2's fused `c_attn` may carry q, k and v, each over its own third of the output, so
adapting q and v there is the same function as adapting two separate projections.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

INITS = ("gaussian", "kaiming")


class LoRAWrapper(nn.Module):
    def __init__(self, base_layer: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.scaling: dict[str, float] = {}
        self.out_slices: dict[str, tuple[int, int]] = {}
        self.layer_index: int = -1
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def fan_in_fan_out(self) -> bool:
        """True when the base stores its weight as in x out (Conv1D)."""
        return isinstance(self.base_layer, Conv1D)

    @property
    def out_features(self) -> int:
        w = self.base_layer.weight
        return w.shape[1] if self.fan_in_fan_out else w.shape[0]

    def add_target(
        self,
        target: str,
        rank: int,
        alpha: float,
        out_slice: tuple[int, int],
        init: str,
        sigma: float,
        generator: torch.Generator | None,
    ) -> None:
        weight = self.base_layer.weight
        d_in = weight.shape[0] if self.fan_in_fan_out else weight.shape[1]
        d_out = out_slice[1] - out_slice[0]
        A = torch.empty(rank, d_in, dtype=torch.float32)
        if init == "gaussian":
            A.normal_(0.0, sigma, generator=generator)
        else:  # kaiming, as loralib: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in))
            bound = 1.0 / math.sqrt(d_in)
            A.uniform_(-bound, bound, generator=generator)
        self.lora_A[target] = nn.Parameter(A.to(device=weight.device, dtype=weight.dtype))
        self.lora_B[target] = nn.Parameter(
            torch.zeros(d_out, rank, device=weight.device, dtype=weight.dtype)
        )
        self.scaling[target] = alpha / rank
        self.out_slices[target] = out_slice

    def delta_weight(self, target: str) -> torch.Tensor:
        """(alpha/r) B A for one target, in W's own orientation (out x in)."""
        return self.scaling[target] * (self.lora_B[target] @ self.lora_A[target])

    def _add_to_weight(self, sign: float) -> None:
        weight = self.base_layer.weight
        with torch.no_grad():
            for target in self.lora_A:
                start, stop = self.out_slices[target]
                delta = sign * self.delta_weight(target).to(weight.dtype)
                if self.fan_in_fan_out:
                    weight[:, start:stop] += delta.T
                else:
                    weight[start:stop] += delta

    def merge_into_base(self) -> None:
        self._add_to_weight(+1.0)

    def unmerge_from_base(self) -> None:
        self._add_to_weight(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        x = self.dropout(x)
        if not out.is_contiguous():
            out = out.contiguous()
        flat = out.view(-1, out.shape[-1])
        for target, A in self.lora_A.items():
            low = nn.functional.linear(x.to(A.dtype), A)  # (..., r)
            start, stop = self.out_slices[target]
            # Add scaling * low @ B^T into this target's columns in one GEMM: no padding of a
            # fused q/k/v output, and safe in place (Linear/Conv1D backward never reads `out`).
            columns = flat if stop - start == flat.shape[-1] else flat[:, start:stop]
            columns.addmm_(low.reshape(-1, low.shape[-1]).to(out.dtype), self.lora_B[target].T.to(out.dtype),
                           alpha=self.scaling[target])
        return out

    def extra_repr(self) -> str:
        parts = [f"{t}: r={A.shape[0]}, scale={self.scaling[t]:g}, out={self.out_slices[t]}"
                 for t, A in self.lora_A.items()]
        return "; ".join(parts)
