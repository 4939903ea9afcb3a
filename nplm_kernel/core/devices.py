"""Where and in which precision torch computes: the device and dtype settings of the backends."""

from __future__ import annotations

import torch

from .exceptions import ConfigurationError, brief

#: The float dtypes a backend's `dtype` setting may name.
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device) -> torch.device:
    """torch.device for `device` ('auto': CUDA when available, else the CPU); ConfigurationError if
    it is malformed or CUDA was asked for but is not available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigurationError(f"device {brief(device)} is not a valid torch device: {brief(str(error))}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} was asked for but CUDA is not available here; use device='cpu' "
                                 "(or 'auto').")
    return resolved


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """torch float dtype for 'float32' / 'float64' (or the torch dtypes themselves)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigurationError(f"dtype must be 'float32' or 'float64', got {brief(dtype)}.")
