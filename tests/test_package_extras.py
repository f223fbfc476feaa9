"""The package extras: system checks, ``manage.py fastcache_stats``, the app
config, the type stubs' import surface, and the example project.

The checks and the command run in this process under override_settings (the
suite's settings come from conftest.py); the example project runs in
subprocesses with its own settings module, so nothing leaks either way.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from conftest import backend_class
from django.apps import apps
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test.utils import override_settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "example")
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
FAST = "django_fastcache.FastCache"
SHARED = "django_fastcache.SharedMemoryCache"
_unique = itertools.count()


@pytest.fixture(autouse=True)
def _needs_fastcache():
    backend_class("fastcache")  # skips (not built) or fails (broken build)


@pytest.fixture
def shm_dir(tmp_path, monkeypatch):
    """SharedMemoryCache segments of this test go to a private directory."""
    monkeypatch.setenv("DJANGO_FASTCACHE_SHM_DIR", str(tmp_path))
    return tmp_path


def unique(name: str) -> str:
    return f"extras-{name}-{os.getpid()}-{next(_unique)}"


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def cache_params(**caches_by_alias) -> dict:
    result = {"default": {"BACKEND": LOCMEM, "LOCATION": unique("default")}}
    result.update(caches_by_alias)
    return result


# ---------------------------------------------------------------------------
# System checks


def run_param_check(**caches_by_alias):
    from django_fastcache.checks import check_cache_params

    with override_settings(CACHES=cache_params(**caches_by_alias)):
        return check_cache_params(None)


@pytest.mark.parametrize(
    "options, named",
    [
        ({"MAX_ENTRIES": "lots"}, ["MAX_ENTRIES", "'lots'"]),
        ({"CULL_FREQUENCY": -1}, ["CULL_FREQUENCY", "-1"]),
        ({"MAX_ENTRIES": True}, ["MAX_ENTRIES", "True"]),
        ({"MAX_ENTIRES": 10}, ["MAX_ENTIRES"]),
        ({"MAX_BYTES": 2**20}, ["MAX_BYTES"]),  # a SharedMemoryCache option only
    ],
)
def test_e001_names_the_bad_option(options, named):
    errors = run_param_check(
        fast={"BACKEND": FAST, "LOCATION": unique("e001"), "OPTIONS": options}
    )
    assert ids(errors) == ["fastcache.E001"]
    message = errors[0].msg
    assert "CACHES['fast']" in message and FAST in message
    for text in named:
        assert text in message
    assert errors[0].hint


def test_e001_for_each_bad_alias_and_subclass_paths(shm_dir):
    errors = run_param_check(
        a={"BACKEND": FAST, "OPTIONS": {"MAX_ENTRIES": -5}},
        b={"BACKEND": "django_fastcache.backend.FastCache", "max_entries": "x"},
        c={"BACKEND": SHARED, "LOCATION": "../escape"},
        d={"BACKEND": SHARED, "LOCATION": unique("d"), "OPTIONS": {"MAX_BYTES": 1}},
        ok={
            "BACKEND": SHARED,
            "LOCATION": unique("ok"),
            "OPTIONS": {"MAX_BYTES": 2**20},
        },
    )
    assert ids(errors) == ["fastcache.E001"] * 4
    assert [e.msg.split("]")[0] for e in errors] == [
        "CACHES['a'",
        "CACHES['b'",
        "CACHES['c'",
        "CACHES['d'",
    ]
    assert "LOCATION" in errors[2].msg and "MAX_BYTES" in errors[3].msg
    assert not list(shm_dir.iterdir())  # checking never creates a segment


def test_e002_for_a_missing_class():
    errors = run_param_check(x={"BACKEND": "django_fastcache.NoSuchCache"})
    assert ids(errors) == ["fastcache.E002"]
    assert "'django_fastcache.NoSuchCache'" in errors[0].msg


def test_other_backends_are_not_validated():
    assert (
        run_param_check(
            lm={"BACKEND": LOCMEM, "OPTIONS": {"MAX_ENTRIES": "whatever", "X": 1}},
            dummy={"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        )
        == []
    )


def test_valid_fastcache_settings_pass():
    assert (
        run_param_check(
            fast={
                "BACKEND": FAST,
                "LOCATION": unique("ok"),
                "TIMEOUT": 60,
                "OPTIONS": {"MAX_ENTRIES": 1000, "CULL_FREQUENCY": 0},
            },
            plain={"BACKEND": FAST},
        )
        == []
    )


def run_session_check(engine, alias="default", **caches_by_alias):
    from django_fastcache.checks import check_session_cache

    with override_settings(
        CACHES=cache_params(**caches_by_alias),
        SESSION_ENGINE=engine,
        SESSION_CACHE_ALIAS=alias,
    ):
        return check_session_cache(None)


CACHE_ENGINE = "django.contrib.sessions.backends.cache"
CACHED_DB_ENGINE = "django.contrib.sessions.backends.cached_db"


@pytest.mark.parametrize("engine", [CACHE_ENGINE, CACHED_DB_ENGINE])
def test_w001_sessions_in_a_per_process_fastcache(engine):
    warnings = run_session_check(
        engine, "sessions", sessions={"BACKEND": FAST, "LOCATION": unique("s")}
    )
    assert ids(warnings) == ["fastcache.W001"]
    warning = warnings[0]
    assert engine in warning.msg and "CACHES['sessions']" in warning.msg
    assert "per-process" in warning.msg
    assert "SharedMemoryCache" in warning.hint
    assert "SILENCED_SYSTEM_CHECKS" in warning.hint


@pytest.mark.parametrize(
    "engine, backend",
    [
        ("django.contrib.sessions.backends.db", FAST),
        ("django.contrib.sessions.backends.signed_cookies", FAST),
        (CACHE_ENGINE, SHARED),
        (CACHE_ENGINE, LOCMEM),
    ],
)
def test_no_w001_otherwise(engine, backend):
    sessions = {"BACKEND": backend, "LOCATION": unique("s")}
    assert run_session_check(engine, "sessions", sessions=sessions) == []


def test_no_w001_when_sessions_use_another_alias():
    fast = {"BACKEND": FAST, "LOCATION": unique("f")}
    assert run_session_check(CACHE_ENGINE, "default", fast=fast) == []


@pytest.fixture
def installed():
    """django_fastcache in INSTALLED_APPS: its ready() registers the checks
    and its command becomes visible."""
    with override_settings(INSTALLED_APPS=["django_fastcache"]):
        yield


def test_app_config_registers_checks_with_tags(installed):
    from django.core import checks

    from django_fastcache.apps import FastCacheConfig
    from django_fastcache.checks import check_cache_params, check_session_cache

    config = apps.get_app_config("django_fastcache")
    assert type(config) is FastCacheConfig
    registered = checks.registry.registry.get_checks()
    assert check_cache_params in registered and check_session_cache in registered
    assert checks.tag_exists("fastcache")
    assert set(check_cache_params.tags) == {"caches", "fastcache"}


def test_manage_py_check_reports_errors_and_warnings(installed):
    bad = {"BACKEND": FAST, "OPTIONS": {"MAX_ENTRIES": "many"}}
    with override_settings(CACHES=cache_params(bad=bad)):
        with pytest.raises(SystemCheckError, match=r"fastcache\.E001.*MAX_ENTRIES"):
            call_command(
                "check", "--tag", "fastcache", stdout=StringIO(), stderr=StringIO()
            )

    sessions = cache_params(sessions={"BACKEND": FAST, "LOCATION": unique("s")})
    with override_settings(
        CACHES=sessions, SESSION_ENGINE=CACHE_ENGINE, SESSION_CACHE_ALIAS="sessions"
    ):
        err = StringIO()
        call_command("check", stdout=StringIO(), stderr=err)
        assert "fastcache.W001" in err.getvalue()
        with override_settings(SILENCED_SYSTEM_CHECKS=["fastcache.W001"]):
            out = StringIO()
            call_command("check", stdout=out, stderr=StringIO())
            assert "no issues (1 silenced)" in out.getvalue()


# ---------------------------------------------------------------------------
# manage.py fastcache_stats


@pytest.fixture
def stats_caches(installed, shm_dir):
    configured = cache_params(
        fast={"BACKEND": FAST, "LOCATION": unique("fast")},
        shm={
            "BACKEND": SHARED,
            "LOCATION": unique("shm"),
            "OPTIONS": {"MAX_BYTES": 2**20},
        },
    )
    with override_settings(CACHES=configured):
        yield configured
        for alias in ("fast", "shm"):
            caches[alias].clear()
    from django_fastcache import remove_segment

    remove_segment(configured["shm"]["LOCATION"])


def stats_output(*args) -> str:
    out = StringIO()
    call_command("fastcache_stats", *args, stdout=out)
    return out.getvalue()


def test_stats_table_for_every_fastcache_alias(stats_caches):
    fast = caches["fast"]
    fast.set("a", 1)
    fast.get("a")
    fast.get("a")
    fast.get("missing")
    text = stats_output()
    assert "Cache 'fast'" in text and "Cache 'shm'" in text
    assert "Cache 'default'" not in text  # LocMemCache has no counters
    block = text.split("Cache 'shm'")[0]
    lines = {line.split()[0]: line for line in block.splitlines() if line.strip()}
    assert lines["backend"].split()[-1] == FAST
    assert stats_caches["fast"]["LOCATION"] in lines["location"]
    assert "this process only" in block
    assert lines["hits"].split()[-1] == "2"
    assert lines["misses"].split()[-1] == "1"
    assert lines["sets"].split()[-1] == "1"
    assert "hit rate" in block and "66.7%" in block
    # Numbers are right-aligned in one column.
    ends = {len(lines[name]) for name in ("hits", "misses", "sets", "entries", "bytes")}
    assert len(ends) == 1
    assert "shared" in text.split("Cache 'shm'")[1]


def test_stats_json_and_named_aliases(stats_caches):
    caches["shm"].set("k", "v")
    caches["shm"].get("k")
    data = json.loads(stats_output("shm", "--json"))
    assert list(data) == ["shm"]
    entry = data["shm"]
    assert entry["backend"] == SHARED
    assert entry["location"] == stats_caches["shm"]["LOCATION"]
    assert entry["per_process"] is False
    assert entry["stats"]["hits"] == 1 and entry["stats"]["entries"] == 1
    assert entry["hit_rate"] == 1.0
    assert set(entry["stats"]) >= {
        "hits",
        "misses",
        "sets",
        "deletes",
        "evictions",
        "expirations",
        "entries",
        "bytes",
    }
    both = json.loads(stats_output("--json"))
    assert set(both) == {"fast", "shm"}
    assert both["fast"]["per_process"] is True
    assert both["fast"]["hit_rate"] is None  # no lookups yet


def test_stats_reset(stats_caches):
    fast = caches["fast"]
    fast.set("a", 1)
    fast.get("a")
    text = stats_output("fast", "--reset")
    assert "Counters reset for: fast." in text
    after = fast.stats()
    assert after["hits"] == 0 and after["sets"] == 0
    assert after["entries"] == 1  # a gauge, not a counter
    assert (
        json.loads(stats_output("fast", "--json", "--reset"))["fast"]["stats"]["hits"]
        == 0
    )


@pytest.mark.parametrize(
    "alias, message",
    [
        ("nope", r"Unknown cache alias 'nope' \(settings.CACHES has: 'default'"),
        (
            "default",
            r"'default' uses django.core.cache.backends.locmem.LocMemCache, not",
        ),
    ],
)
def test_stats_rejects_unknown_and_foreign_aliases(stats_caches, alias, message):
    with pytest.raises(CommandError, match=message):
        stats_output(alias)


def test_stats_without_fastcache_aliases(installed):
    with override_settings(CACHES=cache_params()):
        assert "No CACHES alias uses a django_fastcache backend" in stats_output()
        assert json.loads(stats_output("--json")) == {}


def test_stats_reports_an_invalid_alias_as_command_error(installed):
    bad = {"BACKEND": FAST, "OPTIONS": {"MAX_ENTRIES": -1}}
    with override_settings(CACHES=cache_params(bad=bad)):
        with pytest.raises(CommandError, match=r"'bad'.*MAX_ENTRIES"):
            stats_output("bad")


# ---------------------------------------------------------------------------
# Package surface and stubs


def test_management_command_is_packaged():
    """The command must be in the built package, not only in the checkout."""
    import django_fastcache

    commands = os.path.join(
        os.path.dirname(django_fastcache.__file__), "management", "commands"
    )
    assert os.path.isfile(os.path.join(commands, "fastcache_stats.py")), (
        f"{commands}/fastcache_stats.py is missing from the imported build: "
        "pyproject.toml [tool.setuptools] packages must list "
        "django_fastcache.management and django_fastcache.management.commands"
    )


def test_stub_files_are_shipped_next_to_the_modules():
    import django_fastcache

    package = os.path.dirname(django_fastcache.__file__)
    for name in (
        "__init__.pyi",
        "backend.pyi",
        "_fastcache.pyi",
        "middleware.pyi",
        "decorators.pyi",
        "wsgi.pyi",
        "asgi.pyi",
        "py.typed",
    ):
        assert os.path.isfile(os.path.join(package, name)), name


def test_stubs_list_the_runtime_names():
    """A cheap guard; `python -m mypy.stubtest django_fastcache` is the full one."""
    import ast

    import django_fastcache
    from django_fastcache import _fastcache, backend

    def names(stub: str) -> set[str]:
        with open(os.path.join(REPO, "django_fastcache", stub)) as f:
            tree = ast.parse(f.read())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                found.add(node.target.id)
            elif isinstance(node, ast.alias):
                found.add(node.asname or node.name)
        return found

    assert set(django_fastcache.__all__) <= names("__init__.pyi")
    assert set(backend.__all__) <= names("backend.pyi")
    from django_fastcache import asgi, decorators, middleware, wsgi

    for module in (middleware, decorators, wsgi, asgi):
        stub = module.__name__.rpartition(".")[2] + ".pyi"
        public = {
            n
            for n, v in vars(module).items()
            if not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
        }
        assert set(module.__all__) | public <= names(stub), stub
    public = {n for n in dir(_fastcache) if not n.startswith("_")}
    public |= {
        n
        for t in (_fastcache.Store, _fastcache.Handle)
        for n in dir(t)
        if not n.startswith("_")
    }
    assert public - names("_fastcache.pyi") == set()
    fast_api = {n for n in vars(backend.FastCache) if not n.startswith("_")}
    fast_api |= {"_cache", "_expire_info", "_lock", "_max_entries", "_cull_frequency"}
    assert fast_api - names("backend.pyi") == set()


def test_package_imports_without_settings(tmp_path):
    import django_fastcache

    result = run_python(
        "import django_fastcache, django_fastcache.apps, django_fastcache.checks;"
        "import django_fastcache.management.commands.fastcache_stats;"
        "print(django_fastcache.__file__)",
        cwd=str(tmp_path),
    )
    assert result.stdout.strip() == django_fastcache.__file__


# ---------------------------------------------------------------------------
# The example project (subprocesses with mysite.settings)


def run_python(code_or_args, *, cwd=EXAMPLE, env=None, timeout=120, check=True):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    # The child imports django_fastcache exactly as this process can (the
    # installed build, or a checkout already on PYTHONPATH); the checkout is
    # never put first, as its directory may hold no compiled module.
    full_env = dict(os.environ)
    full_env.pop("DJANGO_SETTINGS_MODULE", None)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [EXAMPLE, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-W", "error", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


EXAMPLE_BACKENDS = {"fast": FAST, "shared": SHARED, "locmem": LOCMEM}

CLIENT_SCRIPT = r"""
import json, os
os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
import django
django.setup()
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from shop import views

