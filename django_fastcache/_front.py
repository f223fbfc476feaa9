"""The page front's logic shared by wsgi.py and asgi.py.

A front answers a GET or HEAD request from a page the drop-ins stored, before
Django runs, when it can compute exactly the key Django's
FetchFromCacheMiddleware would, and the page was marked servable; otherwise
it passes the request to Django untouched.  This module owns:

* the settings snapshot taken when the front is made (hosts, proxy headers,
  key prefix, the time zone, middleware that change hits);
* the language part of the key: LANGUAGE_CODE, or what Django's
  LocaleMiddleware would choose, computed with Django's functions; and the
  check that the drop-ins keyed each request the front passed on with the
  suffix the front computed (else the front turns itself off: _pages.LOCALE_SEEN);
* the absolute URI from request parts, for the URIs Django leaves unchanged
  (a conservative set of ASCII characters; anything else falls through);
* the two lookups (header list, then page) and the Age header;
* the deferred stores: when the front passes a request to Django it hands the
  drop-ins a Slot; they leave their page stores in it, and the front makes
  them once the answer has left Django, marking a page servable only if the
  answer was exactly the stored entry (same status, headers, cookies, body).
  So a page stored by a cache_page deep in the stack, whose answer outer
  middleware then changed, is never served by the front.

It never builds a request object and never calls into middleware.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf.urls.i18n import is_language_prefix_patterns_used
from django.core.exceptions import ImproperlyConfigured
from django.http.cookie import parse_cookie
from django.utils import translation

from . import _pages
from ._pages import E_FRONT, E_HEADERS, E_LAYOUT, E_SET_COOKIE
from .backend import FastCache

# Characters for which escape_uri_path() (path) and iri_to_uri() (path and
# query) change nothing, so the URI Django hashes is the plain concatenation.
_PATH_OK = re.compile(r"[A-Za-z0-9_.\-~/:@&+$,!*'()]*").fullmatch
_QUERY_OK = re.compile(r"[A-Za-z0-9_.\-~/#%\[\]=:;$&()+,!?*@']*").fullmatch
_MAX_HOSTS = 4096
_CONDITIONAL = (
    "HTTP_IF_NONE_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_MATCH",
    "HTTP_IF_UNMODIFIED_SINCE",
)


class Front:
    """Settings and lookups of one serve_cached() front."""

    def __init__(self, application: Any, alias: str, key_prefix: str | None) -> None:
        from django.conf import settings
        from django.core.cache import caches
        from django.middleware.http import ConditionalGetMiddleware
        from django.middleware.locale import LocaleMiddleware
        from django.utils.module_loading import import_string
        from django.utils.timezone import get_default_timezone_name

        self.application = application
        self.alias = alias
        cache = caches[alias]
        if not isinstance(cache, FastCache):
            raise ImproperlyConfigured(
                f"serve_cached(): cache {alias!r} is a {type(cache).__name__}; the "
                "front reads pages stored by django_fastcache's middleware in a "
                "FastCache or SharedMemoryCache"
            )
        self.cache = cache
        self.key_prefix = (
            settings.CACHE_MIDDLEWARE_KEY_PREFIX if key_prefix is None else key_prefix
        )
        self.use_x_forwarded_host = settings.USE_X_FORWARDED_HOST
        self.use_x_forwarded_port = settings.USE_X_FORWARDED_PORT
        self.force_script_name = settings.FORCE_SCRIPT_NAME
        self.ssl_header: str | None = None
        self.ssl_value: str | None = None
        self.usable = True
        if settings.SECURE_PROXY_SSL_HEADER:
            try:
                self.ssl_header, self.ssl_value = settings.SECURE_PROXY_SSL_HEADER
            except ValueError:
                self.usable = False  # Django raises on every request: let it
        allowed = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        self.allowed_hosts = list(allowed)
        self.hosts: dict[str, bool] = {}
        classes = []
        for path in settings.MIDDLEWARE:
            try:
                classes.append(import_string(path))
            except ImportError:
                self.usable = False
        # ConditionalGetMiddleware may answer a hit with 304 or 412: requests
        # with preconditions go to Django.
        self.conditional = any(
            isinstance(c, type) and issubclass(c, ConditionalGetMiddleware)
            for c in classes
        )
        # The key ends with the request's language and time zone.  The front
        # computes the defaults, or with Django's own LocaleMiddleware (not a
        # subclass, which may choose otherwise) the language it would choose
        # from the URL prefix, the language cookie or Accept-Language.
        self.locale = False
        lang_part = ""
        if settings.USE_I18N:
            locales = [
                c
                for c in classes
                if isinstance(c, type) and issubclass(c, LocaleMiddleware)
            ]
            if locales:
                self.locale = True
                if any(c is not LocaleMiddleware for c in locales):
                    self.usable = False
            lang_part = f".{settings.LANGUAGE_CODE}"
        self.tz_part = f".{get_default_timezone_name()}" if settings.USE_TZ else ""
        self.suffix = lang_part + self.tz_part
        self.root_urlconf = settings.ROOT_URLCONF
        self.language_code = settings.LANGUAGE_CODE
        self.page_head = f"views.decorators.cache.cache_page.{self.key_prefix}."

    def suffix_for(self, meta: Any, path_info: str, raw_cookie: str) -> str:
        """The language and time zone part of this request's keys."""
        if not self.locale:
            return self.suffix
        # LocaleMiddleware.process_request, on a stand-in request.
        probe = _LanguageProbe(meta, path_info, parse_cookie(raw_cookie))
        i18n_patterns_used, prefixed_default = is_language_prefix_patterns_used(
            self.root_urlconf
        )
        language = translation.get_language_from_request(
            probe, check_path=i18n_patterns_used
        )
        from_path = translation.get_language_from_path(path_info)
        if not from_path and i18n_patterns_used and not prefixed_default:
            language = self.language_code
        return f".{translation.to_language(language)}{self.tz_part}"

    # --- keys ---------------------------------------------------------------

    def host_allowed(self, host: str) -> bool:
        ok = self.hosts.get(host)
        if ok is None:
            from django.http.request import split_domain_port, validate_host

            domain, _port = split_domain_port(host)
            ok = bool(domain and validate_host(domain, self.allowed_hosts))
            if len(self.hosts) >= _MAX_HOSTS:
                self.hosts.clear()
            self.hosts[host] = ok
        return ok

    def url_for(
        self, meta: Any, scheme: Any, path: str, query: str, server: tuple[str, str]
    ) -> str | None:
        """md5 of the absolute URI Django would build, or None to pass."""
        if not self.usable:
            return None
        if self.conditional:
            for name in _CONDITIONAL:
                if name in meta:
                    return None
        if _pages.LOCALE_SEEN.other and (self.suffix or self.locale):
            return None
        if (
            path[:1] != "/"
            or not _PATH_OK(path)
            or "/./" in path
            or "/../" in path
            or (query and not _QUERY_OK(query))
        ):
            return None
        if self.ssl_header is not None:
            value = meta.get(self.ssl_header)
            if value is not None:
                scheme = (
                    "https"
                    if value.split(",", 1)[0].strip() == self.ssl_value
                    else "http"
                )
        if scheme != "http" and scheme != "https":
            return None
        if self.use_x_forwarded_host and "HTTP_X_FORWARDED_HOST" in meta:
            host = meta["HTTP_X_FORWARDED_HOST"]
        elif "HTTP_HOST" in meta:
            host = meta["HTTP_HOST"]
        else:
            host, port = server
            if self.use_x_forwarded_port and "HTTP_X_FORWARDED_PORT" in meta:
                port = meta["HTTP_X_FORWARDED_PORT"]
            if str(port) != ("443" if scheme == "https" else "80"):
                host = f"{host}:{port}"
        if not self.host_allowed(host):
            return None  # Django answers 400 (DisallowedHost)
        if query:
            uri = f"{scheme}://{host}{path}?{query}"
        else:
            uri = f"{scheme}://{host}{path}"
        return _pages.url_digest(uri)

    def lookup(self, meta: Any, method: str, url: str, suffix: str) -> tuple | None:
        """The servable entry for this request, or None."""
        cache = self.cache
        prefix = self.key_prefix
        headerlist = cache.get(_pages.header_key(prefix, url, suffix))
        if type(headerlist) is not list:
            return None
        values = _pages.values_digest(meta, headerlist)
        page = cache.get(_pages.page_key(prefix, "GET", url, values, suffix))
        if page is None and method == "HEAD":
            page = cache.get(_pages.page_key(prefix, "HEAD", url, values, suffix))
        if type(page) is not _pages.CachedPage:
            return None  # a miss, or a page stored by Django's own classes
        entry = page.entry
        if entry[E_LAYOUT] != _pages.LAYOUT or not entry[E_FRONT]:
            return None
        return entry

    # --- deferred stores ------------------------------------------------------

    def finish(
        self,
        slot: _pages.Slot,
        method: str,
        url: str | None,
        suffix: str,
        same_answer: Any,
    ) -> None:
        """Make the page stores the drop-ins left in slot, and check the
        language and time zone they keyed this request with.

        same_answer(entry, response) tells whether the answer that left
        Django was exactly this entry.  A key suffix other than the one the
        front computed for the request (a project choosing languages or time
        zones its own way) turns the front off in this process.
        """
        try:
            for used in slot.suffixes:
                if used != suffix:
                    _pages.LOCALE_SEEN.other = True
            head = f"{self.page_head}{method}.{url}." if url is not None else None
            for cache, alias, key, entry, timeout, response in slot.pending:
                servable = (
                    head is not None
                    and not _pages.LOCALE_SEEN.other
                    and alias == self.alias
                    and key.startswith(head)
                    and len(key) == len(head) + 32 + len(suffix)
                    and key.endswith(suffix)
                    and same_answer(entry, response)
                )
                cache.set(
                    key,
                    _pages.with_front(entry) if servable else _pages._load_page(entry),
                    timeout,
                )
        finally:
            for claim in slot.claims:  # the pages are stored: waiters read them
                claim.release()
            slot.claims.clear()


