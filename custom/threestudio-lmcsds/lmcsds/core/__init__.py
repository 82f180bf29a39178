"""Threestudio-free core: the paper's math, the corrective network, checkpoints, the prior."""

from .checkpoint import (
    CorrectiveCheckpointError,
    CorrectiveMeta,
    load_corrective,
    prior_id,
    read_meta,
    save_corrective,
)
from .corrective import CorrectiveConfig, CorrectiveUNet
from .lmc_sds import LOSS_TYPES, StepConfig, StepOutput, lmc_sds_step
from .noise import FixedNoise
from .prior import IFPrior

__all__ = [
    "CorrectiveCheckpointError",
    "CorrectiveConfig",
    "CorrectiveMeta",
    "CorrectiveUNet",
    "FixedNoise",
    "IFPrior",
    "LOSS_TYPES",
    "StepConfig",
    "StepOutput",
    "lmc_sds_step",
    "load_corrective",
    "prior_id",
    "read_meta",
    "save_corrective",
]
