"""Model-agnostic multi-domain learning frameworks over (model, DomainParameters, dataset, config).

``build_framework(name, model, dataset, config)`` then ``fit(framework)``; or drive one round at a
time (``DomainNegotiation.negotiate``, ``DomainRegularization.regularize``) from a stream.
"""

from __future__ import annotations

from trainer.catalog import Catalog
from trainer.data.base import MultiDomainDataset
from trainer.frameworks.alternate import Alternate, Joint
from trainer.frameworks.base import Batch, Framework
from trainer.frameworks.config import FrameworkConfig
from trainer.frameworks.dn import DomainNegotiation
from trainer.frameworks.dr import MAMDR, DomainRegularization
from trainer.frameworks.fit import FitResult, fit
from trainer.frameworks.meta import MAML, MLDG, Reptile
from trainer.frameworks.multitask import PCGrad, WeightedLoss
from trainer.frameworks.separate import Separate
from trainer.models.base import CTRModel

FRAMEWORKS: Catalog[Framework] = Catalog("framework")
register = FRAMEWORKS.register

for _cls in (Alternate, Joint, Separate, DomainNegotiation, DomainRegularization, MAMDR, WeightedLoss, PCGrad,
             Reptile, MAML, MLDG):
    register(_cls)


def build_framework(name: str, model: CTRModel, dataset: MultiDomainDataset,
                    config: FrameworkConfig) -> Framework:
    return FRAMEWORKS.get_class(name)(model, dataset, config)


__all__ = [
    "FRAMEWORKS",
    "MAMDR",
    "MAML",
    "MLDG",
    "Alternate",
    "Batch",
    "DomainNegotiation",
    "DomainRegularization",
    "FitResult",
    "Framework",
    "FrameworkConfig",
    "Joint",
    "PCGrad",
    "Reptile",
    "Separate",
    "WeightedLoss",
    "build_framework",
    "fit",
    "register",
]
