"""The generated catalog, the goals built from it, and the official-file loader."""

import json
import re
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip("bm25s")

import opid_envs  # noqa: E402,F401
from opid_envs.webshop.catalog import CatalogError, generate_catalog, load_official_products  # noqa: E402
from opid_envs.webshop.goals import NO_PRICE_BOUND, human_goals, split_goals, synthetic_goals  # noqa: E402
from opid_envs.webshop.search import Bm25sSearch  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data" / "webshop"
ITEMS, ATTRS, HUMAN = (DATA / n for n in ("items_shuffle_sample.json", "items_ins_v2_sample.json",
                                          "items_human_ins_sample.json"))


def test_generated_catalog_is_deterministic_and_prefix_stable():
    a, b = generate_catalog(1000, seed=0), generate_catalog(1000, seed=0)
    assert a == b
    assert generate_catalog(20, seed=0) == a[:20]  # product i does not depend on the catalog size
    assert generate_catalog(20, seed=1) != a[:20]


def test_generated_catalog_looks_like_a_store():
    products = generate_catalog(1000)
    assert len({p.asin for p in products}) == 1000
    assert {p.department for p in products} == {"beauty", "electronics", "fashion", "furniture", "grocery"}
    assert len({p.query for p in products}) >= 30
    for p in products:
        assert re.fullmatch(r"B0[0-9A-Z]{8}", p.asin)
        assert p.query.lower() in p.title.lower() and p.category_path.count(" › ") >= 2
        assert p.price_range[0] <= p.price <= p.price_range[-1] and p.price > 0
        assert p.options and all(vs and all(v == v.lower() for v in vs) for vs in p.options.values())
        assert set(p.instruction_attributes) <= set(p.attributes) and len(p.bullets) == len(p.attributes)
    assert any(len(p.price_range) == 2 for p in products) and any(len(p.price_range) == 1 for p in products)


def test_synthetic_goals_follow_the_webshop_recipe():
    products = generate_catalog(300)
    goals = synthetic_goals(products, seed=0)
    assert goals == synthetic_goals(products, seed=0)
    by_asin = {p.asin: p for p in products}
    for g in goals[:200]:
        p = by_asin[g.asin]
        assert g.instruction.startswith(p.instruction)
        if g.price_upper == NO_PRICE_BOUND:  # no multiple of 10 above the price below 1000
            assert p.price > 980 and "price lower than" not in g.instruction
        else:
            assert g.instruction.endswith(f", and price lower than {g.price_upper:.2f} dollars")
            assert g.price_upper > p.price and g.price_upper % 10 == 0
        assert " with " + ", and ".join(f"{n}: {v}" for n, v in g.options) in g.instruction
        assert all(v in p.options[n] for n, v in g.options)
    splits = split_goals(goals)
    assert splits["test"] == goals[:500] and splits["train"] == goals[500:]


def test_search_finds_products_by_title_words_and_options():
    products = generate_catalog(1000)
    engine = Bm25sSearch(products)
    target = products[123]
    hits = engine.search(target.title)
    assert hits[0] == 123 or products[hits[0]].title == target.title
    assert len(engine.search("free")) == 50
    assert engine.search("the of and") == []
    assert engine.search("qqqzzz") == []


def test_official_loader_reads_the_webshop_format():
    products = load_official_products(ITEMS, ATTRS)
    assert [p.asin for p in products] == [f"B0SAMPLE0{i}" for i in range(1, 6)]
    lipstick, table, _, earbuds, shirt = products
    assert lipstick.options == {"color": ("ruby red", "nude pink", "berry | plum")}
    assert lipstick.price_range == (8.99,) and lipstick.price == 8.99 and lipstick.rating == "4.3"
    assert table.price_range == (89.0, 119.0) and 89.0 <= table.price <= 119.0
    assert table.bullets[1] == "SOLID WOOD top and legs"  # a newline-separated string is split
    assert earbuds.options == {}
    assert shirt.attributes == ("machine wash", "button closure", "slim fit", "long sleeve")
    assert shirt.instruction_attributes == ("slim fit", "long sleeve")
    goals = synthetic_goals(products)
    assert {g.asin for g in goals} == {p.asin for p in products}
    humans = human_goals(products, HUMAN)
    shirt_goal = next(g for g in humans if g.asin == "B0SAMPLE05")
    assert shirt_goal.price_upper == 40.0 and shirt_goal.option_values == ("light blue", "large")


def test_env_on_official_files_with_human_goals():
    env = gym.make("OPID/WebShop-v0", split="test", items_path=str(ITEMS), attributes_path=str(ATTRS),
                   human_instructions_path=str(HUMAN), goal_source="human", nouns="fallback").unwrapped
    assert env.num_tasks("test") == 2
    for task_id in range(2):
        env.reset(options={"task_id": task_id})
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(env.expert_action())
            done = terminated or truncated
        assert info["won"] and reward == 1.0


@pytest.mark.parametrize("content,message", [
    ("[{\"asin\": \"B01\", ", "not valid JSON"),
    ("{\"asin\": \"B01\"}", "expected a JSON list"),
    ("[{\"asin\": \"B01\"}]", "lacks string field(s) ['name']"),
    ("[42]", "item 0 is a int"),
    ("[]", "no usable products"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
])
def test_corrupt_catalog_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "items.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CatalogError, match=re.escape(message)) as err:
        gym.make("OPID/WebShop-v0", items_path=str(path))
    assert str(path) in str(err.value)


def test_missing_catalog_file_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        load_official_products(tmp_path / "nope.json")
    bad_attrs = tmp_path / "attrs.json"
    bad_attrs.write_text(json.dumps(["not", "a", "dict"]))
    with pytest.raises(CatalogError, match="keyed by asin"):
        load_official_products(ITEMS, bad_attrs)
