"""The same algorithm through timm: timm's ResNet-50 and torchvision's, given the same weights, train alike.

timm's ``resnet50`` is torchvision's network under the same names (its
backbone sits one level down, under ``model.``). Two DenseCL steps in float64,
with SGD between them, must give the same losses, accuracies, gradients, weights
of both encoders and queues. Any drift in how the timm backbone is wired (a
stage taken too early, a pruned layer still used, an EMA or shuffle that sees
other tensors) shows up here.
"""

import pytest
import torch

from densecl.models.densecl import DenseCL
from densecl.models.timm_backbone import PREFIX

timm = pytest.importorskip("timm")

BACKBONE = "encoder.backbone.", "momentum_encoder.backbone."


def as_timm(key: str) -> str:
    """torchvision DenseCL key -> the timm DenseCL key (the backbone's tensors one level down)."""
    for prefix in BACKBONE:
        if key.startswith(prefix):
            return prefix + PREFIX + key[len(prefix) :]
    return key


@pytest.mark.parametrize("bn_group_size, batch", [(None, 2), (2, 4)])
@pytest.mark.slow
def test_timm_resnet50_trains_as_torchvision_resnet50(bn_group_size, batch):
    kwargs = dict(hidden_dim=32, out_dim=8, queue_len=8, momentum=0.9, loss_lambda=0.5, bn_group_size=bn_group_size)
    torch.manual_seed(0)
    ours = DenseCL("resnet50", **kwargs).double().train()
    theirs = DenseCL("timm/resnet50", **kwargs).double().train()
    theirs.load_state_dict({as_timm(k): v for k, v in ours.state_dict().items()}, strict=True)
    models = ours, theirs
    optimizers = [torch.optim.SGD(m.encoder.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4) for m in models]
    g = torch.Generator().manual_seed(1)
    for step in range(2):
        im_q, im_k = (torch.randn(batch, 3, 64, 64, generator=g, dtype=torch.float64) for _ in range(2))
        outs = []
        for model, optimizer in zip(models, optimizers):
            torch.manual_seed(10 + step)  # the key shuffle of grouped batch norm draws the same permutation
            optimizer.zero_grad()
            out = model(im_q, im_k)
            out.loss.backward()
            outs.append((out, {as_timm(n) if model is ours else n: p.grad for n, p in model.named_parameters()}))
            optimizer.step()
        (a, grads_a), (b, grads_b) = outs
        for name in ("loss", "loss_global", "loss_dense", "accuracy_global", "accuracy_dense"):
            assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-10, atol=1e-12), (step, name)
        assert grads_a.keys() == grads_b.keys()
        for name, grad in grads_a.items():
            assert (grad is None) == (grads_b[name] is None), name  # the momentum encoder has none
            assert grad is None or torch.allclose(grad, grads_b[name], rtol=1e-8, atol=1e-12), (step, name)
    state_a = {as_timm(k): v for k, v in ours.state_dict().items()}
    state_b = theirs.state_dict()
    assert state_a.keys() == state_b.keys()
    for key, value in state_a.items():  # both encoders, BN statistics, the queues and their pointers
        assert torch.allclose(value.double(), state_b[key].double(), rtol=1e-8, atol=1e-12), key
    assert int(theirs.global_queue.ptr) == 2 * batch % 8
