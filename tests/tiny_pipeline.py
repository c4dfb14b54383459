"""The smallest config sections the flow tests share: they test orchestration, not masks.

A from-scratch resnet18 (no weights file needed) trained for one epoch at 64 px,
and single-scale CAMs. Test modules import it by name (pytest puts tests/ on
the path).
"""

TINY_TRAIN = {
    "backbone": "resnet18",
    "weights": None,
    "image_size": 64,
    "epochs": 1,
    "batch_size": 8,
}
TINY_CAM = {"scales": [1.0], "batch_size": 8}
