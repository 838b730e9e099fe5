"""The protocol registry: every registered protocol's parser builds, and the CLI imports only the protocol it runs."""

import dataclasses
import json
import subprocess
import sys

import pytest

from densecl.cli.eval import protocol_parser
from densecl.evaluation import options, registry

PROTOCOL_MODULES = {entry.module for entry in registry.PROTOCOLS.values()}


def _modules_after(code: str) -> dict:
    """Runs ``code`` in a fresh interpreter; which protocol modules (and torch) it loaded."""
    probe = (
        "import json, sys\n"
        "from densecl.cli import build_parser\n"
        f"{code}\n"
        f"print(json.dumps({{'protocols': sorted(m for m in sys.modules if m in {sorted(PROTOCOL_MODULES)!r}), "
        "'torch': 'torch' in sys.modules, 'sklearn': 'sklearn' in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_eval_svm_imports_the_svm_module_and_no_other_protocol():
    loaded = _modules_after(
        "args = build_parser(only='eval').parse_args(['eval', 'svm', '--weights', 'random', '--data', 'x'])\n"
        "assert args.protocol == 'svm' and args.costs == (0.01, 0.1, 1.0, 10.0, 100.0), args"
    )
    assert loaded["protocols"] == ["densecl.evaluation.svm"]
    assert not loaded["sklearn"]  # scikit-learn waits for the SVMs themselves


@pytest.mark.slow
def test_eval_det_help_imports_only_det():
    loaded = _modules_after(
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()) as help_text, contextlib.suppress(SystemExit):\n"
        "    build_parser(only='eval').parse_args(['eval', 'det', '--help'])\n"
        "assert '--warmup-iters' in help_text.getvalue() and 'Faster R-CNN' in help_text.getvalue()"
    )
    assert loaded["protocols"] == ["densecl.evaluation.det"]


def test_eval_help_lists_every_protocol_without_importing_any():
    loaded = _modules_after(
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()) as help_text, contextlib.suppress(SystemExit):\n"
        "    build_parser(only='eval').parse_args(['eval', '--help'])\n"
        "from densecl.evaluation.registry import PROTOCOLS\n"
        "assert all(name in help_text.getvalue() and e.help[:30] in help_text.getvalue() for name, e in "
        "PROTOCOLS.items())"
    )
    assert loaded == {"protocols": [], "torch": False, "sklearn": False}


@pytest.mark.parametrize("name", list(registry.PROTOCOLS))
def test_every_registered_protocol_builds_its_parser(name):
    protocol = registry.load(name)
    assert protocol.name == name and dataclasses.is_dataclass(protocol.config)
    assert callable(protocol.load_data) and callable(protocol.evaluate) and protocol.description
    for field in dataclasses.fields(protocol.config):
        assert field.metadata.get("help"), f"{name}: field {field.name} has no help"
    args = protocol_parser(name).parse_args(["--weights", "random", "--data", "root"])
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(protocol.config)}
    assert values.pop("device") == "auto"  # the command line's default; the library's is cpu
    assert protocol.config(**values) == protocol.config(data="root")  # flags default to the dataclass defaults


def test_choices_come_from_the_config_fields():
    parser = protocol_parser("det")
    assert parser.parse_args(["--weights", "w", "--data", "d", "--norm", "frozen", "--task", "mask"]).norm == "frozen"
    with pytest.raises(SystemExit):
        parser.parse_args(["--weights", "w", "--data", "d", "--norm", "groupnorm"])
    args = protocol_parser("svm").parse_args(["--weights", "w", "--data", "d", "--ap", "11point", "--costs", "0.5,2"])
    assert args.ap == "11point" and args.costs == (0.5, 2)


def test_only_torchrun_protocols_are_fine_tuning():
    assert {n for n in registry.PROTOCOLS if registry.load(n).torchrun} == {"seg-finetune", "det"}


def test_an_unregistered_name_is_a_key_error():
    with pytest.raises(KeyError, match="no evaluation protocol 'nope'"):
        registry.load("nope")


@pytest.mark.parametrize("cores, workers", [(1, 0), (2, 1), (3, 2), (5, 4), (64, 4)])
def test_default_workers_leave_a_core_to_the_main_process(monkeypatch, cores, workers):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert options.default_workers() == workers
