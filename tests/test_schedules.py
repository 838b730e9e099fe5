import math

from densecl.schedules import cosine_lr, loss_lambda_at


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
