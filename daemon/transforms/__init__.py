"""Per-source filters and transforms (config.yaml `transforms:`): drop, project, redact and enrich records in
the source's context, before the sink prepares them. See config.py for the steps, compile.py for the chain."""

from daemon.transforms.compile import REASON_TRANSFORM_FAILED, Chain, ConfigProblem, TransformFailed, compile_chain
from daemon.transforms.config import STEP_MODELS, SourceTransforms

__all__ = [
    "REASON_TRANSFORM_FAILED",
    "STEP_MODELS",
    "Chain",
    "ConfigProblem",
    "SourceTransforms",
    "TransformFailed",
    "compile_chain",
]
