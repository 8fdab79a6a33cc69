"""A model repository as a read of it lists it, and the configurations a revision loads. PURE.

The operator cannot see a repository (a PersistentVolumeClaim, or a path inside the Triton
image): :data:`READ_SCRIPT` is what a pod with the repository mounted runs to list it, in
the Triton image itself (POSIX sh, coreutils' ``base64``), and :func:`parse_listing` reads
what it printed. :func:`plan_revision` then decides what the revision loads: the served
model with ``spec.triton`` overlaid on its own ``config.pbtxt``, and, for an ensemble, every
model its steps name (recursively), each with its repository configuration as it is; and
what Triton would refuse in them, before any pod of the revision exists.

Not wired yet: no Job runs the script, so the operator renders the served model's
configuration from the spec alone (``builders/triton_config.py``). The listing format and
the plan are tested against the script run for real on repositories laid out like Triton's
examples (tests/unit/test_repository.py); the read Job is the open part of issue 16.

The listing, one item per line (base64 keeps a config on one line, whatever it holds)::

    llmcanary-repository 1
    model NAME
    config BASE64        when NAME/config.pbtxt exists
    toolarge BYTES       instead, when it is above MAX_CONFIG_BYTES
    version N            each numeric version directory
    end

``llmcanary preflight --repository DIR`` lists a local copy the same way
(``cli/preflight.list_repository``), and runs the same plan on it: that much is in use.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmcanary.api.spec import LLMDeploymentSpec
from llmcanary.builders.triton_checks import (
    ENSEMBLE,
    ConfigProblem,
    check_model_config,
    check_overlay,
)
from llmcanary.builders.triton_config import (
    ModelConfigError,
    overlay,
    parse_model_config,
    render_model_config,
)
from llmcanary.builders.triton_schema import ModelConfig

__all__ = [
    "MAX_CONFIG_BYTES",
    "READ_SCRIPT",
    "ListedModel",
    "Listing",
    "RevisionPlan",
    "parse_listing",
    "plan_revision",
]

#: A config.pbtxt larger than this is not read (Triton's own are a few KiB; a TensorRT-LLM
#: one with every parameter about 20).
MAX_CONFIG_BYTES = 1 << 20
HEADER = "llmcanary-repository 1"

READ_SCRIPT = f"""\
set -eu
root="$MODEL_REPOSITORY_ROOT"
if [ ! -d "$root" ]; then
  echo "error no model repository at $root: check spec.model.repository"
  exit 1
fi
echo "{HEADER}"
for dir in "$root"/*/; do
  [ -d "$dir" ] || continue
  echo "model $(basename "$dir")"
  if [ -f "$dir/config.pbtxt" ]; then
    size=$(wc -c < "$dir/config.pbtxt")
    if [ "$size" -gt {MAX_CONFIG_BYTES} ]; then
      echo "toolarge $size"
    else
      printf 'config '
      base64 -w0 "$dir/config.pbtxt"
      echo
    fi
  fi
  for version in "$dir"*/; do
    [ -d "$version" ] || continue
    name=$(basename "$version")
    case "$name" in *[!0-9]*) ;; *) echo "version $name" ;; esac
  done
done
echo "end"
"""


@dataclass(frozen=True)
class ListedModel:
    name: str
    #: The text of its config.pbtxt; None when it has none (Triton auto-completes it).
    config: str | None = None
    versions: tuple[str, ...] = ()
    #: Its config.pbtxt is larger than :data:`MAX_CONFIG_BYTES`, and was not read.
    too_large: int | None = None


@dataclass(frozen=True)
class Listing:
    """What the read printed: the repository's models, or why there are none."""

    models: Mapping[str, ListedModel] = field(default_factory=dict)
    error: str | None = None


def parse_listing(text: str) -> Listing:
    """The listing :data:`READ_SCRIPT` prints; lines before its header (an image's banner)
    are skipped. A listing that does not end with ``end`` was cut short, and is an error."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("error "):
            return Listing(error=line.removeprefix("error "))
        if line == HEADER:
            lines = lines[index + 1 :]
            break
    else:
        return Listing(error="the repository read printed no listing")
    models: dict[str, ListedModel] = {}
    current: ListedModel | None = None

    def keep() -> None:
        if current is not None:
            models[current.name] = current

    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "end":
            keep()
            return Listing(models=models)
        if word == "model":
            keep()
            current = ListedModel(rest)
        elif current is None:
            return Listing(error=f"the listing names no model before {line[:80]!r}")
        elif word == "config":
            try:
                text_of = base64.b64decode(rest, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return Listing(error=f"{current.name}/config.pbtxt is not UTF-8 text")
            current = ListedModel(current.name, text_of, current.versions)
        elif word == "toolarge":
            current = ListedModel(current.name, None, current.versions, int(rest or 0))
        elif word == "version":
            versions = tuple(sorted((*current.versions, rest), key=int))
            current = ListedModel(current.name, current.config, versions, current.too_large)
    return Listing(error="the repository listing was cut short (no 'end')")


@dataclass(frozen=True)
class RevisionPlan:
    """What a revision loads: each model's configuration, rendered (None: the model has
    none, Triton auto-completes it), and what Triton would refuse, before any pod."""

    configs: Mapping[str, str | None]
    problems: tuple[ConfigProblem, ...] = ()


def _steps(config: ModelConfig) -> list[str]:
    if config.platform != ENSEMBLE:
        return []
    return [step.model_name for step in config.ensemble_scheduling.step]


def plan_revision(spec: LLMDeploymentSpec, listing: Listing) -> RevisionPlan:
    """The served model with ``spec.triton`` overlaid on its repository configuration,
    and the models an ensemble's steps name (recursively) as the repository has them."""
    served = spec.model.name
    problems: list[ConfigProblem] = []
    if listing.error is not None:
        return RevisionPlan({}, (ConfigProblem(served, "spec.model.repository", listing.error),))
    if served not in listing.models:
        held = ", ".join(sorted(listing.models)[:10]) or "no model"
        problems.append(
            ConfigProblem(
                served,
                "spec.model.name",
                f"no model directory {served!r} in {spec.model.repository} (it holds {held}):"
                " fix spec.model.name or spec.model.repository",
            )
        )
        return RevisionPlan({}, tuple(problems))
    configs: dict[str, str | None] = {}
    pending = [served]
    while pending:
        name = pending.pop(0)
        if name in configs or name not in listing.models:
            continue  # a missing step is reported by check_model_config
        listed = listing.models[name]
        if listed.too_large is not None:
            problems.append(
                ConfigProblem(
                    name,
                    "config.pbtxt",
                    f"{listed.too_large} bytes, above the {MAX_CONFIG_BYTES} the operator"
                    " reads: shorten it",
                )
            )
            configs[name] = None
            continue
        base = None
        if listed.config is not None:
            try:
                base = parse_model_config(listed.config, f"{name}/config.pbtxt")
            except ModelConfigError as error:
                problems.append(ConfigProblem(name, "config.pbtxt", str(error)))
                configs[name] = None
                continue
        if name == served:
            problems.extend(check_overlay(base, spec.triton))
            config: ModelConfig | None = overlay(base, spec.model, spec.triton)
        else:
            config = base
        if config is None:
            configs[name] = None
            continue
        if not config.name:
            config.name = name  # Triton takes the directory's name; the envdiff shows it
        problems.extend(
            check_model_config(config, gpus=spec.resources.gpus, models=listing.models.keys())
        )
        configs[name] = render_model_config(config)
        pending.extend(_steps(config))
    return RevisionPlan(configs, tuple(problems))
