"""Small HTML pages shown in the user's browser during a login."""

from __future__ import annotations

import html
from typing import Final

from starlette.responses import HTMLResponse

SECURITY_HEADERS: Final = {
    "Cache-Control": "no-store",
    # No scripts, no framing (clickjacking), no referrer leaking the query.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def error_page(message: str, status: int) -> HTMLResponse:
    """Render an error that cannot be sent to a client's redirect URI."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Login failed</title></head>'
        f"<body><h1>Login failed</h1><p>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
