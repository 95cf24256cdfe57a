"""Memory that learns from chat (issue 13): secrets never learned, explicit commands, rule-based and
model-based extraction, consolidation with history, and the job that carries a turn off the request path."""

from pai_core.learning.jobs import InvalidJob, LearningJob, LearningQueue
from pai_core.learning.model import StructuredModel
from pai_core.learning.rules import explicit_command
from pai_core.learning.secrets import holds_secret, secret_kind
from pai_core.learning.service import (
    EXTRACTION_MODES,
    ExplicitOutcome,
    ExtractionMode,
    LearningService,
    TurnOutcome,
)

__all__ = [
    "EXTRACTION_MODES",
    "ExplicitOutcome",
    "ExtractionMode",
    "InvalidJob",
    "LearningJob",
    "LearningQueue",
    "LearningService",
    "StructuredModel",
    "TurnOutcome",
    "explicit_command",
    "holds_secret",
    "secret_kind",
]
