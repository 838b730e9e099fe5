"""The one probe trainer behind linear and seg-probe: same numbers as the two loops it replaced.

The expected values were recorded from the two separate implementations
(``linear.train_linear`` with its own ``_Standardise`` and ``seg_probe._train_probe``)
before they were merged into :func:`densecl.evaluation.probe.train_probe`;
the merged code reproduced them bit for bit.
"""

import pytest
import torch
from torch import nn

from densecl.evaluation import linear, seg_probe
from densecl.evaluation import probe as probe_module
from densecl.evaluation.probe import Standardise, train_probe

TOL = dict(rel=1e-5, abs=1e-6)  # bit-identical on the recording machine; slack for other CPUs' kernels


def _linear_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g) * 3 + 1
    y = (x[:, 0] + x[:, 1] > 2).long() + (x[:, 2] > 1).long()
    return g, x, y


def test_linear_probe_reproduces_the_recorded_run():
    _, x, y = _linear_problem()
    config = linear.LinearConfig(data="unused", epochs=5, batch_size=8, lr=0.1, weight_decay=1e-4)
    model = linear.train_linear(x, y, 3, config, seed=3)
    assert model[1].weight[0].tolist() == pytest.approx(
        [
            -0.9286905527114868,
            -0.5083385705947876,
            -0.8349964022636414,
            -0.12561897933483124,
            -0.17066358029842377,
            0.10821270197629929,
        ],
        **TOL,
    )
    assert model[1].bias.tolist() == pytest.approx(
        [-0.8103423118591309, 1.0042957067489624, -0.19395317137241364], **TOL
    )
    with torch.no_grad():
        assert model(x[:1])[0].tolist() == pytest.approx(
            [1.5326011180877686, 1.7528834342956543, -2.3172950744628906], **TOL
        )
    assert not model.training


def test_seg_probe_reproduces_the_recorded_run():
    g, _, _ = _linear_problem()  # the same generator stream as the recording
    maps = [torch.randn(4, 3, 3, generator=g).half() for _ in range(6)] + [
        torch.randn(4, 2, 3, generator=g).half() for _ in range(3)
    ]
    labels = [torch.randint(0, 3, (6, 6), generator=g) for _ in range(6)] + [
        torch.randint(0, 3, (4, 6), generator=g) for _ in range(3)
    ]
    labels[0][0, :] = 255
    mean, std = seg_probe._channel_stats(maps)
    assert mean.tolist() == pytest.approx(
        [-0.13148869574069977, -0.1036965548992157, 0.08762899786233902, 0.0858219787478447], **TOL
    )
    assert std.tolist() == pytest.approx(
        [1.0596120357513428, 1.1188844442367554, 1.02753746509552, 1.0588085651397705], **TOL
    )
    config = seg_probe.SegProbeConfig(data="unused", epochs=4, batch_size=4, lr=0.1, weight_decay=1e-4)
    probe = seg_probe._train_probe(maps, labels, mean, std, 3, config, seed=5)
    conv = probe[1]
    assert conv.weight.flatten()[:4].tolist() == pytest.approx(
        [0.21156448125839233, -0.29571470618247986, 0.32608941197395325, 0.2853376567363739], **TOL
    )
    assert conv.bias.tolist() == pytest.approx(
        [-0.018385155126452446, 0.08347953855991364, -0.06509438902139664], **TOL
    )


def test_standardise_is_per_channel_for_vectors_and_maps():
    s = Standardise(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 4.0]))
    assert s(torch.tensor([[3.0, 2.0]])).tolist() == [[1.0, 1.0]]
    maps = torch.tensor([[[[5.0]], [[-6.0]]]])  # 1 x 2 x 1 x 1
    assert s(maps).flatten().tolist() == [2.0, -1.0]


def test_train_probe_seeded_init():
    """Zero epochs leave only the initialisation: uniform in +-1/sqrt(C_in) from the seed, bias 0."""
    probe = train_probe(
        nn.Linear(4, 2),
        torch.zeros(4),
        torch.ones(4),
        8,
        lambda p, i: None,
        epochs=0,
        batch_size=4,
        lr=0.1,
        weight_decay=0.0,
        seed=7,
    )
    expected = torch.empty(2, 4).uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(7))  # 1/sqrt(4) = 0.5
    assert torch.equal(probe[1].weight, expected) and probe[1].bias.tolist() == [0.0, 0.0]


def test_a_skipped_batch_still_advances_the_cosine_schedule(monkeypatch):
    steps = []
    real = probe_module.cosine_lr
    monkeypatch.setattr(probe_module, "cosine_lr", lambda s, t, b: steps.append((s, t, b)) or real(s, t, b))
    head = nn.Linear(4, 2)
    probe = train_probe(
        head,
        torch.zeros(4),
        torch.ones(4),
        8,
        lambda p, i: None,
        epochs=2,
        batch_size=3,
        lr=0.1,
        weight_decay=0.0,
        seed=0,
    )
    assert steps == [(s, 6, 0.1) for s in range(6)]  # 2 epochs x ceil(8 / 3) batches, each one step
    assert probe[1] is head
