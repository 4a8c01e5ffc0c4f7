"""Model zoo. Each model registers itself here by name; double registration is an error."""

from __future__ import annotations

from trainer.models.base import CTRModel, ModelConfig
from trainer.models.mlp import MLP

MODELS: dict[str, type[CTRModel]] = {}


def register(cls: type[CTRModel]) -> type[CTRModel]:
    if cls.name in MODELS:
        raise ValueError(f"model {cls.name!r} registered twice")
    MODELS[cls.name] = cls
    return cls


for _cls in (MLP,):
    register(_cls)


def build_model(name: str, config: ModelConfig) -> CTRModel:
    from mamdr.errors import ConfigError

    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name](config)


__all__ = ["MODELS", "CTRModel", "ModelConfig", "build_model", "register"]
