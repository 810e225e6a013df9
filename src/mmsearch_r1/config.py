"""The configuration tree: pydantic models loaded from TOML, with dotted command-line overrides.

Every field has a type, a default, bounds where they make sense and a one-line description. Each part
owns its section (``tools.config``, ``engines.config``, ...); this module joins them into ``Config``.

>>> cfg = load_config(None, ["reward.search_penalty=0.2", "protocol.max_turns=3"])
>>> cfg.reward.search_penalty
0.2
>>> load_config(None, ["reward.serch_penalty=0.2"])
Traceback (most recent call last):
...
mmsearch_r1.errors.ConfigError: unknown config key `reward.serch_penalty`; known keys in `reward`: format_weight, search_penalty, match, per_search_penalty, penalty_warmup_steps.
"""

from __future__ import annotations

import functools
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmsearch_r1.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


DEVICE_PATTERN = r"^(cpu|cuda(:\d+)?)$"  # the devices the project places models on (models.policy.require_device)


def stamp_settings(section: Section) -> dict:
    """A section as a stamp sees it (the fingerprint a resumed run or a reused demo stage must match).

    Left out: the section's ``RUN_ONLY`` keys (how a run goes: threads, progress, ...), and each key of its
    ``ADDED_LATER`` while it holds the value given there (a setting added after stamps were first written,
    at the value that does what the code did before it existed, so that folders made before keep theirs).
    """
    data = section.model_dump(mode="json", exclude=set(getattr(section, "RUN_ONLY", ())))
    for key, value in getattr(section, "ADDED_LATER", {}).items():
        if data.get(key) == value:
            del data[key]
    return data


class ProtocolConfig(Section):
    """The action grammar's limits and where its prompt templates live."""

    max_turns: int = Field(3, ge=1, le=16, description="Most assistant turns in one episode.")
    max_image_searches: int = Field(1, ge=0, le=8, description="Most image searches in one episode.")
    max_text_searches: int = Field(2, ge=0, le=16, description="Most text searches in one episode.")
    image_top_k: int = Field(3, ge=1, le=20, description="Image-search results shown to the model (the paper shows 5; 3 keeps the tiny model's contexts short on a CPU: docs/training.md).")
    text_top_k: int = Field(3, ge=1, le=20, description="Text-search results shown to the model (the paper shows 5; 3 as for image results).")
    template_dir: Path | None = Field(
        None, description="Folder of prompt templates replacing the built-in ones (same file names)."
    )


class RewardConfig(Section):
    """reward = (1 - format_weight) * accuracy * penalty + format_weight * format."""

    format_weight: float = Field(0.1, ge=0.0, le=1.0, description="Weight α of the format term.")
    search_penalty: float = Field(0.1, ge=0.0, le=1.0, description="Penalty p on a correct answer reached by searching.")
    match: Literal["em", "subem"] = Field("em", description="Accuracy rule: exact match or gold-substring match.")
    per_search_penalty: bool = Field(False, description="Use (1 - p)^n for n searches instead of a flat (1 - p).")
    penalty_warmup_steps: int = Field(0, ge=0, description="Ramp the search penalty in linearly over this many steps.")


def _sections() -> dict[str, type[Section]]:
    # Imported here so that each part owns its section file and this module stays the only joiner.
    from mmsearch_r1.data.config import BalanceConfig
    from mmsearch_r1.demo import DemoConfig
    from mmsearch_r1.engines.config import EngineConfig
    from mmsearch_r1.eval.config import EvalConfig
    from mmsearch_r1.models.config import ModelConfig, PretrainConfig
    from mmsearch_r1.tools.config import ToolsConfig
    from mmsearch_r1.train.config import TrainConfig
    from mmsearch_r1.world.config import WorldConfig

    return {
        "protocol": ProtocolConfig,
        "reward": RewardConfig,
        "tools": ToolsConfig,
        "world": WorldConfig,
        "model": ModelConfig,
        "pretrain": PretrainConfig,
        "engine": EngineConfig,
        "balance": BalanceConfig,
        "train": TrainConfig,
        "eval": EvalConfig,
        "demo": DemoConfig,
    }


