"""Cached pages: the keys and the entry shared by the drop-ins and the front.

This module owns two things:

* The cache keys of Django's page cache, computed as django.utils.cache
  computes them (``views.decorators.cache.cache_header.<prefix>.<md5 of the
  absolute URI><i18n suffix>`` for the list of Vary'd request headers,
  ``views.decorators.cache.cache_page.<prefix>.<method>.<md5 of the URI>.<md5
  of the header values><i18n suffix>`` for the page), from a request
  (middleware.py) or from parts the front took out of an environ or scope
  (wsgi.py, asgi.py).  The same strings, so ``get_cache_key()`` and
  ``cache.delete()`` purge pages stored here.

* The entry stored at a page key on a FastCache/SharedMemoryCache: a
  ``CachedPage``.  It pickles as one call of ``_load_page`` with a tuple
  (status, headers, body, the Age inputs, the WSGI status line and
  Set-Cookie strings, ...), and unpickles as a CachedPage holding only that
  tuple: the front reads the tuple and never builds an HttpResponse.  A
  CachedPage *is* an HttpResponse (it builds its state from the tuple on first
  attribute access), so code that reads page keys expecting one - Django's
  own FetchFromCacheMiddleware, ``cache_page`` left unreplaced in a view, a
  test - still works.  ``to_response()`` rebuilds an instance of the class
  the view returned, with the state pickling would have given it.

It does not decide what is cacheable (middleware.py mirrors Django there) and
it never touches a request beyond reading it.
"""

from __future__ import annotations

import copy
import time
from hashlib import md5
from http.cookies import SimpleCookie
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.http.response import ResponseHeaders
from django.utils.cache import cc_delim_re, get_max_age
from django.utils.http import parse_http_date_safe
from django.utils.module_loading import import_string
from django.utils.timezone import get_current_timezone_name
from django.utils.translation import get_language

HEADER_KEY = "views.decorators.cache.cache_header.%s.%s%s"
PAGE_KEY = "views.decorators.cache.cache_page.%s.%s.%s.%s%s"
EMPTY_MD5 = md5(b"", usedforsecurity=False).hexdigest()

# The environ/scope key through which the front hands the drop-ins a _Slot.
FRONT_SLOT = "django_fastcache.front"

# Entry layout (a tuple; the first item names the layout so that a later
# release can read or skip older entries).  Do not rename _load_page: pickled
# entries name it, and SharedMemoryCache segments outlive restarts.
LAYOUT = "fastcache-page-1"
(
    E_LAYOUT,
    E_CLASS,  # dotted path of the response class
    E_STATUS,  # int
    E_REASON,  # the response's _reason_phrase attribute (None: from status)
    E_HEADERS,  # tuple of (name, value) in response order
    E_COOKIES,  # SimpleCookie or None
    E_BODY,  # bytes
    E_STATE,  # dict of the other pickled attributes, or None
    E_MAX_AGE,  # int or None: Cache-Control max-age
    E_EXPIRES,  # int or None: Expires as a timestamp
    E_STATUS_LINE,  # "200 OK", as WSGIHandler writes it
    E_SET_COOKIE,  # tuple of Set-Cookie values, as WSGIHandler writes them
    E_AGE_AT,  # index of an existing Age header in E_HEADERS, else -1
    E_FRONT,  # True once the front saw this exact answer leave Django
) = range(14)
_STRUCTURED = frozenset(
    {"headers", "cookies", "_container", "status_code", "_reason_phrase"}
)


def _make_headers(items: tuple[tuple[str, str], ...]) -> ResponseHeaders:
    headers = ResponseHeaders.__new__(ResponseHeaders)
    headers._store = {name.lower(): (name, value) for name, value in items}
    return headers


def _headers_internals_ok() -> bool:
    # ResponseHeaders keeps {lower name: (name, value)} in _store (Django 4.2 to
    # 6.x); rebuilt headers skip re-validating values already validated once.
    # If a release changes that, build them through the public constructor.
    try:
        probe = ResponseHeaders({"X-A": "b"})
        return probe._store == {"x-a": ("X-A", "b")} and dict(
            _make_headers((("X-A", "b"),)).items()
        ) == {"X-A": "b"}
    except Exception:  # pragma: no cover - a future Django
        return False


if not _headers_internals_ok():  # pragma: no cover - a future Django

    def _make_headers(items: tuple[tuple[str, str], ...]) -> ResponseHeaders:  # noqa: F811
        return ResponseHeaders(dict(items))


_classes: dict[str, type] = {}


def _response_class(path: str) -> type:
    cls = _classes.get(path)
    if cls is None:
        cls = _classes[path] = import_string(path)
    return cls


