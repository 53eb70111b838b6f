"""Weight files from any of the four reference repositories, torchvision or lgm-gcp: reading
(``files``), key layouts (``layouts``), strict loading (``load``) and export back (``export``)."""