def _build_config_class() -> type[Section]:
    from pydantic import create_model

    fields: dict[str, Any] = {
        "seed": (int, Field(0, ge=0, description="Seed for every random choice of a run.")),
        "out_dir": (Path, Field(Path("runs/default"), description="Where a run writes its outputs.")),
    }
    for name, cls in _sections().items():
        fields[name] = (cls, Field(default_factory=cls, description=(cls.__doc__ or "").strip().splitlines()[0]))
    return create_model("Config", __base__=Section, __doc__="The whole configuration of a run.", **fields)


@functools.cache
def config_class() -> type[Section]:
    """The ``Config`` model, built on first use so that section modules can import ``Section`` from here."""
    return _build_config_class()


def __getattr__(name: str) -> Any:
    if name == "Config":
        return config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- loading -------------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a value parsed as TOML (falling back to a string).

    >>> parse_override("train.lr=1e-5")
    (['train', 'lr'], 1e-05)
    >>> parse_override("tools.text.index_dir=worlds/demo/text_index")
    (['tools', 'text', 'index_dir'], 'worlds/demo/text_index')
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override `{item}` is not of the form key=value; write it like --set train.lr=1e-5.")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with each ``key.path=value`` override set in it."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key `{'.'.join(path)}` goes through `{part}`, which is a value, not a section.")
            node = child
        node[path[-1]] = value
    return data


def _explain(error: ValidationError, model: type[BaseModel]) -> str:
    """One sentence for the first problem pydantic found, naming the dotted key and what is allowed."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        section: Any = model
        for part in loc[:-1]:
            section = section.model_fields[part].annotation
        known = ", ".join(section.model_fields)
        where = f"known keys in `{'.'.join(loc[:-1])}`" if len(loc) > 1 else "known top-level keys"
        return f"unknown config key `{key}`; {where}: {known}."
    message = first["msg"].replace("Input should be", "must be").replace("String should match pattern", "must match the pattern").replace("Value error, ", "")
    return f"config key `{key}` {message} (got {first.get('input')!r})."


def validate_config(data: dict) -> Any:
    """Build a ``Config`` from plain data, turning pydantic's report into one ``ConfigError`` sentence."""
    model = config_class()
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_explain(error, model)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Load a TOML config file (or the defaults when ``path`` is None) and apply dotted overrides."""
    data: dict = {}
    if path is not None:
        from mmsearch_r1.files import existing_file, read_text

        fix = "pass a TOML file, or leave --config out."
        path = existing_file(path, "config file", fix, ConfigError)
        try:
            data = tomllib.loads(read_text(path, "config file", fix, ConfigError))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML ({error}); fix the file.") from None
    return validate_config(apply_overrides(data, overrides or []))


def config_to_toml(cfg: BaseModel) -> str:
    """Render a config as TOML (fields that are None are left out, since TOML has no null)."""
    import tomli_w

    return tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True))


def save_config(cfg: BaseModel, out_dir: str | Path, name: str = "config.toml") -> Path:
    """Write the resolved config next to a run's outputs and return the file's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    target.write_text(config_to_toml(cfg))
    return target


def describe(model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows (dotted key, type, default, description) for every leaf field, for ``mmsearch-r1 config docs``."""
    model = model or config_class()
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe(annotation, key + "."))
            continue
        bounds = [f"{m.__class__.__name__.lower()} {getattr(m, m.__class__.__name__.lower(), '')}" for m in field.metadata]
        type_name = getattr(annotation, "__name__", str(annotation)).replace("typing.", "").replace("pathlib.", "")
        default = field.get_default(call_default_factory=True)
        rows.append((key, type_name + (f" ({', '.join(bounds)})" if bounds else ""), _as_toml(default), field.description or ""))
    return rows


def _as_toml(value: Any) -> str:
    """A default as it would be written in a config file ("unset" for None).

    >>> _as_toml(Path("runs")), _as_toml(True), _as_toml(None), _as_toml(["a"])
    ('"runs"', 'true', 'unset', '["a"]')
    """
    if value is None:
        return "unset"
    return json.dumps(value, default=str)