def _state_of(entry: tuple) -> dict[str, Any]:
    """The instance dict pickling would give the stored response back."""
    state: dict[str, Any] = dict(entry[E_STATE]) if entry[E_STATE] else {}
    cookies = entry[E_COOKIES]
    state["headers"] = _make_headers(entry[E_HEADERS])
    state["cookies"] = SimpleCookie() if cookies is None else cookies
    state["_container"] = [entry[E_BODY]]
    state["status_code"] = entry[E_STATUS]
    state["_reason_phrase"] = entry[E_REASON]
    return state


class CachedPage(HttpResponse):
    """A stored page: the compact entry, and an HttpResponse on demand."""

    def __init__(self, entry: tuple) -> None:  # noqa: D107 - no HttpResponse init
        self.__dict__["_fastcache_entry"] = entry

    @property
    def entry(self) -> tuple:
        return self.__dict__["_fastcache_entry"]

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not yet set: build the HttpResponse
        # state from the entry once, then look again.
        d = self.__dict__
        if (
            name.startswith("__")
            or "_fastcache_built" in d
            or "_fastcache_entry" not in d
        ):
            raise AttributeError(name)
        d.update(_state_of(d["_fastcache_entry"]))
        d["_fastcache_built"] = True
        return object.__getattribute__(self, name)

    def __reduce__(self) -> tuple[Any, tuple[tuple]]:
        d = self.__dict__
        if "_fastcache_built" in d:  # possibly changed since: store what it is now
            entry = entry_from_response(self, d["_fastcache_entry"][E_CLASS])
        else:
            entry = d["_fastcache_entry"]
        return (_load_page, (entry,))

    def to_response(self) -> HttpResponse:
        """A fresh instance of the stored response's class, as unpickling it
        would have built it."""
        entry = self.__dict__["_fastcache_entry"]
        cls = _response_class(entry[E_CLASS])
        response = cls.__new__(cls)
        response.__dict__.update(_state_of(entry))
        return response


def _load_page(entry: tuple) -> CachedPage:
    page = CachedPage.__new__(CachedPage)
    page.__dict__["_fastcache_entry"] = entry
    return page


def entry_from_response(
    response: HttpResponse, class_path: str | None = None, front: bool = False
) -> tuple:
    """The compact entry of a (rendered, non-streaming) response."""
    cls = type(response)
    if class_path is None:
        class_path = f"{cls.__module__}.{cls.__qualname__}"
    state = response.__getstate__()
    # A snapshot, as pickling at this moment would take: the page may be
    # stored later (by a front, once the answer has left Django), after the
    # handler appended request.close to _resource_closers or an outer
    # middleware set a cookie.
    extra = {
        k: (type(v)(v) if type(v) in (list, dict, set) else v)
        for k, v in state.items()
        if k not in _STRUCTURED and k[:11] != "_fastcache_"
    }
    headers = tuple(response.items())
    cookies = copy.deepcopy(response.cookies) if response.cookies else None
    set_cookie = tuple(c.output(header="") for c in cookies.values()) if cookies else ()
    max_age = get_max_age(response)
    expires = None
    if max_age is not None and "Expires" in response:
        expires = parse_http_date_safe(response["Expires"])
    age_at = -1
    for i, (name, _value) in enumerate(headers):
        if name.lower() == "age":
            age_at = i
    return (
        LAYOUT,
        class_path,
        response.status_code,
        state.get("_reason_phrase"),
        headers,
        cookies,
        response.content,
        extra or None,
        max_age,
        expires,
        f"{response.status_code:d} {response.reason_phrase}",
        set_cookie,
        age_at,
        front,
    )


def page_from_response(response: HttpResponse) -> CachedPage:
    return _load_page(entry_from_response(response))


def with_front(entry: tuple) -> CachedPage:
    return _load_page(entry[:E_FRONT] + (True,) + entry[E_FRONT + 1 :])


def age_of(entry: tuple) -> int | None:
    """The Age header Django's FetchFromCacheMiddleware gives a hit, or None."""
    max_age = entry[E_MAX_AGE]
    expires = entry[E_EXPIRES]
    if max_age is None or expires is None:
        return None
    remaining = expires - int(time.time())
    return max(0, max_age - remaining)


# --- keys --------------------------------------------------------------------

_absent_marker: bytes | None = None
_marker_known = False


