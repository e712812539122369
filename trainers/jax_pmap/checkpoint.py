"""The JAX trainer's checkpoint file: :data:`JAX_FORMAT` (``ckpt_*.msgpack``)."""

from __future__ import annotations

import json
from typing import Any

from flax import serialization

from trainers.core.checkpoints import CheckpointFormat
from trainers.core.rundir import atomic_write

__all__ = ["JAX_FORMAT"]


def _write(path: str, position: dict[str, Any], state: Any) -> None:
    payload = serialization.msgpack_serialize(
        {"meta": json.dumps(position), "state": serialization.to_state_dict(state)}
    )
    atomic_write(path, lambda fh: fh.write(payload))


def _read(path: str) -> tuple[dict[str, Any], Any]:
    with open(path, "rb") as fh:
        saved = serialization.msgpack_restore(fh.read())
    return json.loads(saved["meta"]), saved["state"]


JAX_FORMAT = CheckpointFormat(".msgpack", _write, _read)
"""``ckpt_*.msgpack``: Flax msgpack of ``meta`` (the position as JSON) and ``state``
(params, batch_stats, opt_state as NumPy arrays)."""
