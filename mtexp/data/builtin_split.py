"""Which templates and which slot values each split of the built-in corpus may draw from.

Templates (`split_templates`): each intent's templates, identified by their text, are shuffled
(seeded) and cut into test, dev and train like sentences used to be: test and dev each get
`share(n, fraction)` of the intent's n templates, train the rest. An intent needs one template
per split: one with fewer than three stays whole in train ("train-only": trained on, never
evaluated). A dev/test template that can tag a slot type no train template can tag moves to
train, so that no evaluation label is unseen in training.

Values (`ValueHoldout`): the lists the intents package leaves to the user's home (device names
per entity domain, areas, floors, and the wildcard lists: messages, search queries, zones,
timer names and commands, shopping and to-do items) and every number range are cut into
test, dev and train values when the list has at least `HOLDOUT_MIN_VALUES` values: test and
dev each get `HOLDOUT_SHARE` of them (at least one), train the rest. The package's closed word
lists (colours, states, device classes, fan modes, media classes, ...) are the fixed
vocabulary of the domain and are never held out.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from hassil.intents import RangeSlotList, SlotList, TextSlotList

from mtexp.data.builtin_templates import Template, template_slots
from mtexp.data.builtin_vocab import Vocabulary

HOLDOUT_MIN_VALUES = 8  # lists with fewer values are shared by every split
HOLDOUT_SHARE = 0.2  # of a held-out list's values, for test and again for dev
EVAL_SPLITS = ("test", "dev")
K = TypeVar("K", bound=Hashable)


def share(n: int, fraction: float) -> int:
    """How many of n items a split with `fraction` gets: none below three items."""
    if fraction <= 0:
        return 0
    return max(1, round(n * fraction)) if n >= 3 else 0


@dataclass
class TemplatePlan:
    """The templates each split may draw from, by split and intent."""

    templates: dict[str, dict[str, list[Template]]]
    train_only: list[str] = field(default_factory=list)  # intents with too few templates
    moved_to_train: int = 0  # dev/test templates moved to train for a slot type train lacked

    def counts(self) -> dict[str, int]:
        """Distinct template texts per split."""
        return {split: len({t.text for rows in by_intent.values() for t in rows})
                for split, by_intent in self.templates.items()}


def every_template_everywhere(templates: dict[str, list[Template]]) -> TemplatePlan:
    """The plan of the sentence split: each split may draw from every template."""
    return TemplatePlan({split: dict(templates) for split in ("train", "dev", "test")})


def split_templates(
    templates: dict[str, list[Template]], dev_fraction: float, test_fraction: float, rng: random.Random
) -> TemplatePlan:
    """Every template text to exactly one split, stratified by intent (see the module doc)."""
    plan = TemplatePlan({"train": {}, "dev": {}, "test": {}})
    for intent in sorted(templates):
        groups: dict[str, list[Template]] = {}
        for template in templates[intent]:
            groups.setdefault(template.text, []).append(template)
        texts = list(groups)
        rng.shuffle(texts)
        n_test = share(len(texts), test_fraction)
        n_dev = min(share(len(texts), dev_fraction), len(texts) - n_test - 1)
        if (test_fraction > 0 and n_test == 0) or (dev_fraction > 0 and n_dev <= 0):
            n_test = n_dev = 0
            plan.train_only.append(intent)
        cuts = {"test": texts[:n_test], "dev": texts[n_test : n_test + n_dev],
                "train": texts[n_test + n_dev :]}
        for split, chosen in cuts.items():
            if chosen:
                plan.templates[split][intent] = [t for text in chosen for t in groups[text]]
    _move_unseen_slots(plan)
    return plan


def _move_unseen_slots(plan: TemplatePlan) -> None:
    """Move to train each dev/test template that can tag a slot type no train template can."""
    train = plan.templates["train"]
    seen = {slot for rows in train.values() for t in rows for slot in template_slots(t)}
    for split in EVAL_SPLITS:
        for intent in sorted(plan.templates[split]):
            rows = plan.templates[split][intent]
            unseen = [t for t in rows if not template_slots(t) <= seen]
            for template in unseen:
                rows.remove(template)
                train.setdefault(intent, []).append(template)
                seen |= template_slots(template)
                plan.moved_to_train += 1
            if not rows:
                del plan.templates[split][intent]


def partition(values: Sequence[K], rng: random.Random) -> dict[K, str]:
    """Each value -> "test", "dev" or "train" (empty when the list is too short to hold out)."""
    if len(values) < HOLDOUT_MIN_VALUES:
        return {}
    k = max(1, round(len(values) * HOLDOUT_SHARE))
    order = list(values)
    rng.shuffle(order)
    return {v: "test" if i < k else "dev" if i < 2 * k else "train" for i, v in enumerate(order)}


class ValueHoldout:
    """Each held-out value's split, by list; `restrict` narrows a template to one split's values."""

    def __init__(self, text: dict[str, dict[str, str]], numbers: dict[str, dict[int, str]]) -> None:
        self.text = text  # list name -> value text -> split
        self.numbers = numbers  # range list name -> number -> split
        self._lists: dict[tuple[int, str], dict[str, SlotList]] = {}

    @classmethod
    def build(cls, vocab: Vocabulary, templates: dict[str, list[Template]], seed: int) -> ValueHoldout:
        """Cut the vocabulary's lists and the templates' number ranges, seeded."""
        def rng(name: str) -> random.Random:
            return random.Random(f"{seed}/values/{name}")

        names: dict[str, str] = {}
        for domain in sorted(vocab.names_by_domain):
            names.update(partition(vocab.names_by_domain[domain], rng(f"name/{domain}")))
        text = {"name": names, "area": partition(vocab.areas, rng("area")),
                "floor": partition(vocab.floors, rng("floor"))}
        for list_name in sorted(vocab.wildcards):
            text[list_name] = partition(vocab.wildcards[list_name], rng(list_name))
        ranges = {name: sl for rows in templates.values() for t in rows
                  for name, sl in t.lists.items() if isinstance(sl, RangeSlotList)}
        numbers = {name: partition(range(sl.start, sl.stop + 1, sl.step), rng(name))
                   for name, sl in sorted(ranges.items())}
        return cls({k: v for k, v in text.items() if v}, {k: v for k, v in numbers.items() if v})

    def restrict(self, template: Template, split: str) -> Template:
        """The template drawing only values that are `split`'s or not held out."""
        numbers = {name: tuple(sorted(n for n, s in cut.items() if s == split))
                   for name, cut in self.numbers.items() if name in template.lists}
        return replace(template, lists=self._restricted(template.lists, split), numbers=numbers)

    def _restricted(self, lists: dict[str, SlotList], split: str) -> dict[str, SlotList]:
        key = (id(lists), split)  # templates of one data block share their lists
        if key not in self._lists:
            out = dict(lists)
            for name, cut in self.text.items():
                slot_list = lists.get(name)
                if isinstance(slot_list, TextSlotList):
                    values = [v for v in slot_list.values if cut.get(str(v.value_out), split) == split]
                    out[name] = replace(slot_list, values=values)
            self._lists[key] = out
        return self._lists[key]

    def sizes(self) -> dict[str, dict[str, int]]:
        """Per held-out list: how many values each split draws from."""
        out = {}
        for name, cut in sorted({**self.text, **self.numbers}.items()):
            out[name] = {split: sum(s == split for s in cut.values()) for split in ("train", "dev", "test")}
        return out
