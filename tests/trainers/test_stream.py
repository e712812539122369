"""The streamed input pipeline (trainers.core.stream) on small generated folders and shards.

Every generated image is a flat PNG whose grey value is its sample number (lossless, and a
resize keeps it), so a batch's pixels prove which files it really read.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tracemalloc
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("PIL")

from PIL import Image  # noqa: E402

from trainers.core.sampler import EpochSampler  # noqa: E402
from trainers.core.stream import (  # noqa: E402
    BadImageError,
    BadImageWarning,
    EvalPlan,
    SampleReader,
    StreamedDataset,
    StreamLoader,
    StreamSampler,
    TrainPlan,
    expand_braces,
    index_folder,
    index_shards,
    index_source,
    probe_channels,
    train_test_indices,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def png_bytes(value: int, shape: tuple[int, int] = (12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((*shape, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_folder(root, counts: dict[str, int] | int) -> list[int]:
    """Class sub-folders (``counts`` per class) or loose images; returns the grey values in
    index order (sorted class, sorted name)."""
    values = []
    groups = {"": counts} if isinstance(counts, int) else counts
    value = 0
    for folder, count in sorted(groups.items()):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for i in range(count):
            with open(os.path.join(root, folder, f"img{i:03d}.png"), "wb") as fh:
                fh.write(png_bytes(value % 256, (12 + i % 3, 10)))
            values.append(value)
            value += 1
    return values


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_shards(folder, sizes: list[int], *, labels: bool = True) -> str:
    """Tar shards of ``sizes`` samples (grey value = global sample number, label = value % 3);
    returns the brace pattern."""
    value = 0
    for number, size in enumerate(sizes):
        with tarfile.open(os.path.join(folder, f"train-{number:03d}.tar"), "w") as tar:
            for _ in range(size):
                add_member(tar, f"s{value:05d}.png", png_bytes(value))
                if labels:
                    add_member(tar, f"s{value:05d}.cls", str(value % 3).encode())
                add_member(tar, f"s{value:05d}.json", b"{}")
                value += 1
    return os.path.join(folder, f"train-{{000..{len(sizes) - 1:03d}}}.tar")


def grey_values(images: np.ndarray) -> np.ndarray:
    """The grey value of every (flat) image of a batch, checking the image is flat."""
    flat = images.reshape(len(images), -1)
    assert (flat == flat[:, :1]).all()
    return flat[:, 0].astype(np.int64)


def collect(loader: StreamLoader, start: int, stop: int) -> list:
    with loader.batches(start, stop) as batches:
        return list(batches)


# --------------------------------------------------------------------------- indexing
def test_expand_braces():
    assert expand_braces("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_braces("{x,y}{1..2}") == ["x1", "x2", "y1", "y2"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(ValueError, match="descending"):
        expand_braces("a-{3..1}.tar")
    with pytest.raises(ValueError, match="empty braces"):
        expand_braces("a-{}.tar")


def test_index_folder_labelled_unlabelled_and_errors(tmp_path):
    values = make_folder(tmp_path / "lab", {"cat": 3, "dog": 2})
    (tmp_path / "lab" / "cat" / ".hidden.png").write_bytes(b"x")
    (tmp_path / "lab" / "cat" / "notes.txt").write_text("x")
    index = index_folder(str(tmp_path / "lab"))
    assert len(index) == len(values) == 5 and index.classes == ("cat", "dog")
    np.testing.assert_array_equal(index.labels, [0, 0, 0, 1, 1])
    assert index.describe(3) == str(tmp_path / "lab" / "dog" / "img000.png")
    loose = index_folder(str(tmp_path / "lab" / "cat"))
    assert loose.labels is None and loose.num_classes == 0 and len(loose) == 3
    make_folder(tmp_path / "lab", 1)  # an image next to the class folders
    with pytest.raises(ValueError, match="both images and sub-folders"):
        index_folder(str(tmp_path / "lab"))
    with pytest.raises(ValueError, match="not a directory"):
        index_folder(str(tmp_path / "nowhere"))
    make_folder(tmp_path / "test", {"cow": 1})
    with pytest.raises(ValueError, match=r"\['cow'\] are not classes"):
        index_folder(str(tmp_path / "test"), classes=("cat", "dog"))


def test_separate_test_folder_takes_the_training_labels(tmp_path):
    make_folder(tmp_path / "train", {"a": 2, "b": 2, "c": 2})
    make_folder(tmp_path / "test", {"c": 1, "a": 1})
    train, test = train_test_indices(
        f"imagefolder:{tmp_path / 'train'}",
        f"imagefolder:{tmp_path / 'test'}",
        test_fraction=0.2,
        split_seed=0,
    )
    assert len(train) == 6 and test.classes == ("a", "b", "c")
    np.testing.assert_array_equal(test.labels, [0, 2])


def test_seeded_split_of_the_index(tmp_path):
    make_folder(tmp_path, {"a": 10, "b": 10})
    name = f"imagefolder:{tmp_path}"
    train, test = train_test_indices(name, test_fraction=0.25, split_seed=3)
    again = train_test_indices(name, test_fraction=0.25, split_seed=3)[1]
    other = train_test_indices(name, test_fraction=0.25, split_seed=4)[1]
    names = {train.names[i] for i in range(len(train))}
    held = [test.names[i] for i in range(len(test))]
    assert len(train) == 15 and len(test) == 5 and not names & set(held)
    assert held == [again.names[i] for i in range(len(again))]
    assert held != [other.names[i] for i in range(len(other))]
    assert train.fingerprint() != index_source(name).fingerprint()


def test_index_shards_reads_offsets_and_labels(tmp_path):
    pattern = make_shards(tmp_path, [4, 4, 3])
    index = index_shards(pattern)
    assert len(index) == 11 and index.num_classes == 3
    np.testing.assert_array_equal(index.labels, np.arange(11) % 3)
    np.testing.assert_array_equal(index.shard_of, [0] * 4 + [1] * 4 + [2] * 3)
    reader = SampleReader(index)
    assert reader.read(9) == png_bytes(9)
    assert index.describe(9).endswith("train-002.tar:s00009.png")
    reader.close()


def test_index_shards_errors(tmp_path):
    with pytest.raises(ValueError, match="1 shard.s. not found"):
        index_shards(str(tmp_path / "x-{0..0}.tar"))
    with tarfile.open(tmp_path / "gz.tar", "w:gz") as tar:
        add_member(tar, "a.png", png_bytes(1))
    with pytest.raises(ValueError, match="not a readable uncompressed tar"):
        index_shards(str(tmp_path / "gz.tar"))
    with tarfile.open(tmp_path / "noimage.tar", "w") as tar:
        add_member(tar, "a.cls", b"1")
    with pytest.raises(ValueError, match="'a' has no image member"):
        index_shards(str(tmp_path / "noimage.tar"))
    with tarfile.open(tmp_path / "partial.tar", "w") as tar:
        add_member(tar, "a.png", png_bytes(1))
        add_member(tar, "a.cls", b"1")
        add_member(tar, "b.png", png_bytes(2))
    with pytest.raises(ValueError, match="some samples have a 'cls' label"):
        index_shards(str(tmp_path / "partial.tar"))
    with tarfile.open(tmp_path / "badcls.tar", "w") as tar:
        add_member(tar, "a.png", png_bytes(1))
        add_member(tar, "a.cls", b"cat")
    with pytest.raises(ValueError, match="a.cls must hold a non-negative integer"):
        index_shards(str(tmp_path / "badcls.tar"))
    with pytest.raises(ValueError, match="'imagefolder:PATH' or 'shards:PATTERN'"):
        index_source("npz:/x.npz")


# ------------------------------------------------------------------------------ plans
@pytest.mark.parametrize("num_samples", [23, 24])
def test_train_plan_reads_every_sample_once_per_epoch_across_ranks(num_samples):
    plans = [TrainPlan(num_samples, 3, rank=r, world_size=2, seed=5) for r in range(2)]
    epochs = 4
    batches = -(-epochs * num_samples // 6)
    stream = np.concatenate([plan.indices(k) for k in range(batches) for plan in plans])[
        : epochs * num_samples
    ]
    orders = stream.reshape(epochs, num_samples)
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(num_samples))
    assert len({tuple(order) for order in orders}) == epochs  # a fresh shuffle per epoch
    again = TrainPlan(num_samples, 3, rank=1, world_size=2, seed=5)
    np.testing.assert_array_equal(again.indices(7), plans[1].indices(7))
    other = TrainPlan(num_samples, 3, rank=1, world_size=2, seed=6)
    assert not np.array_equal(other.indices(0), plans[1].indices(0))


def test_train_plan_equals_epoch_sampler_when_the_global_batch_divides_the_data():
    plan = TrainPlan(24, 4, rank=1, world_size=3, seed=2)
    sampler = EpochSampler(24, 4, rank=1, world_size=3, seed=2)
    for epoch in range(3):
        for i, expected in enumerate(sampler.batches(epoch)):
            np.testing.assert_array_equal(
                plan.indices(epoch * plan.batches_per_epoch + i), expected
            )


def test_plans_reject_bad_settings():
    with pytest.raises(ValueError, match="exceeds the 5 training samples"):
        TrainPlan(5, 3, rank=0, world_size=2, seed=0)
    with pytest.raises(ValueError, match="need 0 <= rank < world_size"):
        EvalPlan(5, 3, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch number"):
        TrainPlan(5, 1, rank=0, world_size=1, seed=0).indices(-1)


def test_eval_plan_covers_every_sample_once_with_unequal_shares():
    plans = [EvalPlan(11, 2, rank=r, world_size=3) for r in range(3)]
    parts = [np.concatenate([p.indices(k) for k in range(p.num_batches)]) for p in plans]
    assert [len(part) for part in parts] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(11))


# ----------------------------------------------------------------------------- loader
def test_two_ranks_read_every_shard_sample_exactly_once(tmp_path):
    """Unequal shards (5, 5, 3 samples), 2 ranks, batches of 2: 13 is no multiple of 4."""
    index = index_shards(make_shards(tmp_path, [5, 5, 3]))
    seen = []
    for rank in range(2):
        plan = TrainPlan(len(index), 2, rank=rank, world_size=2, seed=1)
        batches = collect(StreamLoader(index, plan, image_size=8, workers=0), 0, 7)
        for batch in batches:
            assert batch.images.dtype == np.uint8 and batch.images.shape == (2, 3, 8, 8)
            np.testing.assert_array_equal(grey_values(batch.images), batch.indices)
            np.testing.assert_array_equal(batch.labels, batch.indices % 3)
            np.testing.assert_array_equal(batch.indices, plan.indices(batch.number))
        seen.append(np.stack([b.indices for b in batches]))
    stream = np.concatenate([seen[0], seen[1]], axis=1).ravel()[:26]
    for epoch in stream.reshape(2, 13):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(13))


def test_resume_from_state_gives_the_uninterrupted_batches(tmp_path):
    """Workers in processes; the resumed run uses another worker count."""
    make_folder(tmp_path, {"a": 9, "b": 8})
    index = index_source(f"imagefolder:{tmp_path}")
    plan = TrainPlan(len(index), 4, rank=0, world_size=1, seed=3)
    whole = collect(StreamLoader(index, plan, image_size=6, workers=2, prefetch=2), 0, 10)
    first = StreamLoader(index, plan, image_size=6, workers=2)
    with first.batches(0, 10) as batches:
        head = [next(batches) for _ in range(6)]
        state = json.loads(json.dumps(batches.state()))
    assert state["next_batch"] == 6
    second = StreamLoader(index, plan, image_size=6, workers=1)
    tail = collect(second, second.restore(state), 10)
    assert [b.number for b in head + tail] == list(range(10))
    for a, b in zip(whole, head + tail, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    values = grey_values(np.concatenate([b.images for b in whole]))
    np.testing.assert_array_equal(values, np.concatenate([b.indices for b in whole]))


def test_without_room_in_dev_shm_batches_travel_through_pipes(tmp_path, monkeypatch):
    from trainers.core.stream import loader as loader_module

    make_folder(tmp_path, 6)
    index = index_source(f"imagefolder:{tmp_path}")
    plan = EvalPlan(len(index), 4, rank=0, world_size=1)
    monkeypatch.setattr(loader_module, "shared_memory_fits", lambda size: False)
    with pytest.warns(ResourceWarning, match="enlarge /dev/shm"):
        batches = collect(StreamLoader(index, plan, image_size=4, workers=1), 0, None)
    values = grey_values(np.concatenate([b.images for b in batches]))
    np.testing.assert_array_equal(values, np.arange(6))


def test_restore_refuses_other_data_or_settings(tmp_path):
    make_folder(tmp_path / "data", 8)
    index = index_source(f"imagefolder:{tmp_path / 'data'}")
    loader = StreamLoader(
        index, TrainPlan(8, 2, rank=0, world_size=1, seed=0), image_size=4, workers=0
    )
    state = loader.state(3)
    assert loader.restore(state) == 3
    wider = StreamLoader(
        index, TrainPlan(8, 2, rank=0, world_size=2, seed=0), image_size=4, workers=0
    )
    with pytest.raises(ValueError, match="global_batch was 2"):
        wider.restore(state)
    make_folder(tmp_path / "other", {"x": 8})
    other = index_source(f"imagefolder:{tmp_path / 'other'}")
    moved = StreamLoader(
        other, TrainPlan(8, 2, rank=0, world_size=1, seed=0), image_size=4, workers=0
    )
    with pytest.raises(ValueError, match="the data changed"):
        moved.restore(state)


def test_eval_loader_streams_every_sample_in_order(tmp_path):
    index = index_shards(make_shards(tmp_path, [4, 3], labels=False))
    plan = EvalPlan(len(index), 3, rank=0, world_size=1)
    batches = collect(StreamLoader(index, plan, image_size=5, channels=1, workers=0), 0, None)
    assert [len(b.indices) for b in batches] == [3, 3, 1] and batches[0].labels is None
    assert batches[0].images.shape == (3, 1, 5, 5)
    np.testing.assert_array_equal(
        grey_values(np.concatenate([b.images for b in batches])), np.arange(7)
    )


def write_bad_files(root) -> list[str]:
    """A folder of 10 good images and 2 bad ones (not an image; a truncated JPEG)."""
    make_folder(root, 10)
    (root / "img100.png").write_bytes(b"definitely not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buffer, format="JPEG")
    (root / "img101.jpg").write_bytes(buffer.getvalue()[:200])
    return [str(root / "img100.png"), str(root / "img101.jpg")]


def test_bad_files_are_named_counted_and_skipped(tmp_path):
    bad = write_bad_files(tmp_path)
    index = index_source(f"imagefolder:{tmp_path}")
    plan = TrainPlan(len(index), 4, rank=0, world_size=1, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with StreamLoader(index, plan, image_size=4, workers=0).batches(0, 3) as batches:
            out = list(batches)
            assert batches.skipped == 2
    messages = [str(w.message) for w in caught if issubclass(w.category, BadImageWarning)]
    assert len(messages) == 2
    assert any(bad[0] in m and "not an image format" in m for m in messages)
    assert any(bad[1] in m for m in messages)
    indices = np.concatenate([b.indices for b in out])
    assert sorted(indices[indices >= 0].tolist()) == list(range(10))  # every good file once
    assert (indices == -1).sum() == 2 and all(b.images.shape == (4, 3, 4, 4) for b in out)
    for batch in out:  # a filled slot holds another image of its batch
        values = grey_values(batch.images)
        good = batch.indices >= 0
        np.testing.assert_array_equal(values[good], batch.indices[good])
        assert set(values[~good]) <= set(batch.indices[good])


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_files_fatal_when_asked(tmp_path, workers):
    bad = write_bad_files(tmp_path)
    index = index_source(f"imagefolder:{tmp_path}").subset(np.array([10, 0, 1, 11]))
    loader = StreamLoader(
        index,
        EvalPlan(4, 2, rank=0, world_size=1),
        image_size=4,
        workers=workers,
        bad_files="fail",
    )
    with pytest.raises(BadImageError, match=f"{bad[0]}: not an image format"):
        collect(loader, 0, None)
    only_bad = index_source(f"imagefolder:{tmp_path}").subset(np.array([10, 11]))
    skipping = StreamLoader(only_bad, EvalPlan(2, 2, rank=0, world_size=1), image_size=4, workers=0)
    with pytest.raises(BadImageError, match="none of its 2 files is readable"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadImageWarning)
            collect(skipping, 0, None)


def test_default_workers_share_the_cpus_among_the_ranks_of_a_machine(monkeypatch):
    from trainers.core.stream import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers() == 7
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert default_workers() == 1


def test_loader_rejects_bad_options(tmp_path):
    make_folder(tmp_path, 4)
    index = index_source(f"imagefolder:{tmp_path}")
    plan = EvalPlan(4, 2, rank=0, world_size=1)
    for kwargs, match in [
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"bad_files": "ignore"}, "bad_files must be one of"),
        ({"workers": -1}, "workers must be >= 0"),
        ({"image_size": 0}, "image_size must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            StreamLoader(index, plan, **{"image_size": 4, **kwargs})
    with pytest.raises(ValueError, match="plan is for 5 samples"):
        StreamLoader(index, EvalPlan(5, 2, rank=0, world_size=1), image_size=4)


def test_import_loads_no_framework():
    code = (
        "import sys, trainers.core.stream; "
        "print(sorted(m for m in ('torch', 'jax', 'cupy', 'grain') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert out.stdout.strip() == "[]"


def traced_peak(root, count: int) -> int:
    """Peak traced allocation while streaming one epoch of ``count`` 32x32 images."""
    make_folder(root, count)
    index = index_source(f"imagefolder:{root}")
    plan = TrainPlan(len(index), 10, rank=0, world_size=1, seed=0)
    loader = StreamLoader(index, plan, image_size=32, workers=0)
    tracemalloc.start()
    try:
        with loader.batches(0, plan.batches_per_epoch) as batches:
            for _ in batches:
                pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_images(tmp_path):
    small = traced_peak(tmp_path / "small", 40)
    large = traced_peak(tmp_path / "large", 400)
    all_decoded = 400 * 3 * 32 * 32  # what holding the dataset would take
    assert large - small < 0.1 * all_decoded, (small, large)


# ---------------------------------------------------------------- run-loop adapters
def test_streamed_dataset_probes_channels_and_estimates_stats(tmp_path):
    make_folder(tmp_path / "rgb", {"a": 6, "b": 6})
    os.makedirs(tmp_path / "grey")
    for i in range(5):
        Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(tmp_path / "grey" / f"{i}.png")
    rgb = index_source(f"imagefolder:{tmp_path / 'rgb'}")
    grey = index_source(f"imagefolder:{tmp_path / 'grey'}")
    assert probe_channels(rgb) == 3 and probe_channels(grey) == 1
    data = StreamedDataset.build(grey, grey, image_size=4, seed=0, stats_samples=100)
    values = np.arange(5) * 40 / 255.0
    np.testing.assert_allclose(data.mean, [values.mean()], rtol=1e-6)
    np.testing.assert_allclose(data.std, [values.std()], rtol=1e-6)
    assert data.channels == 1 and not data.labelled and data.num_classes == 0
    labelled = StreamedDataset.build(rgb, rgb.subset(np.arange(3)), image_size=4, seed=0)
    assert labelled.labelled and labelled.num_classes == 2 and len(labelled.test_labels) == 3
    assert labelled.channel_stats()[0].shape == (3,)


def test_stream_sampler_runs_through_epochs_and_resumes_mid_epoch(tmp_path):
    make_folder(tmp_path, {"a": 7, "b": 6})
    index = index_source(f"imagefolder:{tmp_path}")
    data = StreamedDataset.build(index, index, image_size=4, seed=0)

    def sampler() -> StreamSampler:
        plan = TrainPlan(len(index), 2, rank=0, world_size=2, seed=1)
        options = SimpleNamespace(workers=0, prefetch=1, bad_files="skip")
        return StreamSampler(data.loader(plan, options), 3)

    whole = sampler()
    assert whole.batches_per_epoch == 3
    seen = [b for epoch in range(3) for b in whole.batches(epoch)]
    assert [b.number for b in seen] == list(range(9))
    resumed = sampler()
    tail = list(resumed.batches(1, 2)) + list(resumed.batches(2))
    for a, b in zip(seen[5:], tail, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
    whole.close()
    resumed.close()


def test_map_images_of_a_stream_equals_the_folder_loaded_in_memory(tmp_path):
    """The features path of eval_linear/the trainers: ``fn`` of every image in order, in
    batches, equal (to uint8 rounding) for the streamed folder and the same folder in memory."""
    from trainers.core.datasets import load_dataset
    from trainers.core.stream import map_images

    make_folder(tmp_path, {"a": 7, "b": 6})
    options = SimpleNamespace(workers=0, prefetch=2, bad_files="skip")
    memory = load_dataset(f"imagefolder:{tmp_path}", test_fraction=0.25, split_seed=3, image_size=6)
    train, test = train_test_indices(f"imagefolder:{tmp_path}", test_fraction=0.25, split_seed=3)
    streamed = StreamedDataset.build(train, test, image_size=6, seed=0)
    calls = []

    def fn(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return images.reshape(len(images), -1).mean(axis=1, keepdims=True)

    for split in ("train", "test"):
        expected = map_images(memory, split, fn, batch_size=4, options=options)
        got = map_images(streamed, split, fn, batch_size=4, options=options)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert got.shape == (len(train) if split == "train" else len(test), 1)
    assert max(calls) == 4
    assert len(np.unique(np.round(got * 255))) == len(test)  # every image its own grey value
