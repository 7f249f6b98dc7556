"""The caller's client for stripe-usage-reporter (standard library only).

from usage_reporter_client import UsageReporterClient

client = UsageReporterClient("https://abc123.execute-api.us-east-1.amazonaws.com", "billing-svc", secret)
result = client.report_usage("inv-42-api-calls", "si_123", 3)
result.status  # "reported", "queued" (reported later, exactly once) or "rejected" (Stripe refused it)
"""

from ._version import __version__
from .client import MAX_BATCH, MeterEvent, MeterValue, Timestamp, UsageRecord, UsageReporterClient
from .errors import (
    BadRequest,
    CancelRefused,
    Conflict,
    ConnectionFailed,
    EventNotReported,
    FieldError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RequestRefused,
    ServiceUnavailable,
    StillInProgress,
    Throttled,
    Unauthorized,
    UnexpectedResponse,
    UnsupportedMediaType,
    UsageReporterError,
    ValidationRefused,
)
from .results import (
    BatchResult,
    CancelResult,
    MeterEventResult,
    MirrorResult,
    Reason,
    RecordError,
    Refusal,
    Result,
    Status,
    UsageRecordResult,
)
from .signing import CLIENT_HEADER, SIGNATURE_HEADER, compute_signature, sign, signed_headers
from .transport import RawResponse, post_signed

__all__ = [
    "CLIENT_HEADER",
    "MAX_BATCH",
    "SIGNATURE_HEADER",
    "BadRequest",
    "BatchResult",
    "CancelRefused",
    "CancelResult",
    "Conflict",
    "ConnectionFailed",
    "EventNotReported",
    "FieldError",
    "Forbidden",
    "MeterEvent",
    "MeterEventResult",
    "MeterValue",
    "MirrorResult",
    "NotFound",
    "PayloadTooLarge",
    "RawResponse",
    "Reason",
    "RecordError",
    "Refusal",
    "RequestRefused",
    "Result",
    "ServiceUnavailable",
    "Status",
    "StillInProgress",
    "Throttled",
    "Timestamp",
    "Unauthorized",
    "UnexpectedResponse",
    "UnsupportedMediaType",
    "UsageRecord",
    "UsageRecordResult",
    "UsageReporterClient",
    "UsageReporterError",
    "ValidationRefused",
    "__version__",
    "compute_signature",
    "post_signed",
    "sign",
    "signed_headers",
]
