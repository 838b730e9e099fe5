"""DenseCL against an independent, loop-by-loop implementation of the authors' algorithm.

The reference below works on a state dict in the authors' layout
(``encoder_q.0.*``, ``encoder_q.1.mlp(2).*``, ``encoder_k.*``, ``queue``,
``queue2``) with plain torchvision and functional ops, and computes every logit with
Python loops, so it shares nothing with the model code but torchvision.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from densecl import DenseCL

ARCH, HIDDEN, OUT, QLEN, N, SIZE = "resnet18", 16, 8, 24, 4, 64  # 64 px -> 2x2 C5


def authors_state_dict(seed: int = 0) -> dict:
    """A random checkpoint in the authors' layout whose momentum encoder differs from the query encoder."""
    g = torch.Generator().manual_seed(seed)
    net = torchvision.models.resnet18()
    backbone = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    sd = {}
    for enc in ("encoder_q", "encoder_k"):
        for k, v in backbone.items():
            if v.is_floating_point():
                v = v + 0.05 * torch.randn(v.shape, generator=g) if "running_var" not in k else v.abs() + 0.5
            sd[f"{enc}.0.{k}"] = v.clone()
        sd[f"{enc}.1.mlp.0.weight"] = 0.1 * torch.randn(HIDDEN, 512, generator=g)
        sd[f"{enc}.1.mlp.0.bias"] = 0.1 * torch.randn(HIDDEN, generator=g)
        sd[f"{enc}.1.mlp.2.weight"] = 0.3 * torch.randn(OUT, HIDDEN, generator=g)
        sd[f"{enc}.1.mlp.2.bias"] = 0.1 * torch.randn(OUT, generator=g)
        sd[f"{enc}.1.mlp2.0.weight"] = 0.1 * torch.randn(HIDDEN, 512, 1, 1, generator=g)
        sd[f"{enc}.1.mlp2.0.bias"] = 0.1 * torch.randn(HIDDEN, generator=g)
        sd[f"{enc}.1.mlp2.2.weight"] = 0.3 * torch.randn(OUT, HIDDEN, 1, 1, generator=g)
        sd[f"{enc}.1.mlp2.2.bias"] = 0.1 * torch.randn(OUT, generator=g)
    for k in backbone:
        sd[f"backbone.{k}"] = sd[f"encoder_q.0.{k}"]
    sd["queue"] = F.normalize(torch.randn(OUT, QLEN, generator=g), dim=0)
    sd["queue2"] = F.normalize(torch.randn(OUT, QLEN, generator=g), dim=0)
    sd["queue_ptr"] = torch.tensor([8])
    sd["queue2_ptr"] = torch.tensor([8])
    return {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}


