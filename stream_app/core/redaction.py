"""Keep secrets out of every log line, whoever writes it.

Filtering prodcat's own log calls is not enough: libraries log their configuration
(kafka-python's admin client logs every option it was given, the SASL password included, at
DEBUG). So a log-record factory masks the configured secret values in each record's message,
exception and stack text before any handler, Faust's included, formats it. Which settings are
secret is decided in one place, :meth:`Settings.redacted`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from prodcat.core.settings import Settings

MASK = "***"


class _RedactingFactory:
    """Wraps the previous record factory; masks every known secret in what it returns."""

    def __init__(self, base: Callable[..., logging.LogRecord]) -> None:
        self.base = base
        self.secrets: set[str] = set()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.base(*args, **kwargs)
        if self.secrets:
            self._scrub(record)
        return record

    def _mask(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def _scrub(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's to report, unchanged
            return
        masked = self._mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._mask(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)


def secret_values(settings: Settings) -> set[str]:
    """The values :meth:`Settings.redacted` hides: the secrets, by the settings' own rule."""
    return set(_hidden(dataclasses.asdict(settings), settings.redacted()))


def _hidden(plain: Any, shown: Any) -> Iterable[str]:
    if isinstance(plain, dict):
        for key, value in plain.items():
            yield from _hidden(value, shown[key])
    elif isinstance(plain, list):
        for item, masked in zip(plain, shown, strict=True):
            yield from _hidden(item, masked)
    elif plain != shown and isinstance(plain, str) and plain:
        # "alice:***" hides only what follows the shown prefix: the token, not the name
        hidden = plain[len(os.path.commonprefix([plain, shown.removesuffix(MASK)])) :]
        if hidden:
            yield hidden


def redact_secrets_in_logs(settings: Settings) -> None:
    """Mask the settings' secrets in every log record from now on (idempotent, cumulative)."""
    secrets = secret_values(settings)
    if not secrets:
        return
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingFactory):
        factory = _RedactingFactory(factory)
        logging.setLogRecordFactory(factory)
    factory.secrets |= secrets
