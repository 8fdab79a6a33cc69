"""A model repository as a read of it lists it, and the configurations a revision loads. PURE.

The operator cannot see a repository (a PersistentVolumeClaim, or a path inside the Triton
image): :data:`READ_SCRIPT` is what a pod with the repository mounted runs to list it, in
the Triton image itself (POSIX sh, coreutils' ``base64``), and :func:`parse_listing` reads
what it printed. :func:`plan_revision` then decides what the revision loads: the served
model with ``spec.triton`` overlaid on its own ``config.pbtxt``, and, for an ensemble, every
model its steps name (recursively), each with its repository configuration as it is; and
what Triton would refuse in them, before any pod of the revision exists.

The read runs in a Job per new revision (:mod:`llmcanary.builders.revision_read`), and
:func:`revision_data` is what the revision's ConfigMap keeps of the plan: its pods stage
those models with those configurations, and the environment diff compares them.

The listing, one item per line (base64 keeps a config on one line, whatever it holds)::

    llmcanary-repository 1
    model NAME
    config BASE64        when NAME/config.pbtxt exists
    toolarge BYTES       instead, when it is above MAX_CONFIG_BYTES
    version N            each numeric version directory
    end

``llmcanary preflight --repository DIR`` lists a local copy the same way
(``cli/preflight.list_repository``), and runs the same plan on it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

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
    "HEADER",
    "MAX_CONFIG_BYTES",
    "MAX_REVISION_BYTES",
    "MODELS_KEY",
    "READ_SCRIPT",
    "SERVED_KEY",
    "ListedModel",
    "Listing",
    "RevisionPlan",
    "parse_listing",
    "plan_revision",
    "revision_data",
    "staged_members",
]

#: A config.pbtxt larger than this is not read (Triton's own are a few KiB; a TensorRT-LLM
#: one with every parameter about 20).
MAX_CONFIG_BYTES = 1 << 20
HEADER = "llmcanary-repository 1"
#: What a ConfigMap holds (1 MiB in all), less room for its metadata.
MAX_REVISION_BYTES = 900 * 1024
#: The ConfigMap keys a model's name must make (``NAME.config.pbtxt``).
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MAX_KEY = 253
#: The ConfigMap's keys: the served model's config, and the other models to stage.
SERVED_KEY = "config.pbtxt"
MODELS_KEY = "models"

# printf, not echo: dash's echo (Ubuntu's /bin/sh, the Triton image's) expands
# backslashes in names. A model's config is base64 on one line, or a line saying why not;
# the commands' own complaints go to stderr, which the listing never needs.
READ_SCRIPT = f"""\
set -u
root="${{MODEL_REPOSITORY_ROOT:-}}"
if [ -z "$root" ] || [ ! -d "$root" ]; then
  printf 'error no model repository at %s: check spec.model.repository\\n' "$root"
  exit 1
fi
printf '%s\\n' "{HEADER}"
for dir in "$root"/*/; do
  [ -d "$dir" ] || continue
  printf 'model %s\\n' "$(basename "$dir")"
  file="$dir/config.pbtxt"
  if [ -f "$file" ]; then
    if [ ! -r "$file" ]; then
      printf 'unreadable\\n'
    else
      size=$(wc -c < "$file" 2>/dev/null || printf 0)
      if [ "$size" -gt {MAX_CONFIG_BYTES} ]; then
        printf 'toolarge %s\\n' "$size"
      elif encoded=$(base64 -w0 "$file" 2>/dev/null); then
        printf 'config %s\\n' "$encoded"
      else
        printf 'unreadable\\n'
      fi
    fi
  fi
  for version in "$dir"*/; do
    [ -d "$version" ] || continue
    name=$(basename "$version")
    # Triton loads numeric versions; it ignores names that start with 0.
    case "$name" in *[!0-9]* | 0*) ;; *) printf 'version %s\\n' "$name" ;; esac
  done
