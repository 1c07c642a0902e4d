"""The training loop both stages share: accelerate setup, optimizer and LR schedule over the parameters a stage
trains, gradient accumulation and clipping, checkpoints with exact resume, logging, the validation schedule, bad-sample
accounting and the run summary.

A stage subclasses :class:`Trainer` and supplies the model (``build``), its data stream (``make_stream``), the loss of
one batch (``loss``), an optional validator, and what to save at the end (``save_outputs``). Everything else lives
here once.

Several processes: ``accelerate launch`` or ``torchrun`` (on CPU with ``ACCELERATE_USE_CPU=true``, gloo). Each rank
reads its own virtual streams of whole shards (see :mod:`model.datasets.shard_stream`); only the main process writes files. A launcher
that started several processes which accelerate did not join into one run (each process would then train alone and
all would write the same folder) is refused with a message that says what to set.

Resume reads a checkpoint back weights-only (:mod:`model.training.checkpointing`; never accelerate's ``load_state``, which
unpickles ``custom_checkpoint_N.pkl`` with ``weights_only=False``), and refuses one that does not fit the run: written by
another number of processes, past ``max_steps``, or with another config in what decides the weights or the data
(:data:`model.training.config.MAY_CHANGE_ON_RESUME` lists what may change). A fresh run over an earlier run's outputs is
refused unless ``overwrite`` (:mod:`model.training.run_folder`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from model.datasets.shard_stream import RankPosition, make_loader
from model.training.checkpointing import (
    Checkpoint,
    TrainingState,
    checkpoint_dir,
    config_differences,
    find_checkpoint,
    prune_checkpoints,
    set_random_states,
    write_training_state,
)
from model.training.config import MAY_CHANGE_ON_RESUME, TrainConfig
from model.training.run_folder import check_overwritable, clear_run_outputs, refuse_fresh_start
from pose_data.config import to_dict
from pose_data.files.atomic import atomic_path

log = logging.getLogger(__name__)

WEIGHT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_launcher_world_size(accelerator) -> None:
    """ValueError when the launcher (torchrun, mpirun, SLURM via torchrun) started more processes than accelerate
    joined: every process would train on its own and write the same output folder."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and accelerator.num_processes != launched:
        raise ValueError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}) but accelerate runs "
            f"{accelerator.num_processes}: they would train separately and overwrite one output folder. "
            "On CPU set ACCELERATE_USE_CPU=true (gloo); on GPUs check that CUDA is visible to every process, "
            "or use `accelerate launch --num_processes N`."
        )


