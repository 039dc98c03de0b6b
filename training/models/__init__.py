"""Networks: the MobileFaceNet trunk and the BTNet branch-to-trunk models built from it."""
