"""The Django side of the outbound guard (workers/engine/outbound.py): the policy from settings.

Views, services and tasks that call a user-given URL build their clients with these, so the
allow-list an operator sets in DISTILLERY_OUTBOUND_ALLOW applies everywhere the same way.
"""

from __future__ import annotations

import httpx2
from django.conf import settings
from django.core.exceptions import ValidationError

from workers.engine.outbound import (
    OutboundPolicy,
    OutboundRefused,
    async_client,
    check_url,
    sync_client,
)


def outbound_policy() -> OutboundPolicy:
    return OutboundPolicy.parse(settings.OUTBOUND_ALLOW)


def outbound_client(*, timeout: float) -> httpx2.Client:
    return sync_client(outbound_policy(), timeout=timeout)


def outbound_async_client(*, timeout: float) -> httpx2.AsyncClient:
    return async_client(outbound_policy(), timeout=timeout)


def validate_outbound_url(url: str, *, field: str = "base_url") -> None:
    """Raise a ValidationError naming `field` if the guard would refuse the URL when it is used."""
    try:
        check_url(url, outbound_policy())
    except OutboundRefused as exc:
        raise ValidationError({field: [str(exc)]}) from exc
