"""Model zoo. Each model registers itself here by name; double registration is an error."""

from __future__ import annotations

from trainer.catalog import Catalog
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

MODELS: Catalog[CTRModel] = Catalog("model")
register = MODELS.register

for _cls in (MLP, WideDeep, DeepFM, SharedBottom, MMoE, STAR, PLE, NeurFM, AutoInt):
    register(_cls)


def build_model(name: str, config: ModelConfig) -> CTRModel:
    return MODELS.get_class(name)(config)


__all__ = ["MODELS", "CTRModel", "ModelConfig", "build_model", "register"]
