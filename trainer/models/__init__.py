"""Model zoo. Each model registers itself here by name; double registration is an error."""

from __future__ import annotations

from trainer.models.autoint import AutoInt
from trainer.models.base import CTRModel, ModelConfig
from trainer.models.deepfm import DeepFM
from trainer.models.mlp import MLP
from trainer.models.mmoe import MMoE
from trainer.models.neurfm import NeurFM
from trainer.models.ple import PLE
from trainer.models.shared_bottom import SharedBottom
from trainer.models.star import STAR
from trainer.models.wdl import WideDeep

MODELS: dict[str, type[CTRModel]] = {}


def register(cls: type[CTRModel]) -> type[CTRModel]:
    if cls.name in MODELS:
        raise ValueError(f"model {cls.name!r} registered twice")
    MODELS[cls.name] = cls
    return cls


for _cls in (MLP, WideDeep, DeepFM, SharedBottom, MMoE, STAR, PLE, NeurFM, AutoInt):
    register(_cls)


def build_model(name: str, config: ModelConfig) -> CTRModel:
    from contracts.errors import ConfigError

    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name](config)


__all__ = ["MODELS", "CTRModel", "ModelConfig", "build_model", "register"]
