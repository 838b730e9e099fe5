import pytest

from densecl import config
from densecl.config import PretrainConfig, c5_side, stage_side
from densecl.errors import InputError


def test_every_recipe_loads_and_validates():
    names = config.recipe_names()
    assert {
        "densecl_r50_imagenet_200ep",
        "densecl_r50_coco_800ep",
        "mocov2_r50_imagenet_200ep",
        "mocov2_r50_coco_800ep",
        "demo_cpu",
    } <= set(names)
    for name in names:
        cfg = config.from_dict(config.load_recipe(name), name)
        cfg.validate(world_size=1)


def test_recipes_follow_the_paper():
    imagenet = config.from_dict(config.load_recipe("densecl_r50_imagenet_200ep"))
    coco = config.from_dict(config.load_recipe("densecl_r50_coco_800ep"))
    moco = config.from_dict(config.load_recipe("mocov2_r50_coco_800ep"))
    assert (imagenet.lr, imagenet.batch_size, imagenet.crop_size, imagenet.epochs) == (0.03, 256, 224, 200)
    assert (coco.lr, coco.epochs, coco.loss_lambda) == (0.3, 800, 0.5)
    assert moco.loss_lambda == 0.0 and {
        k: v for k, v in moco.to_dict().items() if k not in ("loss_lambda", "output_dir")
    } == {k: v for k, v in coco.to_dict().items() if k not in ("loss_lambda", "output_dir")}
    assert imagenet.weight_decay == 1e-4 and imagenet.temperature == 0.2 and imagenet.queue_len == 65536


def test_lr_scales_linearly_with_the_global_batch():
    assert PretrainConfig(lr=0.03, batch_size=256).scaled_lr == 0.03
    assert PretrainConfig(lr=0.3, batch_size=32).scaled_lr == pytest.approx(0.0375)


def test_c5_side():
    assert [c5_side(s) for s in (224, 96, 64, 33, 32)] == [7, 3, 2, 2, 1]
    assert [stage_side(192, k) for k in range(4)] == [48, 24, 12, 6]  # C2 .. C5 at 192 px
    assert stage_side(161, 2) == 11  # 161 -> 81 -> 41 -> 21 -> 11: each step rounds up


@pytest.mark.parametrize(
    "values, message",
    [
        ({"loss_lambda": 1.2}, "loss_lambda must be in"),
        ({"loss_lambda": -0.1}, "loss_lambda must be in"),
        (
            {"queue_len": 1000, "batch_size": 256},
            "queue_len 1000 is not a positive multiple of the global batch size 256; "
            "choose one \\(e.g. 768\\) or --queue-len auto",
        ),
        (
            {"sync_bn": True},
            "sync_bn is refused in pre-training: SyncBN normalises the whole global batch, which undoes shuffle-BN",
        ),
        (
            {"bn_group_size": 12, "batch_size": 32},
            "bn_group_size 12 must be >= 2 and divide the batch of each process, 32",
        ),
        ({"bn_group_size": 1, "batch_size": 32}, "bn_group_size 1 must be >= 2"),
        ({"crop_size": 32}, "at least 2x2"),
        ({"precision": "fp8"}, "precision must be"),
        (
            {"dense_queue_len": 1000, "batch_size": 256},
            "dense_queue_len 1000 must be a positive multiple of the global batch size 256",
        ),
        ({"dense_matching": "optical-flow"}, "dense_matching must be one of features, geometry, hybrid, both"),
        ({"dense_matching": "hybrid"}, "dense_matching_switch 0 goes with dense_matching hybrid"),
        (
            {"dense_matching_switch": 100},
            "dense_matching_switch 100 goes with dense_matching hybrid \\(got features\\)",
        ),
        ({"dense_matching": "geometry", "loss_lambda": 0.0}, "dense_matching geometry needs a dense loss"),
    ],
)
def test_invalid_configs_give_one_clear_line(values, message):
    with pytest.raises(InputError, match=message) as e:
        PretrainConfig(**values).validate()
    assert "\n" not in str(e.value)


