"""Stripe adapter: the one place that builds the Stripe client and speaks to Stripe."""

from .client import worst_case_seconds
from .errors import (
    InvalidStripeSignature,
    StreamRefused,
    StripeDeliveryError,
    UnreadableStripeEvent,
    classify,
    key_problem,
)
from .gateway import StripeGateway
from .shapes import METER_ERROR_EVENT_TYPES, ItemBilling, SampledMeterError, StripeEventNotice

__all__ = [
    "METER_ERROR_EVENT_TYPES",
    "InvalidStripeSignature",
    "ItemBilling",
    "SampledMeterError",
    "StreamRefused",
    "StripeDeliveryError",
    "StripeEventNotice",
    "StripeGateway",
    "UnreadableStripeEvent",
    "classify",
    "key_problem",
    "worst_case_seconds",
]
