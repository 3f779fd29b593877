"""Experience replay and MSSR: buffer, memory model, schedules and the plugin that joins them."""

from retain.methods.replay.buffer import ReplayBuffer
from retain.methods.replay.memory import MemoryState
from retain.methods.replay.plugin import ReplayPlugin, build_replay_plugin

__all__ = ["MemoryState", "ReplayBuffer", "ReplayPlugin", "build_replay_plugin"]
