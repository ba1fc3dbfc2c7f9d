"""The LoRA layer: h = W x + (alpha / r) * B A dropout(x), one (A, B) per adapted slice of W.

rsLoRA (Kalajdzievski 2023) scales by alpha / sqrt(r) instead. Each A draws its initial values from
its own random stream, seeded from (run seed, layer, target, rank): a rank-8 A is never the first
rows of a rank-64 A, and the same run always starts from the same A.

A wrapper holds the frozen base module (nn.Linear, out x in; or transformers' Conv1D, in x out)
and one low-rank pair per target it carries. A plain projection carries one target over its whole
output; GPT-2's fused `c_attn` may carry q, k and v, each over its own third of the output, so
adapting q and v there is the same function as adapting two separate projections.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

INITS = ("gaussian", "kaiming")
SCALINGS = ("standard", "rslora")


def scale_of(alpha: float, rank: int, scaling: str = "standard") -> float:
    """The factor in front of B A: alpha / r ("standard") or alpha / sqrt(r) ("rslora")."""
    if scaling == "standard":
        return alpha / rank
    if scaling == "rslora":
        return alpha / math.sqrt(rank)
    raise ValueError(f"unknown scaling {scaling!r}: valid scalings are {', '.join(SCALINGS)}")


def init_seed(seed: int, layer: int, target: str, rank: int) -> int:
    """The seed of one adapter's own stream: a stable hash of (run seed, layer, target, rank).

    Stable across processes and machines (unlike Python's hash). The rank is part of it because
    a stream fills A row by row: without it, A at r=8 would be the first 8 rows of A at r=64.
    """
    text = f"lora-repro/A/{seed}/{layer}/{target}/{rank}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & (2**63 - 1)


def initial_A(rank: int, d_in: int, init: str, sigma: float,
              generator: torch.Generator | None) -> torch.Tensor:
    """A fresh A (r x in, float32): N(0, sigma^2) ("gaussian", the paper) or loralib's "kaiming"
    (kaiming_uniform_(a=sqrt(5)) on an r x in matrix, i.e. U(-1/sqrt(in), 1/sqrt(in)))."""
    A = torch.empty(rank, d_in, dtype=torch.float32)
    if init == "gaussian":
        return A.normal_(0.0, sigma, generator=generator)
    if init == "kaiming":
        bound = 1.0 / math.sqrt(d_in)
        return A.uniform_(-bound, bound, generator=generator)
    raise ValueError(f"unknown init {init!r}: valid inits are {', '.join(INITS)}")


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
        scaling: str = "standard",
    ) -> None:
        """Add one (A, B) pair over rows `out_slice` of W; A from `generator`, B = 0."""
        weight = self.base_layer.weight
        d_in = weight.shape[0] if self.fan_in_fan_out else weight.shape[1]
        d_out = out_slice[1] - out_slice[0]
        scale = scale_of(alpha, rank, scaling)
        A = initial_A(rank, d_in, init, sigma, generator)
        self.lora_A[target] = nn.Parameter(A.to(device=weight.device, dtype=weight.dtype))
        self.lora_B[target] = nn.Parameter(
            torch.zeros(d_out, rank, device=weight.device, dtype=weight.dtype)
        )
        self.scaling[target] = scale
        self.out_slices[target] = out_slice

    def delta_weight(self, target: str) -> torch.Tensor:
        """scaling * B A for one target (alpha/r, or alpha/sqrt(r) for rsLoRA), out x in."""
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
