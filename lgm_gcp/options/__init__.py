"""The vocabulary an option is written in, at the bottom of the package: the field annotations
(``fields``), the schema derived from a signature (``derive``), the list of config groups (``groups``) and
``instantiate``. Any option class may import it; it imports nothing of lgm_gcp but ``errors``."""
