"""The run loop shared by every trainer: epochs, records, progress bar, cadences, checkpoints,
resume, summary.

Framework-free. A trainer subclasses :class:`RunLoop` and supplies the framework parts —
one optimiser step (:meth:`RunLoop._train_step`), the evaluation (:meth:`RunLoop.evaluate`,
usually through :func:`eval_record`), the test embeddings (:meth:`RunLoop._test_embeddings`)
and two checkpoint hooks (:meth:`RunLoop._checkpoint_state`,
:meth:`RunLoop._load_checkpoint_state`) with its file format
(:class:`trainers.core.checkpoints.CheckpointFormat`); :meth:`RunLoop.start_or_resume`,
:meth:`RunLoop.save` and :meth:`RunLoop.fit` then start or continue the run, checkpoint it
and train it to the end, writing the same ``metrics.jsonl`` records, progress bar, plots and
summary whichever framework computed them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from trainers.core import rundir
from trainers.core.checkpoints import (
    CheckpointError,
    CheckpointFormat,
    RunPosition,
    check_checkpoint_path,
    check_resumable,
    newest_readable,
    read_checkpoint,
)
from trainers.core.config import (
    TrainConfig,
    check_trainer_options,
    config_parser,
    config_to_dict,
    load_config,
)
from trainers.core.datasets import ImageDataset
from trainers.core.metrics import (
    MetricsLog,
    covariance_spectrum,
    effective_rank,
    knn_accuracy,
    read_metrics,
)
from trainers.core.plots import plot_accuracy, plot_losses, plot_spectrum
from trainers.core.sampler import EpochSampler
from trainers.core.stream import Batch, StreamSampler

__all__ = [
    "NonFiniteLoss",
    "RunLoop",
    "add_resume_argument",
    "derive_seed",
    "eval_record",
    "load_trainer_config",
    "parse_trainer_args",
    "per_worker_batch",
    "run_trainer",
    "start_run",
    "step_stats",
    "trainer_parser",
]

T = TypeVar("T")


class NonFiniteLoss(RuntimeError):
    """The loss of an optimiser step was NaN or infinite on at least one rank."""


def derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from non-negative integers (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def per_worker_batch(batch_size: int, workers: int, accum_steps: int, workers_name: str) -> int:
    """Samples per worker and micro-batch: ``batch_size / (workers * accum_steps)``.

    Raises
    ------
    ValueError
        The batch size is not a positive multiple of ``workers * accum_steps``
        (``workers_name`` says what the workers are: ranks, devices).
    """
    per_worker, rem = divmod(batch_size, workers * accum_steps)
    if rem or per_worker == 0:
        raise ValueError(
            f"optim.batch_size ({batch_size}) must be a positive multiple of "
            f"{workers_name} x optim.accum_steps ({workers} x {accum_steps})"
        )
    return per_worker


def step_stats(
    loss: float,
    prediction: float,
    sigreg: float,
    probe_loss: float,
    *,
    lr: float,
    data_time: float,
    started: float,
    loss_time: float | None = None,
) -> dict[str, Any]:
    """The measurements :meth:`RunLoop._train_step` returns: the step's LeJEPA loss, its
    prediction and SIGReg terms, the probe loss, the learning rate, the data time,
    ``step_time`` counted from the ``time.perf_counter()`` value ``started`` and
    ``loss_time``, the seconds in the LeJEPA loss (``None`` on steps that are not logged)."""
    return {
        "loss": loss,
        "prediction": prediction,
        "sigreg": sigreg,
        "probe_loss": probe_loss,
        "lr": lr,
        "data_time": data_time,
        "step_time": time.perf_counter() - started,
        "loss_time": loss_time,
    }


def add_resume_argument(parser: argparse.ArgumentParser) -> None:
    """Add the trainers' ``--resume auto|CKPT`` option to ``parser``."""
    parser.add_argument(
        "--resume",
        metavar="auto|CKPT",
        help="continue a run: 'auto' takes the newest checkpoint in run.dir that loads "
        "(and starts afresh if there is none), or give the path of a checkpoint in run.dir; "
        "repeat the run's options (a few, e.g. run.progress and debug.*, may change)",
    )


