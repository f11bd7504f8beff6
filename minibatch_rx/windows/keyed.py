"""Any window strategy, once per key: the core behind ``key_by`` for count
windows, relaxed windows and custom ``WindowEmitter`` strategies.

(Time windows are keyed inside their own engine, :mod:`._timed`, which
shares one watermark across keys.)

Each key gets its own core, spawned from the strategy's. A key's core is
dropped as soon as it holds no message, so memory follows the keys with
pending messages. The clock's decisions are journaled with the keys they
concerned and what each key's core decided, so a replay after a restart
applies each to the same keys, as they were taken.
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import Any

from minibatch_rx.message import Message
from minibatch_rx.window import Window
from minibatch_rx.windows._engine import EPS, WindowCore
from minibatch_rx.windows.keys import Key, KeyBy, KeyedProgress, key_from_json, key_to_json


class KeyedCore(WindowCore):
    """Runs a copy of ``prototype`` per key of ``key_by``."""

    def __init__(self, prototype: WindowCore, key_by: KeyBy) -> None:
        self.prototype = prototype
        self.clocked = prototype.clocked
        self.waits_for_catch_up = prototype.waits_for_catch_up
        self.cores: dict[Key, WindowCore] = {}
        self.timers: list[tuple[float, int, Key]] = []  # (deadline, counter, key), lazily cleaned
        self.counter = 0
        self.acted: list[tuple[Key, Any]] = []  # (key, its core's decision) of the last timer
        self.late_messages: list[Message] = []
        self.restored: dict[Key, Any] = {}
        self.progress = KeyedProgress(key_by)

    def _core(self, key: Key, now: float) -> WindowCore:
        core = self.cores.get(key)
        if core is None:
            core = self.cores[key] = self.prototype.spawn()
            core.stream = self.stream
            state = self.restored.pop(key, None)
            if state is not None:
                core.restore(state)
            core.start(now)
        return core

    def _after(self, key: Key, core: WindowCore, windows: list[Window]) -> list[Window]:
        """Collect what a key's core produced, re-arm its timer, free it if empty."""
        self.late_messages.extend(core.late())
        self.progress.bad.extend(core.rejected())
        for window in windows:
            if window.messages:
                self.progress.emitted(key, max(m.seq for m in window.messages))
        if core.held_min_seq() is None:
            del self.cores[key]
        else:
            deadline = core.deadline()
            if deadline is not None:
                self.counter += 1
                heapq.heappush(self.timers, (deadline, self.counter, key))
        return [replace(w, key=key) for w in windows]

    def on_message(self, message: Message, now: float) -> list[Window]:
        self.stream = message.stream
        placed, key = self.progress.key_of(message)
        if not placed:
            return []
        core = self._core(key, now)
        return self._after(key, core, core.on_message(message, now))

    def _due(self, now: float) -> list[Key]:
        """Keys whose timer is due at ``now``, each once."""
        due: list[Key] = []
        while self.timers and self.timers[0][0] <= now + EPS:
            deadline, _, key = heapq.heappop(self.timers)
            core = self.cores.get(key)
            if core is not None and core.deadline() == deadline and key not in due:
                due.append(key)
        return due

    def deadline(self) -> float | None:
        while self.timers:
            deadline, _, key = self.timers[0]
            core = self.cores.get(key)
            if core is not None and core.deadline() == deadline:
                return deadline
            heapq.heappop(self.timers)
        return None

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        keys = list(self.cores) if forced else self._due(now)
        self.acted = []
        out: list[Window] = []
        for key in keys:
            core = self.cores[key]
            windows = core.on_timer(now, forced)
            self.acted.append((key, core.decision()))
            out.extend(self._after(key, core, windows))
        return out

    def decision(self) -> Any:
        return [{"key": key_to_json(key), "detail": detail} for key, detail in self.acted]

    def replay_timer(self, at: float, detail: Any) -> list[Window]:
        if detail is None:
            return self.on_timer(at, forced=True)
        out: list[Window] = []
        for entry in detail:
            # (An older version journaled the keys alone.)
            key, sub = (entry["key"], entry["detail"]) if isinstance(entry, dict) else (entry, None)
            key = key_from_json(key)
            core = self._core(key, at)
            out.extend(self._after(key, core, core.replay_timer(at, sub)))
        return out

    def on_complete(self, now: float) -> list[Window]:
        out: list[Window] = []
        for key, core in list(self.cores.items()):
            out.extend(self._after(key, core, core.on_complete(now)))
        return out

    def held_min_seq(self) -> int | None:
        return min((seq for core in self.cores.values() if (seq := core.held_min_seq()) is not None),
                   default=None)

    def late(self) -> list[Message]:
        late, self.late_messages = self.late_messages, []
        return late

    def rejected(self) -> list[tuple[Message, str]]:
        return self.progress.rejected()

    def snapshot(self) -> Any:
        states = [[key_to_json(key), state] for key, core in self.cores.items()
                  if (state := core.snapshot()) is not None]
        done = self.progress.snapshot(self.held_min_seq())
        if not states and done is None:
            return None
        return {"keys": states, **(done or {})}

    def restore(self, state: Any) -> None:
        self.restored = {key_from_json(key): sub for key, sub in state.get("keys", [])}
        self.progress.restore(state)


__all__ = ["KeyedCore"]