done
printf 'end\\n'
"""


@dataclass(frozen=True)
class ListedModel:
    name: str
    #: The text of its config.pbtxt; None when it has none (Triton auto-completes it).
    config: str | None = None
    versions: tuple[str, ...] = ()
    #: Its config.pbtxt is larger than :data:`MAX_CONFIG_BYTES`, and was not read.
    too_large: int | None = None
    #: Its config.pbtxt exists but the read could not open it (permissions).
    unreadable: bool = False


@dataclass(frozen=True)
class Listing:
    """What the read printed: the repository's models, or why there are none."""

    models: Mapping[str, ListedModel] = field(default_factory=dict)
    error: str | None = None


def parse_listing(text: str) -> Listing:
    """The listing :data:`READ_SCRIPT` prints; lines before its header (an image's banner)
    are skipped. A listing that does not end with ``end`` was cut short, and is an error;
    so is a line this parser cannot read (never an exception)."""
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
    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "end":
            if current is not None:
                models[current.name] = current
            return Listing(models=models)
        if word == "model":
            if current is not None:
                models[current.name] = current
            current = ListedModel(rest)
            continue
        if current is None:
            return Listing(error=f"the listing names no model before {line[:80]!r}")
        try:
            current = _listed(current, word, rest)
        except ValueError as error:
            return Listing(error=f"{current.name}: {error}")
    return Listing(error="the repository listing was cut short (no 'end')")


