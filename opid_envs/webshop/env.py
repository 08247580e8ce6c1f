"""OPID/WebShop-v0: WebShop's text protocol and score, in one process, installed with pip.

    env = gym.make("OPID/WebShop-v0")                       # 1,000 generated products
    obs, info = env.reset(seed=0, options={"split": "test", "task_id": 7})
    obs, reward, terminated, truncated, info = env.step("search[long lasting lipstick]")

Actions are `search[query]` (on the search page; the admissible list shows it as the literal
`search[<your query>]`, meaning "put your own query between the brackets") and `click[target]`
with a target from the page (`info["admissible_actions"]`). Buying ends the episode; the reward
is then the WebShop score in [0, 1] (`info["score_terms"]` breaks it down) and `won` is
score == 1.0. All envs in a process with the same catalog arguments share one catalog, index and
goal list (see `store.py`).
"""

from __future__ import annotations

import random

from opid_envs.core import Outcome, Task, TextEnv
from opid_envs.webshop.catalog import CatalogConfig
from opid_envs.webshop.pages import BACK_TO_SEARCH, BUY, ITEM, NEXT, PREV, RESULTS, SEARCH, SUB_PAGES, ShopSession
from opid_envs.webshop.reward import fuzzy_match, get_noun_finder, goal_option_strings, noun_finder_name, score_purchase
from opid_envs.webshop.store import StoreConfig, get_store

FILLER_WORDS = frozenset("i i'm im looking for need find me want to buy would like show a an some".split())


