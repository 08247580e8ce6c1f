"""The generated catalog reads like a store: sizes and attributes that fit each product type."""

import re

from opid_envs.webshop.catalog import generate_catalog

SKIN_AND_CHEMISTRY = {"paraben free", "sulfate free", "hyaluronic acid", "dry skin", "sensitive skin",
                      "dermatologist tested", "fragrance free", "natural ingredients", "cruelty free", "long lasting"}


def test_sizes_and_attributes_fit_the_product_type():
    products = generate_catalog(1000)
    by_type = {q: [p for p in products if p.query == q] for q in ("lipstick", "nail polish", "hair dryer")}
    assert all(len(ps) >= 15 for ps in by_type.values())
    for p in by_type["lipstick"] + by_type["nail polish"]:  # no "Lipstick, 8 Fl Oz"
        sizes = p.options.get("size", ())
        assert not any(re.match(r"(\d+(\.\d+)?) fl oz", s) and float(s.split()[0]) >= 1 for s in sizes), p.title
        assert not re.search(r"\b(1|3\.4|8|16) Fl Oz", p.title), p.title
    for p in by_type["hair dryer"]:  # a hair dryer is not paraben free
        assert not set(p.attributes) & SKIN_AND_CHEMISTRY, (p.title, p.attributes)
