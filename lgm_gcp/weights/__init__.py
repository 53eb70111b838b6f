"""Weight files from any of the four reference repositories, torchvision or lgm-gcp: reading
(``files``), key layouts (``layouts``), strict loading (``load``) and export back (``export``)."""

from lgm_gcp.weights.files import read_state_dict
from lgm_gcp.weights.load import load_weights

__all__ = ["load_weights", "read_state_dict"]
