"""Synthetic clickstream: page views and clicks of visitors on a shop, in sessions, with referrers.

Visitors browse concurrently: record `index` belongs to one of `_CONCURRENT_VISITS` visit slots (round
robin), and each slot's records come in blocks of `_BLOCK_STEPS` steps drawn together from (seed, slot,
block): one returning visitor (out of `population`) browsing in one to three sessions. A session starts on
a landing page with an outside referrer; each next page view has the previous page as its referrer, and
clicks happen on the page in view. So every record is a function of (seed, index) and its timestamp.

The records carry the fields the processor's generic mapping reads by default (`id`, `username`, `text`,
`timestamp`, `lang`): `username` repeats `user_id`, `text` is a one-line summary.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from sources.synthetic_base import Draws, Timestamps, chunked, encode_json, uuid_text

DEFAULT_VISITORS = 5000
_CONCURRENT_VISITS = 64
_BLOCK_STEPS = 16
# A visit block's draws are seeded apart from the per-record draws: a flag bit above any chunk number.
_BLOCK_SEED_FLAG = 1 << 62
_SLOT_SHIFT = 40
_CLICK_SHARE = 0.3
_SITE = "https://shop.example.com"
_SEARCH_TERMS = ["sneakers", "rain+jacket", "coffee+grinder", "usb-c+cable", "yoga+mat", "headphones", "backpack"]
_CATEGORIES = ["shoes", "outdoor", "kitchen", "electronics", "sports", "bags", "books"]
_BLOG_POSTS = ["spring-sale", "how-to-choose-running-shoes", "coffee-at-home", "packing-light"]
# Outside referrers of a session's landing page, repeated by weight; "" is a direct visit.
_REFERRERS = (
    ["https://www.google.com/"] * 5
    + [""] * 3
    + ["https://www.bing.com/", "https://duckduckgo.com/", "https://t.co/", "https://www.facebook.com/"]
    + ["https://newsletter.example.com/weekly", "https://www.reddit.com/r/deals/"]
)
_USER_AGENTS: list[tuple[str, str]] = [
    (
        "desktop",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        "desktop",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    ),
    ("desktop", "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
    (
        "mobile",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)"
        " AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    ),
    (
        "mobile",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    ),
    (
        "tablet",
        "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X)"
        " AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    ),
]
_LOCALES = ["en-US"] * 4 + ["en-GB", "de-DE", "fr-FR", "es-ES", "ja-JP", "pt-BR", "nl-NL", "ko-KR"]
_CLICK_TARGETS = {
    "home": ["hero_banner", "nav_menu", "search_box"],
    "search": ["result_link", "filter_price", "sort_menu"],
    "category": ["product_tile", "filter_size", "next_page"],
    "product": ["add_to_cart", "image_gallery", "size_picker", "reviews_tab"],
    "cart": ["quantity_plus", "remove_item", "checkout_button"],
    "checkout": ["pay_button", "shipping_option"],
    "blog": ["share_button", "product_link"],
}
# Where a visitor goes next from each kind of page, repeated by weight.
_NEXT = {
    "home": ["category", "category", "search", "product", "blog"],
    "search": ["product", "product", "product", "search", "category"],
    "category": ["product", "product", "product", "category", "home"],
    "product": ["product", "product", "cart", "category", "search"],
    "cart": ["checkout", "checkout", "product", "home"],
    "checkout": ["checkout_done", "cart"],
    "checkout_done": ["home"],
    "blog": ["product", "blog", "home"],
}
_LANDING = ["home", "home", "product", "product", "category", "search", "blog"]


def _path(draws: Draws, page: str) -> str:
    if page == "search":
        return f"/search?q={draws.choice(_SEARCH_TERMS)}"
    if page == "category":
        return f"/category/{draws.choice(_CATEGORIES)}"
    if page == "product":
        return f"/products/{draws.randint(10000, 99999)}"
    if page == "blog":
        return f"/blog/{draws.choice(_BLOG_POSTS)}"
    return {"home": "/", "cart": "/cart", "checkout": "/checkout", "checkout_done": "/checkout/confirmation"}[page]


class ClickstreamKind:
    """Synthetic page views and clicks: events for index = start, start + 1, ..."""

    def __init__(self, seed: int, population: int, timestamps: Timestamps) -> None:
        self.seed = seed
        self.population = population or DEFAULT_VISITORS
        self._timestamps = timestamps
        self._block_draws = Draws()
        # The block each slot is in and its steps (pure memoisation: blocks are drawn from the seed alone).
        self._blocks: dict[int, tuple[int, list[dict[str, Any]]]] = {}
        self._visitors: dict[int, dict[str, str]] = {}

    def _visitor(self, number: int) -> dict[str, str]:
        visitor = self._visitors.get(number)
        if visitor is None:
            rng = random.Random(f"{self.seed}:visitor:{number}")
            device, agent = rng.choice(_USER_AGENTS)
            visitor = {"user_id": f"u_{number:07d}", "user_agent": agent, "device": device, "lang": rng.choice(_LOCALES)}
            self._visitors[number] = visitor
        return visitor

    def _block(self, slot: int, block: int) -> list[dict[str, Any]]:
        draws = self._block_draws
        draws.reseed(self.seed, _BLOCK_SEED_FLAG | (slot << _SLOT_SHIFT) | block)
        visitor = self._visitor(draws.randrange(self.population))
        cuts = {draws.randint(1, _BLOCK_STEPS - 1) for _ in range(draws.randrange(3))}
        steps: list[dict[str, Any]] = []
        page, url, referrer, session = "home", "", "", ""
        for step in range(_BLOCK_STEPS):
            if step == 0 or step in cuts:
                session = f"s_{draws.bits(64):016x}"
                page = draws.choice(_LANDING)
                url, referrer, event_type = _SITE + _path(draws, page), draws.choice(_REFERRERS), "page_view"
            elif draws.random() < _CLICK_SHARE and page in _CLICK_TARGETS:
                event_type = "click"
            else:
                page = draws.choice(_NEXT[page])
                url, referrer, event_type = _SITE + _path(draws, page), url, "page_view"
            record: dict[str, Any] = {
                "event_type": event_type,
                "username": visitor["user_id"],
                "user_id": visitor["user_id"],
                "session_id": session,
                "url": url,
                "referrer": referrer,
                "user_agent": visitor["user_agent"],
                "device": visitor["device"],
                "lang": visitor["lang"],
            }
            summary = f"{event_type} {url.removeprefix(_SITE)}"
            if event_type == "click":
                record["target"] = draws.choice(_CLICK_TARGETS[page])
                summary += f" ({record['target']})"
            record["text"] = summary
            steps.append(record)
        return steps

    def _make(self, draws: Draws, index: int) -> dict[str, Any]:
        slot, turn = index % _CONCURRENT_VISITS, index // _CONCURRENT_VISITS
        block, step = divmod(turn, _BLOCK_STEPS)
        cached = self._blocks.get(slot)
        if cached is None or cached[0] != block:
            cached = (block, self._block(slot, block))
            self._blocks[slot] = cached
        stamps = self._timestamps
        return {"id": uuid_text(draws), "timestamp": stamps.iso(stamps.epoch_ms(index)), **cached[1][step]}

    def events(self, start: int) -> Iterator[dict[str, Any]]:
        return chunked(self.seed, start, self._make)

    def encode(self, event: dict[str, Any]) -> bytes:
        return encode_json(event).encode()
