"""Throughput and memory of the streamed input pipeline (``trainers.core.stream``).

Generates ``--images`` (default 20 000) small JPEGs (``--source`` px, 10 class folders) in a
temporary folder (deleted afterwards; nothing is committed), then measures

* decoded images/s with the decoding in the calling process (``workers=0``, the reference)
  and with 1 .. ``--max-workers`` worker processes: total and per worker, and the ratio to
  the reference. Each figure streams ``--measure`` images after one warm-up batch (which
  pays the worker start-up, reported separately), best of ``--reps``. On a shared machine
  wall-clock rates mostly measure the other load, so two CPU-time figures follow: images
  decoded per CPU second of a decoding process (what one worker does with a core of its
  own; the workers' CPU time less that of their start-up) and the CPU the main (training)
  process spends per 1000 images besides decoding (receiving batches);
* peak resident memory (``ru_maxrss``) of a fresh process streaming one whole epoch of the
  first ``--small`` images and of all of them: the main process and the largest worker.
  It must not grow with the number of images (the decoded images live only in the
  prefetch queues); the last column says what the in-memory float32 path would hold;
* the data-wait fraction (``data_time_fraction`` of the run summary: waiting for a batch,
  moving it to the device and making the views, over the step time) of the demo model
  (``trainers/configs/digits_demo.yaml``) trained ``--train-steps`` steps in one process on
  the in-memory digits and on the generated folder with 0 and 1 workers.

Usage::

    python benchmarks/bench_data.py                 # 20 000 images, 1..2 workers
    python benchmarks/bench_data.py --images 4000 --max-workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from trainers.core.stream import StreamLoader, TrainPlan, index_folder  # noqa: E402

BATCH = 64


def make_jpegs(root: str, count: int, side: int) -> None:
    """``count`` smooth random JPEGs of ``side`` x ``side * 3 // 4`` px in 10 class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    height = side * 3 // 4
    ramp = np.linspace(0.0, 1.0, side)[None, :, None] * np.linspace(0.5, 1.0, height)[:, None, None]
    for c in range(10):
        os.makedirs(os.path.join(root, f"class{c}"), exist_ok=True)
    for i in range(count):
        colour = rng.uniform(0, 255, 3)
        noise = rng.normal(0, 12, (height, side, 3))
        pixels = np.clip(ramp * colour + noise, 0, 255).astype(np.uint8)
        path = os.path.join(root, f"class{i % 10}", f"{i:06d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)


def loader_for(root: str, count: int, workers: int, size: int) -> StreamLoader:
    index = index_folder(root)
    index = index.subset(np.arange(min(count, len(index))))
    plan = TrainPlan(len(index), BATCH, rank=0, world_size=1, seed=0)
    return StreamLoader(index, plan, image_size=size, workers=workers, prefetch=2)


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def stream(root: str, workers: int, size: int, batches: int) -> dict[str, float]:
    """Stream ``batches`` batches after a warm-up batch: wall and CPU seconds (of this
    process and of its reaped workers) of the whole run, the streaming part alone, and the
    seconds to the first batch."""
    loader = loader_for(root, 10**9, workers, size)
    children = cpu_seconds(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    with loader.batches(0, batches + 1) as it:
        next(it)
        first = time.perf_counter() - began
        began, main_cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
        for _ in it:
            pass
        wall = time.perf_counter() - began
        main_cpu = cpu_seconds(resource.RUSAGE_SELF) - main_cpu
    return {
        "wall": wall,
        "main_cpu": main_cpu,
        "worker_cpu": cpu_seconds(resource.RUSAGE_CHILDREN) - children,
        "first": first,
    }


def throughput(root: str, workers: int, size: int, measure: int) -> dict[str, float]:
    """Images/s (wall), images per CPU second of the decoding processes, main-process CPU
    milliseconds per 1000 images besides decoding, seconds to the first batch.

    The workers' CPU for ``measure`` images is that of a run of ``measure`` images after the
    warm-up batch minus that of a run with the warm-up batch alone (start-up included)."""
    batches = measure // BATCH
    images = batches * BATCH
    run = stream(root, workers, size, batches)
    if workers:
        decode_cpu = run["worker_cpu"] - stream(root, workers, size, 0)["worker_cpu"]
        main_cpu = run["main_cpu"]
    else:
        decode_cpu, main_cpu = run["main_cpu"], 0.0
    return {
        "rate": images / run["wall"],
        "cpu_rate": images / decode_cpu,
        "main_ms": 1000 * main_cpu / images * 1000,
        "first": run["first"],
    }


def child_rss(root: str, count: int, workers: int, size: int) -> None:
    """Stream one epoch of ``count`` images; print peak RSS (MiB) of self and of a worker."""
    loader = loader_for(root, count, workers, size)
    with loader.batches(0, loader.plan.batches_per_epoch) as it:
        for _ in it:
            pass
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"main": own, "worker": worker}))


