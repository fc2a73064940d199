"""Mixed precision for the RL update (``[run] mixed_precision = "no" | "bf16" | "fp16"``).

Forward passes run under ``torch.autocast`` (matmuls in 16 bits) while the trainable
weights, their gradients and the optimizer state stay in float32; the policies read
log-probs off float32 logits either way. ``fp16`` adds dynamic loss scaling
(``torch.amp.GradScaler``), whose state is checkpointed with the optimizer.

This is what ``Accelerator(mixed_precision=...)`` sets up, done here because accelerate
keeps the precision in process-wide state that cannot change once set: a notebook, a
test session or ``rlaif replay`` after ``rlaif run`` could not use two settings.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

MODES = ("no", "bf16", "fp16")


class Precision:
    """Autocast and loss scaling for one run on one device type (``"cpu"``, ``"cuda"``)."""

    def __init__(self, mode: str = "no", device_type: str = "cpu") -> None:
        import torch

        if mode not in MODES:
            raise ValueError(f"mixed_precision must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.device_type = device_type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.scaler = torch.amp.GradScaler(device_type) if mode == "fp16" else None

    @classmethod
    def for_policy(cls, mode: str, policy: Any) -> Precision:
        """The precision of a run whose policy lives on ``policy.device`` (CPU if unknown).
        ``mode`` "no" defers to ``accelerate launch --mixed_precision`` when one was given."""
        if mode == "no":
            launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
            mode = launched if launched in MODES else mode
        device = getattr(policy, "device", None)
        return cls(mode, getattr(device, "type", None) or "cpu")

    def autocast(self) -> AbstractContextManager[Any]:
        """Context for forward passes (sampling, scoring); a no-op at full precision."""
        if self.dtype is None:
            return nullcontext()
        import torch

        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: Any) -> None:
        """``loss.backward()``, scaled first under fp16 so small gradients survive."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_(self, optimizer: Any) -> None:
        """Divide the gradients by the loss scale (before clipping); call once per step,
        after gradients are averaged across processes so every rank sees the same
        infinities and skips the same steps."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: Any) -> None:
        """``optimizer.step()``; under fp16 skipped when a gradient overflowed, and the
        scale updated."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
