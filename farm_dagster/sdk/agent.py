"""The base class of a native agent: declare ``params``, optionally ``setup``, answer ``on_bar``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from farm_dagster.sdk.context import Context
    from farm_dagster.sdk.decision import Decision


class ParamError(ValueError):
    """An override names an undeclared parameter or has the wrong type."""


class Agent:
    """Subclass it once per file.

    ``params`` declares tunable parameters with their defaults; a run may override them
    (``BacktestSettings.params``), and the agent reads the merged values from ``self.params``.
    """

    params: ClassVar[dict[str, Any]] = {}

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        declared = dict(type(self).params)
        merged = dict(declared)
        for name, value in (overrides or {}).items():
            if name not in declared:
                known = ", ".join(sorted(declared)) or "none"
                raise ParamError(f"unknown parameter {name!r} (declared: {known})")
            default = declared[name]
            if isinstance(default, bool) != isinstance(value, bool) or (
                isinstance(default, int | float) and not isinstance(value, int | float)
            ):
                raise ParamError(f"parameter {name!r} expects {type(default).__name__}, got {value!r}")
            merged[name] = float(value) if isinstance(default, float) else value
        self.params = merged  # type: ignore[misc]  # the instance holds the merged values

    def setup(self, ctx: Context) -> None:
        """Called once before the first bar (no bar has been seen yet)."""

    def on_bar(self, ctx: Context) -> Decision | Iterable[Decision] | None:
        """Called once per bar with every symbol; return decisions (None or [] = do nothing)."""
        raise NotImplementedError("implement on_bar(self, ctx) in your agent")
