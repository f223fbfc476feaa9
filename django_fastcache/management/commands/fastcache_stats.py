"""manage.py fastcache_stats [alias ...] [--json] [--reset]

Counters of the django_fastcache caches.  A FastCache table lives in one
process, so run from manage.py this shows that (fresh) process's own table;
call it in the serving process (call_command, a shell in a worker) to see the
site's.  A SharedMemoryCache table is shared by the processes of the host, so
there the command shows the site's counters from anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import InvalidCacheBackendError, caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_fastcache.checks import (
    backend_class,
    is_fastcache_backend,
    is_process_local,
)


def is_tiered(cls: type) -> bool:
    from django_fastcache.tiered import TieredCache

    return issubclass(cls, TieredCache)

# Printed first, in this order; keys a backend adds are printed after them.
STAT_ORDER = (
    "hits",
    "misses",
    "sets",
    "deletes",
    "evictions",
    "expirations",
    "entries",
    "bytes",
)


def hit_rate(stats: dict[str, Any]) -> float | None:
    lookups = stats.get("hits", 0) + stats.get("misses", 0)
    return stats.get("hits", 0) / lookups if lookups else None


class Command(BaseCommand):
    help = (
        "Show hits, misses, sets, evictions, entries and bytes of the CACHES "
        "aliases that use a django_fastcache backend (all of them, or those "
        "named).  FastCache counters are per process: from manage.py you see "
        "this process's table; SharedMemoryCache counters are host-wide."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "aliases",
            nargs="*",
            metavar="alias",
            help="CACHES aliases to show (default: every django_fastcache alias).",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print one JSON object keyed by alias instead of tables.",
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Zero the counters after printing them.",
        )

    def handle(self, *args: str, **options: Any) -> None:
        aliases = options["aliases"]
        configured = settings.CACHES
        if aliases:
            for alias in aliases:
                self._check_alias(alias, configured)
            selected = list(dict.fromkeys(aliases))
        else:
            selected = [
                alias
                for alias, params in configured.items()
                if is_fastcache_backend(params.get("BACKEND"))
            ]

        report: dict[str, dict[str, Any]] = {}
        resets: list[Callable[[], object]] = []
        for alias in selected:
            try:
                cache = caches[alias]
            except (ImproperlyConfigured, InvalidCacheBackendError) as exc:
                raise CommandError(f"Cache alias {alias!r}: {exc}") from exc
            stats_fn = getattr(cache, "stats", None)
            if not callable(stats_fn):
                if aliases:
                    raise CommandError(
                        f"Cache alias {alias!r} ({configured[alias]['BACKEND']}) "
                        "does not provide stats()."
                    )
                continue
            params = configured[alias]
            stats = dict(stats_fn())
            cls = backend_class(params["BACKEND"]) or type(cache)
            report[alias] = {
                "backend": params["BACKEND"],
                "location": params.get("LOCATION", ""),
                # A TieredCache's counters (l1_hits, l2_hits, invalidations,
                # resyncs...) are this process's, whatever its L1.
                "per_process": is_process_local(cls) or is_tiered(cls),
                "stats": stats,
                "hit_rate": hit_rate(stats),
            }
            reset = getattr(cache, "reset_stats", None)
            if callable(reset):
                resets.append(reset)

        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=False))
        elif not report:
            self.stdout.write("No CACHES alias uses a django_fastcache backend.")
        else:
            self.stdout.write("\n\n".join(self._table(a, r) for a, r in report.items()))

        if options["reset"]:
            for reset in resets:
                reset()
            if not options["json"] and report:
                self.stdout.write(
                    self.style.SUCCESS(f"\nCounters reset for: {', '.join(report)}.")
                )

    @staticmethod
    def _check_alias(alias: str, configured: dict[str, Any]) -> None:
        if alias not in configured:
            known = ", ".join(map(repr, configured)) or "none"
            raise CommandError(
                f"Unknown cache alias {alias!r} (settings.CACHES has: {known})."
            )
        backend = configured[alias].get("BACKEND")
        if not is_fastcache_backend(backend):
            raise CommandError(
                f"Cache alias {alias!r} uses {backend}, not a django_fastcache backend."
            )

    def _table(self, alias: str, entry: dict[str, Any]) -> str:
        stats = entry["stats"]
        names = [k for k in STAT_ORDER if k in stats]
        names += [k for k in stats if k not in STAT_ORDER]
        rate = entry["hit_rate"]
        rows: list[tuple[str, str]] = [
            ("backend", entry["backend"]),
            ("location", repr(entry["location"])),
            ("scope", "this process only" if entry["per_process"] else "shared"),
        ]
        numbers = [(name, f"{stats[name]:,}") for name in names]
        numbers.append(("hit rate", "n/a" if rate is None else f"{rate:.1%}"))
        label_width = max(len(name) for name, _ in rows + numbers)
        value_width = max(len(value) for _, value in numbers)
        lines = [self.style.MIGRATE_HEADING(f"Cache {alias!r}")]
        lines += [f"  {name:<{label_width}}  {value}" for name, value in rows]
        lines += [
            f"  {name:<{label_width}}  {value:>{value_width}}"
            for name, value in numbers
        ]
        return "\n".join(lines)