def reference_step(sd: dict, im_q, im_k, m: float, tau: float, lam: float) -> dict:
    """One DenseCL step the way the paper and the authors describe it, written out by hand."""
    sd = copy.deepcopy(sd)
    trunk_params = {n for n, _ in torchvision.models.resnet18().named_parameters() if not n.startswith("fc.")}
    head_params = {f"1.{h}.{i}.{w}" for h in ("mlp", "mlp2") for i in (0, 2) for w in ("weight", "bias")}

    def encode(prefix, x):
        net = torchvision.models.resnet18().double().train()
        net.fc = torch.nn.Identity()
        trunk = {k[len(prefix) + 3 :]: v for k, v in sd.items() if k.startswith(prefix + ".0.")}
        net.load_state_dict(trunk, strict=False)
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        c5 = net.layer4(net.layer3(net.layer2(net.layer1(h))))
        for k, v in net.state_dict().items():  # BN running stats move with the forward
            if f"{prefix}.0.{k}" in sd:
                sd[f"{prefix}.0.{k}"] = v

        def w(name):
            return sd[f"{prefix}.1.{name}"]

        g = F.linear(
            F.relu(F.linear(c5.mean((2, 3)), w("mlp.0.weight"), w("mlp.0.bias"))), w("mlp.2.weight"), w("mlp.2.bias")
        )
        d = F.conv2d(F.relu(F.conv2d(c5, w("mlp2.0.weight"), w("mlp2.0.bias"))), w("mlp2.2.weight"), w("mlp2.2.bias"))
        return g, d.flatten(2), c5.flatten(2)

    q, r, fq = encode("encoder_q", im_q)
    for name in trunk_params:  # EMA, parameters only, after the query forward
        sd[f"encoder_k.0.{name}"] = m * sd[f"encoder_k.0.{name}"] + (1 - m) * sd[f"encoder_q.0.{name}"]
    for name in head_params:
        sd[f"encoder_k.{name}"] = m * sd[f"encoder_k.{name}"] + (1 - m) * sd[f"encoder_q.{name}"]
    with torch.no_grad():
        k, t, fk = encode("encoder_k", im_k)
    k2 = F.normalize(t.mean(2), dim=1)
    q, r, fq, k, t, fk = (F.normalize(x, dim=1) for x in (q, r, fq, k, t, fk))

    def ce0(logits):  # cross-entropy with target 0
        return -(logits[0] - torch.logsumexp(logits, 0))

    queue, queue2 = sd["queue"], sd["queue2"]
    n_img, _, s = r.shape
    lg = torch.stack([ce0(torch.cat([(q[n] @ k[n])[None], q[n] @ queue]) / tau) for n in range(n_img)]).mean()
    acc_g = (
        sum(float(q[n].detach() @ k[n]) >= float((q[n].detach() @ queue).max()) for n in range(n_img)) / n_img
    )  # top-1
    rows, right = [], 0
    for n in range(n_img):
        for i in range(s):
            sims = [float(fq[n, :, i].detach() @ fk[n, :, j]) for j in range(s)]
            j = max(range(s), key=lambda jj: sims[jj])
            rows.append(ce0(torch.cat([(r[n, :, i] @ t[n, :, j])[None], r[n, :, i] @ queue2]) / tau))
            right += float(r[n, :, i].detach() @ t[n, :, j]) >= float((r[n, :, i].detach() @ queue2).max())
    ld = torch.stack(rows).mean()

    p = int(sd["queue_ptr"])
    sd["queue"][:, p : p + n_img] = k.T
    sd["queue2"][:, p : p + n_img] = k2.T
    sd["queue_ptr"] = torch.tensor([(p + n_img) % queue.shape[1]])
    sd["queue2_ptr"] = sd["queue_ptr"].clone()
    for key in [k for k in sd if k.startswith("backbone.")]:  # the authors' twin is the same module
        sd[key] = sd["encoder_q.0." + key[len("backbone.") :]]
    return {
        "loss": (1 - lam) * lg + lam * ld,
        "loss_global": lg,
        "loss_dense": ld,
        "accuracy_global": torch.tensor(acc_g, dtype=torch.float64),
        "accuracy_dense": torch.tensor(right / len(rows), dtype=torch.float64),
        "state": sd,
    }


def make_model(**kw) -> DenseCL:
    return DenseCL(ARCH, hidden_dim=HIDDEN, out_dim=OUT, queue_len=QLEN, **kw).double()


def views(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 3, SIZE, SIZE, generator=g, dtype=torch.float64), torch.randn(
        N, 3, SIZE, SIZE, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize("lam", [0.5, 0.0, 1.0])
@pytest.mark.slow
def test_one_step_matches_the_reference(lam):
    sd = authors_state_dict()
    im_q, im_k = views()
    model = make_model(momentum=0.99, loss_lambda=lam).train()
    model.load_authors_state_dict(sd)
    out = model(im_q, im_k)
    ref = reference_step(sd, im_q, im_k, m=0.99, tau=0.2, lam=lam)
    dense = ("loss_dense", "accuracy_dense")
    for name in ("loss", "loss_global", "accuracy_global") + (dense if lam else ()):
        assert torch.allclose(getattr(out, name).double(), ref[name], atol=1e-10), name
    after = model.authors_state_dict()
    if lam == 0:  # MoCo-v2 at its own cost: the reference's dense head and dense queue are not there
        assert out.loss_dense is None and out.accuracy_dense is None
        assert set(ref["state"]) - set(after) == {k for k in ref["state"] if ".mlp2." in k or k.startswith("queue2")}
    assert set(after) <= set(ref["state"])
    for key, value in after.items():
        assert torch.allclose(value.to(ref["state"][key].dtype), ref["state"][key], atol=1e-10), key


def test_loss_is_weighted_sum_and_backward_reaches_only_the_online_encoder():
    model = make_model(loss_lambda=0.3).train()
    out = model(*views())
    assert torch.allclose(out.loss, 0.7 * out.loss_global + 0.3 * out.loss_dense)
    out.loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.momentum_encoder.parameters())


