"""Grouped batch norm against batch norm written out by hand, group by group."""

import pytest
import torch
import torchvision
from torch import nn

from densecl.models.batchnorm import GroupedBatchNorm2d, group_batch_norms

EPS, MOMENTUM = 1e-5, 0.1


def by_hand(x, weight, bias, groups):
    """Each group normalised with its own biased mean and variance over images and positions."""
    out = []
    for xs in x.chunk(groups):
        mean = xs.mean(dim=(0, 2, 3), keepdim=True)
        var = ((xs - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        out.append((xs - mean) / torch.sqrt(var + EPS) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1))
    return torch.cat(out)


def layer(channels=3, group_size=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    bn = GroupedBatchNorm2d(channels, group_size, eps=EPS, momentum=MOMENTUM).double()
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=g, dtype=torch.float64) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=g, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(channels, generator=g, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(channels, generator=g, dtype=torch.float64) + 0.5)
    return bn


@pytest.fixture(params=["eager", "traceable"])
def path(request, monkeypatch):
    """Both formulations: the eager slabs, and the one ``torch.compile`` traces (forced here without compiling)."""
    if request.param == "traceable":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    return request.param


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_output_and_gradients_are_each_group_normalised_alone(memory_format, path):
    bn = layer()
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(6, 3, 4, 5, generator=g, dtype=torch.float64) * 3 + 1).contiguous(memory_format=memory_format)
    x.requires_grad_(True)
    upstream = torch.randn(6, 3, 4, 5, generator=g, dtype=torch.float64)
    y = bn(x)
    (y * upstream).sum().backward()
    grads = x.grad.clone(), bn.weight.grad.clone(), bn.bias.grad.clone()

    x_ref = x.detach().clone().requires_grad_(True)
    w_ref, b_ref = bn.weight.detach().clone().requires_grad_(True), bn.bias.detach().clone().requires_grad_(True)
    y_ref = by_hand(x_ref, w_ref, b_ref, groups=3)
    (y_ref * upstream).sum().backward()
    assert torch.allclose(y, y_ref, atol=1e-12)
    for got, want in zip(grads, (x_ref.grad, w_ref.grad, b_ref.grad)):
        assert torch.allclose(got, want, atol=1e-10)
    assert y.is_contiguous(memory_format=memory_format)
    # a single group normalises differently: the grouping is real
    assert not torch.allclose(y, by_hand(x.detach(), bn.weight, bn.bias, groups=1), atol=1e-3)


