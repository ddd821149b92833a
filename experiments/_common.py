"""Helpers shared by the experiment and benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    """Names the machine a result was measured on: CPU model, cores, GPU if any."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = []
    try:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception:  # noqa: BLE001 - informational only
        pass
    import numpy
    import scipy

    info = {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "python": platform.python_version(),
            "numpy": numpy.__version__, "scipy": scipy.__version__}
    try:
        import keras
        import tensorflow as tf

        info.update(tensorflow=tf.__version__, keras=keras.__version__)
    except ImportError:
        pass
    return info


def single_thread_tf() -> None:
    """Pins TensorFlow to one intra-op and one inter-op thread (call before any op)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised
        pass


def write_json(path: str | Path, payload: dict) -> Path:
    """Writes ``payload`` as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of ``rows`` restricted to ``columns``."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def script_parser(doc: str):
    """The argument parser of an experiment script: its docstring's first paragraph as
    the description, defaults shown in ``--help``."""
    import argparse

    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def save_figure(fig, path, dpi: int = 110):
    """Lays out, writes (PNG, Agg backend) and closes a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
