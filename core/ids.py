"""Opaque, roughly time-ordered string ids."""

import hashlib
import secrets
import time


def new_id(prefix: str) -> str:
    """A fresh id: prefix, 12 hex digits of milliseconds, 8 random hex digits."""
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


def case_id_for_idempotency_key(key: str) -> str:
    """The case id a given `Idempotency-Key` always maps to, so repeats meet the same workflow."""
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:24]


def workflow_id_for_case(case_id: str) -> str:
    """The id of a case's workflow."""
    return f"case-{case_id}"


def workflow_id_for_webhook(endpoint_id: str) -> str:
    """The delivery workflow of a webhook endpoint."""
    return f"webhook-{endpoint_id}"
