"""What both trainers' configs share: the loop, precision, checkpoints, logging and the optimizer."""

from __future__ import annotations

from dataclasses import dataclass, field

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class OptimConfig:
    learning_rate: float = 3e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    lr_schedule: str = "constant_with_warmup"
    warmup_steps: int = 500
    max_grad_norm: float = 1.0
    min_snr_gamma: float | None = None  # min-SNR loss weighting (5.0 is the usual value); None: plain loss


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    seed: int = 0
    max_steps: int = 100_000
    batch_size: int = 8  # per process
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    checkpoint_every: int = 1000  # steps; 0: only at the end
    checkpoints_total_limit: int | None = 3
    log_every: int = 10
    resume: str | None = None  # "latest" or a checkpoint folder
    max_failed_fraction: float = 0.5  # stop when more than this share of the samples read so far failed to decode
    optim: OptimConfig = field(default_factory=OptimConfig)

    def validate(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision {self.mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}")
        if self.optim.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"optim.lr_schedule {self.optim.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        for name, value in (("max_steps", self.max_steps), ("batch_size", self.batch_size),
                            ("gradient_accumulation_steps", self.gradient_accumulation_steps)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 < self.max_failed_fraction <= 1.0:
            raise ValueError(f"max_failed_fraction must lie in (0, 1], got {self.max_failed_fraction}")