def _detect_absent_marker() -> bytes | None:
    """What this Django hashes for a Vary'd header the request lacks.

    Recent releases (5.2.x and the security releases of the others) hash b"-,"
    so that an absent header and an empty one differ; older ones skip it.
    Asked of Django's own function once, so the keys stay Django's.
    """
    from django.utils import cache as dj

    class _Probe:
        META: dict[str, str] = {}
        LANGUAGE_CODE = "x"

        def build_absolute_uri(self) -> str:
            return "http://probe/"

    without = dj._generate_cache_key(_Probe(), "GET", [], "")
    absent = dj._generate_cache_key(_Probe(), "GET", ["HTTP_X"], "")
    if absent == without:
        return None
    marked = md5(b"-,", usedforsecurity=False).hexdigest()
    if marked in absent:
        return b"-,"
    raise RuntimeError(  # pragma: no cover - a Django release not known here
        "django_fastcache: this Django keys absent Vary headers in an unknown way"
    )


def values_digest(meta: Any, headerlist: list[str]) -> str:
    if not headerlist:
        return EMPTY_MD5
    global _absent_marker, _marker_known
    if not _marker_known:
        _absent_marker = _detect_absent_marker()
        _marker_known = True
    ctx = md5(usedforsecurity=False)
    for header in headerlist:
        value = meta.get(header)
        if value is None:
            if _absent_marker is not None:
                ctx.update(_absent_marker)
            continue
        ctx.update(value.encode())
    return ctx.hexdigest()


def url_digest(uri: str) -> str:
    return md5(uri.encode("ascii"), usedforsecurity=False).hexdigest()


def request_url_digest(request: Any) -> str:
    """md5 of request.build_absolute_uri(), as Django hashes it.

    Computed afresh on every call, as Django does: a middleware between the
    two phases may change what the URI is.  A lookup hashes it once for both
    of its keys (Django builds it twice).
    """
    return url_digest(request.build_absolute_uri())


_MISSING = object()


class _LocaleSeen:
    """Whether this process saw a page keyed with a language or time zone the
    front would not compute (a project activating them in its own code): a
    language activated without LocaleMiddleware, a time zone other than
    TIME_ZONE, or a key suffix other than the front's for a request it passed
    on (_front.Front.finish).  The fronts of the process then pass every
    request to Django."""

    other = False


LOCALE_SEEN = _LocaleSeen()


def request_suffix(request: Any) -> str:
    """django.utils.cache._i18n_cache_key_suffix, as a string to append."""
    suffix = ""
    if settings.USE_I18N:
        language = getattr(request, "LANGUAGE_CODE", _MISSING)
        if language is _MISSING:
            # Not LocaleMiddleware's choice: some code activated it.
            language = get_language()
            if language != settings.LANGUAGE_CODE:
                LOCALE_SEEN.other = True
        suffix = f".{language}"
    if settings.USE_TZ:
        tz = get_current_timezone_name()
        suffix += f".{tz}"
        if tz != settings.TIME_ZONE:
            LOCALE_SEEN.other = True
    return suffix


def header_key(key_prefix: str, url: str, suffix: str) -> str:
    return HEADER_KEY % (key_prefix, url, suffix)


def page_key(key_prefix: str, method: str, url: str, values: str, suffix: str) -> str:
    return PAGE_KEY % (key_prefix, method, url, values, suffix)


def headerlist_of(response: HttpResponse) -> list[str]:
    """The header list learn_cache_key stores for a response."""
    if not response.has_header("Vary"):
        return []
    redundant = settings.USE_I18N
    headerlist = []
    for header in cc_delim_re.split(response.headers["Vary"]):
        header = header.upper().replace("-", "_")
        if header != "ACCEPT_LANGUAGE" or not redundant:
            headerlist.append("HTTP_" + header)
    headerlist.sort()
    return headerlist


class Slot:
    """What the front hands the drop-ins for one request it passed to Django:
    the page stores they deferred to it (see middleware.UpdateCacheMiddleware
    and wsgi.serve_cached)."""

    __slots__ = ("pending", "suffixes", "claims")

    def __init__(self) -> None:
        self.pending: list[tuple] = []
        self.suffixes: list[str] = []
        # Render claims (_flight.PageClaim) the front releases once it has
        # made the pending stores.
        self.claims: list[Any] = []


def slot_of(request: Any) -> Slot | None:
    carrier = getattr(request, "environ", None)
    if carrier is None:
        carrier = getattr(request, "scope", None)
    if type(carrier) is not dict:
        return None
    slot = carrier.get(FRONT_SLOT)
    return slot if type(slot) is Slot else None


def record_suffix(request: Any, suffix: str) -> None:
    """Tell a front that passed this request on which suffix keyed it."""
    slot = slot_of(request)
    if slot is not None:
        slot.suffixes.append(suffix)
