"""Task links (``tasks.<name>.inputs``): a head reads other tasks' outputs beside the trunk.

The links form a directed graph over the tasks, checked once when the config is read (unknown task, a task reading
itself, a ``product`` link between types that have no funnel, a cycle: one line naming the key) and walked in
topological order when the model is built, so every head is built after the heads it reads. The graph algorithms
are the standard library's ``graphlib``.
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Mapping
from typing import Any

__all__ = ["check_links", "link_order"]


def check_links(links: Mapping[str, list[tuple[str, Any]]], types: Mapping[str, type],
                reads_trunk: Mapping[str, bool] | None = None) -> None:
    """Raise ``ValueError("tasks.<name>.<key>: ...")`` on the first bad link.

    ``links``: per task (in config order) its ``(key, link)`` pairs (``TaskConfigBase.links``), a link having
    ``task``, ``stop_gradient`` and ``product``; ``types``: each task's ``Task`` class (what ``product`` needs);
    ``reads_trunk``: per task, ``tasks.<name>.reads_trunk`` (default true): a head that reads only its links needs
    one that is not a ``product`` link, and a row-level output."""
    names = list(links)
    for name, entries in links.items():
        if not (reads_trunk or {}).get(name, True):
            where = f"tasks.{name}.reads_trunk"
            if types[name].level != "row":
                raise ValueError(f"{where}: a {types[name].type} head labels each word from its state; it cannot "
                                 "read only its links")
            if not any(not link.product for _, link in entries):
                raise ValueError(f"{where}: false means the head reads only its links, and tasks.{name}.inputs "
                                 "names no task to read (product links do not count)")
        seen: set[str] = set()
        for key, link in entries:
            where = f"tasks.{name}.{key}"
            if link.task == name:
                raise ValueError(f"{where}: a task cannot read its own output")
            if link.task not in links:
                others = [n for n in names if n != name]
                hint = difflib.get_close_matches(link.task, others, n=1)
                tail = f" (did you mean {hint[0]!r}?)" if hint else f"; tasks: {', '.join(others) or 'none'}"
                raise ValueError(f"{where}: {link.task!r} is not a task{tail}")
            if link.task in seen:
                raise ValueError(f"{where}: {name} already reads {link.task!r}; link a task once")
            seen.add(link.task)
            if link.product:
                funnel = [t for t, cls in types.items() if cls.supports_product]
                bad = [n for n in (link.task, name) if not types[n].supports_product]
                if bad:
                    kinds = sorted({types[n].type for n in funnel}) or ["none"]
                    raise ValueError(f"{where}: a product link needs two tasks of type {' or '.join(kinds)}; "
                                     f"{bad[0]!r} is a {types[bad[0]].type} task")
    sorter = graphlib.TopologicalSorter({name: [link.task for _, link in entries] for name, entries in links.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1][:-1]  # each node is read by the next one
        reading = list(reversed(cycle))  # each node reads the next one
        first = min(range(len(reading)), key=lambda i: names.index(reading[i]))  # named from the first in the config
        reading = reading[first:] + reading[:first]
        key = next(k for k, link in links[reading[0]] if link.task == reading[1 % len(reading)])
        raise ValueError(f"tasks.{reading[0]}.{key}: the task links form a cycle: "
                         f"{' -> '.join([*reading, reading[0]])} (each reads the next)") from None


def link_order(tasks: Mapping[str, Any]) -> list[str]:
    """Task names with every task after the tasks it reads (``Task.links``); otherwise in the given order."""
    position = {name: i for i, name in enumerate(tasks)}
    sorter = graphlib.TopologicalSorter({name: [link["task"] for link in task.links] for name, task in tasks.items()})
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order += ready
        sorter.done(*ready)
    return order
