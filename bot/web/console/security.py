"""The console's browser-facing protections: headers on every answer, cookies, form checks.

- Content-Security-Policy allows scripts, styles and images from this server only and no inline
  script or style at all (the pages carry none), no framing, forms posting only here.
- Cookies are HttpOnly (no script reads them), SameSite=Strict (no other site's page sends them),
  limited to ``/ui``, and Secure whenever the console is reached over HTTPS (directly, or through a
  proxy that says so with ``X-Forwarded-Proto``: the flag only ever makes a cookie stricter).
- Every form carries a CSRF token: the session's own for signed-in forms, and for the sign-in
  form (no session yet) a random value also set as a cookie (double submit), so a page elsewhere
  cannot sign a browser in as someone else.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from aiohttp import web

PREFIX = "/ui"
SESSION_COOKIE = "ooda_session"
SIGNIN_COOKIE = "ooda_signin"
SIGNIN_TTL = timedelta(hours=1)
FORM_BYTES = 64 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes browsers send `Origin: null` on our own forms
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def protect(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def is_https(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: timedelta) -> None:
    response.set_cookie(name, value, max_age=int(max_age.total_seconds()), path=PREFIX, httponly=True,
                        samesite="Strict", secure=is_https(request))


def clear_cookie(response: web.StreamResponse, request: web.Request, name: str) -> None:
    response.set_cookie(name, "", max_age=0, path=PREFIX, httponly=True, samesite="Strict", secure=is_https(request))


def same_origin(request: web.Request) -> bool:
    """False when the browser says the form came from another site (``Origin`` names another host).

    Browsers send ``Origin`` on every POST; a client that sends none (curl) still needs the CSRF
    token and the cookie, which only this console hands out.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.host


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page, never another site (``//evil``, ``/\\evil``)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target \
            and "\r" not in target and "\n" not in target:
        return target
    return PREFIX + "/inbox"
