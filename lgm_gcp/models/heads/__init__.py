"""Pooling heads map (B, C, h, w) feature maps to (B, D) vectors and expose ``out_features``."""
