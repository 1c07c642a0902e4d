"""What both trainers' configs share: the loop, precision, checkpoints, logging and the optimizer; and the checks of
numbers every stage config uses (``validate`` runs before any model is loaded, so a bad value stops the run at once
instead of after hours of training)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")
#: Seeds go to Python's, numpy's and torch's RNGs; numpy takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
#: Config keys a resumed run may change (dotted prefixes); every other key decides the weights or the data (model,
#: data, seed, batch size, accumulation, optimizer, precision) and must equal the checkpoint's.
MAY_CHANGE_ON_RESUME = (
    "output_dir", "resume", "overwrite", "max_steps", "checkpoint_every", "checkpoints_total_limit", "log_every",
    "max_failed_fraction", "validation", "data.num_workers", "model.gradient_checkpointing",
)  # fmt: skip


def check_int(name: str, value, minimum: int, maximum: int | None = None) -> None:
    """ValueError naming ``name`` unless ``value`` is an integer (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


def check_number(name: str, value, *, minimum: float | None = None, above: float | None = None,
                 maximum: float | None = None, below: float | None = None) -> None:  # fmt: skip
    """ValueError naming ``name`` unless ``value`` is a finite number within the given bounds (``minimum``/``maximum``
    inclusive, ``above``/``below`` exclusive)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (above is None or value > above)
    ok = ok and (maximum is None or value <= maximum) and (below is None or value < below)
    if not ok:
        bounds = [f">= {minimum}" if minimum is not None else "", f"> {above}" if above is not None else "",
                  f"<= {maximum}" if maximum is not None else "", f"< {below}" if below is not None else ""]  # fmt: skip
        wanted = " and ".join(b for b in bounds if b)
        raise ValueError(f"{name} must be a finite number{' ' + wanted if wanted else ''}, got {value!r}")


#: The most virtual data streams of a run (each holds a shuffle buffer and, in its worker, an open shard).
MAX_STREAMS = 1024
#: The largest training or validation resolution (pixels a side): SD 1.x trains at 512.
MAX_RESOLUTION = 4096
#: The most denoising steps of a validation sample: SD's DDIM (1000 training timesteps, steps_offset 1) reaches
#: timestep 1000, one past the last, with 1000 steps.
MAX_INFERENCE_STEPS = 999


def check_data_and_validation(data, validation) -> None:
    """The data and validation settings both stages have (``data``/``validation`` of a stage config)."""
    check_number("data.caption_dropout", data.caption_dropout, minimum=0, maximum=1)
    check_int("data.num_streams", data.num_streams, 1, MAX_STREAMS)
    check_int("data.shuffle_buffer", data.shuffle_buffer, 0)
    check_int("data.num_workers", data.num_workers, 0)
    check_int("validation.every", validation.every, 0)
    check_prompts("validation.prompts", validation.prompts, validation.every)
    check_int("validation.num_inference_steps", validation.num_inference_steps, 1, MAX_INFERENCE_STEPS)
    check_number("validation.guidance_scale", validation.guidance_scale, minimum=0)
    check_int("validation.seed", validation.seed, 0, MAX_SEED)


def check_resolution(name: str, value, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 64 <= value <= MAX_RESOLUTION or value % 64:
        raise ValueError(f"{name} must be a multiple of 64 from 64 to {MAX_RESOLUTION} ({why}), got {value!r}")


def check_prompts(name: str, prompts, every: int) -> None:
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name} must be a list of strings, got {prompts!r}")
    if every and not prompts:
        raise ValueError(f"{name} is empty but validation.every is {every}: give at least one prompt, or set validation.every=0")


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
    overwrite: bool = False  # delete an earlier run's outputs in output_dir (model/training/run_folder.py) and start again
    max_failed_fraction: float = 0.5  # stop when more than this share of the samples read so far failed to decode
    optim: OptimConfig = field(default_factory=OptimConfig)

    def validate(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision {self.mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}")
        if self.optim.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"optim.lr_schedule {self.optim.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        for name, value in (("max_steps", self.max_steps), ("batch_size", self.batch_size),
                            ("gradient_accumulation_steps", self.gradient_accumulation_steps), ("log_every", self.log_every)):  # fmt: skip
            check_int(name, value, 1)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("checkpoint_every", self.checkpoint_every, 0)
        if self.checkpoints_total_limit is not None:
            check_int("checkpoints_total_limit", self.checkpoints_total_limit, 1)
        if not isinstance(self.max_failed_fraction, (int, float)) or not 0.0 < self.max_failed_fraction <= 1.0:
            raise ValueError(f"max_failed_fraction must lie in (0, 1], got {self.max_failed_fraction}")
        if self.resume is not None and (not isinstance(self.resume, str) or not self.resume):
            raise ValueError(f"resume must be 'latest' or a checkpoint folder, got {self.resume!r}")
        if self.resume is not None and self.overwrite:
            raise ValueError(
                "--resume and --overwrite exclude each other: --resume continues the run in output_dir, --overwrite "
                "deletes it and starts again"
            )
        o = self.optim
        check_number("optim.learning_rate", o.learning_rate, above=0)
        check_number("optim.adam_beta1", o.adam_beta1, minimum=0, below=1)
        check_number("optim.adam_beta2", o.adam_beta2, minimum=0, below=1)
        check_number("optim.adam_epsilon", o.adam_epsilon, above=0)
        check_number("optim.weight_decay", o.weight_decay, minimum=0)
        check_int("optim.warmup_steps", o.warmup_steps, 0)
        check_number("optim.max_grad_norm", o.max_grad_norm, minimum=0)  # 0: no clipping
        if o.min_snr_gamma is not None:
            check_number("optim.min_snr_gamma", o.min_snr_gamma, above=0)
