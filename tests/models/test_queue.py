import pytest
import torch

from densecl.models.queue import KeyQueue


def test_fifo_wraps_around():
    queue = KeyQueue(dim=2, length=4)
    batches = [
        torch.tensor([[1.0, 0.0], [2.0, 0.0]]),
        torch.tensor([[3.0, 0.0], [4.0, 0.0]]),
        torch.tensor([[5.0, 0.0], [6.0, 0.0]]),
    ]
    queue.enqueue(batches[0])
    assert int(queue.ptr) == 2
    queue.enqueue(batches[1])
    assert int(queue.ptr) == 0  # wrapped
    assert queue.keys[0].tolist() == [1.0, 2.0, 3.0, 4.0]
    queue.enqueue(batches[2])  # overwrites the oldest two
    assert queue.keys[0].tolist() == [5.0, 6.0, 3.0, 4.0]
    assert int(queue.ptr) == 2


def test_initial_keys_are_unit_columns_and_saved():
    queue = KeyQueue(dim=8, length=16)
    assert torch.allclose(queue.keys.norm(dim=0), torch.ones(16))
    assert set(queue.state_dict()) == {"keys", "ptr"}
    assert queue.ptr.dtype == torch.long and queue.ptr.shape == (1,)


def test_batch_must_divide_the_length():
    queue = KeyQueue(dim=2, length=6)
    with pytest.raises(ValueError, match="not divisible"):
        queue.enqueue(torch.zeros(4, 2))
