"""The store's pages as a state machine, in WebShop's text mode.

search --search[q]--> results (10 per page, <= 50 hits) --click[asin]--> item (options,
Description / Features / Reviews sub-pages) --click[buy now]--> bought.
`click[back to search]` starts over (query and chosen options are cleared); `click[< prev]` goes
one page back; `click[next >]` pages the results. Clicking an option value records it (one value
per option name). Click targets are matched case-insensitively. A page's text is its visible
elements joined with " [SEP] ", as WebShop renders it; the item page adds a "Selected:" element
once options are chosen, so a text agent can see what it clicked.

Anything else (unknown click, malformed brackets, empty or over-long query, search where there is
no search bar) is rejected with a message that says why and leaves the session unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from opid_envs.webshop.search import MAX_HITS
from opid_envs.webshop.store import Store

SEP = " [SEP] "
RESULTS_PER_PAGE = 10
MAX_QUERY_CHARS = 500
SEARCH_PLACEHOLDER = "search[<your query>]"

SEARCH, RESULTS, ITEM, DESCRIPTION, FEATURES, REVIEWS = "search", "results", "item", "description", "features", "reviews"
SUB_PAGES = (DESCRIPTION, FEATURES, REVIEWS)
BACK_TO_SEARCH, PREV, NEXT, BUY = "back to search", "< prev", "next >", "buy now"

ACTION_RE = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)


@dataclass
class ActResult:
    valid: bool
    message: str = ""
    bought: bool = False


@dataclass
class ShopSession:
    """One shopper's position in the store. Reads the shared store; owns only its own state."""

    store: Store
    instruction: str
    page: str = SEARCH
    query: str = ""
    hits: list[int] = field(default_factory=list)
    page_no: int = 1
    product_index: int | None = None
    chosen: dict[str, str] = field(default_factory=dict)

    # -- what the shopper sees ------------------------------------------------------------------
    @property
    def product(self):
        return None if self.product_index is None else self.store.products[self.product_index]

    def page_hits(self) -> list[int]:
        start = (self.page_no - 1) * RESULTS_PER_PAGE
        return self.hits[start:start + RESULTS_PER_PAGE]

    def num_pages(self) -> int:
        return max(1, -(-len(self.hits) // RESULTS_PER_PAGE))

    def clickables(self) -> list[str]:
        """Lower-case click targets on the current page, in page order."""
        if self.page == RESULTS:
            nav = [BACK_TO_SEARCH] + ([PREV] if self.page_no > 1 else []) + (
                [NEXT] if self.page_no < self.num_pages() else [])
            return nav + [self.store.products[i].asin.lower() for i in self.page_hits()]
        if self.page == ITEM:
            values = [v for vs in self.product.options.values() for v in vs]
            return [BACK_TO_SEARCH, PREV, *dict.fromkeys(values), DESCRIPTION, FEATURES, REVIEWS, BUY]
        if self.page in SUB_PAGES:
            return [BACK_TO_SEARCH, PREV]
        return []

    def admissible_actions(self) -> list[str]:
        if self.page == SEARCH:
            return [SEARCH_PLACEHOLDER]
        return [f"click[{c}]" for c in self.clickables()]

    def observation(self) -> str:
        head = ["Instruction:", self.instruction]
        if self.page == SEARCH:
            return SEP.join(["WebShop", *head, "Search"])
        parts = head + ["Back to Search"]
        if self.page == RESULTS:
            parts.append(f"Page {self.page_no} (Total results: {len(self.hits)})")
            parts += (["< Prev"] if self.page_no > 1 else []) + (["Next >"] if self.page_no < self.num_pages() else [])
            for i in self.page_hits():
                p = self.store.products[i]
                parts += [p.asin, p.title, p.price_tag]
            if not self.hits:
                parts.append(f"No products match {self.query!r}.")
            return SEP.join(parts)
        p = self.product
        parts.append("< Prev")
        if self.page == ITEM:
            for name, values in p.options.items():
                parts += [name, *values]
            if self.chosen:
                parts.append("Selected: " + ", ".join(f"{n}: {v}" for n, v in self.chosen.items()))
            parts += [p.title, f"Price: {p.price_tag}", f"Rating: {p.rating}", "Description", "Features",
                      "Reviews", "Buy Now"]
        elif self.page == DESCRIPTION:
            parts.append(p.description or "No description.")
        elif self.page == FEATURES:
            parts += list(p.bullets) or ["No features listed."]
        elif self.page == REVIEWS:
            parts += [f"{score} stars: {text}" for score, text in p.reviews] or ["No reviews yet."]
        return SEP.join(parts)

    # -- what the shopper does ------------------------------------------------------------------
    def act(self, action: str) -> ActResult:
        match = ACTION_RE.match(action)
        if match is None:
            shown = action if len(action) <= 80 else action[:77] + "..."
            return ActResult(False, f"expected search[...] or click[...], got {shown!r}")
        verb, arg = match.group(1).lower(), match.group(2).strip()
        if "[" in arg or "]" in arg:
            return ActResult(False, "malformed brackets: the argument may not contain '[' or ']'")
        if verb == "search":
            return self._search(arg)
        return self._click(arg.lower())

    def _search(self, query: str) -> ActResult:
        if self.page != SEARCH:
            return ActResult(False, "there is no search bar on this page; click[back to search] first")
        if not query:
            return ActResult(False, "the search query is empty")
        if len(query) > MAX_QUERY_CHARS:
            return ActResult(False, f"the search query has {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
        self.query, self.hits, self.page_no, self.page = query, self.store.search_engine.search(query, MAX_HITS), 1, RESULTS
        return ActResult(True)

    def _click(self, target: str) -> ActResult:
        targets = self.clickables()
        if target not in targets:
            if self.page == SEARCH:
                return ActResult(False, "nothing is clickable on the search page; use search[your query]")
            return ActResult(False, f"{target!r} is not clickable on this page")
        if target == BACK_TO_SEARCH:
            self.page, self.query, self.hits, self.page_no, self.product_index, self.chosen = SEARCH, "", [], 1, None, {}
        elif target == NEXT:
            self.page_no += 1
        elif target == PREV:
            if self.page == RESULTS:
                self.page_no -= 1
            elif self.page == ITEM:
                self.page, self.product_index, self.chosen = RESULTS, None, {}
            else:
                self.page = ITEM
        elif self.page == RESULTS:
            self.product_index = next(i for i in self.page_hits() if self.store.products[i].asin.lower() == target)
            self.page, self.chosen = ITEM, {}
        elif target in SUB_PAGES:
            self.page = target
        elif target == BUY:
            return ActResult(True, bought=True)
        else:  # an option value
            name = next(n for n, vs in self.product.options.items() if target in vs)
            self.chosen[name] = target
        return ActResult(True)
