"""``eval det``'s schedule: each detector's published recipe fills what the command line leaves out."""

from __future__ import annotations

import dataclasses

import pytest

from densecl.cli.eval import protocol_parser
from densecl.errors import InputError
from densecl.evaluation.det_config import DetConfig, changed_from_recipe, lr_drops, recipe_line, recipe_record
from densecl.schedules import warmup_step_lr


def config_of(*flags: str) -> DetConfig:
    """The config ``densecl eval det --weights w --data d FLAGS`` runs with (as the CLI builds it)."""
    args = protocol_parser("det").parse_args(["--weights", "w", "--data", "d", *flags])
    return DetConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DetConfig)})


def test_c4_without_schedule_flags_is_mocos_voc_recipe():
    # pascal_voc_R_50_C4_24k_moco: MAX_ITER 24000, IMS_PER_BATCH 16, BASE_LR 0.02, WARMUP_ITERS 100,
    # STEPS (18000, 22000), MIN_SIZE_TRAIN (480, 512, ..., 800), MIN_SIZE_TEST 800, MAX_SIZE 1333,
    # PRECISE_BN 200 iterations, WEIGHT_DECAY 1e-4, WEIGHT_DECAY_NORM 0
    c = config_of("--detector", "c4")
    assert (c.iters, c.batch_size, c.lr, c.warmup_iters) == (24000, 16, 0.02, 100)
    assert c.lr_steps == (0.75, 0.916667) and lr_drops(c) == [18000, 22000]
    assert c.min_size == (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800) and c.min_size[-1] == 800
    assert (c.max_size, c.precise_bn_iters, c.weight_decay, c.norm_weight_decay) == (1333, 200, 1e-4, 0.0)
    lr = [warmup_step_lr(s, c.iters, c.lr, c.warmup_iters, c.lr_steps) for s in (17999, 18000, 21999, 22000)]
    assert lr == pytest.approx([0.02, 0.002, 0.002, 0.0002])
    assert changed_from_recipe(c) == {}


def test_fpn_keeps_the_coco_defaults():
    c = config_of()
    assert (c.detector, c.iters, c.batch_size, c.lr, c.warmup_iters) == ("fpn", 90000, 16, 0.02, 1000)
    assert (c.min_size, c.max_size, c.precise_bn_iters) == ((800,), 1333, 0)
    lr = [warmup_step_lr(s, c.iters, c.lr, c.warmup_iters, c.lr_steps) for s in (59999, 60000, 79999, 80000)]
    assert lr == pytest.approx([0.02, 0.002, 0.002, 0.0002])  # detectron2's 1x drops, not at 60003 and 80001
    assert c.weight_decay == c.norm_weight_decay == 1e-4  # one decay for every parameter
    assert config_of("--weight-decay", "5e-4").norm_weight_decay == 5e-4  # and it follows --weight-decay


def test_a_given_flag_always_wins():
    c = config_of("--detector", "c4", "--iters", "100", "--min-size", "64", "--norm-weight-decay", "1e-4")
    assert (c.iters, c.min_size, c.norm_weight_decay) == (100, (64,), 1e-4)
    assert (c.warmup_iters, c.precise_bn_iters, c.max_size) == (100, 200, 1333)  # the rest stays the recipe's
    assert lr_drops(c) == [75, 92]  # the fractions apply to the given --iters: round(0.75 * 100), round(0.916667 * 100)
    assert changed_from_recipe(c) == {
        "iters": {"given": 100, "recipe": 24000},
        "min_size": {"given": (64,), "recipe": tuple(range(480, 801, 32))},
        "norm_weight_decay": {"given": 1e-4, "recipe": 0.0},
    }
    assert DetConfig(data="d", detector="c4", iters=0).iters == 0  # a falsy value given is still given


def test_the_recipe_is_one_line_naming_every_value_and_what_was_given_instead():
    assert recipe_line(config_of("--detector", "c4")) == (
        "det recipe c4 (MoCo's pascal_voc_R_50_C4_24k_moco): 24000 iterations, batch 16, lr 0.02, warm-up 100, "
        "lr x0.1 at 18000 and 22000, training sizes 480..800 step 32, test size 800, max size 1333, Precise BN 200, "
        "weight decay 0.0001 (norm layers 0)"
    )
    line = recipe_line(config_of("--detector", "c4", "--iters", "2", "--min-size", "64"))
    assert "\n" not in line and line.endswith(
        "; given instead: iters 2 (recipe 24000), min_size 64 (recipe 480..800 step 32)"
    )
    record = recipe_record(config_of("--detector", "c4"))
    assert record["name"] == "MoCo's pascal_voc_R_50_C4_24k_moco" and record["lr_drops_at"] == [18000, 22000]
    assert (record["test_size"], record["changed"]) == (800, {})


def test_help_names_each_recipes_value_and_no_none():
    text = protocol_parser("det").format_help()
    flat = " ".join(text.split())
    assert "training iterations (default: the --detector's recipe: fpn 90000, c4 24000)" in flat
    assert "c4 480..800 step 32" in flat and "(default: None)" not in flat
    from densecl.evaluation import registry

    description = " ".join(registry.load("det").description.split())
    assert "ImageNet's RGB mean" not in description and "the backbone's own mean and std" in description


def test_an_empty_size_list_is_one_line():
    with pytest.raises(InputError, match="--min-size is empty"):
        DetConfig(data="d", min_size=())