class Trainer:
    """Builds everything in ``__init__`` (resuming when asked); ``train()`` runs the loop.

    Attributes: ``cfg``, ``accelerator``, ``model`` (the prepared trainable module), ``optimizer``, ``lr_schedule``,
    ``state`` (step; samples read and failed by all processes; each rank's data position), ``batches`` (the data
    iterator).
    """

    stage = "train"
    #: The folders of final weights the stage writes into output_dir (deleted by ``overwrite`` with the run's other outputs).
    weight_folders: tuple[str, ...] = ()

    def __init__(self, cfg: TrainConfig) -> None:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed
        from diffusers.optimization import get_scheduler

        cfg.validate()
        self.cfg = cfg
        self.out = out = Path(cfg.output_dir).resolve()
        self.check_inputs()
        self.accelerator = accelerator = Accelerator(
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            log_with="tensorboard",
            project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        )
        check_launcher_world_size(accelerator)
        checkpoint = self._checkpoint_to_resume()  # read and checked before any model is loaded
        set_seed(cfg.seed, device_specific=True)  # each process draws its own noise and timesteps
        self.weight_dtype = WEIGHT_DTYPES.get(cfg.mixed_precision, torch.float32)
        model = self.build()
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(f"{self.stage}: nothing to train (no parameter requires grad)")
        o = cfg.optim
        optimizer = torch.optim.AdamW(
            trainable, lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_epsilon, weight_decay=o.weight_decay
        )
        lr_schedule = get_scheduler(  # accelerate steps a prepared schedule once per process
            o.lr_schedule,
            optimizer,
            num_warmup_steps=o.warmup_steps * accelerator.num_processes,
            num_training_steps=cfg.max_steps * accelerator.num_processes,
        )
        self.model, self.optimizer, self.lr_schedule = accelerator.prepare(model, optimizer, lr_schedule)
        # checkpoints hold the trained weights, not the frozen ones (a stage-2 checkpoint would else copy the UNet)
        self.checkpointed = {name for name, p in model.named_parameters() if p.requires_grad} | self.extra_checkpoint_keys(model)
        accelerator.register_save_state_pre_hook(self._keep_checkpointed_weights)
        self.state = TrainingState(positions=[RankPosition().to_dict() for _ in range(accelerator.num_processes)])
        if checkpoint is not None:
            self.before_resume(checkpoint.folder)
            self._check_checkpointed_keys(checkpoint)
            self._restore(checkpoint)
            log.info("resumed from %s at step %d (%d samples read)", checkpoint.folder, self.state.step, self.state.samples)
            del checkpoint
        # samples read and failed by this process since it started; the state holds the totals of all processes
        self.read, self.failed, self.failed_shards = 0, 0, {}
        self._totals_at_start = (self.state.samples, self.state.failed)
        if accelerator.is_main_process:
            if cfg.overwrite:
                for path in clear_run_outputs(out, self.weight_folders, self.stage):
                    log.info("--overwrite: deleted %s", path)
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(out / "config.json") as tmp:
                Path(tmp).write_text(json.dumps(to_dict(cfg), indent=2))
            accelerator.init_trackers(self.stage, config=_flat(to_dict(cfg)))
        self.validator = self.make_validator() if getattr(cfg, "validation", None) and cfg.validation.every and accelerator.is_main_process else None
        start = self.state.positions[accelerator.process_index]
        self.position = RankPosition(start)  # where this rank's stream stands after the batches used so far
        stream = self.make_stream(start=start, rank=accelerator.process_index, world_size=accelerator.num_processes)
        self.position.data = stream.fingerprint
        loader = make_loader(stream, cfg.data.num_workers)
        self.batches = iter(loader)

    # ----------------------------------------------------------------------------------------- a stage supplies

    def check_inputs(self) -> None:
        """Check local inputs (data, init weights) before anything slow is loaded."""

    def build(self) -> torch.nn.Module:
        """Load the frozen parts and return the module to train (its trainable parameters require grad)."""
        raise NotImplementedError

    def make_stream(self, *, start: dict, rank: int, world_size: int):
        """The stage's :class:`model.datasets.shard_stream.ShardStream` for this rank, from the saved position ``start``."""
        raise NotImplementedError

    def loss(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def make_validator(self):
        return None

    def before_resume(self, checkpoint: Path) -> None:
        """Refuse a checkpoint that does not fit this run (before its weights are loaded)."""

    def extra_checkpoint_keys(self, model: torch.nn.Module) -> set[str]:
        """State-dict keys to checkpoint besides the trained parameters."""
        return set()

    def _checkpoint_to_resume(self) -> Checkpoint | None:
        """The checkpoint to resume (read and checked), or None for a fresh start, which is refused over an earlier
        run's outputs unless ``overwrite``."""
        cfg, accelerator = self.cfg, self.accelerator
        checkpoint = find_checkpoint(self.out, cfg.resume, accelerator.process_index)
        if checkpoint is None:
            if cfg.overwrite:
                check_overwritable(self.out, self.weight_folders)  # before any model loads; deleted once they have
            else:
                refuse_fresh_start(self.out, self.weight_folders, resume_latest=cfg.resume == "latest")
            return None
        where = f"checkpoint {checkpoint.folder}"
        if checkpoint.stage != self.stage:
            raise ValueError(f"{where} was written by fyp-train {checkpoint.stage}, not {self.stage}: resume it with fyp-train {checkpoint.stage}")
        if checkpoint.processes != accelerator.num_processes:
            raise ValueError(
                f"{where} was written by {checkpoint.processes} process(es); resume it with as many, not {accelerator.num_processes}"
            )
        if checkpoint.state.step > cfg.max_steps:
            raise ValueError(
                f"{where} is at step {checkpoint.state.step}, past max_steps {cfg.max_steps}: resuming would train nothing "
                f"and save its weights as this run's. Set max_steps to {checkpoint.state.step} or more to continue it, or "
                "start again (--overwrite, or another output_dir)"
            )
        differences = config_differences(checkpoint.config, to_dict(cfg), MAY_CHANGE_ON_RESUME)
        if differences:
            raise ValueError(
                f"{where} was written with another config: {'; '.join(differences[:6])}{' ...' if len(differences) > 6 else ''}. "
                "Resume with the settings it was written with (its training_state.json holds them; only max_steps, "
                "checkpoint_every, checkpoints_total_limit, log_every, max_failed_fraction, validation.*, data.num_workers "
                "and model.gradient_checkpointing may change), or start again (--overwrite, or another output_dir)"
            )
        return checkpoint

    def _restore(self, checkpoint: Checkpoint) -> None:
        """Weights, optimizer, LR schedule, loss scaler, RNGs and the training state from ``checkpoint`` (the frozen
        weights stay the base model's)."""
        accelerator = self.accelerator
        model = accelerator.unwrap_model(self.model)
        model.load_state_dict({_bare(k): v for k, v in checkpoint.weights.items()}, strict=False)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.lr_schedule.load_state_dict(checkpoint.scheduler)
        if accelerator.scaler is not None and checkpoint.scaler is not None:
            accelerator.scaler.load_state_dict(checkpoint.scaler)
        set_random_states(checkpoint.random_states)
        if "step" in checkpoint.random_states:
            accelerator.step = checkpoint.random_states["step"]  # accelerate's micro-step count (gradient accumulation)
        self.state = checkpoint.state

    def _check_checkpointed_keys(self, checkpoint: Checkpoint) -> None:
        """ValueError when the checkpoint's weights are not exactly what this run trains (another model.trainable,
        other video layers, ...): loading it would keep some weights at their initial values without a word."""
        saved = {_bare(k) for k in checkpoint.weights}
        missing, extra = sorted(self.checkpointed - saved), sorted(saved - self.checkpointed)
        if missing or extra:
            raise ValueError(
                f"checkpoint {checkpoint.folder} does not fit this run's trained weights: missing {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}, not trained here {extra[:5]}{' ...' if len(extra) > 5 else ''}. "
                "Resume with the config the checkpoint was written with (output_dir/config.json)."
            )

    def _keep_checkpointed_weights(self, models, weights, output_dir) -> None:
        for i, state in enumerate(weights):
            weights[i] = type(state)((k, v) for k, v in state.items() if _bare(k) in self.checkpointed)

    def after_checkpoint(self, checkpoint: Path) -> None:
        """Add stage-specific files to a checkpoint folder (main process)."""

    def save_outputs(self) -> dict:
        """Write the final weights (main process only); returns entries for the summary."""
        return {}

    # --------------------------------------------------------------------------------------------------- the loop

    def next_batch(self) -> dict:
        """The next batch with at least one sample (the stream's empty items are passed over); failed samples are
        counted and logged, and a run where most samples fail stops with a message naming the shards."""
        while True:
            batch = next(self.batches)
            self.position.update(batch["position"])
            self.read += batch["raw"]
            for failure in batch["failures"]:
                self.failed += 1
                self.failed_shards[failure.shard] = self.failed_shards.get(failure.shard, 0) + 1
                log.warning("skipping sample %s of %s: %s", failure.key, failure.shard, failure.reason)
            self._check_failures()
            if batch["num_samples"]:
                return batch

    def _check_failures(self) -> None:
        cfg = self.cfg
        if self.read >= max(8, 2 * cfg.batch_size) and self.failed > cfg.max_failed_fraction * self.read:
            worst = sorted(self.failed_shards.items(), key=lambda kv: -kv[1])[:5]
            raise ValueError(
                f"{self.failed} of {self.read} samples failed to load (more than max_failed_fraction "
                f"{cfg.max_failed_fraction}); shards with failures: "
                + ", ".join(f"{shard} ({count})" for shard, count in worst)
                + ". The warnings above give each sample's reason."
            )

    def step(self) -> float:
        """One optimizer step (``gradient_accumulation_steps`` micro-batches); returns the mean loss."""
        cfg, accelerator = self.cfg, self.accelerator
        losses = []
        while True:
            batch = self.next_batch()
            with accelerator.accumulate(self.model):
                loss = self.loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                    accelerator.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.optim.max_grad_norm)
                self.optimizer.step()
                self.lr_schedule.step()
                self.optimizer.zero_grad()
            losses.append(float(accelerator.gather(loss.detach()).mean()))
            if accelerator.sync_gradients:
                self._sync_counts()
                self.state.step += 1
                return sum(losses) / len(losses)

    def _sync_counts(self) -> None:
        """The samples read and failed by all processes (every step: small)."""
        accelerator, state = self.accelerator, self.state
        mine = [self.read, self.failed]
        if accelerator.num_processes == 1:
            every = [mine]
        else:
            mine_t = torch.tensor(mine, device=accelerator.device, dtype=torch.long)
            every = accelerator.gather(mine_t).view(accelerator.num_processes, len(mine)).tolist()
        samples, failed = self._totals_at_start
        state.samples = samples + sum(row[0] for row in every)
        state.failed = failed + sum(row[1] for row in every)

    def _sync_positions(self) -> None:
        """Every rank's data position, so the main process's checkpoint resumes every rank exactly (at checkpoints
        only: a position holds each stream's buffer, larger than a step's worth of traffic)."""
        from accelerate.utils import gather_object

        mine = self.position.to_dict()
        every = [mine] if self.accelerator.num_processes == 1 else gather_object([mine])
        self.state.positions = [dict(p) for p in every]

    def save_checkpoint(self) -> Path:
        """Every process writes into ``.checkpoint-NNNNNNN.partial``; the main process then renames it, so a killed
        run never leaves a half-written ``checkpoint-NNNNNNN`` for ``--resume latest`` to pick."""
        import shutil

        accelerator = self.accelerator
        final = checkpoint_dir(self.out, self.state.step)
        partial = final.with_name(f".{final.name}.partial")
        if accelerator.is_main_process:  # also what a killed run left behind
            for stale in final.parent.glob(".checkpoint-*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
        self._sync_positions()
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_training_state(partial, self.state, stage=self.stage, config=to_dict(self.cfg))
            self.after_checkpoint(partial)
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            prune_checkpoints(self.out, self.cfg.checkpoints_total_limit)
        accelerator.wait_for_everyone()
        return final

    def train(self, until_step: int | None = None) -> dict:
        """Train to ``max_steps`` (or stop after ``until_step``, as a killed run would, for tests)."""
        cfg, accelerator, state = self.cfg, self.accelerator, self.state
        last = min(cfg.max_steps, until_step or cfg.max_steps)
        started, losses = time.time(), []
        while state.step < last:
            losses.append(self.step())
            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                accelerator.log({"loss": sum(losses) / len(losses), "lr": self.lr_schedule.get_last_lr()[0]}, step=state.step)
                log.info("step %d/%d loss %.4f", state.step, cfg.max_steps, sum(losses) / len(losses))
                losses = []
            if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0) or state.step == cfg.max_steps:
                self.save_checkpoint()
            if self.validator is not None and (state.step % cfg.validation.every == 0 or state.step == cfg.max_steps):
                self.validator.run(accelerator, accelerator.unwrap_model(self.model), state.step)
        accelerator.wait_for_everyone()
        summary = {
            "stage": self.stage, "steps": state.step, "samples": state.samples,
            "failed_samples": state.failed, "seconds": round(time.time() - started, 2),
            "processes": accelerator.num_processes,
        }  # fmt: skip
        if state.step >= cfg.max_steps and accelerator.is_main_process:
            summary.update(self.save_outputs())
            with atomic_path(self.out / "summary.json") as tmp:
                Path(tmp).write_text(json.dumps(summary, indent=2))
        accelerator.end_training()
        return summary


def _bare(key: str) -> str:
    """A state-dict key without wrapper prefixes (DDP's ``module.``, torch.compile's ``_orig_mod.``)."""
    for prefix in ("module.", "_orig_mod."):
        key = key.removeprefix(prefix)
    return key


def _flat(d: dict, prefix: str = "") -> dict:
    """TensorBoard hparams want flat scalars."""
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            flat[key] = v
        else:
            flat[key] = str(v)
    return flat