def start_run(cfg: TrainConfig, metrics: MetricsLog, info: Mapping[str, Any]) -> None:
    """Create ``run.dir`` with its ``config.yaml``, an empty ``metrics.jsonl`` and a
    ``run_info.json`` holding the git SHA, Python version, start time and ``info``."""
    run_dir = cfg.run.dir
    os.makedirs(run_dir, exist_ok=True)
    metrics.truncate(0)
    rundir.write_config(run_dir, config_to_dict(cfg))
    rundir.write_run_info(
        run_dir,
        {
            "git_sha": rundir.git_sha(os.path.dirname(os.path.abspath(__file__))),
            **info,
            "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def eval_record(
    cfg: TrainConfig,
    data: ImageDataset,
    *,
    epoch: int,
    step: int,
    embeddings: np.ndarray,
    features: tuple[np.ndarray, np.ndarray] | None = None,
    probe_predictions: np.ndarray | None = None,
) -> dict[str, Any]:
    """The ``kind="eval"`` record: probe and k-NN test accuracy, embedding effective rank.

    Parameters
    ----------
    cfg : TrainConfig
        ``eval.knn_k`` and ``eval.knn_temperature``.
    data : ImageDataset
        Labels of both splits.
    epoch, step : int
        Position of the evaluation.
    embeddings : numpy.ndarray, shape (M, D)
        Projector outputs of the test split.
    features : (train, test) numpy arrays, optional
        Backbone features of both splits (labelled data): k-NN accuracy.
    probe_predictions : numpy.ndarray, shape (M,), optional
        The online probe's test predictions (labelled data).
    """
    record: dict[str, Any] = {"kind": "eval", "epoch": epoch, "step": step}
    if probe_predictions is not None:
        record["probe_acc"] = float(np.mean(probe_predictions == data.test_labels))
    if features is not None:
        record["knn_acc"] = knn_accuracy(
            features[0],
            data.train_labels,
            features[1],
            data.test_labels,
            num_classes=data.num_classes,
            k=cfg.eval.knn_k,
            temperature=cfg.eval.knn_temperature,
        )
    record["effective_rank"] = effective_rank(covariance_spectrum(embeddings))
    return record


def trainer_parser(
    trainer: str, description: str, *, base: Mapping[str, Mapping[str, Any]] | None = None
) -> argparse.ArgumentParser:
    """The command-line parser of ``python -m trainers.<trainer>``: ``--config``,
    ``--resume`` and overrides, with only this trainer's options in ``--help``.

    Parameters
    ----------
    trainer : str
        One of :data:`trainers.core.config.TRAINERS`.
    description : str
        For ``--help``.
    base : Mapping, optional
        This trainer's own defaults (see :func:`trainers.core.config.load_config`).
    """
    parser = config_parser(f"python -m trainers.{trainer}", description, trainer, base)
    add_resume_argument(parser)
    return parser


def load_trainer_config(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    trainer: str,
    *,
    base: Mapping[str, Mapping[str, Any]] | None = None,
) -> TrainConfig:
    """The configuration of parsed trainer arguments (``config``, ``overrides``), checked to
    set only options that ``trainer`` reads; exits with status 2 and a usage message on a bad
    configuration (``parser.error``)."""
    try:
        cfg = load_config(args.config, args.overrides, base=base)
        check_trainer_options(cfg, trainer)
    except (OSError, TypeError, ValueError) as exc:
        parser.error(str(exc))
    return cfg


def parse_trainer_args(
    trainer: str,
    description: str,
    argv: list[str] | None,
    *,
    base: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[argparse.ArgumentParser, argparse.Namespace, TrainConfig]:
    """A trainer's command line (:func:`trainer_parser`, :func:`load_trainer_config`).

    Parameters
    ----------
    trainer, description, base
        As for :func:`trainer_parser`.
    argv : list of str or None
        The arguments (``None``: ``sys.argv[1:]``).

    Returns
    -------
    parser, args, cfg
        The parser (for further ``parser.error`` calls), the parsed arguments (``resume``)
        and the resolved configuration.
    """
    parser = trainer_parser(trainer, description, base=base)
    args = parser.parse_intermixed_args(argv)
    return parser, args, load_trainer_config(parser, args, trainer, base=base)


def run_trainer(
    build: Callable[[], RunLoop],
    rank: int,
    on_nonfinite: Callable[[], None] | None = None,
    *,
    who: str = "rank",
) -> int:
    """Build a trainer and fit it; the exit status: 0 done, 2 bad configuration (a
    ``TypeError``/``ValueError`` while building), 3 non-finite loss (``on_nonfinite`` runs
    after the error is printed, e.g. a barrier so that every rank reports), 4 a file that
    cannot be written or read (an ``OSError``: read-only run directory, full disk). Errors
    are printed as one line ``"{who} {rank}: error: ..."``. The main rank first removes
    temporary files that a crash left in ``run.dir``."""
    trainer = None
    try:
        try:
            trainer = build()
        except (TypeError, ValueError) as exc:
            print(f"{who} {rank}: error: {exc}", file=sys.stderr, flush=True)
            return 2
        if trainer.is_main:
            _remove_stale_temp_files(trainer.cfg.run.dir)
        trainer.fit()
        return 0
    except NonFiniteLoss as exc:
        print(f"{who} {rank}: error: {exc}", file=sys.stderr, flush=True)
        if on_nonfinite is not None:
            on_nonfinite()
        return 3
    except OSError as exc:
        run_dir = None if trainer is None else trainer.cfg.run.dir
        print(f"{who} {rank}: error: {os_error_message(exc, run_dir)}", file=sys.stderr)
        return 4


def os_error_message(exc: OSError, run_dir: str | None) -> str:
    """One line for a failed file operation: what failed and on which file (``run_dir``
    when the error does not name one, e.g. a failed append)."""
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename:
        return f"{what}: {exc.filename}"
    return what if run_dir is None else f"{what} (writing to run.dir {run_dir})"


def _remove_stale_temp_files(run_dir: str) -> None:
    removed = rundir.remove_stale_temp_files(run_dir)
    if removed:
        names = ", ".join(os.path.basename(p) for p in removed)
        print(
            f"warning: removed {len(removed)} stale temporary file(s) in {run_dir}: {names}",
            file=sys.stderr,
            flush=True,
        )


def _timed_next(batches: Iterator[Any]) -> tuple[Any, float] | None:
    """``(next(batches), seconds it took)``, or ``None`` at the end."""
    began = time.perf_counter()
    batch = next(batches, None)
    return None if batch is None else (batch, time.perf_counter() - began)


def _format(record: Mapping[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in record.items()
        if k != "kind"
    )


class LossClock:
    """Seconds spent in the loss, measured between device synchronisations.

    A trainer creates one only for a step that is logged (:meth:`RunLoop._logs_next_step`),
    so the synchronisations cost nothing on the other steps. ``with clock:`` times a block;
    :meth:`start`/:meth:`stop` time a span that ends elsewhere (e.g. in an autograd hook).

    Parameters
    ----------
    sync : callable
        Waits for the device's queued work (a no-op on the CPU).
    """

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.seconds = 0.0
        self._start = 0.0

    def start(self) -> None:
        """Synchronise and start timing."""
        self.sync()
        self._start = time.perf_counter()

    def stop(self) -> None:
        """Synchronise and add the time since :meth:`start`."""
        self.sync()
        self.seconds += time.perf_counter() - self._start

    def __enter__(self) -> LossClock:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RunLoop(ABC):
    """Epoch/step bookkeeping of a training run and the loop that drives it.

    Subclasses set the attributes below in their constructor, implement the abstract
    methods, and end the constructor with :meth:`start_or_resume`.

    Attributes
    ----------
    cfg : TrainConfig
    checkpoint_format : CheckpointFormat
        The trainer's checkpoint file format (a class attribute).
    metrics : MetricsLog
        ``run.dir/metrics.jsonl``.
    sampler : EpochSampler or StreamSampler
        This rank's batches: sample indices of in-memory data, or decoded
        :class:`~trainers.core.stream.Batch` es of a streamed source (the time ``fit``
        waits for one counts as data time; checkpoints store its position).
    rank : int
        This process's rank (the one that injects ``debug.nan_at_step``).
    world_size : int
        Data-parallel size stored in checkpoints (ranks or devices).
    is_main : bool
        Whether this rank writes files and shows the progress bar.
    has_probe : bool
        Whether the network has an online probe (labelled data).
    data : dataset
        The training and test splits (``train_labels``, ``test_labels``, ``num_classes``).
    num_classes : int
        Classes of the training data (0: unlabelled).
    data_fingerprint : str
        :func:`trainers.core.checkpoints.data_fingerprint` of the training data.
    epoch, batch_in_epoch, step : int
        Position: epochs done, batches done in the current epoch, optimiser steps done.
    train_time : float
        Seconds spent in optimiser steps so far (over resumes).
    """

    cfg: TrainConfig
    checkpoint_format: CheckpointFormat
    metrics: MetricsLog
    sampler: EpochSampler | StreamSampler
    rank: int
    world_size: int
    is_main: bool
    has_probe: bool
    data: Any
    num_classes: int
    data_fingerprint: str
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    train_time: float = 0.0

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch."""
        return self.sampler.batches_per_epoch

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run."""
        return self.cfg.optim.epochs * self.steps_per_epoch

    @abstractmethod
    def _train_step(self, batch: np.ndarray | Batch) -> dict[str, Any]:
        """One optimiser step on this rank's ``batch`` (indices of in-memory data, or a
        decoded streamed batch); advances ``self.step``.

        Returns the step's :func:`step_stats` and, when :meth:`_logs_next_step` was true,
        the seconds spent in the LeJEPA loss's forward and backward as ``loss_time`` (logged
        as ``loss_share`` of the step time); raises :class:`NonFiniteLoss` (see
        :meth:`_nonfinite`).
        """

    @abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """The eval record of the current state (:func:`eval_record`)."""

    @abstractmethod
    def _test_embeddings(self) -> np.ndarray:
        """Projector outputs ``(M, D)`` of the test split's evaluation views."""

    @abstractmethod
    def _checkpoint_state(self) -> Any:
        """The framework state to checkpoint (every rank calls; the main rank's value is
        written by ``checkpoint_format.write``)."""

    @abstractmethod
    def _load_checkpoint_state(self, state: Any) -> None:
        """Restore the framework state that ``checkpoint_format.read`` returned."""

    def _summary_extras(self) -> dict[str, Any]:
        """Extra summary fields (every rank calls; default none)."""
        return {}

    def _agree(self, choose: Callable[[], T]) -> T:
        """The main rank's ``choose()``, known to every rank. The default runs ``choose``
        on every process (which must then agree); trainers with an object broadcast
        override it."""
        return choose()

    # ------------------------------------------------------------------ checkpoints
    def position(self) -> RunPosition:
        """The counters, configuration and data identity a checkpoint stores now."""
        return RunPosition(
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            step=self.step,
            train_time=self.train_time,
            metrics_count=self.metrics.count,
            world_size=self.world_size,
            config=config_to_dict(self.cfg),
            num_classes=self.num_classes,
            data_fingerprint=self.data_fingerprint,
            data_stream=(
                json.dumps(self.sampler.state(self.epoch, self.batch_in_epoch))
                if isinstance(self.sampler, StreamSampler)
                else None
            ),
        )

    def save(self) -> None:
        """Checkpoint the whole state (every rank calls; the main rank writes the file and
        prunes old checkpoints)."""
        state = self._checkpoint_state()
        if not self.is_main:
            return
        fmt, run_dir = self.checkpoint_format, self.cfg.run.dir
        fmt.write(
            rundir.checkpoint_path(run_dir, self.step, fmt.suffix), self.position().to_dict(), state
        )
        rundir.prune_checkpoints(run_dir, self.cfg.run.keep_checkpoints, fmt.suffix)

    def _find_checkpoint(self, resume: str | None) -> tuple[str, RunPosition, Any] | None:
        """The checkpoint to resume from with its position and state, or ``None`` for a
        new run (``--resume auto``: the main rank picks the newest one that reads)."""
        fmt, run_dir = self.checkpoint_format, self.cfg.run.dir
        if resume is None:
            if rundir.list_checkpoints(run_dir, fmt.suffix):
                raise ValueError(
                    f"run.dir {run_dir!r} already holds checkpoints: pass --resume "
                    "auto to continue that run, or choose another run.dir"
                )
            return None
        if resume != "auto":
            check_checkpoint_path(resume, run_dir)
            return (resume, *read_checkpoint(fmt, resume))
        found: list[tuple[str, RunPosition, Any] | None] = []

        def newest() -> str | None:
            found.append(newest_readable(fmt, run_dir))
            return None if found[-1] is None else found[-1][0]

        path = self._agree(newest)
        if path is None:
            return None
        if found and found[-1] is not None and found[-1][0] == path:
            return found[-1]
        return (path, *read_checkpoint(fmt, path))

    def start_or_resume(self, resume: str | None, info: Mapping[str, Any]) -> None:
        """Continue from a checkpoint, or start the run directory (every rank calls).

        Parameters
        ----------
        resume : str or None
            ``--resume``: ``"auto"``, a checkpoint path in ``run.dir``, or ``None``.
        info : Mapping
            Extra ``run_info.json`` fields of a new run (:func:`start_run`).

        Raises
        ------
        ValueError
            A run directory that already holds checkpoints without ``resume``, an unreadable
            checkpoint, or one that cannot continue this run
            (:func:`trainers.core.checkpoints.check_resumable`).
        """
        found = self._find_checkpoint(resume)
        if found is None:
            if self.is_main:
                start_run(self.cfg, self.metrics, info)
            return
        path, saved, state = found
        check_resumable(
            self.cfg,
            path,
            saved,
            world_size=self.world_size,
            num_classes=self.num_classes,
            fingerprint=self.data_fingerprint,
        )
        self._load_checkpoint_state(state)
        self.epoch, self.batch_in_epoch = saved.epoch, saved.batch_in_epoch
        self.step, self.train_time = saved.step, saved.train_time
        if isinstance(self.sampler, StreamSampler):
            if saved.data_stream is None:
                raise CheckpointError(f"{path} holds no data stream position")
            self.sampler.check(json.loads(saved.data_stream), self.epoch, self.batch_in_epoch)
        if self.is_main:
            self.metrics.truncate(saved.metrics_count)

    # --------------------------------------------------------------------- steps
    def _eval_record(
        self,
        embeddings: np.ndarray,
        features: tuple[np.ndarray, np.ndarray] | None,
        probe_predictions: np.ndarray | None,
    ) -> dict[str, Any]:
        """:func:`eval_record` of ``self.data`` at the current position."""
        return eval_record(
            self.cfg,
            self.data,
            epoch=self.epoch,
            step=self.step,
            embeddings=embeddings,
            features=features,
            probe_predictions=probe_predictions,
        )

    def _inject_nan(self) -> bool:
        """Whether this rank poisons the loss of the coming step (``debug.nan_at_step``,
        ``debug.nan_rank``)."""
        debug = self.cfg.debug
        return debug.nan_at_step == self.step + 1 and debug.nan_rank in (None, self.rank)

    def _nonfinite(self) -> NonFiniteLoss:
        """The error of a non-finite loss in the coming step, naming the last good
        checkpoint."""
        latest = rundir.latest_checkpoint(self.cfg.run.dir, self.checkpoint_format.suffix)
        return NonFiniteLoss(
            f"non-finite loss at step {self.step + 1} (epoch {self.epoch + 1}); training "
            f"stopped on every rank; last good checkpoint: {latest or 'none'}"
        )

    def _progress_bar(self) -> Any:
        if not (self.is_main and self.cfg.run.progress):
            return None
        return tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def _logs_next_step(self) -> bool:
        """Whether the coming step is logged (then a trainer measures its loss time)."""
        every = self.cfg.run.log_every_steps
        return (self.step + 1) % every == 0 or self.batch_in_epoch + 1 == self.steps_per_epoch

    def _train_record(self, stats: Mapping[str, Any], window: list[dict[str, Any]]):
        step_time = sum(s["step_time"] for s in window)
        record = {
            "kind": "train",
            "step": self.step,
            "epoch": self.epoch + self.batch_in_epoch / self.steps_per_epoch,
            **{k: stats[k] for k in ("loss", "prediction", "sigreg", "lr")},
            "imgs_per_s": self.cfg.optim.batch_size * len(window) / step_time,
            "data_time": sum(s["data_time"] for s in window) / len(window),
            "step_time": step_time / len(window),
        }
        if self.has_probe:
            record["probe_loss"] = stats["probe_loss"]
        if stats.get("loss_time") is not None:  # measured on this (logged) step only
            record["loss_share"] = stats["loss_time"] / stats["step_time"]
        return record

    def fit(self) -> dict[str, Any]:
        """Train to the end (from wherever the state is), evaluate, plot and summarise.

        Returns
        -------
        dict
            The summary record (also appended to ``metrics.jsonl`` by the main rank).

        Raises
        ------
        NonFiniteLoss
            A NaN or infinite loss on any rank.
        """
        cfg = self.cfg
        wall_start = time.perf_counter()
        bar = self._progress_bar()
        window: list[dict[str, Any]] = []
        while self.epoch < cfg.optim.epochs:
            batches = self.sampler.batches(self.epoch, self.batch_in_epoch)
            while (fetched := _timed_next(batches)) is not None:
                batch, wait = fetched
                stats = self._train_step(batch)
                stats["data_time"] += wait  # a streamed batch not ready yet is data time
                stats["step_time"] += wait
                self.batch_in_epoch += 1
                self.train_time += stats["step_time"]
                window.append(stats)
                end_of_epoch = self.batch_in_epoch == self.steps_per_epoch
                if self.step % cfg.run.log_every_steps == 0 or end_of_epoch:
                    record = self._train_record(stats, window)
                    window.clear()
                    if self.is_main:
                        self.metrics.append(record)
                        if bar is not None:
                            bar.set_postfix(
                                loss=f"{record['loss']:.4f}",
                                imgs_s=f"{record['imgs_per_s']:.0f}",
                                data=f"{record['data_time'] / record['step_time']:.0%}",
                            )
                if bar is not None:
                    bar.update(1)
                every = cfg.run.ckpt_every_steps
                if every and self.step % every == 0 and not end_of_epoch:
                    self.save()
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            if self.epoch % cfg.eval.every_epochs == 0 or self.epoch == cfg.optim.epochs:
                record = self.evaluate()
                if self.is_main:
                    self.metrics.append(record)
                    message = ", ".join(
                        f"{k} {v:.4f}"
                        for k, v in record.items()
                        if k not in ("kind", "epoch", "step")
                    )
                    (bar.write if bar is not None else print)(
                        f"epoch {self.epoch}/{cfg.optim.epochs}: {message}"
                    )
            self.save()
        if bar is not None:
            bar.close()
        return self._finish(time.perf_counter() - wall_start)

    def _finish(self, wall_time: float) -> dict[str, Any]:
        """Spectrum, plots and the summary record (the main rank writes them)."""
        spectrum = covariance_spectrum(self._test_embeddings())
        extras = self._summary_extras()
        records = read_metrics(self.metrics.path)
        train = [r for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] == "eval"]
        images = self.step * self.cfg.optim.batch_size
        summary: dict[str, Any] = {
            "kind": "summary",
            "step": self.step,
            "epochs": self.epoch,
            "wall_time": wall_time,
            "train_time": self.train_time,
            "imgs_per_s": images / self.train_time if self.train_time > 0 else 0.0,
            "data_time_fraction": (
                sum(r["data_time"] for r in train) / max(sum(r["step_time"] for r in train), 1e-12)
            ),
            "effective_rank": effective_rank(spectrum),
        }
        for key in ("probe_acc", "knn_acc"):
            if evals and key in evals[-1]:
                summary[key] = evals[-1][key]
        summary.update(extras)
        if self.is_main:
            self.metrics.append(summary)
            run_dir = self.cfg.run.dir
            plot_losses(records, os.path.join(run_dir, "loss.png"))
            if self.has_probe:
                plot_accuracy(records, os.path.join(run_dir, "accuracy.png"))
            plot_spectrum(spectrum, os.path.join(run_dir, "spectrum.png"))
            print(_format(summary), flush=True)
        return summary