class _LanguageProbe:
    """What get_language_from_request reads of a request."""

    __slots__ = ("COOKIES", "META", "path_info")

    def __init__(self, meta: Any, path_info: str, cookies: dict[str, str]) -> None:
        self.META = meta
        self.path_info = path_info
        self.COOKIES = cookies


def wsgi_headers(entry: tuple, age: int | None) -> list[tuple[str, str]]:
    headers = list(entry[E_HEADERS])
    if age is not None:
        at = entry[_pages.E_AGE_AT]
        if at < 0:
            headers.append(("Age", str(age)))
        else:
            headers[at] = ("Age", str(age))
    for cookie in entry[E_SET_COOKIE]:
        headers.append(("Set-Cookie", cookie))
    return headers


def asgi_headers(entry: tuple, age: int | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (name.encode("ascii"), value.encode("latin1"))
        for name, value in entry[E_HEADERS]
    ]
    if age is not None:
        at = entry[_pages.E_AGE_AT]
        if at < 0:
            headers.append((b"Age", str(age).encode()))
        else:
            headers[at] = (b"Age", str(age).encode())
    for cookie in entry[E_SET_COOKIE]:
        headers.append((b"Set-Cookie", cookie.encode("ascii").strip()))
    return headers


__all__ = ["Front", "asgi_headers", "wsgi_headers"]
