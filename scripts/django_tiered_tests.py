"""Django's generic cache tests (BaseCacheTests) on TieredCache over RedisCache.

Copied by ``scripts/django_suite.py --tiered`` into Django's tests/cache/ as
``fastcache_tiered.py`` and run as the label ``cache.fastcache_tiered``, with
a real redis-server whose URL is in $FASTCACHE_SUITE_REDIS.  The aliases are
those Django's RedisCacheTests uses (no "cull"/"zero_cull": Redis has no
MAX_ENTRIES), each a TieredCache whose L2 is one RedisCache alias, with the
invalidation channel on the same server.

Every BaseCacheTests test runs unchanged.  Django itself skips the three
culling tests (test_cull, test_zero_cull, test_cull_delete_when_store_empty:
"Culling isn't implemented") because, as for RedisCacheTests, there are no
"cull"/"zero_cull" aliases: MAX_ENTRIES belongs to L1, and L2 (Redis) has
none.  RedisCacheTests' own extra tests (test_cache_client_class,
test_get_connection_pool...) inspect RedisCache internals and do not apply.
"""

import os

import redis
from django.test import TestCase, override_settings

from .tests import BaseCacheTests, caches_setting_for_tests, redis_excluded_caches

REDIS_URL = os.environ["FASTCACHE_SUITE_REDIS"]
L2_ALIAS = "tiered_l2"

TIERED_PARAMS = {
    "BACKEND": "django_fastcache.TieredCache",
    "OPTIONS": {"L2": L2_ALIAS, "INVALIDATION": REDIS_URL, "L1_TIMEOUT": 5},
}


def tiered_caches(**params):
    setting = caches_setting_for_tests(
        base=TIERED_PARAMS, exclude=redis_excluded_caches, **params
    )
    setting[L2_ALIAS] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
    }
    return setting


@override_settings(CACHES=tiered_caches())
class TieredRedisCacheTests(BaseCacheTests, TestCase):
    # Decided by Redis (INCRBY on a non-integer), as for RedisCacheTests.
    incr_decr_type_error = redis.ResponseError
