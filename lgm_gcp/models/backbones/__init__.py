"""Backbones map (B, 3, H, W) images to (B, C, h, w) feature maps and expose ``out_channels``.

A backbone may also carry a ``recipe`` dict: the paper defaults that ``head`` and ``loss`` fields
set to ``auto`` take (classifier dropout, MLP, init, reduction activation, preferred last stride).
"""
