"""``EPOCHAUTH["SSF_TRANSMITTER"]`` read: imports no model, so that the system checks can read it
whether or not the authorization server (which the transmitter needs) is installed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .. import conf

#: SSF 1.0 section 7.1 ``default_subjects``.
DEFAULT_SUBJECTS = ("NONE", "ALL")


@dataclass(frozen=True)
class TransmitterConfig:
    default_subjects: str = "NONE"
    attempts: int = 8
    retry_delay: timedelta = timedelta(seconds=30)
    min_verification_interval: timedelta = timedelta(minutes=1)


def transmitter_config() -> TransmitterConfig | None:
    """The transmitter's settings, None while it is off; ValueError for a value of the wrong shape
    (check ``epochauth.E037``)."""
    value: Any = conf.epochauth_settings.SSF_TRANSMITTER
    if value is None or value is False:
        return None
    if value is True:
        return TransmitterConfig()
    if not isinstance(value, dict) or set(value) - set(TransmitterConfig.__dataclass_fields__):
        raise ValueError("not True or a dict of the documented keys")
    config = TransmitterConfig(**value)
    if (
        config.default_subjects not in DEFAULT_SUBJECTS
        or type(config.attempts) is not int
        or config.attempts < 1
        or not isinstance(config.retry_delay, timedelta)
        or not isinstance(config.min_verification_interval, timedelta)
        or config.retry_delay < timedelta(0)
        or config.min_verification_interval < timedelta(0)
    ):
        raise ValueError("a value of the wrong type")
    return config


#: The service scope of SSF receivers: only the client-credentials grant of a confidential
#: application whose allowed scopes list it obtains it (never a user).
SCOPE = "ssf:manage"
