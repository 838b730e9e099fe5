"""``--compile``: inductor's encoders train as the eager ones, grouped batch norm too; a failure names its cause."""

import copy
import shutil

import pytest
import torch
from torch import nn

from densecl.models.densecl import DenseCL
from densecl.precision import Precision, compile_encoders, failure_line

FP32 = Precision(None, "cpu")


def tiny_densecl(bn_group_size: int | None = 2) -> DenseCL:
    """Two conv-BN-ReLU blocks to stride 32: what the compiled code path meets in a ResNet (grouped batch norm
    between convolutions, both heads, the queues), with few enough kernels that inductor builds them in seconds."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=4, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=8, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
    )
    backbone.out_channels = 16
    return DenseCL(hidden_dim=16, out_dim=8, queue_len=16, backbone=backbone, bn_group_size=bn_group_size)


def step(model: DenseCL, optimizer: torch.optim.Optimizer, views: tuple[torch.Tensor, torch.Tensor], seed: int):
    """One step of SGD on ``views``; its loss. The same seed for both models: the same key shuffle."""
    torch.manual_seed(seed)
    loss = model(*views).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def sgd(model: DenseCL) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.encoder.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def assert_states_close(got: DenseCL, want: DenseCL, which=lambda key: True) -> None:
    state = got.state_dict()
    assert state.keys() == want.state_dict().keys()
    for key, value in want.state_dict().items():
        if which(key):
            torch.testing.assert_close(state[key], value, atol=1e-4, rtol=1e-4, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.slow
@pytest.mark.timeout(600)  # inductor compiles both encoders' graphs with the C++ compiler
def test_inductor_compiled_encoders_with_grouped_batch_norm_train_as_the_eager_ones():
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("inductor on a CPU needs a C++ compiler; none on PATH")
    torch._dynamo.reset()
    eager = tiny_densecl().to(memory_format=torch.channels_last)
    compiled = copy.deepcopy(eager)
    graphs = []

    def inductor(gm, example_inputs):  # inductor itself, counting the graphs it is given
        from torch._inductor.compile_fx import compile_fx

        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    lines = []
    assert compile_encoders(compiled, 4, 64, True, FP32, lines.append, backend=inductor), lines
    assert lines == [] and compiled.encoder._compiled_call_impl is not None
    # both encoders, each one graph: no graph break, so every grouped batch norm ran inside inductor's code
    assert len(graphs) == 2 and not torch._dynamo.utils.counters["graph_break"]

    g = torch.Generator().manual_seed(2)
    views = [
        tuple(torch.randn(4, 3, 64, 64, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(2))
        for _ in range(2)
    ]
    optimizers = sgd(eager), sgd(compiled)
    # step 1: the loss, then every tensor of the state: updated weights of both encoders, running statistics, queues
    first, got = step(eager, optimizers[0], views[0], 1), step(compiled, optimizers[1], views[0], 1)
    torch.testing.assert_close(got, first, atol=1e-4, rtol=1e-4)
    assert_states_close(compiled, eager)
    # step 2 runs the compiled graphs on the updated weights (held stale, the loss would move by about 0.1); this
    # tiny model's second step amplifies float32 rounding (1e-6 relative noise in the weights moves its loss by
    # about 5e-4 and its gradients by up to 30 %, eagerly too): its loss and its forward's statistics are compared
    want, got = step(eager, optimizers[0], views[1], 2), step(compiled, optimizers[1], views[1], 2)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
    assert_states_close(compiled, eager, lambda key: "running_" in key)
    assert len(graphs) == 2  # the trial step's graphs served the training steps: no recompilation
    # and the grouping matters at this size: one group of 4 trains otherwise
    plain = tiny_densecl(None).to(memory_format=torch.channels_last)
    assert not torch.allclose(step(plain, sgd(plain), views[0], 1), first, atol=1e-3)


@pytest.mark.slow
def test_a_backend_that_fails_costs_one_line_naming_the_cause_not_the_first_line():
    def broken(gm, example_inputs):
        raise RuntimeError(
            "lowering the graph failed\n"
            "  graph():\n"
            "    %x : [num_users=1] = placeholder[target=x]\n"
            "NotImplementedError: aten.native_batch_norm.out writes into a view of an input\n"
            "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace"
        )

    torch._dynamo.reset()
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=32, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    backbone.out_channels = 8
    model = DenseCL(hidden_dim=8, out_dim=4, queue_len=8, backbone=backbone, bn_group_size=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    assert not compile_encoders(model, 4, 64, True, FP32, lines.append, backend=broken)
    assert lines == [
        "densecl pretrain: --compile failed (BackendCompilerFailed: RuntimeError: NotImplementedError: "
        "aten.native_batch_norm.out writes into a view of an input); training eagerly"
    ]
    assert model.encoder._compiled_call_impl is None  # eager again, and the state as it was
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_failure_line_follows_the_chain_to_the_cause_and_keeps_the_start_of_a_long_line():
    assert failure_line(RuntimeError("no C++ compiler found\ndetails")) == "RuntimeError: no C++ compiler found"
    try:
        try:
            raise OSError("g++: not found")
        except OSError as cause:
            raise ValueError("compiling failed") from cause
    except ValueError as e:
        assert failure_line(e) == "ValueError: OSError: g++: not found"
    quoted = RuntimeError("\n  File 'x.py', line 3\nAssertionError: n=copy_, n.args[0]=select\nmore")
    assert failure_line(quoted) == "RuntimeError: AssertionError: n=copy_, n.args[0]=select"
    long = failure_line(AssertionError("n=copy__3, n.args[0]=select_7, placeholders={" + "p, " * 500 + "}"), limit=80)
    assert len(long) == 80 and long.startswith("AssertionError: n=copy__3, n.args[0]=select_7") and long.endswith("...")
    assert failure_line(RuntimeError()) == "RuntimeError"
