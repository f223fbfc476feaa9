"""The drop-in {% cache %} tag (django_fastcache.templatetags.fastcache)
renders, keys, stores and fails exactly as Django's tag does, on any backend.

Each case renders the same template with Django's library and with ours (as
the "cache" library of an Engine) against two fresh caches, and compares the
output, the cache contents (keys and values) and the errors."""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

import pytest
from conftest import FASTCACHE_IMPORT_FAILURE, FASTCACHE_SKIP_REASON
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.utils import make_template_fragment_key
from django.template import Context, Engine
from django.test import override_settings

if FASTCACHE_SKIP_REASON:
    pytest.skip(FASTCACHE_SKIP_REASON, allow_module_level=True)
if FASTCACHE_IMPORT_FAILURE:
    raise ImportError(FASTCACHE_IMPORT_FAILURE)

from django_fastcache.templatetags import fastcache as tag  # noqa: E402

DJANGO_LIB = {"cache": "django.templatetags.cache"}
OUR_LIB = {"cache": "django_fastcache.templatetags.fastcache"}
_ids = itertools.count()


def caches_config(backend: str, fragments: bool) -> dict[str, Any]:
    n = next(_ids)
    config = {
        "default": {"BACKEND": backend, "LOCATION": f"tag-default-{n}"},
        "other": {"BACKEND": backend, "LOCATION": f"tag-other-{n}"},
    }
    if fragments:
        config["template_fragments"] = {"BACKEND": backend,
                                        "LOCATION": f"tag-frag-{n}"}
    return config


def contents(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """alias -> {made key: value} of every cache of the configuration."""
    out = {}
    for alias in config:
        cache = caches[alias]
        out[alias] = {k: cache.get(k.split(":", 2)[2]) for k in list(cache._cache)}
    return out


def run(libraries: dict[str, str], source: str, context: dict[str, Any],
        backend: str, fragments: bool, renders: int = 2) -> Any:
    """(outputs, cache contents) or ("error", type, message)."""
    config = caches_config(backend, fragments)
    with override_settings(CACHES=config):
        template = None
        try:
            template = Engine(libraries=libraries).from_string(source)
            outputs = [template.render(Context(dict(context, n=i)))
                       for i in range(renders)]
        except Exception as exc:  # noqa: BLE001 - compared below
            return ("error", type(exc), str(exc))
        return outputs, contents(config)


BACKENDS = ["django.core.cache.backends.locmem.LocMemCache",
            "django_fastcache.FastCache"]

CASES = [
    # (template, context)
    ("{% load cache %}{% cache 500 frag %}x{{ n }}{% endcache %}", {}),
    ("{% load cache %}{% cache 500 frag a b %}x{{ n }}{% endcache %}",
     {"a": 1, "b": "é"}),
    ("{% load cache %}{% cache t frag a %}x{{ n }}{% endcache %}",
     {"t": "60", "a": [1, 2]}),
    ("{% load cache %}{% cache None frag %}x{{ n }}{% endcache %}", {}),
    ('{% load cache %}{% cache 500 frag using="other" %}x{{ n }}{% endcache %}', {}),
    ("{% load cache %}{% cache 500 frag a using=alias %}x{{ n }}{% endcache %}",
     {"alias": "other", "a": 3}),
    ("{% load cache %}{% cache 0 frag %}x{{ n }}{% endcache %}", {}),
    ("{% load cache %}{% cache -1 frag %}x{{ n }}{% endcache %}", {}),
    ("{% load cache %}{% cache 500 f1 %}1{% endcache %}{% cache 500 f2 %}2"
     "{% cache 500 f3 a %}3{% endcache %}{% endcache %}", {"a": "z"}),
    # errors
    ("{% load cache %}{% cache missing frag %}x{% endcache %}", {}),
    ("{% load cache %}{% cache 'abc' frag %}x{% endcache %}", {}),
    ("{% load cache %}{% cache 500 frag using=missing %}x{% endcache %}", {}),
    ('{% load cache %}{% cache 500 frag using="nope" %}x{% endcache %}', {}),
    ("{% load cache %}{% cache 500 %}x{% endcache %}", {}),
    ("{% load cache %}{% cache 500 frag %}x", {}),
]


@pytest.mark.parametrize("fragments", [False, True],
                         ids=["no-alias", "fragments-alias"])
@pytest.mark.parametrize("backend", BACKENDS, ids=["locmem", "fastcache"])
@pytest.mark.parametrize(("source", "context"), CASES)
def test_renders_and_stores_as_djangos_tag(source, context, backend, fragments):
    ours = run(OUR_LIB, source, context, backend, fragments)
    theirs = run(DJANGO_LIB, source, context, backend, fragments)
    assert ours == theirs


def test_a_fragments_alias_that_cannot_be_made_falls_back_as_django(tmp_path):
    config = caches_config(BACKENDS[1], False)
    config["template_fragments"] = {"BACKEND": "no.such.Backend"}
    source = "{% load cache %}{% cache 500 frag %}x{% endcache %}"
    with override_settings(CACHES=config):
        for lib in (OUR_LIB, DJANGO_LIB):
            assert Engine(libraries=lib).from_string(source).render(Context()) == "x"
        assert caches["default"].get(make_template_fragment_key("frag")) == "x"


def test_a_patched_key_function_is_called_as_django_calls_it():
    config = caches_config(BACKENDS[1], False)
    source = "{% load cache %}{% cache 500 frag %}x{% endcache %}"
    with override_settings(CACHES=config):
        template = Engine(libraries=OUR_LIB).from_string(source)
        with mock.patch("django.templatetags.cache.make_template_fragment_key",
                        return_value="patched-key") as patched:
            assert template.render(Context()) == "x"
        patched.assert_called_once_with("frag", [])
        assert caches["default"].get("patched-key") == "x"


def test_static_key_is_djangos_key():
    template = Engine(libraries=OUR_LIB).from_string(
        "{% load cache %}{% cache 500 side %}x{% endcache %}")
    node = next(n for n in template.nodelist if isinstance(n, tag.CacheNode))
    assert node.static_key == make_template_fragment_key("side", [])


def test_locmem_is_the_reference_backend_here():
    # The comparison above is only meaningful if LocMemCache is Django's.
    assert LocMemCache.__module__ == "django.core.cache.backends.locmem"
