"""The store's products: a deterministic generator, and a loader for the official WebShop files.

The generator writes a catalog that looks like WebShop's scraped Amazon one (departments, titles
with brands, descriptions, bullet points, prices and price ranges, category paths, attributes,
customization options) so the same protocol, search and reward apply. Each product is drawn from
its own `random.Random(f"{seed}:{index}")`, so product i is the same whatever the catalog size and
100k products cost only time, not a different catalog.

Users who have the official files (items_shuffle*.json, items_ins_v2*.json,
items_human_ins.json) load them with `load_official_products`.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CATEGORY_SEP = " › "


@dataclass(frozen=True, slots=True)
class Product:
    """One product as the pages show it and the reward reads it (all option values lowercase)."""

    asin: str
    title: str
    department: str  # WebShop's "category": beauty, electronics, fashion, furniture, grocery
    query: str  # the product type's search phrase ("lipstick"); WebShop's "query"
    category_path: str  # "Beauty & Personal Care › Makeup › Lips › Lipstick"
    description: str
    bullets: tuple[str, ...]
    price: float  # the price the store charges (drawn inside price_range)
    price_range: tuple[float, ...]  # one value, or (low, high)
    attributes: tuple[str, ...]
    options: dict[str, tuple[str, ...]] = field(hash=False)
    rating: str = "N.A."
    reviews: tuple[tuple[str, str], ...] = ()  # (score, text)
    instruction: str = ""  # base instruction a goal for this product starts from ("" = no goals)
    instruction_attributes: tuple[str, ...] = ()

    @property
    def price_tag(self) -> str:
        return " to ".join(f"${p:.2f}" for p in self.price_range)

    def search_text(self) -> str:
        """What the index sees: title, description, first bullet point and option values."""
        first_bullet = self.bullets[0] if self.bullets else ""
        values = " ".join(v for vs in self.options.values() for v in vs)
        return f"{self.title} {self.description} {first_bullet} {values}"


class CatalogError(ValueError):
    """A catalog file is missing, unreadable or malformed."""


# -- the generator's vocabulary ----------------------------------------------------------------
# Per department: (query, category path below the department root, price low/high, option names).
PRODUCT_TYPES: dict[str, tuple[str, tuple[tuple[str, str, tuple[int, int], tuple[str, ...]], ...]]] = {
    "beauty": ("Beauty & Personal Care", (
        ("lipstick", "Makeup › Lips › Lipstick", (4, 30), ("color", "size")),
        ("shampoo", "Hair Care › Shampoo & Conditioner › Shampoos", (6, 40), ("scent", "size")),
        ("face moisturizer", "Skin Care › Face › Creams & Moisturizers", (8, 60), ("size",)),
        ("nail polish", "Foot, Hand & Nail Care › Nail Art & Polish › Nail Polish", (3, 20), ("color", "size")),
        ("eyeshadow palette", "Makeup › Eyes › Eyeshadow", (6, 45), ("color",)),
        ("hair dryer", "Hair Care › Styling Tools & Appliances › Hair Dryers", (20, 150), ("color", "style")),
        ("body wash", "Personal Care › Bath & Bathing Accessories › Body Washes", (5, 25), ("scent", "size")),
        ("eau de parfum", "Fragrance › Women's › Eau de Parfum", (15, 120), ("size",)),
    )),
    "grocery": ("Grocery & Gourmet Food", (
        ("protein bars", "Snack Foods › Bars › Protein Bars", (10, 45), ("flavor name", "item count")),
        ("ground coffee", "Beverages › Coffee, Tea & Cocoa › Coffee › Ground Coffee", (7, 35), ("flavor name", "size")),
        ("herbal tea", "Beverages › Coffee, Tea & Cocoa › Tea › Herbal", (4, 25), ("flavor name", "item count")),
        ("potato chips", "Snack Foods › Chips & Crisps › Potato Chips", (3, 30), ("flavor name", "item count")),
        ("trail mix", "Snack Foods › Nuts & Seeds › Trail Mix", (6, 30), ("flavor name", "size")),
        ("dark chocolate", "Candy & Chocolate › Chocolate › Chocolate Bars", (4, 35), ("flavor name", "item count")),
        ("olive oil", "Pantry Staples › Cooking & Baking › Oils › Olive", (8, 50), ("size",)),
        ("beef jerky", "Meat & Seafood › Jerky & Dried Meats › Beef Jerky", (6, 40), ("flavor name", "size")),
    )),
    "fashion": ("Clothing, Shoes & Jewelry", (
        ("t-shirt", "Men › Clothing › Shirts › T-Shirts", (8, 40), ("color", "size")),
        ("running shoes", "Women › Shoes › Athletic › Running", (30, 160), ("color", "shoe size")),
        ("yoga pants", "Women › Clothing › Active › Leggings", (12, 60), ("color", "size")),
        ("winter jacket", "Men › Clothing › Jackets & Coats › Down Jackets", (40, 250), ("color", "size")),
        ("dress shirt", "Men › Clothing › Shirts › Dress Shirts", (15, 70), ("color", "size")),
        ("denim jeans", "Women › Clothing › Jeans", (20, 90), ("color", "size")),
        ("hoodie", "Men › Clothing › Fashion Hoodies & Sweatshirts", (18, 75), ("color", "size")),
        ("sandals", "Women › Shoes › Sandals › Flat Sandals", (12, 80), ("color", "shoe size")),
    )),
    "furniture": ("Home & Kitchen", (
        ("bookshelf", "Furniture › Home Office Furniture › Bookcases", (40, 300), ("color", "size")),
        ("coffee table", "Furniture › Living Room Furniture › Tables › Coffee Tables", (50, 400), ("color", "material")),
        ("office chair", "Furniture › Home Office Furniture › Home Office Chairs › Desk Chairs", (60, 450), ("color", "style")),
        ("bed frame", "Furniture › Bedroom Furniture › Beds, Frames & Bases › Beds", (90, 800), ("color", "bed size")),
        ("nightstand", "Furniture › Bedroom Furniture › Nightstands", (30, 220), ("color", "material")),
        ("bar stools", "Furniture › Game & Recreation Room Furniture › Home Bar Furniture › Barstools", (45, 300), ("color", "size")),
        ("tv stand", "Furniture › Living Room Furniture › Television Stands & Entertainment Centers", (60, 420), ("color", "size")),
        ("storage ottoman", "Furniture › Living Room Furniture › Ottomans", (25, 160), ("color", "material")),
    )),
    "electronics": ("Electronics", (
        ("wireless earbuds", "Headphones, Earbuds & Accessories › Earbud Headphones", (15, 200), ("color", "style")),
        ("bluetooth speaker", "Portable Audio & Video › Portable Speakers & Docks › Portable Bluetooth Speakers", (20, 250), ("color",)),
        ("usb c cable", "Computers & Accessories › Cables & Accessories › Cables › USB Cables", (5, 30), ("color", "size")),
        ("security camera", "Camera & Photo › Video Surveillance › Surveillance Cameras", (25, 220), ("style",)),
        ("phone case", "Cell Phones & Accessories › Cases, Holsters & Sleeves › Basic Cases", (6, 40), ("color", "style")),
        ("hdmi cable", "Television & Video › Accessories › Cables › HDMI Cables", (5, 35), ("size",)),
        ("power bank", "Cell Phones & Accessories › Chargers & Power Adapters › Portable Power Banks", (15, 90), ("color", "capacity")),
        ("computer monitor", "Computers & Accessories › Monitors", (90, 700), ("size", "style")),
    )),
}

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "beauty": ("long lasting", "paraben free", "cruelty free", "sulfate free", "natural ingredients",
               "easy to use", "travel size", "dermatologist tested", "fragrance free", "hyaluronic acid",
               "dry skin", "sensitive skin", "vegan formula", "high quality"),
    "grocery": ("gluten free", "non gmo", "low sugar", "sugar free", "keto friendly", "usda organic",
                "high protein", "individually wrapped", "plant based", "caffeine free", "ready to eat",
                "low carb", "dairy free", "resealable bag"),
    "fashion": ("machine wash", "button closure", "slim fit", "cotton spandex", "long sleeve", "elastic waist",
                "hand wash", "polyester spandex", "tumble dry", "regular fit", "classic fit", "quick drying",
                "moisture wicking", "relaxed fit"),
    "furniture": ("easy assemble", "solid wood", "living room", "space saving", "high density", "mid century",
                  "storage space", "wood finish", "metal legs", "easy clean", "heavy duty", "non slip",
                  "assembly required", "engineered wood"),
    "electronics": ("high definition", "noise cancelling", "fast charging", "easy install", "bluetooth 5 0",
                    "usb port", "plug and play", "long battery life", "wireless charging", "water resistant",
                    "dual band", "4k ultra hd", "high speed", "compact design"),
}

TYPE_ATTRIBUTES: dict[str, tuple[str, ...]] = {  # types for which the department's pool reads wrong
    "lipstick": ("long lasting", "paraben free", "cruelty free", "natural ingredients", "vegan formula",
                 "high quality", "smudge proof", "moisturizing", "matte finish"),
    "nail polish": ("long lasting", "quick drying", "chip resistant", "cruelty free", "vegan formula",
                    "non toxic", "high quality", "glossy finish"),
    "eyeshadow palette": ("long lasting", "highly pigmented", "cruelty free", "paraben free", "vegan formula",
                          "easy to blend", "high quality"),
    "hair dryer": ("fast drying", "ionic technology", "low noise", "lightweight", "travel size", "easy to use",
                   "diffuser attachment", "cool shot button"),
    "eau de parfum": ("long lasting", "travel size", "natural ingredients", "cruelty free", "vegan formula",
                      "high quality", "gift set"),
    "running shoes": ("rubber sole", "lace up", "non slip", "lightweight", "arch support", "memory foam",
                      "breathable mesh", "machine wash"),
    "sandals": ("rubber sole", "non slip", "open toe", "arch support", "memory foam", "ankle strap",
                "lightweight", "water resistant"),
    "wireless earbuds": ("noise cancelling", "bluetooth 5 0", "long battery life", "water resistant",
                         "fast charging", "built in microphone", "touch control"),
    "bluetooth speaker": ("bluetooth 5 0", "long battery life", "water resistant", "built in microphone",
                          "compact design", "deep bass"),
    "usb c cable": ("high speed", "braided nylon", "fast charging", "plug and play", "durable connector",
                    "data sync"),
    "hdmi cable": ("high speed", "4k ultra hd", "braided nylon", "plug and play", "gold plated", "ethernet"),
    "security camera": ("high definition", "night vision", "easy install", "motion detection", "dual band",
                        "water resistant", "two way audio"),
    "phone case": ("shockproof", "wireless charging", "slim fit", "raised edges", "easy install",
                   "anti scratch"),
    "power bank": ("fast charging", "usb port", "compact design", "long battery life", "led display",
                   "high speed"),
    "computer monitor": ("high definition", "4k ultra hd", "eye care", "hdmi port", "adjustable stand",
                         "high refresh rate", "easy install"),
}

OPTION_VALUES: dict[str, tuple[str, ...]] = {
    "color": ("black", "white", "red", "navy blue", "light blue", "dark green", "grey", "beige", "pink",
              "rose gold", "brown", "purple", "yellow", "orange", "silver", "burgundy", "teal", "charcoal",
              "ivory", "olive green", "coral", "walnut brown", "natural wood", "matte black"),
    "size": ("small", "medium", "large", "x-large", "xx-large", "x-small", "1 fl oz", "3.4 fl oz",
             "8 fl oz", "16 fl oz", "12 ounce", "2 pound", "3 feet", "6 feet", "10 feet", "24 inch",
             "27 inch", "32 inch", "5-shelf", "3-shelf"),
    "scent": ("lavender", "unscented", "coconut", "citrus", "rose", "eucalyptus mint", "vanilla", "sandalwood"),
    "flavor name": ("chocolate", "vanilla", "sea salt", "strawberry", "peanut butter", "original", "honey",
                    "mixed berry", "caramel", "cinnamon", "lemon", "smoky bbq", "mint"),
    "item count": ("6 count", "12 count", "24 count", "12 count (pack of 2)", "36 count", "4 count (pack of 6)"),
    "shoe size": ("6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12"),
    "style": ("basic", "pro", "with charger", "wifi only", "2 pack", "deluxe", "classic", "ergonomic"),
    "material": ("oak", "walnut", "metal", "velvet", "linen", "faux leather", "rattan", "glass"),
    "bed size": ("twin", "full", "queen", "king", "california king"),
    "capacity": ("10000mah", "20000mah", "26800mah", "5000mah"),
}

SIZE_POOLS = {  # sizes that fit a product type better than the generic list
    "beauty": ("1 fl oz", "3.4 fl oz", "8 fl oz", "16 fl oz", "travel size 2-pack"),
    "grocery": ("12 ounce", "2 pound", "8 ounce (pack of 3)", "1 pound", "32 ounce"),
    "fashion": ("x-small", "small", "medium", "large", "x-large", "xx-large"),
    "furniture": ("small", "medium", "large", "3-shelf", "5-shelf", "40 inch", "55 inch"),
    "electronics": ("3 feet", "6 feet", "10 feet", "24 inch", "27 inch", "32 inch"),
}

TYPE_SIZES = {  # types whose department's sizes read wrong ("Lipstick, 8 Fl Oz")
    "lipstick": ("0.12 ounce", "0.15 ounce", "0.17 ounce", "2 count", "3 count"),
    "nail polish": ("0.25 fl oz", "0.45 fl oz", "0.5 fl oz", "2 count", "3 count"),
}

TITLE_WORDS = {
    "beauty": ("Matte", "Velvet", "Hydrating", "Professional", "Salon", "Silky", "Radiant", "Nourishing"),
    "grocery": ("Gourmet", "Artisan", "Classic", "Family Size", "Premium", "Farm Fresh", "Roasted", "Crunchy"),
    "fashion": ("Casual", "Athletic", "Lightweight", "Vintage", "Everyday", "Performance", "Soft", "Essential"),
    "furniture": ("Modern", "Rustic", "Industrial", "Farmhouse", "Scandinavian", "Minimalist", "Upholstered", "Compact"),
    "electronics": ("Portable", "Smart", "Ultra Slim", "Rugged", "Pro Series", "Digital", "Universal", "Upgraded"),
}

SYLLABLES = ("lu", "mi", "ra", "ko", "ve", "sa", "ti", "no", "ba", "qu", "el", "zo", "fin", "dor", "ka", "pel",
             "ri", "ta", "mon", "vi", "ax", "ly", "go", "ne")

INSTRUCTION_TEMPLATES = (
    "i'm looking for {attrs} {query}",
    "i need {attrs} {query}",
    "find me {attrs} {query}",
    "i want to buy {attrs} {query}",
    "i would like {attrs} {query}",
    "show me {attrs} {query}",
)

DESCRIPTION_TEMPLATES = (
    "{brand} makes this {query} for people who care about quality. It is {a0} and {a1}.",
    "Meet the {title_word} {query} from {brand}: {a0}, {a1}, and made to last.",
    "This {query} combines a {title_word} look with everyday comfort. {A0}. {A1}.",
)

BULLET_TEMPLATES = (
    "{A}: the {query} you can rely on every day",
    "{A} - designed and tested by {brand}",
    "{A} for peace of mind",
    "WHAT YOU GET: one {query}, {A}",
)

REVIEW_TEXTS = (
    "Exactly as described, would buy again.",
    "Good value for the price.",
    "Arrived quickly and works well.",
    "Not bad, but the color was a bit different from the picture.",
    "My second one, still happy with it.",
    "Quality could be better for this price.",
)

ASIN_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


@dataclass(frozen=True)
class CatalogConfig:
    """What identifies a catalog; the module-level store cache is keyed by it."""

    num_products: int = 1000
    seed: int = 0
    items_path: str | None = None  # official items_shuffle*.json; when set, num_products is ignored
    attributes_path: str | None = None  # official items_ins_v2*.json
    human_instructions_path: str | None = None  # official items_human_ins.json


def _brand(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _asin(rng: random.Random, taken: set[str]) -> str:
    while True:
        asin = "B0" + "".join(rng.choice(ASIN_CHARS) for _ in range(8))
        if asin not in taken:
            taken.add(asin)
            return asin


def _join_attrs(attrs: list[str]) -> str:
    return attrs[0] if len(attrs) == 1 else f"{', '.join(attrs[:-1])} and {attrs[-1]}"


def generate_product(index: int, seed: int, taken_asins: set[str]) -> Product:
    """Product `index` of the catalog with this seed (independent of the catalog size)."""
    rng = random.Random(f"{seed}:{index}")
    department = sorted(PRODUCT_TYPES)[index % len(PRODUCT_TYPES)]
    root, types = PRODUCT_TYPES[department]
    query, path, (low, high), option_names = rng.choice(types)
    brand, title_word = _brand(rng), rng.choice(TITLE_WORDS[department])
    pool = TYPE_ATTRIBUTES.get(query, ATTRIBUTES[department])
    attrs = rng.sample(pool, rng.randint(3, 5))

    options: dict[str, tuple[str, ...]] = {}
    for name in option_names:
        pool = TYPE_SIZES.get(query, SIZE_POOLS[department]) if name == "size" else OPTION_VALUES[name]
        options[name] = tuple(rng.sample(pool, min(len(pool), rng.randint(2, 5))))

    title_attrs = " ".join(a.title() for a in attrs[:rng.randint(1, 2)])
    detail = f", {options['size'][0].title()}" if "size" in options and rng.random() < 0.5 else ""
    title = f"{brand} {title_word} {query.title()} - {title_attrs}{detail}"

    fmt = dict(brand=brand, query=query, title_word=title_word.lower(), a0=attrs[0], a1=attrs[1],
               A0=attrs[0].capitalize(), A1=attrs[1].capitalize())
    description = rng.choice(DESCRIPTION_TEMPLATES).format(**fmt)
    bullets = tuple(rng.choice(BULLET_TEMPLATES).format(A=a.upper(), query=query, brand=brand) for a in attrs)

    lo = round(rng.uniform(low, high), 2)
    if rng.random() < 0.3:  # a price range, as for products whose options change the price
        price_range: tuple[float, ...] = (lo, round(lo * rng.uniform(1.1, 1.6), 2))
        price = round(rng.uniform(*price_range), 2)
    else:
        price_range, price = (lo,), lo

    reviews = tuple((str(rng.randint(2, 5)), rng.choice(REVIEW_TEXTS)) for _ in range(rng.randint(0, 3)))
    rating = f"{rng.uniform(3.0, 5.0):.1f}" if reviews else "N.A."
    goal_attrs = tuple(rng.sample(attrs, rng.randint(1, 2)))
    instruction = rng.choice(INSTRUCTION_TEMPLATES).format(attrs=_join_attrs(list(goal_attrs)), query=query)
    return Product(
        asin=_asin(rng, taken_asins), title=title, department=department, query=query,
        category_path=f"{root}{CATEGORY_SEP}{path}", description=description, bullets=bullets,
        price=price, price_range=price_range, attributes=tuple(attrs), options=options,
        rating=rating, reviews=reviews, instruction=instruction, instruction_attributes=goal_attrs,
    )


def generate_catalog(num_products: int = 1000, seed: int = 0) -> list[Product]:
    if num_products < 1:
        raise ValueError(f"num_products must be >= 1, got {num_products}")
    taken: set[str] = set()
    return [generate_product(i, seed, taken) for i in range(num_products)]


# -- the official WebShop files ----------------------------------------------------------------
def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{what} file not found: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{what} file {path} is not valid JSON: {exc}") from exc


def _parse_pricing(pricing: Any) -> tuple[float, ...]:
    """'$12.99', '$10.99 - $15.49' or a list of numbers -> (low,) or (low, high); no price -> (100.0,)."""
    if isinstance(pricing, (int, float)):
        return (float(pricing),)
    if isinstance(pricing, list):
        values = [float(p) for p in pricing if isinstance(p, (int, float))]
    else:
        values = [float(m) for m in re.findall(r"\$\s*([\d,]*\.?\d+)", str(pricing or "").replace(",", ""))]
    return tuple(values[:2]) or (100.0,)


def _official_product(raw: Any, position: int, attrs: dict[str, Any], path: Path) -> Product:
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: item {position} is a {type(raw).__name__}, expected an object")
    missing = [k for k in ("asin", "name") if not isinstance(raw.get(k), str)]
    if missing:
        raise CatalogError(f"{path}: item {position} lacks string field(s) {missing}")
    asin = raw["asin"]
    bullets = raw.get("small_description") or []
    if isinstance(bullets, str):
        bullets = [b for b in bullets.split("\n") if b.strip()]
    options: dict[str, tuple[str, ...]] = {}
    for name, contents in (raw.get("customization_options") or {}).items():
        values = [c["value"] if isinstance(c, dict) else c for c in contents or []]
        clean = tuple(str(v).strip().replace("/", " | ").lower() for v in values if str(v).strip())
        if clean:
            options[name.lower()] = clean
    price_range = _parse_pricing(raw.get("pricing"))
    price = price_range[0] if len(price_range) == 1 else round(random.Random(asin).uniform(*price_range), 2)
    info = attrs.get(asin, {}) if isinstance(attrs.get(asin), dict) else {}
    reviews = tuple((str(r.get("score", "")), str(r.get("body", "")))
                    for r in raw.get("Reviews") or [] if isinstance(r, dict))
    return Product(
        asin=asin, title=raw["name"], department=str(raw.get("category") or "").lower(),
        query=str(raw.get("query") or "").lower().strip(),
        category_path=str(raw.get("product_category") or ""),
        description=str(raw.get("full_description") or ""), bullets=tuple(str(b) for b in bullets),
        price=price, price_range=price_range, attributes=tuple(info.get("attributes") or ()),
        options=options, rating=str(raw.get("average_rating") or "N.A."), reviews=reviews,
        instruction=str(info.get("instruction") or ""),
        instruction_attributes=tuple(info.get("instruction_attributes") or ()),
    )


def load_official_products(items_path: str | Path, attributes_path: str | Path | None = None) -> list[Product]:
    """Products from WebShop's items_shuffle*.json (+ attributes and instructions from items_ins_v2*.json)."""
    items = _read_json(items_path, "WebShop items")
    if not isinstance(items, list):
        raise CatalogError(f"{items_path}: expected a JSON list of products, got {type(items).__name__}")
    attrs = _read_json(attributes_path, "WebShop attributes") if attributes_path else {}
    if not isinstance(attrs, dict):
        raise CatalogError(f"{attributes_path}: expected a JSON object keyed by asin")
    products, seen = [], set()
    for position, raw in enumerate(items):
        product = _official_product(raw, position, attrs, Path(items_path))
        if product.asin in seen or product.asin == "nan" or len(product.asin) > 10:
            continue  # WebShop skips duplicate and broken asins the same way
        seen.add(product.asin)
        products.append(product)
    if not products:
        raise CatalogError(f"{items_path}: no usable products")
    return products


def load_catalog(config: CatalogConfig) -> list[Product]:
    if config.items_path:
        return load_official_products(config.items_path, config.attributes_path)
    return generate_catalog(config.num_products, config.seed)
