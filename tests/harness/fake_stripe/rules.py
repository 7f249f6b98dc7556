"""Stripe's rules, as the fake applies them: API versions, form parsing, the usage-record parameters and
timestamps, billing periods, and the shape of an error reply."""

from __future__ import annotations

import datetime
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

USAGE_RECORDS_PATH = "/usage_records"
FIRST_VERSION_WITHOUT_USAGE_RECORDS = "2025-03-31"
ACCOUNT_DEFAULT_VERSION = "2025-03-31.basil"
DAY = 86400
# Stripe's named releases: (name, first version, last version or None for the current release).
# Versions before the first one are plain dates (e.g. 2024-06-20). Dates between two releases are no version.
STRIPE_RELEASES: tuple[tuple[str, str, str | None], ...] = (
    ("acacia", "2024-09-30", "2025-02-24"),
    ("basil", "2025-03-31", "2025-08-27"),
    ("clover", "2025-09-30", "2026-02-25"),
    ("dahlia", "2026-03-25", "2026-08-26"),
    ("endive", "2026-09-30", None),
)
USAGE_RECORD_PARAMS = frozenset({"quantity", "timestamp", "action", "expand"})
_VERSION = re.compile(r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})(?:\.(?P<name>[a-z]+))?")
_INTEGER = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only: "²" and "٣" are str.isdigit() but not integers
_FORM_ARRAY_KEY = re.compile(r"(?P<name>[^\[\]]+)\[[0-9]*\]")  # expand[] or expand[0]
_INT64 = range(-(2**63), 2**63)
_TIMESTAMP_REFUSED = "Cannot create the usage record with this timestamp because timestamps must "

Params = dict[str, str | list[str]]


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    request_id: str = field(default_factory=lambda: f"req_{secrets.token_hex(8)}")


def stripe_error(status: int, message: str, *, type_: str = "invalid_request_error", **extra: Any) -> Reply:
    return Reply(status, {"error": {"type": type_, "message": message, **extra}})


def invalid_empty(name: str) -> Reply:
    """Stripe's refusal of an empty value for a parameter that cannot be unset."""
    return stripe_error(
        400,
        f"You passed an empty string for '{name}'. We assume empty values are an attempt to unset a "
        f"parameter; however '{name}' cannot be unset. You should remove '{name}' from your request or "
        "supply a non-empty value.",
        code="parameter_invalid_empty",
        param=name,
    )


def unknown_url(method: str, route: str) -> Reply:
    """Stripe's answer for a path the request's API version does not have."""
    return stripe_error(
        404,
        f"Unrecognized request URL ({method}: {route}). Please see https://stripe.com/docs or we can "
        "help at https://support.stripe.com/.",
    )


@dataclass(frozen=True)
class BillingPeriod:
    """A subscription item's billing period, ``[start, end)`` in unix seconds."""

    start: int
    end: int

    def current(self, now: int) -> BillingPeriod:
        """This period, rolled over to the next one of the same length as often as ``now`` has passed its end."""
        if now < self.end:
            return self
        length = self.end - self.start
        shift = ((now - self.end) // length + 1) * length
        return BillingPeriod(self.start + shift, self.end + shift)

    def as_json(self, subscription_item: str) -> dict[str, Any]:
        return {
            "subscription_item": subscription_item,
            "current_period_start": self.start,
            "current_period_end": self.end,
        }


@dataclass(frozen=True)
class UsageParams:
    quantity: int
    timestamp: int | None  # None: "now"
    action: str


def parse_integer(value: str) -> int | None:
    """``value`` as a 64-bit integer written in ASCII digits (optional leading minus), else None."""
    if not _INTEGER.fullmatch(value):
        return None
    number = int(value)
    return number if number in _INT64 else None


def parse_form(body: str) -> Params:
    """A form body as Stripe reads it: the last value of a repeated key wins; ``k[]``/``k[0]`` make a list."""
    params: Params = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        array = _FORM_ARRAY_KEY.fullmatch(key)
        if array:
            previous = params.get(array["name"])
            params[array["name"]] = [*(previous if isinstance(previous, list) else []), value]
        else:
            params[key] = value
    return params


def is_stripe_version(version: str, today: datetime.date) -> bool:
    """Whether Stripe has API version ``version`` (see ``STRIPE_RELEASES``)."""
    match = _VERSION.fullmatch(version)
    if not match:
        return False
    try:
        day = datetime.date.fromisoformat(match["date"])
    except ValueError:
        return False
    if day > today:
        return False
    if match["date"] < STRIPE_RELEASES[0][1]:
        return match["name"] is None
    return any(
        match["name"] == name and first <= match["date"] <= (last or match["date"])
        for name, first, last in STRIPE_RELEASES
    )


def usage_item(path: str) -> str | None:
    """The subscription item of a usage-record path, else None."""
    parts = path.strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["v1", "subscription_items"] and parts[3] == "usage_records":
        return parts[2]
    return None


def usage_params(params: Params) -> UsageParams | Reply:
    """The parameters, or the refusal Stripe gives before the endpoint runs (never saved for a key)."""
    unknown = sorted(key.split("[", 1)[0] for key in params if key not in USAGE_RECORD_PARAMS)
    if unknown:
        return stripe_error(
            400, f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
        )
    if "quantity" not in params:
        return stripe_error(400, "Missing required param: quantity.", code="parameter_missing", param="quantity")
    for name in ("quantity", "timestamp", "action"):
        if params.get(name) == "":
            return invalid_empty(name)
    raw_quantity, raw_timestamp = params["quantity"], params.get("timestamp", "now")
    quantity = parse_integer(raw_quantity) if isinstance(raw_quantity, str) else None
    if quantity is None:
        return stripe_error(400, f"Invalid integer: {raw_quantity}", code="parameter_invalid_integer", param="quantity")
    if quantity < 0:
        return stripe_error(
            400,
            "This value must be greater than or equal to 0.",
            code="parameter_invalid_integer",
            param="quantity",
        )
    timestamp = parse_integer(raw_timestamp) if isinstance(raw_timestamp, str) else None
    if timestamp is None and raw_timestamp != "now":
        return stripe_error(
            400, f"Invalid integer: {raw_timestamp}", code="parameter_invalid_integer", param="timestamp"
        )
    action = params.get("action", "increment")
    if action not in ("increment", "set"):
        return stripe_error(400, "Invalid action: must be one of increment or set", param="action")
    if not isinstance(params.get("expand", []), list):
        return stripe_error(400, "Invalid array", param="expand")
    return UsageParams(quantity, timestamp, str(action))


def timestamp_refusal(timestamp: int, latest: int, period: BillingPeriod) -> Reply | None:
    """Stripe's refusal of a timestamp: after ``latest`` (now, plus any drift allowed) or outside the period."""
    if timestamp > latest:
        return stripe_error(400, _TIMESTAMP_REFUSED + "not be in the future.", param="timestamp")
    if timestamp < period.start:
        return stripe_error(
            400,
            _TIMESTAMP_REFUSED + "be after the subscription's last invoice period (or current period start time).",
            param="timestamp",
        )
    if timestamp >= period.end:
        return stripe_error(
            400, _TIMESTAMP_REFUSED + "be before the subscription's current period end time.", param="timestamp"
        )
    return None
