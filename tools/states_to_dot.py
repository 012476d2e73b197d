#!/usr/bin/env python3
"""Print the provision state machine (``appliance/states.py``) as a Graphviz dot graph.

    .venv/bin/python tools/states_to_dot.py | dot -Tsvg > states.svg

Stable states are bold, wait states dotted, failed states red, ``retired`` grey. Events between
the same two states share one edge; the ``unmaintain`` edges back from maintenance are dashed
(they go to the state maintenance was entered from).
"""

from __future__ import annotations

import sys

from appliance.states import FAILED_STATES, STABLE, WAIT_STATES, Event, ProvisionState, edges


def _node_attrs(state: ProvisionState) -> str:
    if state in FAILED_STATES:
        return 'style="rounded,bold", color=red, fontcolor=red'
    if state in STABLE:
        return 'style="rounded,bold"'
    if state in WAIT_STATES:
        return 'style="rounded,dotted"'
    if state == ProvisionState.RETIRED:
        return 'style="rounded,filled", fillcolor=lightgrey'
    return 'style="rounded"'


def render() -> str:
    """The dot source of the whole machine, one line per state and per edge."""
    grouped: dict[tuple[ProvisionState, ProvisionState], list[Event]] = {}
    for state, event, target in edges():
        grouped.setdefault((state, target), []).append(event)
    lines = [
        "digraph provision_states {",
        "  rankdir=LR;",
        '  node [shape=box, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    lines += [f'  "{state}" [{_node_attrs(state)}];' for state in ProvisionState]
    for (state, target), events in grouped.items():
        label = ", ".join(events)
        style = ", style=dashed" if events == [Event.UNMAINTAIN] else ""
        lines.append(f'  "{state}" -> "{target}" [label="{label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