def test_bn_groups_must_divide_each_process_batch():
    PretrainConfig(batch_size=256, bn_group_size=32).validate(world_size=1)  # 8 groups of 32 on one GPU
    PretrainConfig(batch_size=256, bn_group_size=32).validate(world_size=8)  # the authors' 8 x 32: one group each
    with pytest.raises(InputError, match=r"divide the batch of each process, 16 \(batch_size 256 over 16 processes\)"):
        PretrainConfig(batch_size=256, bn_group_size=32).validate(world_size=16)


def test_the_large_recipes_normalise_groups_of_32_as_the_authors_gpus():
    for name in (
        "densecl_r50_imagenet_200ep",
        "mocov2_r50_imagenet_200ep",
        "densecl_r50_coco_800ep",
        "mocov2_r50_coco_800ep",
    ):
        assert config.from_dict(config.load_recipe(name)).bn_group_size == 32, name


def test_auto_queue_length_is_the_largest_batch_multiple_below_the_image_count():
    cfg = config.from_dict({"queue_len": "auto", "dense_queue_len": "AUTO", "batch_size": "32"})
    cfg.validate()
    assert (cfg.queue_len, cfg.dense_queue_len) == ("auto", "auto")
    assert cfg.with_queues_for(2400).queue_len == 2368  # 74 x 32 < 2400 (not 2400 itself)
    assert cfg.with_queues_for(2401).dense_queue_len == 2400
    assert cfg.with_queues_for(10**7).queue_len == 65536  # never more than the paper's
    assert cfg.with_queues_for(40).queue_len == 32  # at least one batch
    fixed = config.from_dict({"queue_len": 1024, "batch_size": 32}).with_queues_for(100)
    assert fixed.queue_len == 1024 and fixed.dense_queue_len is None  # only auto is resolved
    with pytest.raises(InputError, match="queue_len in x must be of type int or auto, got 'many'"):
        config.from_dict({"queue_len": "many"}, "x")


def test_batch_must_split_over_ranks():
    with pytest.raises(InputError, match="not divisible by the 3 processes"):
        PretrainConfig(batch_size=256).validate(world_size=3)


def test_unknown_key_in_a_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("arch: resnet18\nlearning_rate: 0.1\n")
    with pytest.raises(InputError, match="unknown config key.*learning_rate.*r.yaml"):
        config.load_recipe(str(path))


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(InputError, match="demo_cpu"):
        config.load_recipe("no_such_recipe")


def test_values_are_coerced_to_field_types():
    cfg = config.from_dict({"weight_decay": "1e-4", "num_grid": "none", "channels_last": "false", "epochs": "3"})
    assert cfg.weight_decay == 1e-4 and cfg.num_grid is None and cfg.channels_last is False and cfg.epochs == 3
    with pytest.raises(InputError, match="epochs .* must be of type int"):
        config.from_dict({"epochs": "many"})


def test_a_schedule_point_past_the_runs_end_stops_with_one_line():
    cfg = PretrainConfig(epochs=10, dense_matching="hybrid", dense_matching_switch=300)
    cfg.validate()
    cfg.check_schedule(iters_per_epoch=31)  # 310 iterations: the switch falls inside
    with pytest.raises(InputError, match=r"^dense_matching_switch 300 is not before the run's end at iteration 300 "):
        cfg.check_schedule(iters_per_epoch=30)
    # a run stopped by max_iters goes on when resumed: its switch point may lie past the stop
    PretrainConfig(epochs=10, max_iters=200, dense_matching="hybrid", dense_matching_switch=250).check_schedule(30)
    with pytest.raises(InputError, match="^lambda_warmup_iters 500 is not before"):
        PretrainConfig(epochs=10, lambda_warmup_iters=500).check_schedule(iters_per_epoch=30)
