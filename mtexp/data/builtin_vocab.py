"""English values for the slot lists that home-assistant-intents leaves to the user's home.

The package ships templates such as "turn on the {name} in the {area}" but no device names,
areas or floors, and its wildcard lists (messages, search queries, list items, ...) have no
values at all. These small lists fill them so every template can be expanded.
"""

from __future__ import annotations

from dataclasses import dataclass

from hassil.intents import SlotList, TextSlotList

# Device names keyed by the entity domain the intent templates require (requires_context.domain).
NAMES_BY_DOMAIN: dict[str, tuple[str, ...]] = {
    "light": (
        "kitchen light",
        "ceiling light",
        "desk lamp",
        "porch light",
        "bedside lamp",
        "floor lamp",
        "string lights",
    ),
    "switch": ("coffee maker", "christmas tree", "fountain pump"),
    "fan": ("ceiling fan", "tower fan"),
    "media_player": ("living room tv", "kitchen speaker", "soundbar", "record player"),
    "input_boolean": ("guest mode", "vacation mode"),
    "climate": ("thermostat", "air conditioner", "heat pump"),
    "cover": ("garage door", "patio blinds", "bedroom curtains"),
    "valve": ("sprinkler valve", "water main"),
    "lock": ("front door lock", "back door lock", "side gate lock"),
    "binary_sensor": ("front window sensor", "motion detector", "mailbox sensor"),
    "sensor": ("outdoor temperature", "humidity sensor", "power meter"),
    "person": ("alice", "bob", "grandma"),
    "weather": ("home", "cabin", "beach house"),
    "lawn_mower": ("lawn mower", "robot mower"),
    "todo": ("groceries", "chores", "packing"),
    "scene": ("movie night", "dinner party", "good morning"),
    "script": ("bedtime routine", "morning routine"),
    "button": ("doorbell chime", "restart router"),
    "input_button": ("feed the fish",),
    "vacuum": ("roomba", "robot vacuum"),
}

AREAS: tuple[str, ...] = (
    "kitchen",
    "living room",
    "bedroom",
    "master bedroom",
    "guest room",
    "bathroom",
    "office",
    "garage",
    "hallway",
    "dining room",
    "basement",
    "attic",
    "laundry room",
    "nursery",
    "patio",
    "backyard",
    "front yard",
    "porch",
    "study",
    "kids room",
)

# Templates say "{floor} [floor]", so floor names leave out the word "floor".
FLOORS: tuple[str, ...] = ("ground", "first", "second", "upstairs", "downstairs")

# Values for the package's wildcard lists, keyed by list name.
WILDCARD_VALUES: dict[str, tuple[str, ...]] = {
    "message": (
        "dinner is ready",
        "the movie starts in five minutes",
        "time to wake up",
        "i am leaving now",
        "please come downstairs",
        "the laundry is done",
    ),
    "search_query": (
        "the beatles",
        "taylor swift",
        "bohemian rhapsody",
        "abbey road",
        "miles davis",
        "morning jazz",
        "the daily news",
        "star wars",
        "lo-fi beats",
        "nina simone",
    ),
    "zone": ("home", "work", "school", "gym", "office"),
    "timer_name": ("pizza", "pasta", "laundry", "tea", "workout", "nap", "oven", "egg"),
    "timer_command": (
        "turn off the lights",
        "turn on the fan",
        "lock the front door",
        "pause the music",
        "close the blinds",
    ),
    "shopping_list_item": (
        "milk",
        "eggs",
        "bread",
        "apples",
        "coffee beans",
        "paper towels",
        "dish soap",
        "bananas",
        "olive oil",
        "cat food",
    ),
    "todo_list_item": (
        "call the plumber",
        "water the plants",
        "pay rent",
        "milk",
        "sunscreen",
        "passport",
        "clean the gutters",
        "toothbrush",
    ),
}


@dataclass(frozen=True)
class Vocabulary:
    """Values for one language's user-defined lists (names, areas, floors, wildcards)."""

    names_by_domain: dict[str, tuple[str, ...]]
    areas: tuple[str, ...]
    floors: tuple[str, ...]
    wildcards: dict[str, tuple[str, ...]]

    def names(self, domains: set[str] | None) -> tuple[str, ...]:
        """Device names for the given domains (all names when None), in a stable order."""
        keys = sorted(self.names_by_domain) if domains is None else sorted(domains)
        return tuple(n for key in keys for n in self.names_by_domain.get(key, ()))

    def slot_lists(self) -> dict[str, SlotList]:
        """The wildcard, area and floor values as hassil lists."""
        lists: dict[str, SlotList] = {
            name: text_list(values, name) for name, values in self.wildcards.items()
        }
        lists["area"] = text_list(self.areas, "area")
        lists["floor"] = text_list(self.floors, "floor")
        return lists


def text_list(values: tuple[str, ...], name: str) -> TextSlotList:
    """A hassil list of literal values (no template syntax inside them)."""
    return TextSlotList.from_strings(values, allow_template=False, name=name)


VOCABULARIES: dict[str, Vocabulary] = {
    "en": Vocabulary(NAMES_BY_DOMAIN, AREAS, FLOORS, WILDCARD_VALUES),
}
