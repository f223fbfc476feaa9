"""An in-memory product catalogue (the example needs no database).

``summary()`` stands in for a costly query or computation whose result the
low-level cache API keeps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from statistics import mean, median

CATEGORIES = ("books", "garden", "kitchen", "music", "toys")
WORDS = (
    "sturdy handy classic compact deluxe bright quiet quick gentle robust "
    "vintage modern elegant simple clever cosy bold lightweight durable"
).split()
NOUNS = "lamp kettle trowel novel puzzle speaker mug chair ukulele planter".split()


@dataclass(frozen=True)
class Product:
    pk: int
    name: str
    category: str
    price_cents: int
    description: str
    tags: tuple[str, ...]

    @property
    def price(self) -> str:
        return f"{self.price_cents // 100}.{self.price_cents % 100:02d}"


def _build(count: int = 60) -> dict[int, Product]:
    rng = random.Random(2024)
    products = {}
    for pk in range(1, count + 1):
        adjective = rng.choice(WORDS)
        noun = rng.choice(NOUNS)
        words = [rng.choice(WORDS) for _ in range(60)]
        products[pk] = Product(
            pk=pk,
            name=f"{adjective.title()} {noun} #{pk}",
            category=CATEGORIES[pk % len(CATEGORIES)],
            price_cents=rng.randrange(199, 19999),
            description=" ".join(words).capitalize() + ".",
            tags=tuple(sorted(set(rng.sample(WORDS, 4)))),
        )
    return products


PRODUCTS = _build()


def products(category: str | None = None) -> list[Product]:
    items = PRODUCTS.values()
    if category:
        return [p for p in items if p.category == category]
    return list(items)


def get(pk: int) -> Product | None:
    return PRODUCTS.get(pk)


def summary() -> dict[str, object]:
    """Per-category counts and price statistics (the 'slow query')."""
    result: dict[str, object] = {}
    for category in CATEGORIES:
        prices = [p.price_cents / 100 for p in products(category)]
        result[category] = {
            "count": len(prices),
            "mean": round(mean(prices), 2),
            "median": round(median(prices), 2),
            "max": max(prices),
        }
    return result