def _listed(model: ListedModel, word: str, rest: str) -> ListedModel:
    """``model`` with one more line of the listing. Raises ValueError on a bad line."""
    if word == "config":
        try:
            raw = base64.b64decode(rest, validate=True)
        except binascii.Error:
            raise ValueError("its config.pbtxt came through garbled (not base64)") from None
        try:
            return replace(model, config=raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError("its config.pbtxt is not UTF-8 text") from None
    if word == "toolarge" and rest.isascii() and rest.isdigit():
        return replace(model, too_large=int(rest))
    if word == "unreadable":
        return replace(model, unreadable=True)
    if word == "version" and rest.isascii() and rest.isdigit():
        return replace(model, versions=tuple(sorted((*model.versions, rest), key=int)))
    raise ValueError(f"a line the listing does not have: {(word + ' ' + rest)[:80]!r}")


@dataclass(frozen=True)
class RevisionPlan:
    """What a revision loads: each model's configuration, rendered (None: the model has
    none, Triton auto-completes it), and what Triton would refuse, before any pod. A model
    whose configuration cannot be used (unreadable, too large, not Triton's schema) is
    not in ``configs``; a problem names it."""

    configs: Mapping[str, str | None]
    problems: tuple[ConfigProblem, ...] = ()


def _repository_config(listed: ListedModel) -> tuple[ModelConfig | None, ConfigProblem | None]:
    """A listed model's own configuration (None: it has none), or why it cannot be used."""
    if listed.unreadable:
        why = "the read pod (the Triton image's user) cannot open it: make it readable by all"
        return None, ConfigProblem(listed.name, "config.pbtxt", why)
    if listed.too_large is not None:
        why = f"{listed.too_large} bytes, above the {MAX_CONFIG_BYTES} read: shorten it"
        return None, ConfigProblem(listed.name, "config.pbtxt", why)
    if listed.config is None:
        return None, None
    try:
        return parse_model_config(listed.config, f"{listed.name}/config.pbtxt"), None
    except ModelConfigError as error:
        return None, ConfigProblem(listed.name, "config.pbtxt", str(error))


def _steps(config: ModelConfig) -> list[str]:
    if config.platform != ENSEMBLE:
        return []
    return [step.model_name for step in config.ensemble_scheduling.step]


def plan_revision(spec: LLMDeploymentSpec, listing: Listing) -> RevisionPlan:
    """The served model with ``spec.triton`` overlaid on its repository configuration,
    and the models ``spec.model.loads`` and an ensemble's steps name (recursively) as the
    repository has them."""
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
    loads = _loaded(spec, listing)
    missing = [name for name in loads if name not in listing.models]
    if missing:
        held = ", ".join(sorted(listing.models)[:10])
        problems.append(
            ConfigProblem(
                served,
                "spec.model.loads",
                f"names {', '.join(missing)}, not in {spec.model.repository} (it holds"
                f" {held}): fix spec.model.loads",
            )
        )
    configs: dict[str, str | None] = {}
    seen: set[str] = set()
    pending = [served, *(name for name in loads if name in listing.models)]
    while pending:
        name = pending.pop(0)
        if name in seen or name not in listing.models:
            continue  # a missing step is reported by check_model_config
        seen.add(name)
        base, unusable = _repository_config(listing.models[name])
        if unusable is not None:
            problems.append(unusable)
            continue
        if name == served:
            problems.extend(check_overlay(base, spec.triton))
            base = overlay(base, spec.model, spec.triton)
        if base is None:
            configs[name] = None  # Triton auto-completes it
            continue
        if not base.name:
            base.name = name  # Triton takes the directory's name; the envdiff shows it
        problems.extend(
            check_model_config(base, gpus=spec.resources.gpus, models=listing.models.keys())
        )
        configs[name] = render_model_config(base)
        pending.extend(_steps(base))
    problems.extend(_stageable(served, configs))
    return RevisionPlan(configs, tuple(problems))


def _loaded(spec: LLMDeploymentSpec, listing: Listing) -> list[str]:
    """The models ``spec.model.loads`` names beside the served one ('*': all of them)."""
    names = spec.model.loads
    if "*" in names:
        return sorted(name for name in listing.models if name != spec.model.name)
    return [name for name in dict.fromkeys(names) if name != spec.model.name]


def _stageable(served: str, configs: Mapping[str, str | None]) -> list[ConfigProblem]:
    """What keeps the plan out of a ConfigMap: a name a key cannot carry, or too much."""
    problems = [
        ConfigProblem(
            name,
            "ensemble_scheduling.step",
            "the operator stages models whose names use only letters, digits, '-', '_' and"
            f" '.', at most {_MAX_KEY - len(SERVED_KEY) - 1} of them: rename the model"
            " directory",
        )
        for name in configs
        if name != served and (not _KEY.match(name) or len(f"{name}.{SERVED_KEY}") > _MAX_KEY)
    ]
    # What the ConfigMap holds: each config under its key, and the list of models.
    size = sum(
        len(text.encode()) + len(name) + len(SERVED_KEY) + 2
        for name, text in configs.items()
        if text is not None
    ) + sum(len(name) + 1 for name in configs)
    if size > MAX_REVISION_BYTES:
        problems.append(
            ConfigProblem(
                served,
                "config.pbtxt",
                f"the configurations of the revision's {len(configs)} models come to"
                f" {size} bytes, more than a ConfigMap holds ({MAX_REVISION_BYTES}):"
                " shorten them",
            )
        )
    return problems


def revision_data(plan: RevisionPlan, served: str) -> dict[str, str]:
    """The ConfigMap data of a plan without problems: the served model's config under
    ``config.pbtxt``; every other model, one per line, under ``models``, and its config
    under ``NAME.config.pbtxt`` when it has one (none: Triton completes it)."""
    data: dict[str, str] = {}
    served_config = plan.configs.get(served)
    if served_config is not None:
        data[SERVED_KEY] = served_config
    others = [name for name in plan.configs if name != served]
    for name in others:
        text = plan.configs[name]
        if text is not None:
            data[f"{name}.{SERVED_KEY}"] = text
    if others:
        data[MODELS_KEY] = "".join(f"{name}\n" for name in others)
    return data


def staged_members(data: Mapping[str, str]) -> dict[str, str | None]:
    """The models a revision's ConfigMap stages beside the served one (an ensemble's
    steps), each with its config (None: none, Triton completes it); the inverse of
    :func:`revision_data`. A ConfigMap made before repositories were read has none."""
    names = [name for name in data.get(MODELS_KEY, "").splitlines() if name]
    return {name: data.get(f"{name}.{SERVED_KEY}") for name in names}
