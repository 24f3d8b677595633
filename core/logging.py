"""Logging: JSON lines when not on a terminal, readable lines on one; email addresses, tracking tokens and API keys
never leave the process."""

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from core.ids import workflow_id_for_case

CONTEXT_FIELDS = ("case_id", "agent_id", "workflow_id")
# The SDK's loggers put their context (workflow id, run id, activity type, attempt) under these keys.
TEMPORAL_CONTEXT_KEYS = ("temporal_workflow", "temporal_activity")
CASE_WORKFLOW_PREFIX = workflow_id_for_case("")

EMAIL_PATTERN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
EMAIL_REPLACEMENT = "<email>"
# A customer's tracking token travels in the path (access log lines); an API key should never be logged at all.
TRACKING_PATH_PATTERN = re.compile(r"(/track/)[^/\s?#\"']+")
API_KEY_PATTERN = re.compile(r"rdk_[A-Za-z0-9]+")


def case_context(case_id: str, agent_id: str | None = None) -> dict[str, str | None]:
    """The `extra=` of every log line about a case: its id, its agent (None when it has none) and its workflow."""
    return {"case_id": case_id, "agent_id": agent_id, "workflow_id": workflow_id_for_case(case_id)}


def redact(text: str) -> str:
    """`text` with every email address, tracking token (in a path) and API key replaced."""
    text = EMAIL_PATTERN.sub(EMAIL_REPLACEMENT, text)
    text = TRACKING_PATH_PATTERN.sub(r"\1<token>", text)
    return API_KEY_PATTERN.sub("rdk_<key>", text)


class EmailRedactingFilter(logging.Filter):
    """Safety net: rewrites a record's message and traceback so no email address (a customer's), tracking token or
    API key is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _temporal_context(record: logging.LogRecord) -> dict[str, Any]:
    for key in TEMPORAL_CONTEXT_KEYS:
        details = getattr(record, key, None)
        if isinstance(details, Mapping):
            return dict(details)
    return {}


def record_context(record: logging.LogRecord) -> dict[str, Any]:
    """The case fields of a record: given with `extra=`, else derived from the SDK's workflow context.

    A line about a case carries all three fields (agent_id is null while nobody holds the case).
    """
    context = {name: getattr(record, name, None) for name in CONTEXT_FIELDS}
    temporal = _temporal_context(record)
    if context["workflow_id"] is None and temporal.get("workflow_id"):
        context["workflow_id"] = temporal["workflow_id"]
    workflow_id = context["workflow_id"]
    if context["case_id"] is None and isinstance(workflow_id, str) and workflow_id.startswith(CASE_WORKFLOW_PREFIX):
        context["case_id"] = workflow_id.removeprefix(CASE_WORKFLOW_PREFIX)
    if context["case_id"] is None:
        return {name: value for name, value in context.items() if value is not None}
    return context


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the case context fields when the record is about a case."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(record_context(record))
        temporal = _temporal_context(record)
        if temporal:
            entry["temporal"] = temporal
        if record.exc_info or record.exc_text:
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """A readable line for a terminal, ending with the case context when the record is about a case."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = record_context(record)
        if not context.get("case_id"):
            return line
        return line + " [" + " ".join(f"{name}={value}" for name, value in context.items()) + "]"


def configure_logging(level: str = "INFO") -> None:
    """Set up the root logger once per process (uvicorn's loggers included)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(EmailRedactingFilter())
    if sys.stderr.isatty():
        handler.setFormatter(TextFormatter())
    else:
        handler.setFormatter(JsonFormatter())
        # The JSON line carries the SDK's context as fields; appending it to each message too is noise.
        from temporalio import activity, workflow

        activity.logger.activity_info_on_message = False
        workflow.logger.workflow_info_on_message = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; send its lines through ours so they are JSON and redacted too.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