client = Client()
first = client.get("/?category=toys")
second = client.get("/?category=toys")
after_list = views.view_runs()
details = [client.get("/products/7/") for _ in range(2)]
popular = client.get("/api/popular/").json()
stats = client.get("/stats/").json()
print(json.dumps({
    "backend": settings.CACHES["default"]["BACKEND"],
    "session_engine": settings.SESSION_ENGINE,
    "status": [first.status_code, second.status_code],
    "same_body": first.content == second.content,
    "cache_control": second.get("Cache-Control"),
    "list_runs": after_list.get("product_list"),
    "detail_status": [r.status_code for r in details],
    "views_text": "Viewed 2 times." in details[1].content.decode(),
    "session": client.session.get("recent"),
    "popular_views": popular["most_viewed"],
    "api_requests": popular["api_requests"],
    "stats": stats,
}))
"""


@pytest.mark.parametrize("choice", ["fast", "shared", "locmem"])
def test_example_serves_the_list_page_from_cache(choice, shm_dir):
    result = run_python(CLIENT_SCRIPT, env={"FASTCACHE_BACKEND": choice})
    data = json.loads(result.stdout)
    assert data["backend"] == EXAMPLE_BACKENDS[choice]
    assert data["session_engine"] == "django.contrib.sessions.backends.cache"
    assert data["status"] == [200, 200]
    assert data["same_body"] and data["cache_control"] == "max-age=30"
    assert data["list_runs"] == 1  # the second GET never reached the view
    assert data["detail_status"] == [200, 200] and data["views_text"]
    assert data["session"] == [7]
    assert data["popular_views"] == [{"pk": 7, "views": 2}]
    assert data["api_requests"] == 1
    stats = data["stats"]
    assert stats["choice"] == choice
    if choice == "locmem":
        assert stats["stats"] is None and stats["hit_rate"] is None
    else:
        assert stats["stats"]["hits"] > 0 and 0 < stats["hit_rate"] < 1
        assert stats["view_runs"] == {
            "product_list": 1,
            "product_detail": 2,
            "popular": 1,
        }
    if choice == "shared":
        # The segment, and the companion of get_or_set's leases (the popular
        # view computes its summary with get_or_set).
        segment = f"django_fastcache.{os.geteuid()}.example-shop"
        assert sorted(p.name for p in shm_dir.iterdir()) == [
            segment,
            segment + ".leases",
        ]


@pytest.mark.parametrize("choice", ["fast", "shared", "locmem"])
def test_example_manage_py_check(choice, shm_dir):
    result = run_python(["manage.py", "check"], env={"FASTCACHE_BACKEND": choice})
    silenced = 1 if choice == "fast" else 0  # fastcache.W001, see settings.py
    assert f"System check identified no issues ({silenced} silenced)." in result.stdout


def test_example_fastcache_stats_command():
    result = run_python(["manage.py", "fastcache_stats", "--json"])
    data = json.loads(result.stdout)
    assert data["default"]["backend"] == FAST
    assert data["default"]["location"] == "example-shop"


def test_example_rejects_an_unknown_backend():
    result = run_python(
        ["manage.py", "check"], env={"FASTCACHE_BACKEND": "redis"}, check=False
    )
    assert result.returncode != 0
    assert (
        "FASTCACHE_BACKEND='redis' is not one of: fast, shared, locmem."
        in result.stderr
    )


def test_example_shared_fails_clearly_without_shared_memory_cache():
    code = (
        "import django_fastcache\n"
        "del django_fastcache.SharedMemoryCache\n"
        "import mysite.settings\n"
    )
    result = run_python(code, env={"FASTCACHE_BACKEND": "shared"}, check=False)
    assert result.returncode != 0
    assert "ImproperlyConfigured: FASTCACHE_BACKEND=shared needs" in result.stderr
    # Only when selected: the default still imports.
    run_python(code, env={"FASTCACHE_BACKEND": "fast"})


def test_example_loadtest_runs_and_stops_its_servers(shm_dir):
    # The servers inherit the captured stderr: run() returns only once every
    # process holding it has exited, so a server left running fails by timeout.
    result = run_python(
        [
            "loadtest.py",
            "--json",
            "--backends",
            "locmem,fast",
            "--seconds",
            "1",
            "--warmup",
            "0.3",
            "--threads",
            "2",
            "--max-requests",
            "300",
        ],
        timeout=90,
    )
    results = json.loads(result.stdout)
    assert [r["backend"] for r in results] == ["locmem", "fast"]
    for r in results:
        assert r["requests"] > 0 and r["errors"] == 0
        assert r["requests"] <= 300
        assert r["requests_per_s"] > 0
    assert results[0]["cache_hit_rate"] is None
    assert 0 < results[1]["cache_hit_rate"] <= 1