def test_lambda_zero_builds_and_calls_no_dense_head(monkeypatch):
    from densecl.models import heads

    def no_call(*args, **kwargs):
        raise AssertionError("the dense head was called")

    monkeypatch.setattr(heads.DenseHead, "forward", no_call)
    monkeypatch.setattr(heads.DenseHead, "pool", no_call)
    model = make_model(loss_lambda=0.0).train()
    assert model.encoder.dense_head is None and model.momentum_encoder.dense_head is None
    assert model.dense_queue is None and not any("dense" in k for k in model.state_dict())
    out = model(*views())
    assert out.loss_dense is None and torch.equal(out.loss, out.loss_global)
    assert int(model.global_queue.ptr) == N
    with pytest.raises(ValueError, match="built with loss_lambda 0"):
        model(*views(), loss_lambda=0.5)
    with_head = make_model(loss_lambda=0.5)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in with_head.parameters())


@pytest.mark.slow
def test_lambda_zero_is_moco_v2():
    sd = authors_state_dict(3)
    model = make_model(loss_lambda=0.0).train()
    model.load_authors_state_dict(sd)
    im_q, im_k = views(2)
    out = model(im_q, im_k)
    # MoCo-v2 by hand: keys from the EMA'd key encoder, logits [q.k, q.queue] / 0.2
    ref = reference_step(sd, im_q, im_k, m=0.999, tau=0.2, lam=0.0)
    assert torch.allclose(out.loss, ref["loss_global"], atol=1e-10)


@pytest.mark.slow
def test_per_step_lambda_and_momentum_override_the_defaults():
    sd = authors_state_dict(4)
    im_q, im_k = views(4)
    model = make_model(loss_lambda=0.5, momentum=0.999).train()
    model.load_authors_state_dict(sd)
    out = model(im_q, im_k, momentum=0.5, loss_lambda=0.25)
    ref = reference_step(sd, im_q, im_k, m=0.5, tau=0.2, lam=0.25)
    assert torch.allclose(out.loss, ref["loss"], atol=1e-10)


@pytest.mark.slow
def test_ema_update_covers_parameters_of_backbone_and_both_heads():
    model = make_model(momentum=0.9).train()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.1)
    q_before = {n: p.clone() for n, p in model.encoder.named_parameters()}
    k_before = {n: p.clone() for n, p in model.momentum_encoder.named_parameters()}
    model(*views())
    for n, p in model.momentum_encoder.named_parameters():
        assert torch.allclose(p, 0.9 * k_before[n] + 0.1 * q_before[n]), n


@pytest.mark.slow
def test_keys_come_from_the_momentum_encoder():
    """Perturbing the online weights must not change the keys (m = 1: no EMA)."""
    a = make_model(momentum=1.0).train()
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in b.encoder.parameters():
            p.mul_(-3.0)
    im_q, im_k = views()
    a(im_q, im_k)
    b(im_q, im_k)
    assert torch.equal(a.global_queue.keys, b.global_queue.keys)
    assert torch.equal(a.dense_queue.keys, b.dense_queue.keys)
    c = copy.deepcopy(a)
    with torch.no_grad():
        for p in c.momentum_encoder.parameters():
            p.mul_(-3.0)
    a(im_q, im_k)
    c(im_q, im_k)
    assert not torch.allclose(a.global_queue.keys, c.global_queue.keys)


@pytest.mark.slow
def test_dense_negatives_come_from_the_dense_queue():
    model = make_model().train()
    im_q, im_k = views()
    base = copy.deepcopy(model)(im_q, im_k)
    other = copy.deepcopy(model)
    other.dense_queue.keys.copy_(F.normalize(torch.randn_like(other.dense_queue.keys), dim=0))
    changed = other(im_q, im_k)
    assert torch.equal(base.loss_global, changed.loss_global)
    assert not torch.allclose(base.loss_dense, changed.loss_dense)


