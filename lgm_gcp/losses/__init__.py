"""Criteria that own their classifier weights.

``logits(features)`` gives the prediction logits; ``forward(features, targets, step)`` returns
``(loss, logits, logs)``: the scalar training loss, the margin-free prediction logits of the batch
and a dict of scalars to log (e.g. the L-GM margin and likelihood term).
"""
