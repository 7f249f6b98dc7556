"""Composition root: builds each service object once per process, lazily (cold start pays only for its path)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from . import aws
from .auth import Authenticator, parse_client_secrets
from .config import get_settings
from .secrets import SecretSource

if TYPE_CHECKING:
    from .kinds import RecordKind
    from .mirroring import MirrorMap
    from .queues import RecordQueues
    from .reporting import Reporter
    from .retrying import RetryWorker
    from .status_lookup import StatusLookup
    from .stripe_events import StripeEventReceiver
    from .stripe_gateway import StripeGateway


@functools.cache
def authenticator() -> Authenticator:
    settings = get_settings()
    source = SecretSource(
        secret_arn=settings.client_secrets_secret_arn,
        value=settings.client_secrets_json,
        cache_seconds=settings.secrets_cache_seconds,
        name="client secrets",
    )
    return Authenticator(lambda: parse_client_secrets(source.get()), settings.signature_tolerance_seconds)


@functools.cache
def queues() -> RecordQueues:
    from .queues import RecordQueues

    settings = get_settings()
    return RecordQueues(
        lambda: aws.client("sqs"),
        retry_queue_url=settings.retry_queue_url,
        dead_letter_queue_url=settings.dead_letter_queue_url,
    )


@functools.cache
def stripe_gateway() -> StripeGateway:
    from .stripe_gateway import StripeGateway

    settings = get_settings()
    stripe_key = SecretSource(
        secret_arn=settings.stripe_api_key_secret_arn,
        value=settings.stripe_api_key,
        cache_seconds=settings.secrets_cache_seconds,
        name="Stripe API key",
    )
    return StripeGateway(settings, stripe_key)


@functools.cache
def kinds() -> dict[str, RecordKind]:
    """Every record kind, by name."""
    from .kinds import MeterEventCancels, MeterEvents, UsageRecordMirrors, UsageRecords

    meter_events = MeterEvents(get_settings())
    every: tuple[RecordKind, ...] = (
        UsageRecords(),
        meter_events,
        MeterEventCancels(),
        UsageRecordMirrors(meter_events),
    )
    return {kind.name: kind for kind in every}


@functools.cache
def reporter() -> Reporter:
    from .dedup import DeliveryPlans, persistence_layer
    from .reporting import Reporter

    settings = get_settings()
    plans = DeliveryPlans(settings, aws.client("dynamodb"))
    return Reporter(
        settings,
        gateway=stripe_gateway(),
        queues=queues(),
        persistence=lambda: persistence_layer(settings),
        plans=plans,
        kinds=list(kinds().values()),
    )


@functools.cache
def mirror_map() -> MirrorMap:
    from .dedup import DeliveryPlans
    from .mirroring import MirrorMap

    settings = get_settings()
    plans = DeliveryPlans(settings, aws.client("dynamodb"))
    from .kinds import UsageRecordMirrors

    mirrors = kinds()["usage_record_mirror"]
    assert isinstance(mirrors, UsageRecordMirrors)
    return MirrorMap(settings, stripe_gateway(), plans, mirrors)


@functools.cache
def retry_worker() -> RetryWorker:
    from .dedup import DedupLedger, persistence_layer
    from .retrying import RetryWorker

    settings = get_settings()
    ledgers = {
        name: DedupLedger(settings, persistence_layer(settings), key_prefix=kind.key_prefix)
        for name, kind in kinds().items()
    }
    return RetryWorker(settings, stripe_gateway(), queues(), ledgers, kinds())


@functools.cache
def stripe_event_receiver() -> StripeEventReceiver:
    from .dedup import DedupLedger, DeliveryPlans, persistence_layer
    from .kinds import MeterEvents, UsageRecordMirrors
    from .stripe_events import StripeEventReceiver

    settings = get_settings()
    webhook_secret = SecretSource(
        secret_arn=settings.stripe_webhook_secret_arn,
        value=settings.stripe_webhook_secret,
        cache_seconds=settings.secrets_cache_seconds,
        name="Stripe webhook secret",
    )
    # The kinds whose records are meter events, each with its own stored answers.
    metered = [kind for kind in kinds().values() if isinstance(kind, MeterEvents | UsageRecordMirrors)]
    return StripeEventReceiver(
        gateway=stripe_gateway(),
        webhook_secret=webhook_secret,
        plans=DeliveryPlans(settings, aws.client("dynamodb")),
        queues=queues(),
        kinds=[
            (kind, DedupLedger(settings, persistence_layer(settings), key_prefix=kind.key_prefix)) for kind in metered
        ],
    )


@functools.cache
def status_lookup() -> StatusLookup:
    from .dedup import DedupLedger, DeliveryPlans, persistence_layer
    from .status_lookup import StatusLookup

    settings = get_settings()
    ledgers = {
        name: DedupLedger(settings, persistence_layer(settings), key_prefix=kind.key_prefix)
        for name, kind in kinds().items()
    }
    return StatusLookup(DeliveryPlans(settings, aws.client("dynamodb")), kinds(), ledgers)


def reset() -> None:
    """Forget everything built from the environment (tests and the local server change it)."""
    every = (get_settings, authenticator, queues, stripe_gateway, kinds, reporter, retry_worker)
    for cached in (*every, stripe_event_receiver, mirror_map, status_lookup):
        cached.cache_clear()
    aws.reset()