def test_running_statistics_are_the_mean_of_each_groups_update(path):
    bn = layer()
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(4, 3, 2, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    bn(x)
    group_means = torch.stack([xs.mean(dim=(0, 2, 3)) for xs in x.chunk(2)])  # 2 x C
    group_vars = torch.stack([xs.var(dim=(0, 2, 3), unbiased=True) for xs in x.chunk(2)])  # unbiased, as BatchNorm2d
    want_mean = ((1 - MOMENTUM) * before_mean + MOMENTUM * group_means).mean(0)
    want_var = ((1 - MOMENTUM) * before_var + MOMENTUM * group_vars).mean(0)
    assert torch.allclose(bn.running_mean, want_mean, atol=1e-12)
    assert torch.allclose(bn.running_var, want_var, atol=1e-12)
    assert int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize("momentum", [MOMENTUM, None])  # None: cumulative moving average, as BatchNorm2d
def test_running_statistics_are_the_mean_of_what_batch_norm_2d_does_on_each_group(momentum, path):
    bn = layer()
    bn.momentum = momentum
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        x = torch.randn(6, 3, 2, 3, generator=g, dtype=torch.float64) * 2 + 1
        plains = []
        for xs in x.chunk(3):  # each group: a BatchNorm2d starting from the layer's statistics
            plain = nn.BatchNorm2d(3, eps=EPS, momentum=momentum).double()
            plain.load_state_dict(bn.state_dict())
            plain(xs)
            plains.append(plain)
        bn(x)
        for key in ("running_mean", "running_var"):
            want = torch.stack([getattr(p, key) for p in plains]).mean(0)
            assert torch.allclose(getattr(bn, key), want, rtol=0, atol=1e-12), key
        assert torch.equal(bn.num_batches_tracked, plains[0].num_batches_tracked)
    assert int(bn.num_batches_tracked) == 3


def test_eval_mode_and_a_single_group_are_plain_batch_norm():
    bn, plain = layer(), nn.BatchNorm2d(3, eps=EPS, momentum=MOMENTUM).double()
    plain.load_state_dict(bn.state_dict())  # the same keys
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(bn(x), plain(x), atol=1e-12)  # batch 2 = group_size: one group
    assert torch.allclose(bn.running_var, plain.running_var, atol=1e-12)
    bn.eval(), plain.eval()
    x8 = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    assert torch.equal(bn(x8), plain(x8))


def test_half_precision_input_keeps_its_dtype_and_statistics_in_float32(path):
    bn = GroupedBatchNorm2d(4, 2)
    x = torch.randn(4, 4, 3, 3).to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = bn(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16 and bn.weight.grad.dtype == torch.float32
    want = by_hand(x.detach().float(), bn.weight.detach(), bn.bias.detach(), groups=2)
    assert torch.allclose(y.float(), want, atol=0.05)


def test_a_batch_that_does_not_split_into_groups_is_refused():
    with pytest.raises(ValueError, match="does not split into groups of 4"):
        GroupedBatchNorm2d(3, 4)(torch.randn(6, 3, 2, 2))


def test_group_batch_norms_replaces_every_batch_norm_and_keeps_the_state_dict():
    net = torchvision.models.resnet18()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net.layer1[0].bn1.weight
    group_batch_norms(net, 8)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 20 and all(type(m) is GroupedBatchNorm2d and m.group_size == 8 for m in norms)
    assert net.layer1[0].bn1.weight is weight  # the same parameter objects: optimizers and EMA still see them
    after = net.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


# --------------------------------------------------------------------------- timm's batch norms


def test_timm_batch_norm_act_keeps_its_dropout_and_activation_after_the_grouped_statistics(path):
    timm_layers = pytest.importorskip("timm.layers")

    class Halve(nn.Module):  # a drop layer whose effect is visible and deterministic
        def forward(self, x):
            return 0.5 * x

    source = timm_layers.BatchNormAct2d(3, act_layer=nn.Hardtanh, drop_layer=Halve, eps=EPS, momentum=MOMENTUM)
    source = source.double()
    with torch.no_grad():
        source.weight.copy_(torch.tensor([1.5, 0.7, 2.0]))
        source.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    before = {k: v.clone() for k, v in source.state_dict().items()}
    holder = nn.Sequential(source)
    group_batch_norms(holder, 2)
    grouped = holder[0]
    assert type(grouped).__name__ == "GroupedBatchNormAct2d" and grouped.weight is source.weight
    assert list(grouped.state_dict()) == list(before)  # the same keys: checkpoints and exports unchanged

    x = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2
    want = torch.clamp(0.5 * by_hand(x, source.weight.detach(), source.bias.detach(), groups=2), -1, 1)
    assert torch.allclose(grouped(x), want, atol=1e-12)
    assert not torch.allclose(want, torch.clamp(0.5 * by_hand(x, source.weight, source.bias, groups=1), -1, 1))
    grouped.eval()
    plain = timm_layers.BatchNormAct2d(3, act_layer=nn.Hardtanh, drop_layer=Halve, eps=EPS).double().eval()
    plain.load_state_dict(grouped.state_dict())
    assert torch.equal(grouped(x), plain(x))  # eval: timm's layer exactly


def test_a_batch_norm_it_cannot_group_stops_with_its_name_and_type():
    class OwnBatchNorm(nn.BatchNorm2d):  # a forward of its own: grouping it could drop what it adds
        pass

    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.BatchNorm2d(4), OwnBatchNorm(4)))
    with pytest.raises(ValueError, match=r"cannot group batch norm layer '1\.1' \(.*OwnBatchNorm\).*none$") as error:
        group_batch_norms(net, 2)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"'0' \(torch\.nn\.modules\.batchnorm\.SyncBatchNorm\)"):
        group_batch_norms(nn.Sequential(nn.SyncBatchNorm(4)), 2)
    with pytest.raises(ValueError, match=r"'0' \(torch\.nn\.modules\.batchnorm\.BatchNorm2d\): it needs affine"):
        group_batch_norms(nn.Sequential(nn.BatchNorm2d(4, affine=False)), 2)


@pytest.mark.slow
def test_every_batch_norm_of_timm_families_is_grouped_and_convnext_has_none():
    pytest.importorskip("timm")
    from densecl.models.backbones import build_backbone
    from densecl.models.batchnorm import has_batch_norm

    for arch in ("timm/efficientnet_b0", "timm/regnetx_002", "timm/cspresnet50", "timm/resnet18d"):
        backbone = group_batch_norms(build_backbone(arch), 2)
        norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert norms and all(isinstance(m, GroupedBatchNorm2d) for m in norms), arch
    convnext = build_backbone("timm/convnext_atto")
    assert not has_batch_norm(convnext) and group_batch_norms(convnext, 2) is convnext
