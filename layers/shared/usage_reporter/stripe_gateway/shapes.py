"""What the gateway reads from Stripe, in the shapes the service uses."""

from __future__ import annotations

from dataclasses import dataclass

METER_ERROR_EVENT_TYPES = frozenset({"v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"})


@dataclass(frozen=True)
class SampledMeterError:
    """One failing meter event Stripe names in an error report: its identifier, Stripe's code and message."""

    identifier: str
    code: str
    message: str


@dataclass(frozen=True)
class StripeEventNotice:
    """A verified thin event; for a meter error report, how many events failed and the ones Stripe sampled."""

    event_id: str
    type: str
    error_count: int = 0
    samples: tuple[SampledMeterError, ...] = ()


@dataclass(frozen=True)
class ItemBilling:
    """What Stripe says a subscription item bills: its price, and the subscription's customer."""

    price: str
    customer: str


# Renew a meter event session this long before Stripe's expiry: a request must not race the clock.
