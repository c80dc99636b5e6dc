"""Training stage: dataset scan, leakage-free split, MobileNetV3 training and honest metrics."""
