"""`pip install -e .` must give a working CLI: every third-party import is a core dependency.

(`make demo` once failed on a fresh clone because svm imported scikit-learn,
which only an extra installed.)
"""

import ast
import re
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
DISTRIBUTION = {"yaml": "pyyaml", "PIL": "pillow", "skimage": "scikit-image", "sklearn": "scikit-learn"}
# imported only inside a guarded path that says what to install
OPTIONAL = {"timm", "safetensors", "tensorboard", "tifffile", "imagecodecs", "pydicom"}


def third_party_imports() -> set[str]:
    names = set()
    for path in (ROOT / "src" / "densecl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "densecl"}


def test_every_import_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["dependencies"]}
    missing = {n for n in third_party_imports() if DISTRIBUTION.get(n, n).lower() not in core} - OPTIONAL
    assert not missing, f"imported but not in [project] dependencies: {sorted(missing)}"


@pytest.mark.slow
def test_the_cli_loads_only_the_named_subcommand_and_torch_only_when_needed():
    import subprocess

    probe = (
        "import sys; from densecl.cli import build_parser; import densecl; build_parser(only='plot'); "
        "print(sorted(m for m in sys.modules if m.startswith('densecl.cli.')), 'torch' in sys.modules, "
        "densecl.DenseCL.__name__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == [
        "['densecl.cli.plot']",
        "False",
        "DenseCL",
        "True",
    ]  # torch arrives with the first use of densecl.DenseCL


def test_the_image_readers_packages_are_the_extras_their_errors_name():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"tifffile", "imagecodecs"} <= set(extras["tiff"]) and "pydicom" in extras["dicom"]
    named = {  # the extra each reader's one-line error tells the user to install
        path.name: set(re.findall(r'missing_extra\([^,]+, "(\w+)", "(\w+)"', path.read_text()))
        for path in (ROOT / "src" / "densecl" / "inputs" / "files").glob("*.py")
    }
    pairs = set().union(*named.values())
    assert pairs == {("tifffile", "tiff"), ("imagecodecs", "tiff"), ("pydicom", "dicom")}
    assert all(package in extras[extra] for package, extra in pairs)
