"""Composition root: builds each service object once per process, lazily (cold start pays only for its path)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from . import aws
from .auth import Authenticator, parse_client_secrets
from .config import get_settings
from .secrets import SecretSource

if TYPE_CHECKING:
    from .dedup import DedupLedger, DeliveryPlans
    from .kinds import RecordKind
    from .mirroring import MirrorMap
    from .queues import RecordQueues
    from .reporting import Reporter
    from .retrying import RetryWorker
    from .status_lookup import StatusLookup
    from .stripe_events import StripeEventReceiver
    from .stripe_gateway import StripeGateway


def _secret(secret_arn: str | None, value: str | None, name: str) -> SecretSource:
    return SecretSource(
        secret_arn=secret_arn, value=value, cache_seconds=get_settings().secrets_cache_seconds, name=name
    )


@functools.cache
def authenticator() -> Authenticator:
    settings = get_settings()
    source = _secret(settings.client_secrets_secret_arn, settings.client_secrets_json, "client secrets")
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
    return StripeGateway(
        settings, _secret(settings.stripe_api_key_secret_arn, settings.stripe_api_key, "Stripe API key")
    )


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
def plans() -> DeliveryPlans:
    from .dedup import DeliveryPlans

    return DeliveryPlans(get_settings(), aws.client("dynamodb"))


@functools.cache
def ledgers() -> dict[str, DedupLedger]:
    """Each kind's stored answers, read and rewritten outside the ingest's own processing."""
    from .dedup import DedupLedger, persistence_layer

    settings = get_settings()
    return {
        name: DedupLedger(settings, persistence_layer(settings), key_prefix=kind.key_prefix)
        for name, kind in kinds().items()
    }


@functools.cache
def reporter() -> Reporter:
    from .dedup import persistence_layer
    from .reporting import Reporter

    settings = get_settings()
    return Reporter(
        settings,
        gateway=stripe_gateway(),
        queues=queues(),
        persistence=lambda: persistence_layer(settings),
        plans=plans(),
        kinds=list(kinds().values()),
    )


@functools.cache
def mirror_map() -> MirrorMap:
    from .kinds import UsageRecordMirrors
    from .mirroring import MirrorMap

    mirrors = kinds()["usage_record_mirror"]
    assert isinstance(mirrors, UsageRecordMirrors)
    return MirrorMap(get_settings(), stripe_gateway(), plans(), mirrors)


@functools.cache
def retry_worker() -> RetryWorker:
    from .retrying import RetryWorker

    return RetryWorker(get_settings(), stripe_gateway(), queues(), ledgers(), kinds())


@functools.cache
def stripe_event_receiver() -> StripeEventReceiver:
    from .kinds import MeterEvents, UsageRecordMirrors
    from .stripe_events import StripeEventReceiver

    settings = get_settings()
    webhook_secret = _secret(
        settings.stripe_webhook_secret_arn, settings.stripe_webhook_secret, "Stripe webhook secret"
    )
    # The kinds whose records are meter events, each with its own stored answers.
    metered = [kind for kind in kinds().values() if isinstance(kind, MeterEvents | UsageRecordMirrors)]
    return StripeEventReceiver(
        gateway=stripe_gateway(),
        webhook_secret=webhook_secret,
        plans=plans(),
        queues=queues(),
        kinds=[(kind, ledgers()[kind.name]) for kind in metered],
    )


@functools.cache
def status_lookup() -> StatusLookup:
    from .status_lookup import StatusLookup

    return StatusLookup(plans(), kinds(), ledgers())


def reset() -> None:
    """Forget everything built from the environment (tests and the local server change it). The AWS clients
    follow the environment themselves (``aws``): the data their Session loaded is kept while it is unchanged."""
    every = (get_settings, authenticator, queues, stripe_gateway, kinds, plans, ledgers, reporter, retry_worker)
    for cached in (*every, stripe_event_receiver, mirror_map, status_lookup):
        cached.cache_clear()
