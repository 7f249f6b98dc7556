"""The answers callers get, as stored in the dedup record: ``{"status_code": ..., "body": {...}}``.

The ingest function stores the first answer; the retry worker rewrites it when a queued record is
delivered (200 reported) or refused (422 rejected), so a replay of the key tells the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .models import FailureReason


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.body.get("status") or self.body["error"]["type"])


def error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message, **extra}}


def reported(fields: dict[str, Any], stripe_ids: dict[str, str]) -> dict[str, Any]:
    """``fields``: the record as the kind shows it (with its key); ``stripe_ids``: what Stripe gave back."""
    return {"status_code": 200, "body": {"status": "reported", **fields, **stripe_ids}}


def accepted(fields: dict[str, Any], stripe_ids: dict[str, str]) -> dict[str, Any]:
    """Sent in a v2 meter event stream request: Stripe took it and validates it later."""
    body = {
        "status": "accepted",
        **fields,
        **stripe_ids,
        "message": (
            "Stripe received the event and validates it asynchronously. If Stripe finds it invalid, this key's "
            "answer becomes rejected and the event goes to the dead-letter queue with Stripe's reason."
        ),
    }
    return {"status_code": 202, "body": body}


def queued(fields: dict[str, Any], reason: FailureReason, *, next_attempt_at: int | None = None) -> dict[str, Any]:
    """``next_attempt_at``: when the retry worker sends it again (unix seconds), when that is known."""
    body = {
        "status": "queued",
        **fields,
        "message": "Stripe did not take the record yet; it is queued and will be reported exactly once.",
        "reason": reason.model_dump(exclude_none=True),
    }
    if next_attempt_at is not None:
        body["next_attempt_at"] = next_attempt_at
    return {"status_code": 202, "body": body}


def held_for_review(fields: dict[str, Any], reason: FailureReason) -> dict[str, Any]:
    """Stripe may already hold the record: it is with an operator, and will be counted at most once."""
    body = {
        "status": "queued",
        **fields,
        "message": (
            "Stripe may already hold this record; it is held for an operator, who checks Stripe before it is "
            "sent again. It will be counted at most once."
        ),
        "reason": reason.model_dump(exclude_none=True),
    }
    return {"status_code": 202, "body": body}


def rejected(fields: dict[str, Any], reason: FailureReason) -> dict[str, Any]:
    # stripe_error, or a refusal with a name of its own (usage_records_unsupported).
    body = {
        "status": "rejected",
        **fields,
        "error": {"type": reason.type, "code": reason.code, "message": reason.message},
    }
    return {"status_code": 422, "body": body}
