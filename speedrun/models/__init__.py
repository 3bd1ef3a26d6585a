"""Record networks, looked up by ``config.model.name``."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from speedrun.models.airbench import AirbenchNet
from speedrun.models.resnet9 import ResNet9
from speedrun.models.resnet20 import ResNet20

MODELS: dict[str, type[nn.Module]] = {"airbench": AirbenchNet, "resnet9": ResNet9, "resnet20": ResNet20}


def get_model(model_config: Any, dtype: Any) -> nn.Module:
    """Build the Flax module named by ``model_config.name`` with the other fields as attributes.

    Args:
      model_config: a ConfigDict with ``name`` (a key of ``MODELS``) and the module's attributes.
      dtype: compute dtype (the precision policy's).

    Raises:
      ValueError: unknown model name (the message lists the known ones) or an attribute the
        module does not have.
    """
    cfg = dict(model_config)
    name = cfg.pop("name")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    cls = MODELS[name]
    unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"model {name!r} has no attribute(s) {unknown}; remove them from config.model")
    return cls(**cfg, dtype=dtype)
