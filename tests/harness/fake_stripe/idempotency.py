"""Idempotency-Keys, as Stripe documents them: only a result of the endpoint is saved, then replayed."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .rules import Params, Reply, stripe_error


class IdempotencyKeys:
    """The results saved per key (with the route and parameters first sent), and the keys still executing."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._saved: dict[str, tuple[tuple[str, Params], Reply]] = {}
        self.in_flight: set[str] = set()

    def run[T](
        self,
        key: str | None,
        route: str,
        params: Params,
        validate: Callable[[Params], T | Reply],
        endpoint: Callable[[T], Reply],
    ) -> Reply:
        """Validate, then run the endpoint; with a key, only a result of the endpoint is saved."""
        with self._lock:
            if key:
                earlier = self._replay(key, route, params)
                if earlier:
                    return earlier
            valid = validate(params)
            if isinstance(valid, Reply):
                return valid  # the parameters failed validation: nothing is saved
            if key:
                self.in_flight.add(key)
        try:
            reply = endpoint(valid)
            if key:
                with self._lock:
                    self._saved[key] = ((route, params), reply)
            return reply
        finally:
            if key:
                with self._lock:
                    self.in_flight.discard(key)

    def clear(self) -> None:
        with self._lock:
            self._saved.clear()
            self.in_flight.clear()

    def forget_saved(self) -> None:
        """What Stripe does after ~24 h: a key's saved result is gone, the key is new again."""
        with self._lock:
            self._saved.clear()

    def _replay(self, key: str, route: str, params: Params) -> Reply | None:
        """What Stripe answers for a key it has seen: the saved result, a conflict, or None (a new key)."""
        if key in self.in_flight:
            return stripe_error(
                409,
                "There is currently another in-progress request using this Idempotent Key (that probably means "
                f"you submitted twice, and the other request is still going through): {key}. Please try again later.",
                code="idempotency_key_in_use",
            )
        if key not in self._saved:
            return None
        (first_route, first_params), first = self._saved[key]
        if first_route != route:
            return stripe_error(
                400,
                "Keys for idempotent requests can only be used for the same endpoint they were first used for "
                f"('POST {first_route}' vs 'POST {route}'). Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type_="idempotency_error",
            )
        if first_params != params:
            return stripe_error(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were first used "
                f"with. Try using a key other than '{key}' if you meant to execute a different request.",
                type_="idempotency_error",
            )
        return Reply(first.status, first.body, {"Idempotent-Replayed": "true", "Original-Request": first.request_id})
