"""A figure beside its floor and target, printed as a table or as JSON."""

import json
import operator
from dataclasses import asdict, dataclass

_COMPARE = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


@dataclass
class Figure:
    """One measured figure; `goal` is (what, op, limit), what being value or ratio."""

    name: str
    value: float | None
    unit: str
    floor: float | None = None
    floor_name: str = ""
    goal: tuple[str, str, float] | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.floor:
            return None
        return self.value / self.floor

    @property
    def target(self) -> str:
        if self.goal is None:
            return ""
        what, op, limit = self.goal
        unit = "" if what == "ratio" else f" {self.unit}"
        return f"{what} {op} {limit:g}{unit}"

    @property
    def met(self) -> bool | None:
        if self.goal is None or self.value is None:
            return None
        what, op, limit = self.goal
        actual = self.ratio if what == "ratio" else self.value
        return actual is not None and _COMPARE[op](actual, limit)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(ratio=self.ratio, target=self.target, met=self.met)
        return data


def table(figures: list[Figure]) -> str:
    """Returns the figures as a Markdown table."""
    rows = [["figure", "value", "floor", "ratio", "target", "met?"]]
    for fig in figures:
        rows.append(
            [
                fig.name,
                _number(fig.value, fig.unit),
                _floor(fig),
                "" if fig.ratio is None else f"{fig.ratio:.2f}",
                fig.target,
                {True: "yes", False: "NO", None: "-"}[fig.met],
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [_row(row, widths) for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _row(cells: list[str], widths: list[int]) -> str:
    return (
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    )


def _floor(fig: Figure) -> str:
    if fig.floor is None:
        return ""
    return f"{_number(fig.floor, fig.unit)} ({fig.floor_name})"


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def notes(figures: list[Figure]) -> str:
    """Returns each figure's note (spread, method) as a list."""
    return "\n".join(f"- {f.name}: {f.note}" for f in figures if f.note)


def as_json(figures: list[Figure], context: dict) -> str:
    return json.dumps({"context": context, "figures": [f.as_dict() for f in figures]})
