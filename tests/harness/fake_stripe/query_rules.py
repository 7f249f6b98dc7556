"""Stripe's rules for the v1 GET endpoints, as the fake applies them: the query's parameters (``expand`` and the
list parameters) and the list object, paged with ``limit``, ``starting_after`` and ``ending_before``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .rules import Params, Reply, invalid_empty, parse_integer, stripe_error

LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before", "expand"})
DEFAULT_LIMIT = 10  # "Limit can range between 1 and 100, and the default is 10."
MAX_LIMIT = 100


@dataclass(frozen=True)
class Page:
    """Which part of a list a request asks for: at most ``limit`` objects after one id, or before one."""

    limit: int
    starting_after: str | None
    ending_before: str | None


def query_refusal(params: Params, allowed: frozenset[str], expandable: frozenset[str]) -> Reply | None:
    """Stripe's refusals of a GET's query, before the endpoint runs: unknown, empty, an ``expand`` that is not an
    array or names a field the object cannot expand."""
    unknown = sorted(key for key in params if key not in allowed)
    if unknown:
        return stripe_error(
            400, f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
        )
    for name, value in params.items():
        if value == "":
            return invalid_empty(name)
    expand = params.get("expand", [])
    if not isinstance(expand, list):
        return stripe_error(400, "Invalid array", param="expand")
    for field in expand:
        if field not in expandable:
            return stripe_error(400, f"This property cannot be expanded ({field}).")
    return None


def page_params(params: Params) -> Page | Reply:
    """The list parameters (the caller refused unknown and empty ones), or Stripe's refusal of them."""
    raw_limit = params.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        parsed = parse_integer(raw_limit) if isinstance(raw_limit, str) else None
        if parsed is None:
            return stripe_error(400, f"Invalid integer: {raw_limit}", code="parameter_invalid_integer", param="limit")
        if not 1 <= parsed <= MAX_LIMIT:
            bound = "greater than or equal to 1" if parsed < 1 else f"less than or equal to {MAX_LIMIT}"
            return stripe_error(400, f"This value must be {bound}.", code="parameter_invalid_integer", param="limit")
        limit = parsed
    after, before = params.get("starting_after"), params.get("ending_before")
    for name, cursor in (("starting_after", after), ("ending_before", before)):
        if isinstance(cursor, list):
            return stripe_error(400, "Invalid string", param=name)
    if after is not None and before is not None:  # Stripe's docs: "These parameters are mutually exclusive."
        return stripe_error(
            400,
            "You may only specify one of these parameters: starting_after, ending_before.",
            code="parameters_exclusive",
            param="ending_before",
        )
    return Page(limit, str(after) if after else None, str(before) if before else None)


def list_object(
    ordered: Sequence[dict[str, Any]],
    page: Page,
    url: str,
    *,
    keep: Callable[[dict[str, Any]], bool] = lambda _: True,
    noun: str,
) -> Reply:
    """The page of ``ordered`` (newest first, as Stripe lists) that ``page`` asks for, of the objects ``keep``
    takes. A cursor must be an object of the list (filtered out or not): else 400 ``resource_missing``."""
    cursor = page.starting_after or page.ending_before
    ids = [entry["id"] for entry in ordered]
    if cursor is not None and cursor not in ids:
        name = "starting_after" if page.starting_after else "ending_before"
        return stripe_error(400, f"No such {noun}: '{cursor}'", code="resource_missing", param=name)
    if page.starting_after is not None:
        rest = [e for e in ordered[ids.index(page.starting_after) + 1 :] if keep(e)]
        data, has_more = rest[: page.limit], len(rest) > page.limit
    elif page.ending_before is not None:  # the page just before the cursor, still newest first
        rest = [e for e in ordered[: ids.index(page.ending_before)] if keep(e)]
        data, has_more = rest[-page.limit :], len(rest) > page.limit
    else:
        rest = [e for e in ordered if keep(e)]
        data, has_more = rest[: page.limit], len(rest) > page.limit
    return Reply(200, {"object": "list", "data": data, "has_more": has_more, "url": url})