class WebShopEnv(TextEnv):
    """The store for one shopper. Catalog arguments (shared store, built once per process):

    num_products, catalog_seed: the generated catalog; items_path, attributes_path,
    human_instructions_path: the official WebShop files instead; goal_source: "synthetic" or
    "human"; goals_per_product: option combinations per product; search_backend: "bm25s" or
    "pyserini"; nouns: "auto", "spacy" or "fallback" (how the type reward finds title nouns).
    Score (reward.py): option_match "pair" (WebShop's, default) or "value" (ours); color_normalization
    "webshop" (WebShop's alphabetical scan, default) or "longest" (ours).
    """

    splits = ("train", "test")

    def __init__(self, split: str | None = None, max_steps: int = 15, render_mode: str | None = None, *,
                 num_products: int = 1000, catalog_seed: int = 0, items_path: str | None = None,
                 attributes_path: str | None = None, human_instructions_path: str | None = None,
                 goal_source: str = "synthetic", goals_per_product: int = 3, search_backend: str = "bm25s",
                 nouns: str = "auto", option_match: str = "pair", color_normalization: str = "webshop"):
        super().__init__(split=split, max_steps=max_steps, render_mode=render_mode)
        goal_option_strings([], option_match, color_normalization)  # a clear error for an unknown variant now
        self.option_match, self.color_normalization = option_match, color_normalization
        catalog = CatalogConfig(num_products=num_products, seed=catalog_seed, items_path=items_path,
                                attributes_path=attributes_path, human_instructions_path=human_instructions_path)
        self.store = get_store(StoreConfig(catalog=catalog, goal_source=goal_source,
                                           goals_per_product=goals_per_product, search_backend=search_backend))
        self.nouns = get_noun_finder(nouns)
        self.noun_finder = noun_finder_name(self.nouns)
        self.goal = None
        self.session: ShopSession | None = None

    def num_tasks(self, split: str) -> int:
        return len(self.store.goals[split])

    def _start(self, split: str, task_id: int) -> Task:
        self.goal = self.store.goals[split][task_id]
        self.session = ShopSession(self.store, self.goal.instruction)
        return Task(observation=self.session.observation(), instruction=self.goal.instruction,
                    task_type=self.goal.department, admissible_actions=self.session.admissible_actions(),
                    info={"page": SEARCH})

    def _act(self, action: str) -> Outcome:
        session = self.session
        result = session.act(action)
        if not result.valid:
            return Outcome(f"Invalid action: {result.message}. Nothing happens.\n{session.observation()}",
                           valid=False, admissible_actions=session.admissible_actions(),
                           info={"page": session.page})
        if result.bought:
            score = score_purchase(session.product, self.goal, session.chosen.values(), self.nouns,
                                   option_match=self.option_match, color_normalization=self.color_normalization)
            text = (f"Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] {score.value:.2f}"
                    f" [SEP] You bought {session.product.asin}: {session.product.title}")
            return Outcome(text, done=True, score=score.value, won=score.value == 1.0, admissible_actions=[],
                           info={"page": "done", "score_terms": score.as_dict(),
                                 "purchased_asin": session.product.asin})
        return Outcome(session.observation(), admissible_actions=session.admissible_actions(),
                       info={"page": session.page})

    # -- agents that are not learning ---------------------------------------------------------------
    def random_action(self, rng: random.Random) -> str:
        """A random click, or on the search page a search with 1-4 words of the instruction."""
        if self.session is None or self.session.page != SEARCH:
            return super().random_action(rng)
        words = self.goal.instruction.split()
        return f"search[{' '.join(rng.sample(words, min(len(words), rng.randint(1, 4))))}]"

    def expert_query(self) -> str:
        """The goal's key words: its instruction without filler and price clause, plus option values."""
        base = self.goal.instruction.split(" with ")[0].split(", and price")[0]
        words = [w for w in base.split() if w.lower() not in FILLER_WORDS]
        return " ".join(words + list(self.goal.option_values))

    def expert_action(self, oracle: bool = True) -> str:
        """The next action of a scripted shopper (for demonstrations).

        It searches with the goal's key words. With `oracle=True` it knows which product the goal
        was built from: it pages to it (or opens the best-ranked hit when the search missed it).
        With `oracle=False` it uses only what the pages show: the first hit on the page whose
        listed price is within the budget. Then it clicks the goal's option values that the
        product offers (exactly, else by fuzzy match) and buys.
        """
        s = self.session
        if s is None:
            raise RuntimeError("call reset() before expert_action()")
        if s.page == SEARCH:
            return f"search[{self.expert_query()}]"
        if s.page in SUB_PAGES:
            return f"click[{PREV}]"
        if s.page == RESULTS:
            on_page = [self.store.products[i] for i in s.page_hits()]
            if not on_page:
                return f"click[{BACK_TO_SEARCH}]"
            if not oracle:
                affordable = [p for p in on_page if p.price_range[0] <= self.goal.price_upper]
                return f"click[{(affordable or on_page)[0].asin.lower()}]"
            if any(p.asin == self.goal.asin for p in on_page):
                return f"click[{self.goal.asin.lower()}]"
            if any(self.store.products[i].asin == self.goal.asin for i in s.hits):
                return f"click[{NEXT if self._target_rank(s) >= s.page_no * 10 else PREV}]"
            return f"click[{on_page[0].asin.lower()}]"
        if s.page == ITEM:
            for name, wanted in self.goal.options:
                click = self._option_click(s.product.options, s.chosen, name, wanted)
                if click:
                    return f"click[{click}]"
            return f"click[{BUY}]"
        raise RuntimeError(f"unknown page {s.page!r}")

    def _target_rank(self, s: ShopSession) -> int:
        return next(r for r, i in enumerate(s.hits) if self.store.products[i].asin == self.goal.asin)

    @staticmethod
    def _option_click(options: dict, chosen: dict, name: str, wanted: str) -> str | None:
        """The value to click for one goal option, or None when it is chosen or not offered."""
        candidates = [(n, v) for n, vs in options.items() if not name or n == name for v in vs]
        exact = [(n, v) for n, v in candidates if v == wanted] or [(n, v) for n, v in candidates if fuzzy_match(v, wanted)]
        if not exact:
            return None
        n, v = exact[0]
        return None if chosen.get(n) == v else v
