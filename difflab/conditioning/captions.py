"""Caption templates per class, so text-to-image works out of the box on the built-in data."""

from __future__ import annotations

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

TEMPLATES = {
    "fashion_mnist": (
        "a photo of {a} {name}",
        "a picture of {a} {name}",
        "{a} {name}",
        "a grayscale photo of {a} {name}",
        "a small image of {a} {name}",
    ),
    "digits": (
        "a handwritten {name}",
        "the digit {name}",
        "a picture of the number {name}",
        "a handwritten digit {name}",
    ),
    "emoji": (
        "{name} emoji",
        "an emoji of {a} {name}",
        "the {name} emoji",
        "a colour emoji of {a} {name}",
    ),
    "default": ("a photo of {a} {name}", "a picture of {a} {name}", "{a} {name}"),
}

# Fashion-MNIST's own class names, written the way a person would ask for them
FASHION_WORDS = {
    "T-shirt/top": "t-shirt",
    "Trouser": "pair of trousers",
    "Pullover": "pullover",
    "Dress": "dress",
    "Coat": "coat",
    "Sandal": "sandal",
    "Shirt": "shirt",
    "Sneaker": "sneaker",
    "Bag": "bag",
    "Ankle boot": "ankle boot",
}


def article(word: str) -> str:
    """'an' before a vowel sound, else 'a' (good enough for class names)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def class_word(dataset: str, name: str) -> str:
    """A readable noun for a class name: number words for digits, plain nouns for Fashion-MNIST,
    emoji names without their colons ("flag: japan" → "flag of japan", "man: red hair" → "man,
    red hair")."""
    if dataset == "digits" and name.isdigit():
        return NUMBER_WORDS[int(name)]
    if dataset == "emoji":
        return name.lower().replace("flag: ", "flag of ").replace(": ", ", ")
    return FASHION_WORDS.get(name, name.replace("_", " ").lower())


def captions(dataset: str, class_names: list[str]) -> list[list[str]]:
    """Caption variants per class: captions(...)[k] are the templates filled with class k."""
    templates = TEMPLATES.get(dataset, TEMPLATES["default"])
    out = []
    for name in class_names:
        word = class_word(dataset, str(name))
        out.append([t.format(a=article(word), name=word) for t in templates])
    return out
