"""Real text classification tasks: a registry (`get_task`) and a loader (`load_splits`).

A study names tasks by their registry name (`sst2`, `rotten_tomatoes`, `ag_news`, `trec`, `rte`,
`boolq`, `emotion`) and may point any of them at a local copy (`task_sources: {sst2: /path}`);
without one the task loads from the hub by its dataset id.
"""

from fsv.tasks.load import Example, TextSplits, draw_train, load_splits
from fsv.tasks.registry import DESCRIPTIONS, TASKS, TextTask, get_task, is_text_task, task_names

__all__ = ["DESCRIPTIONS", "TASKS", "Example", "TextSplits", "TextTask", "draw_train", "get_task",
           "is_text_task", "load_splits", "task_names"]
