"""The CAMs the seeds and grown stages read: pooled over superpixels when ``seeds.superpixels``.

Both stages pool the same way (the settings are the seeds section's, which the
grown stage's lineage includes), so growing sees the maps its seeds came from.
The grown stage runs SLIC again rather than storing the labels with the seeds:
it costs milliseconds per image (ARCHITECTURE.md, "Remedies") and keeps the
seeds table's schema as it is.
"""

from __future__ import annotations

import numpy as np

from wsss_core.config import SeedConfig
from wsss_core.data.manifest import ImageRecord
from wsss_core.stages.image_failures import read_image
from wsss_core.store.maps import CamRecord
from wsss_core.superpixels import pool_over_superpixels, superpixel_labels


def seed_stage_cams(record: ImageRecord, cams: CamRecord, settings: SeedConfig) -> np.ndarray:
    """``cams.cams``, or their superpixel means when the seeds section turns pooling on.

    An image that cannot be read raises ``ImageReadError`` (the image's failure).
    """
    if not settings.superpixels or cams.cams.shape[0] == 0:
        return cams.cams
    image = read_image(record)
    if image.shape[:2] != cams.cams.shape[1:]:
        raise ValueError(
            f"{record.uri}: image is {image.shape[1]} x {image.shape[0]} px but its CAMs "
            f"are {cams.cams.shape[2]} x {cams.cams.shape[1]}"
        )
    labels = superpixel_labels(image, settings.superpixels, settings.superpixel_compactness)
    return pool_over_superpixels(cams.cams, labels)
