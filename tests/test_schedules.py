import math

from densecl.schedules import cosine_lr, loss_lambda_at, poly_lr, warmup_step_lr


def test_cosine_lr_hand_values():
    assert cosine_lr(0, 100, 0.3) == 0.3
    assert math.isclose(cosine_lr(50, 100, 0.3), 0.15)
    assert math.isclose(cosine_lr(25, 100, 0.3), 0.15 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(100, 100, 0.3) == 0.0
    assert cosine_lr(150, 100, 0.3) == 0.0  # never negative past the end


def test_lambda_warmup():
    assert loss_lambda_at(0, 0.5, 10) == 0.0
    assert loss_lambda_at(9, 0.5, 10) == 0.0
    assert loss_lambda_at(10, 0.5, 10) == 0.5
    assert loss_lambda_at(0, 0.5, 0) == 0.5


def test_poly_lr_hand_values():
    # (0.01 - 1e-4) * (1 - s/100) ** 0.9 + 1e-4
    assert poly_lr(0, 100, 0.01, 0.9, 1e-4) == 0.01
    assert math.isclose(poly_lr(50, 100, 0.01, 0.9, 1e-4), 0.0099 * 0.5**0.9 + 1e-4)  # 0.0054053...
    assert math.isclose(poly_lr(50, 100, 0.01, 0.9, 1e-4), 0.0054052786, rel_tol=1e-8)
    assert math.isclose(poly_lr(100, 100, 0.01, 0.9, 1e-4), 1e-4)  # the floor at the end
    assert math.isclose(poly_lr(75, 100, 0.02, 1.0, 0.0), 0.005)  # power 1: a straight line


def test_warmup_step_lr_hand_values():
    def lr(s):
        return warmup_step_lr(s, 90, 0.02, warmup_steps=10, milestones=(2 / 3, 8 / 9))

    assert math.isclose(lr(0), 0.02 * 0.001)  # warm-up starts at 0.001x
    assert math.isclose(lr(5), 0.02 * (0.001 * 0.5 + 0.5))  # half way: 0.01001
    assert lr(10) == 0.02 and lr(59) == 0.02  # full rate from the end of warm-up to the first drop
    assert math.isclose(lr(60), 0.002) and math.isclose(lr(79), 0.002)  # x0.1 at 2/3 of 90
    assert math.isclose(lr(80), 0.0002) and math.isclose(lr(89), 0.0002)  # x0.01 at 8/9 of 90


def test_a_drop_inside_the_warm_up_scales_it():
    assert math.isclose(warmup_step_lr(5, 10, 1.0, warmup_steps=8, milestones=(0.5,)), 0.1 * (0.001 * 3 / 8 + 5 / 8))


def test_dense_positives_hybrid_switches_from_geometry_to_features_at_the_switch_point():
    from densecl.schedules import dense_positives_at

    assert [dense_positives_at(step, "hybrid", 3) for step in range(5)] == ["geometry"] * 3 + ["features"] * 2
    for rule in ("features", "geometry", "both"):
        assert {dense_positives_at(step, rule, 0) for step in range(4)} == {rule}
