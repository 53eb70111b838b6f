"""lgm-gcp: L-GM / large-margin losses x GAP / iSQRT-COV / 3G pooling x GCP LR policies, one trainer."""

__version__ = "0.1.0"
