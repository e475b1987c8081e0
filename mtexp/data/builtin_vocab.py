"""English values for the slot lists that home-assistant-intents leaves to the user's home.

The package ships templates such as "turn on the {name} in the {area}" but no device names,
areas or floors, and its wildcard lists (messages, search queries, list items, ...) have no
values at all. These small lists fill them so every template can be expanded.

`EXTRA_*` hold more values of the same kinds. Only the held-out-values mode of the corpus uses
them (`vocabulary(language, extended=True)`): there each list is cut into train, dev and test
values (mtexp.data.builtin_split), and the extra values keep every cut list long enough while
train still sees about as many values as the core lists have. Without them the corpus draws from
the core lists alone, as it always has.
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


# More device names per domain, for the held-out-values mode (at least 8 names per domain).
EXTRA_NAMES_BY_DOMAIN: dict[str, tuple[str, ...]] = {
    "light": ("reading lamp", "hallway light", "led strip", "pendant light", "night light"),
    "switch": ("space heater", "electric blanket", "dehumidifier", "towel warmer", "kettle",
               "air purifier", "holiday lights"),
    "fan": ("desk fan", "bathroom fan", "attic fan", "box fan", "pedestal fan", "exhaust fan"),
    "media_player": ("bedroom tv", "office speaker", "radio", "projector", "bathroom speaker",
                     "garage stereo"),
    "input_boolean": ("party mode", "sleep mode", "away mode", "guest wifi", "night mode",
                      "quiet hours"),
    "climate": ("radiator", "floor heating", "office heater", "bedroom thermostat", "mini split"),
    "cover": ("kitchen shutters", "office blinds", "skylight", "roller shade", "sun shade",
              "living room drapes"),
    "valve": ("garden hose", "gas valve", "irrigation valve", "pool valve", "hot water valve",
              "drip line"),
    "lock": ("garage door lock", "patio door lock", "shed lock", "basement door lock",
             "mailbox lock"),
    "binary_sensor": ("back door sensor", "smoke detector", "leak sensor", "garage door sensor",
                      "window contact"),
    "sensor": ("indoor temperature", "air quality", "energy usage", "water meter",
               "solar production"),
    "person": ("carol", "dave", "emma", "grandpa", "oliver"),
    "weather": ("ski lodge", "lake house", "city apartment", "farm", "campsite"),
    "lawn_mower": ("front lawn mower", "backyard mower", "automower", "mowbot", "grass cutter",
                   "lawn robot"),
    "todo": ("errands", "homework", "weekend projects", "gift ideas", "repairs"),
    "scene": ("romantic dinner", "reading time", "relax", "focus", "goodnight", "party time"),
    "script": ("leaving home", "arriving home", "bath time", "start the day", "lock up",
               "welcome guests"),
    "button": ("reboot nas", "identify printer", "refresh forecast", "reset filter",
               "test alarm", "ring the bell"),
    "input_button": ("water the garden", "snooze alarm", "start the kettle", "call the kids",
                     "medicine taken", "open the gate", "skip next song"),
    "vacuum": ("upstairs vacuum", "mop robot", "dustbot", "kitchen vacuum", "rover",
               "cleaning robot"),
}

EXTRA_FLOORS: tuple[str, ...] = ("third", "top", "main", "lower", "upper")

# More wildcard values, for the lists that have fewer than 8 without them.
EXTRA_WILDCARD_VALUES: dict[str, tuple[str, ...]] = {
    "message": ("the car is here", "dinner in ten minutes", "please feed the dog",
                "bedtime everyone"),
    "zone": ("park", "airport", "library", "mall", "downtown"),
    "timer_name": ("cookies", "rice"),
    "timer_command": ("start the vacuum", "turn off the tv", "open the garage door",
                      "dim the lights", "play some music"),
    "todo_list_item": ("buy stamps", "book a dentist appointment"),
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

    def extended(self, other: Vocabulary) -> Vocabulary:
        """This vocabulary with `other`'s values appended to each list (new values only)."""
        domains = {**self.names_by_domain, **other.names_by_domain}
        wildcards = {**self.wildcards, **other.wildcards}
        return Vocabulary(
            {d: _union(self.names_by_domain.get(d, ()), other.names_by_domain.get(d, ())) for d in domains},
            _union(self.areas, other.areas),
            _union(self.floors, other.floors),
            {w: _union(self.wildcards.get(w, ()), other.wildcards.get(w, ())) for w in wildcards},
        )


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def text_list(values: tuple[str, ...], name: str) -> TextSlotList:
    """A hassil list of literal values (no template syntax inside them)."""
    return TextSlotList.from_strings(values, allow_template=False, name=name)


VOCABULARIES: dict[str, Vocabulary] = {
    "en": Vocabulary(NAMES_BY_DOMAIN, AREAS, FLOORS, WILDCARD_VALUES),
}
EXTRA_VOCABULARIES: dict[str, Vocabulary] = {
    "en": Vocabulary(EXTRA_NAMES_BY_DOMAIN, (), EXTRA_FLOORS, EXTRA_WILDCARD_VALUES),
}
EMPTY = Vocabulary({}, (), (), {})


def vocabulary(language: str, extended: bool = False) -> Vocabulary:
    """The language's values (empty for a language without any); `extended` adds the extras."""
    core = VOCABULARIES.get(language, EMPTY)
    return core.extended(EXTRA_VOCABULARIES.get(language, EMPTY)) if extended else core
