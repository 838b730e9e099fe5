"""Runs ``densecl`` with a fault injected at one point: the fault matrix's child process (tests only).

    python tests/_faults.py KIND N RANK -- pretrain ...densecl arguments...
    torchrun --standalone --nproc_per_node 2 --max-restarts 1 tests/_faults.py step 3 1 -- pretrain ...

KIND, with N counting from 1:

    step     SIGKILL right after the metrics line of step N (lines written after the last checkpoint)
    write    SIGKILL halfway through writing the N-th checkpoint (a partial temporary file stays behind)
    rename   SIGKILL after the N-th checkpoint is written and synced, before it is renamed over the old one

Only rank RANK (-1: any) is killed, and only in torchrun's first attempt. Nothing
in ``src/`` knows about this file: it wraps the functions the run calls.
"""

import io
import os
import signal
import sys

import torch

from densecl import checkpoint, training_log
from densecl.cli import main

kind, n, rank = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
assert sys.argv[4] == "--"
armed = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" and rank in (-1, int(os.environ.get("RANK", "0")))
saves = 0


def die() -> None:
    if armed:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


if kind == "step":
    write = training_log.MetricsLog.write

    def write_then_die(self, record):
        write(self, record)
        if record.get("step") == n and "loss" in record:
            die()

    training_log.MetricsLog.write = write_then_die
elif kind == "write":
    save = torch.save

    def half_a_save(obj, f, *args, **kwargs):
        global saves
        saves += 1
        if saves < n or not armed:
            return save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        f.flush()
        os.fsync(f.fileno())
        die()

    torch.save = half_a_save
elif kind == "rename":
    replace = os.replace

    def die_before_rename(src, dst):
        global saves
        if os.path.basename(dst) == checkpoint.CHECKPOINT_NAME:
            saves += 1
            if saves == n:
                die()
        return replace(src, dst)

    checkpoint.os.replace = die_before_rename
else:
    raise SystemExit(f"unknown fault {kind}")

sys.exit(main(sys.argv[5:]))
