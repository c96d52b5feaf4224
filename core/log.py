"""Console and TensorBoard logging. Only the main process writes."""
import json
from pathlib import Path

import numpy as np


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if v is not None and np.isfinite(v):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def image(self, tag: str, image_hwc: np.ndarray, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def print(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)

    def write_json(self, name: str, obj) -> Path:
        path = self.run_dir / name
        if self.enabled:
            path.write_text(json.dumps(obj, indent=2, default=_jsonable))
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def wall_time(seconds: float) -> str:
    """'2 min 05 s', or '41 s' under a minute."""
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)
