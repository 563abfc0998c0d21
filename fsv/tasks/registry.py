"""Text classification tasks of the real-dataset path: where the data lives, which columns hold the
text and the label, how a row becomes a prompt, and the words the model is scored on (verbalizer).

A task's prompt is `[description SEP] (template(demo) label_word SEP)*k template(query)`; the next
tokens the model would write are a label word. Label words carry their leading space, so they are
tokenized as continuations of the prompt. Three description variants, like the world's:
`none` (no description), `model` (a terse list of the label words: "Options: negative, positive.")
and `human` (the instruction a person would write).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from fsv.errors import ConfigError, did_you_mean

DESCRIPTIONS = ("none", "model", "human")


@dataclass(frozen=True)
class TextTask:
    name: str
    dataset: str  # hub dataset id, loaded with `datasets.load_dataset(dataset, config)`
    config: str | None
    text_fields: tuple[str, ...]  # canonical names, the template's placeholders
    label_field: str  # canonical name of the label column
    label_names: tuple[str, ...]  # the dataset's class names, index = label id
    label_words: tuple[str, ...]  # verbalizer, index = label id, each with its leading space
    template: str  # str.format template over text_fields; ends where the label word begins
    human: str  # the human-view description
    test_splits: tuple[str, ...]  # the split evaluated: the first of these the source has
    train_split: str = "train"
    separator: str = "\n\n"  # between description, demonstrations and query
    # source column names accepted for each canonical field (first present wins)
    aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self):
        if len(self.label_words) != len(self.label_names) or len(self.label_words) < 2:
            raise ValueError(f"task {self.name}: label_words and label_names must pair up (>= 2 classes)")
        placeholders = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
        if placeholders != set(self.text_fields):
            raise ValueError(f"task {self.name}: template fields {sorted(placeholders)} != text_fields {list(self.text_fields)}")
        if any(not w.startswith(" ") or not w.strip() for w in self.label_words):
            raise ValueError(f"task {self.name}: every label word needs one leading space and some text")

    @property
    def num_labels(self) -> int:
        return len(self.label_words)

    @property
    def chance(self) -> float:
        return 1.0 / self.num_labels

    def columns(self, field: str) -> tuple[str, ...]:
        """Source column names accepted for a canonical field, in order of preference."""
        return dict(self.aliases).get(field, (field,))

    def description(self, variant: str) -> str:
        if variant == "none":
            return ""
        if variant == "model":
            return "Options: " + ", ".join(w.strip() for w in self.label_words) + "."
        if variant == "human":
            return self.human
        raise ConfigError("description", variant, did_you_mean(variant, DESCRIPTIONS))

    def render(self, fields: dict, label: int | None = None) -> str:
        """One example: the template filled in (each field's whitespace collapsed to single spaces, so
        a row's own newlines cannot imitate the prompt's layout), then its label word when `label` is given."""
        text = self.template.format(**{f: " ".join(str(fields[f]).split()) for f in self.text_fields})
        return text if label is None else text + self.label_words[label]

    def prompt(self, demos: list[tuple[dict, int]], query: dict, variant: str = "none") -> str:
        """Description, k demonstrations (fields, label) and the query, joined by the separator."""
        desc = self.description(variant)
        parts = ([desc] if desc else []) + [self.render(f, y) for f, y in demos] + [self.render(query)]
        return self.separator.join(parts)


TASKS: dict[str, TextTask] = {
    t.name: t
    for t in [
        TextTask(
            "sst2", "stanfordnlp/sst2", None, ("sentence",), "label",
            ("negative", "positive"), (" negative", " positive"),
            "Review: {sentence}\nSentiment:",
            "Decide whether each movie review below is positive or negative.",
            ("validation", "test"),  # the hub's test labels are hidden (-1)
            aliases=(("sentence", ("sentence", "text")),),
        ),
        TextTask(
            "rotten_tomatoes", "cornell-movie-review-data/rotten_tomatoes", None, ("text",), "label",
            ("neg", "pos"), (" negative", " positive"),
            "Review: {text}\nSentiment:",
            "Say whether each movie review below is positive or negative.",
            ("test", "validation"),
            aliases=(("text", ("text", "sentence")),),
        ),
        TextTask(
            "ag_news", "fancyzhx/ag_news", None, ("text",), "label",
            ("World", "Sports", "Business", "Sci/Tech"), (" World", " Sports", " Business", " Sci/Tech"),
            "Article: {text}\nTopic:",
            "Classify each news article by its topic: world news, sports, business, or science and technology.",
            ("test", "validation"),
        ),
        TextTask(
            "trec", "CogComp/trec", None, ("text",), "coarse_label",
            ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
            (" abbreviation", " entity", " description", " human", " location", " number"),
            "Question: {text}\nAnswer type:",
            "For each question, say what kind of answer it asks for: an abbreviation, an entity, a "
            "description, a human, a location or a number.",
            ("test", "validation"),
            aliases=(("coarse_label", ("coarse_label", "label-coarse", "label")),),
        ),
        TextTask(
            "rte", "nyu-mll/glue", "rte", ("premise", "hypothesis"), "label",
            ("entailment", "not_entailment"), (" True", " False"),
            "{premise}\nQuestion: {hypothesis} True or False?\nAnswer:",
            "Read each passage and say whether the statement after it follows from the passage (True) or not (False).",
            ("validation", "test"),  # GLUE's test labels are hidden (-1)
            aliases=(("premise", ("premise", "sentence1")), ("hypothesis", ("hypothesis", "sentence2"))),
        ),
        TextTask(
            "boolq", "google/boolq", None, ("passage", "question"), "answer",
            ("false", "true"), (" no", " yes"),
            "{passage}\nQuestion: {question}?\nAnswer:",
            "Read each passage and answer the question after it with yes or no.",
            ("validation", "test"),
            aliases=(("answer", ("answer", "label")),),
        ),
        TextTask(
            "emotion", "dair-ai/emotion", "split", ("text",), "label",
            ("sadness", "joy", "love", "anger", "fear", "surprise"),
            (" sadness", " joy", " love", " anger", " fear", " surprise"),
            "Message: {text}\nEmotion:",
            "Name the emotion each message expresses: sadness, joy, love, anger, fear or surprise.",
            ("test", "validation"),
        ),
    ]
}


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str, field: str = "tasks") -> TextTask:
    """The registered task `name` (case and '-' vs '_' ignored); ConfigError with a did-you-mean otherwise."""
    key = str(name).strip().lower().replace("-", "_")
    if key in TASKS:
        return TASKS[key]
    raise ConfigError(field, name, f"unknown text task; {did_you_mean(key, list(TASKS))}")


def is_text_task(name: str) -> bool:
    return str(name).strip().lower().replace("-", "_") in TASKS
