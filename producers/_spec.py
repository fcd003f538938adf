"""Recipe files: YAML lists of recipes with parameter sweeps, planned into versioned recipes.

A recipes file::

    recipes:
      - producer: random                 # a producer name (``pertstore producers ls``) or "module:Class"
        source: "random-{dim}-s{seed}"   # formatted with the parameters and the context
        params: {dim: 128}
        sweep: {seed: [0, 1, 2]}         # the grid: one recipe per combination
      - producer: string-spectral
        source: string-spectral
        inputs: {network: "${data}/network/9606.protein.links.v12.0.txt.gz"}
      - producer: fm-target
        source: "fm-target-{context}"
        inputs: {genes: "set:string-spectral"}      # another set: source, source@version or source:tag
        contexts: [A549, K562, MCF7]                # one recipe per context

``${data}`` is the data directory (``PERTSTORE_DATA_DIR``); relative file paths are relative to
the recipes file.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pertstore.producers._base import Producer
from pertstore.producers._registry import get_producer
from pertstore.store import Recipe, check_names, file_sha256
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pertstore._config import get_settings
from pertstore.errors import InvalidInputError

SET_PREFIX = "set:"


class RecipeSpec(BaseModel):
    """One entry of a recipes file, after sweeps and contexts are expanded."""

    model_config = ConfigDict(extra="forbid")

    producer: str
    source: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    context: str = ""
    tags: list[str] = Field(default_factory=list)
    max_failed: float | None = Field(None, ge=0.0, le=1.0)
    """This recipe's allowed fraction of failed entities (default: the job's)."""


class _Entry(RecipeSpec):
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    contexts: list[str] = Field(default_factory=list)


@dataclass
class PlannedRecipe:
    """A recipe ready to run: the versioned recipe plus where its inputs are."""

    spec: RecipeSpec
    recipe: Recipe
    files: dict[str, str] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)

    @property
    def producer_cls(self) -> type[Producer]:
        return get_producer(self.spec.producer)

    def to_json(self) -> dict:
        return {
            "spec": self.spec.model_dump(mode="json"),
            "recipe": self.recipe.model_dump(mode="json"),
            "files": self.files,
            "sets": self.sets,
        }

    @classmethod
    def from_json(cls, doc: dict) -> PlannedRecipe:
        return cls(
            RecipeSpec.model_validate(doc["spec"]),
            Recipe.model_validate(doc["recipe"]),
            dict(doc["files"]),
            dict(doc["sets"]),
        )


def load_recipes(
    source: str | Path | list | dict, *, data_dir: str | None = None, max_recipes: int | None = None
) -> list[RecipeSpec]:
    """Read a recipes file (path, YAML text, or parsed list/dict) into expanded recipe specs.

    Raises :class:`InvalidInputError` before expanding anything when the sweeps and contexts would
    make more than ``max_recipes`` recipes.
    """
    base = Path.cwd()
    where = "recipes"
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and Path(source).exists()):
        path = Path(source)
        base, where = path.parent.resolve(), str(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise InvalidInputError(f"{path}: not valid YAML: {e}") from e
    elif isinstance(source, str):
        try:
            doc = yaml.safe_load(source)
        except yaml.YAMLError as e:
            raise InvalidInputError(f"recipes: not valid YAML: {e}") from e
    else:
        doc = source
    entries = doc.get("recipes") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise InvalidInputError(f"{where}: expected a non-empty list under 'recipes:'")
    data = data_dir or get_settings().data_dir
    parsed = []
    for n, raw in enumerate(entries, start=1):
        try:
            parsed.append(_Entry.model_validate(raw))
        except ValidationError as e:
            raise InvalidInputError(f"{where}: recipe #{n}: {e}") from e
    total = sum(_size(entry) for entry in parsed)
    if max_recipes is not None and total > max_recipes:
        raise InvalidInputError(
            f"{where}: the sweeps make {total:,} recipes, more than the limit of {max_recipes:,} "
            "per job; split the file or raise PERTSTORE_MAX_PLAN_RECIPES"
        )
    return [spec for n, entry in enumerate(parsed, start=1) for spec in _expand(entry, n, where, base, data)]


def _size(entry: _Entry) -> int:
    """How many recipes an entry expands into (contexts times sweep points)."""
    return len(entry.contexts or [entry.context]) * math.prod(len(v) for v in entry.sweep.values())


def _expand(entry: _Entry, n: int, where: str, base: Path, data_dir: str | None) -> list[RecipeSpec]:
    keys = list(entry.sweep)
    for k, values in entry.sweep.items():
        if not values:
            raise InvalidInputError(f"{where}: recipe #{n}: sweep over {k!r} lists no values")
    grid = [dict(zip(keys, combo)) for combo in itertools.product(*entry.sweep.values())] if keys else [{}]
    contexts = entry.contexts or [entry.context]
    out = []
    for context, point in itertools.product(contexts, grid):
        params = {**entry.params, **point}
        try:
            source = entry.source.format(context=context, **params)
        except (KeyError, IndexError) as e:
            raise InvalidInputError(
                f"{where}: recipe #{n}: source {entry.source!r} names {e} which is neither a parameter nor 'context'"
            ) from e
        if len(grid) > 1 and not keys_in(entry.source, keys):
            raise InvalidInputError(
                f"{where}: recipe #{n}: a sweep needs the swept parameters in the source name, "
                f"e.g. '{entry.source}-{{{keys[0]}}}'"
            )
        inputs = {k: _input(v, context, base, data_dir, f"{where}: recipe #{n}") for k, v in entry.inputs.items()}
        out.append(
            RecipeSpec(
                producer=entry.producer,
                source=source,
                params=params,
                inputs=inputs,
                context=context,
                tags=entry.tags,
                max_failed=entry.max_failed,
            )
        )
    return out


def keys_in(template: str, keys: list[str]) -> bool:
    fields = set(re.findall(r"{(\w+)", template))
    return all(k in fields for k in keys)


def _input(value: str, context: str, base: Path, data_dir: str | None, where: str) -> str:
    value = value.replace("{context}", context)
    if value.startswith(SET_PREFIX):
        return value
    if "${data}" in value:
        if not data_dir:
            raise InvalidInputError(f"{where}: input {value!r} needs the data directory; set PERTSTORE_DATA_DIR")
        value = value.replace("${data}", data_dir)
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def plan(specs: list[RecipeSpec], find_version) -> list[PlannedRecipe]:
    """Turn specs into versioned recipes: validate parameters, hash file inputs, pin set inputs.

    ``find_version(source, context, version_or_tag)`` returns the version of a set input.
    """
    planned = []
    hashes: dict[str, str] = {}
    for spec in specs:
        check_names(source=spec.source, context=spec.context, tags=spec.tags)
        cls = get_producer(spec.producer)
        params = cls.parse_params(spec.params).model_dump(mode="json")
        unknown = set(spec.inputs) - set(cls.inputs)
        missing = set(cls.inputs) - set(spec.inputs)
        if unknown or missing:
            raise InvalidInputError(
                f"recipe {spec.source}: producer {cls.name} takes inputs {sorted(cls.inputs)}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        files, sets, pins = {}, {}, {}
        for name, value in spec.inputs.items():
            if cls.inputs[name] == "set":
                if not value.startswith(SET_PREFIX):
                    raise InvalidInputError(
                        f"recipe {spec.source}: input {name!r} must be a set ('set:SOURCE[@VERSION|:TAG]')"
                    )
                sets[name] = _pin_set(value[len(SET_PREFIX) :], spec.context, find_version)
                pins[name] = f"set:{sets[name]}"
            else:
                if value.startswith(SET_PREFIX):
                    raise InvalidInputError(f"recipe {spec.source}: input {name!r} must be a file, got {value!r}")
                if "://" not in value and not Path(value).exists():
                    raise InvalidInputError(f"recipe {spec.source}: input file {name!r} not found: {value}")
                files[name] = value
                pins[name] = hashes[value] if value in hashes else hashes.setdefault(value, file_sha256(value))
        recipe = Recipe(
            source=spec.source,
            producer=cls.name,
            kind=cls.kind,
            params=params,
            inputs=pins,
            context=spec.context,
            code_version=cls.code_version,
            libraries=cls.libraries(),
        )
        planned.append(PlannedRecipe(spec, recipe, files, sets))
    return planned


def _pin_set(ref: str, context: str, find_version) -> str:
    if "@" in ref:
        source, version = ref.split("@", 1)
        return f"{source}@{find_version(source, context, version=version)}"
    source, _, tag = ref.partition(":")
    return f"{source}@{find_version(source, context, tag=tag or 'latest')}"
