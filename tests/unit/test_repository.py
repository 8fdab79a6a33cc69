"""A repository's listing, from the read script run for real on repositories laid out like
Triton's examples, and what a revision loads from it."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from specs import make_spec

from llmcanary.builders.repository import (
    MAX_CONFIG_BYTES,
    READ_SCRIPT,
    ListedModel,
    Listing,
    parse_listing,
    plan_revision,
)
from llmcanary.builders.triton_config import parse_model_config, render_model_config
from llmcanary.cli.preflight import list_repository

CONFIGS = Path(__file__).parent / "model_configs"


def layout(root: Path, models: dict[str, str | None]) -> Path:
    """A repository: each model a directory with version 1 and, unless None, a config."""
    for name, config in models.items():
        (root / name / "1").mkdir(parents=True)
        if config is not None:
            (root / name / "config.pbtxt").write_text(config)
    return root


#: An unprivileged uid to run the script as when the tests run as root (root reads any file).
NOBODY = 65534


def read(root: Path, as_user: int | None = None) -> str:
    argv = ["/bin/sh", "-c", READ_SCRIPT]
    if as_user is not None and os.geteuid() == 0:
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *argv]
    done = subprocess.run(
        argv,
        env={"MODEL_REPOSITORY_ROOT": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout


def ensemble_repository(root: Path) -> Path:
    text = (CONFIGS / "ensemble.pbtxt").read_text()
    return layout(
        root,
        {
            "ensemble": text,
            "preprocessing": (CONFIGS / "add_sub.pbtxt").read_text().replace("add_sub", "pre"),
            "tensorrt_llm": (CONFIGS / "tensorrt_llm.pbtxt").read_text(),
            "postprocessing": None,
            "unrelated": 'name: "unrelated" backend: "python"',
        },
    )


def test_the_script_lists_every_model_with_its_config_and_versions(tmp_path: Path) -> None:
    root = ensemble_repository(tmp_path)
    (root / "tensorrt_llm" / "2").mkdir()
    (root / "tensorrt_llm" / "warmup").mkdir()  # not a version
    listing = parse_listing("an image's banner\n" + read(root))
    assert listing.error is None
    assert sorted(listing.models) == [
        "ensemble",
        "postprocessing",
        "preprocessing",
        "tensorrt_llm",
        "unrelated",
    ]
    assert listing.models["tensorrt_llm"].versions == ("1", "2")
    assert listing.models["ensemble"].config == (CONFIGS / "ensemble.pbtxt").read_text()
    assert listing.models["postprocessing"].config is None


def test_a_missing_repository_and_a_cut_listing_are_errors(tmp_path: Path) -> None:
    gone = parse_listing(read(tmp_path / "nowhere"))
    assert (
        gone.error == f"no model repository at {tmp_path / 'nowhere'}: check spec.model.repository"
    )
    whole = read(layout(tmp_path / "r", {"m": 'name: "m"'}))
    assert parse_listing(whole.removesuffix("end\n")).error == (
        "the repository listing was cut short (no 'end')"
    )
    assert parse_listing("").error == "the repository read printed no listing"


def test_a_config_too_large_is_not_read(tmp_path: Path) -> None:
    root = layout(tmp_path, {"m": "#" * (MAX_CONFIG_BYTES + 1)})
    listing = parse_listing(read(root))
    assert listing.models["m"].too_large == MAX_CONFIG_BYTES + 1
    plan = plan_revision(make_spec(model={"name": "m", "repository": "/r"}), listing)
    assert [p.field for p in plan.problems] == ["config.pbtxt"]


def test_an_ensemble_loads_its_steps_with_their_own_configs(tmp_path: Path) -> None:
    listing = parse_listing(read(ensemble_repository(tmp_path)))
    spec = make_spec(model={"name": "ensemble", "repository": "pvc://m/r"}, triton={})
    plan = plan_revision(spec, listing)
    assert plan.problems == ()
    # The steps, not the unrelated model; a step without config.pbtxt is auto-completed.
    assert sorted(plan.configs) == ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm"]
    assert plan.configs["postprocessing"] is None
    step = plan.configs["tensorrt_llm"]
    assert step is not None
    assert parse_model_config(step) == parse_model_config(
        (CONFIGS / "tensorrt_llm.pbtxt").read_text()
    )
    served = plan.configs["ensemble"]
    assert served is not None and "ensemble_scheduling" in served


def test_a_step_missing_from_the_repository_is_refused(tmp_path: Path) -> None:
    root = ensemble_repository(tmp_path)
    (root / "tensorrt_llm" / "config.pbtxt").unlink()
    (root / "tensorrt_llm" / "1").rmdir()
    (root / "tensorrt_llm").rmdir()
    spec = make_spec(model={"name": "ensemble", "repository": "/r"}, triton={})
    (problem,) = plan_revision(spec, parse_listing(read(root))).problems
    assert str(problem).startswith("model ensemble: ensemble_scheduling.step: names tensorrt_llm")


@pytest.mark.parametrize(
    ("listing", "words"),
    [
        (Listing(error="no model repository at /x"), "spec.model.repository: no model repository"),
        (
            Listing(models={"other": ListedModel("other")}),
            "spec.model.name: no model directory 'tiny-llm' in pvc://models/repo (it holds other)",
        ),
        (
            Listing(models={"tiny-llm": ListedModel("tiny-llm", "max_batch_size: x")}),
            "config.pbtxt: tiny-llm/config.pbtxt:",
        ),
    ],
)
def test_what_cannot_be_loaded_says_which_field(listing: Listing, words: str) -> None:
    (problem,) = plan_revision(make_spec(), listing).problems
    assert words in str(problem)


def test_the_served_model_takes_the_spec_and_keeps_its_tensors(tmp_path: Path) -> None:
    root = layout(tmp_path, {"tiny-llm": (CONFIGS / "add_sub.pbtxt").read_text()})
    plan = plan_revision(make_spec(), parse_listing(read(root)))
    assert plan.problems == ()
    text = plan.configs["tiny-llm"]
    assert text is not None
    config = parse_model_config(text)
    assert config.name == "tiny-llm" and config.max_batch_size == 8
    assert [i.name for i in config.input] == ["INPUT0", "INPUT1"]


def test_a_local_copy_is_listed_as_the_script_lists_it(tmp_path: Path) -> None:
    root = ensemble_repository(tmp_path)
    for version in ("2", "10"):
        (root / "tensorrt_llm" / version).mkdir()
    assert list_repository(root) == parse_listing(read(root))


def test_what_triton_ignores_or_cannot_be_read_is_listed_as_such(tmp_path: Path) -> None:
    root = layout(tmp_path, {"m": 'name: "m"', "a\\tb": None})
    for version in ("0", "01", "v2", "12"):
        (root / "m" / version).mkdir()
    (root / ".git").mkdir()
    listing = parse_listing(read(root))
    assert listing == list_repository(root)
    assert listing.models["m"].versions == ("1", "12")  # Triton skips 0, 01 and v2
    assert sorted(listing.models) == ["a\\tb", "m"]  # names as they are, no hidden ones


def test_a_config_the_read_pod_cannot_open_is_named_with_the_fix() -> None:
    """As the read pod runs it: not as root (the Triton image's user), so a config.pbtxt
    only its owner may read is listed as unreadable, not as a cut listing."""
    root = Path(tempfile.mkdtemp(prefix="llmcanary-repo-", dir="/tmp"))
    try:
        root.chmod(0o755)
        layout(root, {"m": 'name: "m"', "locked": 'name: "locked"'})
        for path in root.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (root / "locked" / "config.pbtxt").chmod(0o600)
        listing = parse_listing(read(root, as_user=NOBODY))
    finally:
        shutil.rmtree(root)
    assert listing.error is None
    assert listing.models["locked"].unreadable and listing.models["m"].config == 'name: "m"'
    spec = make_spec(model={"name": "locked", "repository": "/r"})
    (problem,) = plan_revision(spec, listing).problems
    assert "model locked: config.pbtxt: the read pod" in str(problem)
    assert "cannot open it: make it readable by all" in str(problem)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("config !!!", "m: its config.pbtxt came through garbled (not base64)"),
        ("config " + base64.b64encode(b"\xff").decode(), "m: its config.pbtxt is not UTF-8"),
        ("version x", "m: a line the listing does not have: 'version x'"),
        ("toolarge", "m: a line the listing does not have: 'toolarge '"),
    ],
)
def test_a_garbled_listing_is_an_error_never_an_exception(line: str, error: str) -> None:
    listing = parse_listing(f"llmcanary-repository 1\nmodel m\n{line}\nend\n")
    assert listing.error is not None and listing.error.startswith(error)


def test_a_bls_model_loads_the_models_spec_model_loads_names(tmp_path: Path) -> None:
    """A BLS model calls other models from execute(): nothing in its config names them, so
    the spec does; each loads with its own config, the BLS model takes the spec's."""
    root = ensemble_repository(tmp_path)
    layout(root, {"tensorrt_llm_bls": (CONFIGS / "bls.pbtxt").read_text()})
    listing = parse_listing(read(root))
    bls = make_spec(
        model={
            "name": "tensorrt_llm_bls",
            "repository": "pvc://m/r",
            "loads": ["preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls"],
        },
        triton={},
    )
    plan = plan_revision(bls, listing)
    assert plan.problems == ()
    assert list(plan.configs) == [
        "tensorrt_llm_bls",
        "preprocessing",
        "tensorrt_llm",
        "postprocessing",
    ]
    assert plan.configs["tensorrt_llm"] == render_model_config(
        parse_model_config((CONFIGS / "tensorrt_llm.pbtxt").read_text())
    )
    # A name the repository lacks is refused with the field; '*' loads every model.
    typo = bls.model_copy(update={"model": bls.model.model_copy(update={"loads": ["tensorrt"]})})
    (problem,) = plan_revision(typo, listing).problems
    assert problem.field == "spec.model.loads" and "names tensorrt, not in pvc://m/r" in str(
        problem
    )
    everything = bls.model_copy(update={"model": bls.model.model_copy(update={"loads": ["*"]})})
    assert sorted(plan_revision(everything, listing).configs) == sorted(listing.models)