def test_eval_mode_updates_nothing():
    model = make_model().eval()
    before = copy.deepcopy(model.state_dict())
    model(*views())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_queues_advance_by_the_batch_and_hold_normalised_keys():
    model = make_model().train()
    model(*views())
    assert int(model.global_queue.ptr) == N and int(model.dense_queue.ptr) == N
    assert torch.allclose(model.global_queue.keys[:, :N].norm(dim=0), torch.ones(N, dtype=torch.float64))
    assert torch.allclose(model.dense_queue.keys[:, :N].norm(dim=0), torch.ones(N, dtype=torch.float64))


@pytest.mark.parametrize("grid, size, cells", [(None, 64, 4), (None, 96, 9), (1, 96, 1), (2, 128, 4), (3, 64, 9)])
def test_head_shapes_and_grid_pooling(grid, size, cells):
    model = DenseCL(ARCH, hidden_dim=HIDDEN, out_dim=OUT, queue_len=QLEN, num_grid=grid)
    x = torch.randn(2, 3, size, size)
    q, r, f = model.encoder(x)
    assert q.shape == (2, OUT)
    assert r.shape == (2, OUT, cells)
    assert f.shape == (2, 512, cells)  # matching features pooled to the same grid
    out = model.train()(x, torch.randn(2, 3, size, size))
    assert torch.isfinite(out.loss)


@pytest.mark.slow
def test_authors_layout_round_trip_keeps_the_momentum_encoder():
    sd = authors_state_dict(5)
    model = make_model()
    model.load_authors_state_dict({"state_dict": sd})
    assert not torch.equal(model.encoder.backbone.conv1.weight, model.momentum_encoder.backbone.conv1.weight)
    back = model.authors_state_dict()
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_authors_loader_is_strict():
    from densecl.errors import InputError

    sd = authors_state_dict(6)
    model = make_model()
    with pytest.raises(InputError, match="outside the DenseCL layout"):
        model.load_authors_state_dict({**sd, "encoder_q.2.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="Missing"):
        model.load_authors_state_dict({k: v for k, v in sd.items() if k != "queue2"})
    bad = dict(sd)
    bad["backbone.conv1.weight"] = sd["backbone.conv1.weight"] + 1
    with pytest.raises(InputError, match=r"backbone\.conv1\.weight should be a copy of encoder_q\.0\.conv1\.weight"):
        model.load_authors_state_dict(bad)


def test_authors_table_covers_every_key_of_the_model_once():
    """Each key of DenseCL.state_dict() has exactly one authors' name, and the names map back."""
    from densecl.models.authors_layout import PARTS

    keys = make_model().state_dict().keys()
    for key in keys:
        names = [n for p in PARTS if (n := p.rename(key, "ours", "authors")) is not None]
        assert len(names) == 1, key
        assert [n for p in PARTS if (n := p.rename(names[0], "authors", "ours")) is not None] == [key]
    assert all(any(p.rename(k, "ours", "authors") for k in keys) for p in PARTS)  # no part is dead
    assert PARTS[0].rename("encoder.backbone.layer1.0.bn1.running_mean", "ours", "authors") == (
        "encoder_q.0.layer1.0.bn1.running_mean"
    )
    assert PARTS[6].rename("queue", "authors", "ours") == "global_queue.keys"
    assert PARTS[6].rename("queue2", "authors", "ours") is None  # exact buffer names, not prefixes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss_lambda": 1.5}, "loss_lambda"),
        ({"momentum": -0.1}, "momentum"),
        ({"temperature": 0.0}, "temperature"),
        ({"num_grid": 0}, "num_grid"),
        ({"arch": "vgg16"}, "unknown backbone"),
    ],
)
def test_constructor_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenseCL(**{"arch": ARCH, "hidden_dim": HIDDEN, "out_dim": OUT, "queue_len": QLEN, **kwargs})


def test_half_precision_autocast_keeps_losses_in_fp32():
    model = DenseCL(ARCH, hidden_dim=HIDDEN, out_dim=OUT, queue_len=QLEN).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, x.clone())
    assert out.loss.dtype == torch.float32 and math.isfinite(out.loss.item())
    assert model.global_queue.keys.dtype == torch.float32
