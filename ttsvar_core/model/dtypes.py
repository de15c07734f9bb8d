"""Names of the floating-point dtypes users type (CLI flags, node widgets, scorer options), in one table."""
from __future__ import annotations

import torch

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}
DTYPE_NAMES = ("fp32", "bf16", "fp16")   # the short spellings offered in choices


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {list(DTYPE_NAMES)}")
    return DTYPES[dtype]
