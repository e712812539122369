"""The run loop shared by every trainer: epochs, records, progress bar, cadences, summary.

Framework-free. A trainer subclasses :class:`RunLoop` and supplies the framework parts —
one optimiser step (:meth:`RunLoop._train_step`), the evaluation (:meth:`RunLoop.evaluate`,
usually through :func:`eval_record`), checkpointing (:meth:`RunLoop.save`) and the test
embeddings (:meth:`RunLoop._test_embeddings`); :meth:`RunLoop.fit` then trains to the end
and writes the same ``metrics.jsonl`` records, progress bar, plots and summary whichever
framework computed them. The helpers below (resume decisions, the run directory's first
files, seeds) are shared in the same way.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from trainers.core import rundir
from trainers.core.config import (
    TrainConfig,
    config_from_dict,
    config_parser,
    config_to_dict,
    diff_configs,
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
    "RESUMABLE_CHANGES",
    "add_resume_argument",
    "NonFiniteLoss",
    "RunLoop",
    "check_checkpoint_path",
    "check_resumable",
    "derive_seed",
    "eval_record",
    "nonfinite_message",
    "parse_trainer_args",
    "resolve_resume",
    "run_trainer",
    "start_run",
]

RESUMABLE_CHANGES = frozenset(
    {
        "run.dir",
        "run.progress",
        "run.threads",
        "run.log_every_steps",
        "data.workers",
        "data.prefetch",
        "eval.batch_size",
        "debug.nan_at_step",
        "debug.nan_rank",
    }
)
"""Options that may differ between a checkpoint's configuration and the resuming command."""


class NonFiniteLoss(RuntimeError):
    """The loss of an optimiser step was NaN or infinite on at least one rank."""


def derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from non-negative integers (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def nonfinite_message(step: int, epoch: int, run_dir: str, ext: str = ".pt") -> str:
    """The error text of a non-finite loss at optimiser step ``step`` (1-based); ``ext``:
    the trainer's checkpoint file extension."""
    return (
        f"non-finite loss at step {step} (epoch {epoch + 1}); training stopped on every "
        f"rank; last good checkpoint: {rundir.latest_checkpoint(run_dir, ext) or 'none'}"
    )


def add_resume_argument(parser: argparse.ArgumentParser) -> None:
    """Add the trainers' ``--resume auto|CKPT`` option to ``parser``."""
    parser.add_argument(
        "--resume",
        metavar="auto|CKPT",
        help="continue a run: 'auto' takes the latest checkpoint in run.dir "
        "(and starts afresh if there is none), or give the path of a checkpoint in run.dir; "
        "repeat the run's options (a few, e.g. run.progress and debug.*, may change)",
    )


def resolve_resume(resume: str | None, latest: str | None, run_dir: str) -> str | None:
    """The checkpoint to resume from, or ``None`` for a new run.

    Parameters
    ----------
    resume : str or None
        ``--resume``: ``"auto"``, a checkpoint path, or ``None``.
    latest : str or None
        The latest checkpoint in ``run_dir``.
    run_dir : str
        ``run.dir``.

    Raises
    ------
    ValueError
        No ``--resume`` but ``run_dir`` already holds checkpoints.
    """
    if resume == "auto":
        return latest
    if resume is None and latest is not None:
        raise ValueError(
            f"run.dir {run_dir!r} already holds checkpoints: pass --resume "
            "auto to continue that run, or choose another run.dir"
        )
    return resume


def check_resumable(
    cfg: TrainConfig, path: str, saved_config: Mapping[str, Any], saved_world: int, world: int
) -> None:
    """Raise ``ValueError`` unless the checkpoint ``path`` can continue this run.

    Parameters
    ----------
    cfg : TrainConfig
        The resuming command's configuration.
    path : str
        The checkpoint (must exist and be in ``cfg.run.dir``).
    saved_config : Mapping
        The checkpoint's configuration (:func:`trainers.core.config.config_to_dict`).
    saved_world, world : int
        Data-parallel sizes of the checkpointed run and of this one.
    """
    changed = set(diff_configs(cfg, config_from_dict(saved_config))) - RESUMABLE_CHANGES
    if changed:
        raise ValueError(
            f"{path} was written with a different configuration "
            f"({', '.join(sorted(changed))} differ); "
            "resume with the run's own options (see its config.yaml)"
        )
    if saved_world != world:
        raise ValueError(
            f"{path} was written with world size {saved_world}; resume "
            f"with the same world size (now {world})"
        )


def check_checkpoint_path(path: str, run_dir: str) -> None:
    """Raise ``ValueError`` unless ``path`` is an existing file in ``run_dir``."""
    if not os.path.isfile(path):
        raise ValueError(f"--resume {path!r}: no such checkpoint")
    if os.path.realpath(os.path.dirname(path)) != os.path.realpath(run_dir):
        raise ValueError(f"--resume {path!r}: the checkpoint must be in run.dir {run_dir!r}")


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


def parse_trainer_args(
    prog: str,
    description: str,
    argv: list[str] | None,
    *,
    base: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[argparse.ArgumentParser, argparse.Namespace, TrainConfig]:
    """A trainer's command line: ``--config``, ``--resume``, overrides (exits with status 2
    and a usage message on a bad configuration).

    Parameters
    ----------
    prog, description : str
        For ``--help``.
    argv : list of str or None
        The arguments (``None``: ``sys.argv[1:]``).
    base : Mapping, optional
        This trainer's own defaults, applied before the YAML file (see
        :func:`trainers.core.config.load_config`).

    Returns
    -------
    parser, args, cfg
        The parser (for further ``parser.error`` calls), the parsed arguments (``resume``)
        and the resolved configuration.
    """
    parser = config_parser(prog, description)
    add_resume_argument(parser)
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, base=base)
    except (OSError, TypeError, ValueError) as exc:
        parser.error(str(exc))
    return parser, args, cfg


def run_trainer(
    build: Callable[[], RunLoop],
    rank: int,
    on_nonfinite: Callable[[], None] | None = None,
    *,
    who: str = "rank",
) -> int:
    """Build a trainer and fit it; the exit status: 0 done, 2 bad configuration (a
    ``TypeError``/``ValueError`` while building), 3 non-finite loss (``on_nonfinite`` runs
    after the error is printed, e.g. a barrier so that every rank reports). Errors are
    printed as ``"{who} {rank}: error: ..."``."""
    try:
        try:
            trainer = build()
        except (TypeError, ValueError) as exc:
            print(f"{who} {rank}: error: {exc}", file=sys.stderr, flush=True)
            return 2
        trainer.fit()
        return 0
    except NonFiniteLoss as exc:
        print(f"{who} {rank}: error: {exc}", file=sys.stderr, flush=True)
        if on_nonfinite is not None:
            on_nonfinite()
        return 3


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


class RunLoop(ABC):
    """Epoch/step bookkeeping of a training run and the loop that drives it.

    Subclasses set the attributes below in their constructor (before :meth:`fit`), and
    implement the abstract methods.

    Attributes
    ----------
    cfg : TrainConfig
    metrics : MetricsLog
        ``run.dir/metrics.jsonl``.
    sampler : EpochSampler or StreamSampler
        This rank's batches: sample indices of in-memory data, or decoded
        :class:`~trainers.core.stream.Batch` es of a streamed source (the time ``fit``
        waits for one counts as data time).
    is_main : bool
        Whether this rank writes files and shows the progress bar.
    has_probe : bool
        Whether the network has an online probe (labelled data).
    epoch, batch_in_epoch, step : int
        Position: epochs done, batches done in the current epoch, optimiser steps done.
    train_time : float
        Seconds spent in optimiser steps so far (over resumes).
    """

    cfg: TrainConfig
    metrics: MetricsLog
    sampler: EpochSampler | StreamSampler
    is_main: bool
    has_probe: bool
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

        Returns the step's ``loss``, ``prediction``, ``sigreg``, ``probe_loss``, ``lr``,
        ``data_time`` and ``step_time``; raises :class:`NonFiniteLoss`.
        """

    @abstractmethod
    def evaluate(self) -> dict[str, Any]:
        """The eval record of the current state (:func:`eval_record`)."""

    @abstractmethod
    def save(self) -> None:
        """Checkpoint the whole state (every rank calls)."""

    @abstractmethod
    def _test_embeddings(self) -> np.ndarray:
        """Projector outputs ``(M, D)`` of the test split's evaluation views."""

    def _summary_extras(self) -> dict[str, Any]:
        """Extra summary fields (every rank calls; default none)."""
        return {}

    def _progress_bar(self) -> Any:
        if not (self.is_main and self.cfg.run.progress):
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )

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
