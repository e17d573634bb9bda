"""Checkpoints of a demo run, written atomically.

A checkpoint is one ``torch.save`` file holding everything needed to continue the run to the
same final numbers, bit for bit: the settings, the completed epoch, every loss's model weights
(plain SGD keeps no other optimizer state), PyTorch's random number generator state and the
history of metrics. It is written to a temporary file beside the target, flushed to disk, and
moved over the target with :func:`os.replace`, which is atomic: an interruption at any moment
leaves either the previous checkpoint or the new one, complete, never a torn file. It is read
back with ``weights_only=True`` (tensors and plain containers only; no code is unpickled).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_NAME", "FORMAT", "load_checkpoint", "save_checkpoint"]

#: The checkpoint's file name inside a run directory.
CHECKPOINT_NAME = "checkpoint.pt"

#: The version of the checkpoint's layout; a different one is refused on load.
FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, :func:`os.replace`).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     target = save_checkpoint(Path(d) / "c.pt", {"format": FORMAT, "epoch": 3})
        ...     load_checkpoint(target)["epoch"], sorted(p.name for p in Path(d).iterdir())
        (3, ['c.pt'])
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ValueError: ``path`` is missing, unreadable, not a checkpoint, or of another format.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"checkpoint: no file {str(path)!r}") from None
    except OSError as exc:
        raise ValueError(f"checkpoint: cannot read {str(path)!r}: {exc.strerror}") from None
    except Exception as exc:  # a torn or foreign file: pickle/zip errors of every kind
        raise ValueError(
            f"checkpoint: {str(path)!r} is not a demo checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {str(path)!r} is not a demo checkpoint of format {FORMAT}")
    return state
