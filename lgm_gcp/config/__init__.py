"""The top of the config layer: schema registration, composition, resolvers, metafiles and the strict
validator (``register``, ``compose``, ``resolvers``, ``metafile``, ``validate``, ``schema``). Imports nothing
here, so that importing one module does not run the others; the field vocabulary the option classes use is
``lgm_gcp.options``, below every option package."""
