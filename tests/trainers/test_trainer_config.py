"""trainers.core.config: types, ranges, unknown keys, YAML + override precedence, --help."""

from __future__ import annotations

import dataclasses

import pytest

yaml = pytest.importorskip("yaml")

from trainers.core.config import (  # noqa: E402
    TrainConfig,
    config_from_dict,
    config_to_dict,
    describe_options,
    diff_configs,
    load_config,
    parse_override,
)


def _write(tmp_path, body) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body))
    return str(path)


def test_defaults_are_the_paper_recipe():
    cfg = load_config()
    assert (cfg.views.n_global, cfg.views.n_local) == (2, 8)
    assert cfg.views.global_scale == (0.3, 1.0) and cfg.views.local_scale == (0.05, 0.3)
    assert (cfg.loss.lamb, cfg.loss.num_slices) == (0.05, 1024)
    assert cfg.augment.jitter_p == 0.8 and cfg.augment.grayscale_p == 0.2
    assert cfg.optim.final_lr_ratio == 1e-3 and cfg.eval.knn_k == 20


def test_override_values_are_typed():
    cfg = load_config(
        overrides=[
            "optim.lr=1e-3",  # YAML 1.1 reads this as a string: still a float
            "optim.epochs=7",
            "optim.grad_clip=null",
            "views.global_scale=[0.4, 1]",  # ints in a float pair
            "model.projector_dims=[64,64,16]",
            "model.timm_kwargs={patch_size: 4}",
            "run.progress=false",
            "data.name=npz:/data/x=1.npz",  # strings verbatim, '=' included
            "run.dir=123",
        ]
    )
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.epochs == 7 and cfg.optim.grad_clip is None
    assert cfg.views.global_scale == (0.4, 1.0)
    assert cfg.model.projector_dims == (64, 64, 16)
    assert cfg.model.timm_kwargs == {"patch_size": 4}
    assert cfg.run.progress is False
    assert cfg.data.name == "npz:/data/x=1.npz" and cfg.run.dir == "123"


@pytest.mark.parametrize(
    "override, error, match",
    [
        ("optim.epochs=2.5", TypeError, "optim.epochs must be int"),
        ("optim.epochs=true", TypeError, "optim.epochs must be int"),
        ("optim.lr=fast", TypeError, "optim.lr must be float"),
        ("run.progress=1", TypeError, "run.progress must be bool"),
        ("views.global_scale=[0.3]", TypeError, "views.global_scale must be"),
        ("model.projector_dims=[]", ValueError, "model.projector_dims must not be empty"),
        ("model.timm_kwargs=[1]", TypeError, "model.timm_kwargs must be mapping"),
        ("optim.lr=0", ValueError, "optim.lr must be > 0"),
        ("data.train_size=0", ValueError, "data.train_size must be >= 1"),
        ("data.train_size=1.5", TypeError, "data.train_size must be int, got 1.5"),
        ("optim.lr=.nan", ValueError, "optim.lr must be finite"),
        ("augment.jitter_p=1.5", ValueError, "augment.jitter_p must be <= 1"),
        ("views.local_scale=[0.3, 0.05]", ValueError, "views.local_scale must be an ordered pair"),
        ("run.device=tpu", ValueError, "run.device must be one of"),
        ("loss.statistic=shapiro", ValueError, "loss.statistic must be one of"),
        ("optim.lrr=1", ValueError, "unknown config option 'optim.lrr' \\(did you mean 'optim.lr'"),
        (
            "optimizer.lr=1",
            ValueError,
            "unknown config section 'optimizer' \\(did you mean 'optim'",
        ),
        ("lr=1", ValueError, "must be section.option"),
        ("optim.lr", ValueError, "must look like section.option=value"),
        ("optim.lr=[1", ValueError, "cannot read the value of optim.lr"),
    ],
)
def test_bad_overrides_name_the_option(override, error, match):
    with pytest.raises(error, match=match):
        load_config(overrides=[override])


def test_loss_engine_applies_to_epps_pulley_only():
    cfg = load_config(overrides=["loss.statistic=watson"])
    assert cfg.loss.statistic == "watson" and load_config().loss.statistic == "epps_pulley"
    with pytest.raises(ValueError, match="loss.engine='few_kernels' applies to loss.statistic"):
        load_config(overrides=["loss.statistic=watson", "loss.engine=few_kernels"])


def test_yaml_then_overrides_precedence(tmp_path):
    path = _write(tmp_path, {"optim": {"lr": 0.01, "epochs": 3}, "run": {"seed": 5}})
    cfg = load_config(path, ["optim.lr=0.02"])
    assert cfg.optim.lr == 0.02  # override beats the file
    assert cfg.optim.epochs == 3  # the file beats the default
    assert cfg.run.seed == 5 and cfg.optim.batch_size == TrainConfig().optim.batch_size
    base = config_to_dict(load_config(overrides=["optim.epochs=9", "run.seed=1"]))
    cfg = load_config(path, ["optim.lr=0.02"], base=base)
    assert (cfg.optim.epochs, cfg.run.seed, cfg.optim.lr) == (3, 5, 0.02)  # file beats base
    assert cfg.optim.batch_size == TrainConfig().optim.batch_size


@pytest.mark.parametrize(
    "body, error, match",
    [
        ("optim:\n  lrr: 0.1\n", ValueError, "unknown config option 'optim.lrr'"),
        ("optimiser:\n  lr: 0.1\n", ValueError, "unknown config section 'optimiser'"),
        ("optim: 3\n", TypeError, "config section 'optim' must be a mapping"),
        ("- 1\n- 2\n", TypeError, "must be a mapping of sections"),
        ("views:\n  n_global: 0\n", ValueError, "views.n_global must be >= 1"),
        ("data:\n  test_fraction: 0.9\n", ValueError, "data.test_fraction must be <= 0.5"),
    ],
)
def test_bad_yaml_files(tmp_path, body, error, match):
    with pytest.raises(error, match=match):
        load_config(_write(tmp_path, body))


def test_empty_yaml_file_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == TrainConfig()


def test_dict_round_trip_and_diff():
    cfg = load_config(overrides=["optim.lr=0.5", "model.projector_dims=[8, 4]"])
    values = config_to_dict(cfg)
    assert values["model"]["projector_dims"] == [8, 4]  # plain lists for YAML / torch.load
    assert config_from_dict(values) == cfg
    assert yaml.safe_load(yaml.safe_dump(values)) == values
    assert diff_configs(cfg, TrainConfig()) == ["model.projector_dims", "optim.lr"]


def test_parse_override_parts():
    assert parse_override("optim.lr=1e-3") == ("optim", "lr", "1e-3")  # converted later
    assert parse_override("optim.epochs=4") == ("optim", "epochs", 4)
    assert parse_override("data.name= digits") == ("data", "name", " digits")


def test_help_documents_every_option(capsys):
    text = describe_options()
    defaults = TrainConfig()
    for section in dataclasses.fields(defaults):
        for option in dataclasses.fields(getattr(defaults, section.name)):
            assert f"  {section.name}.{option.name} (" in text
    from trainers import torch_ddp

    with pytest.raises(SystemExit) as exc:
        torch_ddp.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "--config" in out and "optim.accum_steps" in out
    assert "debug.nan_at_step" in out


def test_cli_rejects_bad_options_with_status_2(capsys):
    from trainers import torch_ddp

    with pytest.raises(SystemExit) as exc:
        torch_ddp.main(["optim.lrr=1"])
    assert exc.value.code == 2
    assert "unknown config option 'optim.lrr'" in capsys.readouterr().err
