"""Secrets: from Secrets Manager in AWS (cached by Powertools Parameters), or an env var locally."""

from __future__ import annotations

from typing import Any

from . import aws


class SecretUnavailable(Exception):
    """A secret could not be read: the service cannot work until an operator fixes it."""


class SecretMisconfigured(SecretUnavailable):
    """The secret is there but wrong for this deployment (a live Stripe key on a test stack, a placeholder):
    a configuration error for an operator, not an outage to wait out."""


class SecretSource:
    """A string secret read from ``secret_arn`` (cached for ``cache_seconds``) or given as ``value``."""

    def __init__(self, *, secret_arn: str | None, value: str | None, cache_seconds: int, name: str) -> None:
        self._secret_arn = secret_arn
        self._value = value
        self._cache_seconds = cache_seconds
        self._name = name
        self._provider: Any = None

    def get(self) -> str:
        if not self._secret_arn:
            if not self._value:
                raise SecretUnavailable(f"{self._name} is not configured")
            return self._value
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            self._provider = SecretsProvider(boto3_client=aws.client("secretsmanager"))
        try:
            secret = self._provider.get(self._secret_arn, max_age=self._cache_seconds)
        except Exception as exc:  # GetParameterError wraps every SDK failure
            raise SecretUnavailable(f"{self._name}: cannot read secret {self._secret_arn}: {exc}") from exc
        if not isinstance(secret, str) or not secret:
            raise SecretUnavailable(f"{self._name}: secret {self._secret_arn} has no string value")
        return secret
