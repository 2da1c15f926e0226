"""The access log, with credentials kept out of it.

aiohttp's ``%r`` writes the request line whole, query string included. Tokens are read only
from the ``Authorization`` header, but a client may still put one in the URL
(``?access_token=…``, which is refused): the request line would then carry a live credential
into every log sink. ``RedactingAccessLogger`` writes the path and, for each query parameter
whose name suggests a credential, ``<name>=REDACTED`` instead of its value.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp.web_log import AccessLogger, KeyMethod
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

SECRET_WORDS = ("token", "secret", "password", "passwd", "key", "code", "auth", "signature")
REDACTED = "REDACTED"
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'  # what ``enclave serve`` logs per request


def is_secret_param(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redacted_path_qs(request: BaseRequest) -> str:
    """``request.path_qs`` with the values of credential-like parameters replaced."""
    query = request.rel_url.query
    if not query:
        return request.raw_path.split("?", 1)[0]
    parts = []
    for name, value in query.items():
        shown = REDACTED if is_secret_param(name) else value
        parts.append(f"{quote(name, safe='')}={quote(shown, safe='')}")
    return f"{request.rel_url.raw_path}?{'&'.join(parts)}"


def request_line(request: BaseRequest, response: StreamResponse, time: float) -> str:
    """``%r`` with ``redacted_path_qs``."""
    if request is None:
        return "-"
    version = request.version
    return f"{request.method} {redacted_path_qs(request)} HTTP/{version.major}.{version.minor}"


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access logger, with ``%r`` (the request line) redacted."""

    def __init__(self, logger: logging.Logger, log_format: str = AccessLogger.LOG_FORMAT) -> None:
        super().__init__(logger, log_format)
        # aiohttp looks its atoms up on AccessLogger itself, so swap the one for %r here
        self._methods = [
            KeyMethod(key, request_line) if key == "first_request_line" else KeyMethod(key, fn)
            for key, fn in self._methods
        ]
