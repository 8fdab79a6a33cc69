"""The package layout rules that keep the operator importable and light."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_source_root_is_not_a_package() -> None:
    # A package named `operator` would shadow the standard library's module.
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_operator_import_path_stays_free_of_torch_and_triton() -> None:
    code = (
        "import sys, llmcanary.main, llmcanary.cli;"
        "heavy = ('torch', 'tritonclient', 'pytriton', 'numpy');"
        "bad = sorted(m for m in heavy if m in sys.modules);"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == ""


def test_the_development_stack_is_a_distribution_of_its_own() -> None:
    # llmcanary-dev (dev/) holds it, so the operator's package and image carry none of it.
    package = ROOT / "operator" / "llmcanary"
    moved = ["devcluster", "localstack", "demo", "loadgen"]
    moved += [f"cli/{name}.py" for name in ("devcluster", "stack", "demo", "bench")]
    assert [m for m in moved if (package / m).exists()] == []
    main = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0] for r in main["dependencies"]]
    assert not {"aiohttp", "rich", "cryptography"} & set(names)
    dev = tomllib.loads((ROOT / "dev" / "pyproject.toml").read_text())["project"]
    assert dev["name"] == "llmcanary-dev" and "llmcanary" in dev["dependencies"]
    commands = set(dev["entry-points"]["llmcanary.commands"])
    assert commands == {"devcluster", "stack", "demo", "bench"}


def test_importing_the_handlers_builds_no_clients() -> None:
    # Clients belong to start-up: importing main must not read a kubeconfig.
    code = (
        "import kubernetes.config as c\n"
        "def boom(*a, **k): raise SystemExit('kubeconfig loaded at import time')\n"
        "c.load_kube_config = boom; c.load_incluster_config = boom\n"
        "import llmcanary.main\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"},
    )


def test_test_module_basenames_are_unique() -> None:
    # pytest's default (rootdir-less) import mode keys test modules by basename;
    # a unit and an integration file of the same name break collection of both.
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert duplicates == []


def test_no_test_imports_helpers_from_a_conftest() -> None:
    # Every test directory has a conftest.py, all imported as "conftest": a helper
    # imported from one resolves to whichever pytest loaded first (CI broke on it).
    statement = re.compile(r"^\s*(from conftest import|import conftest\b)", re.MULTILINE)
    importers = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("*.py")
        if statement.search(p.read_text())
    ]
    assert importers == []