def train_run(source: str | None, workers: int, steps: int, folder: str) -> dict[str, float]:
    """The demo model (trainers/configs/digits_demo.yaml) trained for ``steps`` steps of 128
    in one process on ``source`` (``None``: the in-memory digits): the summary's
    ``data_time_fraction`` and ``imgs_per_s``."""
    run_dir = os.path.join(folder, f"run-{workers}-{source is None}")
    overrides = [
        "--config",
        os.path.join(REPO, "trainers", "configs", "digits_demo.yaml"),
        f"run.dir={run_dir}",
        "optim.epochs=1",
        "eval.every_epochs=1",
        "run.progress=false",
    ]
    if source is not None:
        overrides += [
            f"data.name={source}",
            "data.image_size=16",
            f"data.train_size={steps * 128}",
            f"data.workers={workers}",
        ]
    subprocess.run(
        [sys.executable, "-m", "trainers.torch_ddp", *overrides],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        check=True,
        capture_output=True,
    )
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        summary = [json.loads(line) for line in fh][-1]
    return {key: summary[key] for key in ("data_time_fraction", "imgs_per_s", "step")}


def peak_rss(root: str, count: int, workers: int, size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", root, str(count), str(workers), str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_table(args: argparse.Namespace, root: str) -> None:
    """Decoded images/s for 0 (in-process) to ``--max-workers`` worker processes."""
    print(
        "| workers | images/s | images/s per worker | vs in-process | images per CPU-s "
        "of a decoder | main CPU ms per 1000 images | first batch (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    reference = None
    for workers in range(0, args.max_workers + 1):
        runs = [throughput(root, workers, args.size, args.measure) for _ in range(args.reps)]
        best = {key: max(r[key] for r in runs) for key in ("rate", "cpu_rate")}
        best.update({key: min(r[key] for r in runs) for key in ("main_ms", "first")})
        reference = reference or best["rate"]
        label = "0 (in-process)" if workers == 0 else str(workers)
        print(
            f"| {label} | {best['rate']:.0f} | {best['rate'] / max(workers, 1):.0f} | "
            f"{best['rate'] / reference:.2f}x | {best['cpu_rate']:.0f} | "
            f"{best['main_ms']:.0f} | {best['first']:.2f} |"
        )


def rss_table(args: argparse.Namespace, root: str) -> None:
    """Peak RSS of one streamed epoch of ``--small`` and of ``--images`` images."""
    workers = args.max_workers
    print(f"\nPeak RSS streaming one epoch, {workers} worker(s), fresh process each:\n")
    print("| images | main (MiB) | largest worker (MiB) | in-memory float32 images (MiB) |")
    print("|---|---|---|---|")
    for count in (args.small, args.images):
        rss = peak_rss(root, count, workers, args.size)
        held = count * 3 * args.size**2 * 4 / 2**20
        print(f"| {count} | {rss['main']:.0f} | {rss['worker']:.0f} | {held:.0f} |")


def wait_table(args: argparse.Namespace, root: str) -> None:
    """The demo model's data-wait fraction, in memory and streamed."""
    print(
        f"\nDemo model (digits_demo.yaml, 1 process, 1 thread), {args.train_steps} steps "
        "of 128 at 16x16 px: share of the step time spent waiting for / preparing data\n"
    )
    print("| data | workers | steps | data-wait fraction | images/s |")
    print("|---|---|---|---|---|")
    rows = [("digits in memory", None, 0)]
    rows += [("streamed JPEG folder", f"imagefolder:{root}", w) for w in (0, 1)]
    runs = tempfile.mkdtemp(prefix="bench_data_runs_")
    for label, source, workers in rows:
        r = train_run(source, workers, args.train_steps, runs)
        shown = "-" if source is None else str(workers)
        print(
            f"| {label} | {shown} | {r['step']} | {r['data_time_fraction']:.2f} | "
            f"{r['imgs_per_s']:.0f} |"
        )
    shutil.rmtree(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--source", type=int, default=96, help="JPEG width in px")
    parser.add_argument("--size", type=int, default=32, help="decoded side in px")
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--measure", type=int, default=4096, help="images per measurement")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument(
        "--train-steps", type=int, default=20, help="steps of the demo-model run (0: skip)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, count, workers, size = args.child
        child_rss(root, int(count), int(workers), int(size))
        return
    with tempfile.TemporaryDirectory(prefix="bench_data_") as root:
        began = time.perf_counter()
        make_jpegs(root, args.images, args.source)
        print(
            f"{args.images} JPEGs of {args.source}x{args.source * 3 // 4} px written in "
            f"{time.perf_counter() - began:.1f} s; decoded to {args.size}x{args.size} RGB; "
            f"batches of {BATCH}; load average {os.getloadavg()[0]:.1f}\n"
        )
        worker_table(args, root)
        rss_table(args, root)
        if args.train_steps:
            wait_table(args, root)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
