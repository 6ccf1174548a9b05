"""Rich media per step: images, figures, tables, text, audio and confusion matrices.

mj.log_image("samples", img, step=epoch)      # numpy / PIL / torch / MLX -> PNG
mj.log_figure("loss_curve", fig, step=epoch)  # matplotlib -> PNG; altair/plotly -> spec
mj.log_table("predictions", frame, step=epoch)
mj.media(run)                                 # what was logged (polars)
mj.load_media(run, "samples", step=3)         # decoded back
"""

import sys
import types

from .api import (
    confusion_matrix,
    flush_media,
    log_audio,
    log_figure,
    log_image,
    log_table,
    log_text,
)
from .encode import Audio
from .read import load_media, media

__all__ = [
    "Audio",
    "confusion_matrix",
    "flush_media",
    "load_media",
    "log_audio",
    "log_figure",
    "log_image",
    "log_table",
    "log_text",
    "media",
]


# `mj.media(run)` is both this package and the listing function: importing the package
# binds `mlops_jupyter.media` to the module, so the module itself forwards calls to media().
class _CallableModule(types.ModuleType):
    def __call__(self, run, key=None):
        """What `run` logged (see media.read.media)."""
        return media(run, key)


sys.modules[__name__].__class__ = _CallableModule
