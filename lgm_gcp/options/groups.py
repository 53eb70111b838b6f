"""The config groups, written once: read by the schemas, the metafiles, the composer's one-line errors,
``--help``, the launcher's import check and the tests (``conf/`` holds a folder for each)."""

# one option each, a class named by its _target_
TARGET_GROUPS = ("dataset", "backbone", "head", "loss", "lr_policy", "optimizer", "trainer")
# every group a user picks options of: logger takes several at once, experiment is a preset of the others
GROUPS = TARGET_GROUPS + ("logger", "experiment")
# folders of conf/ that are not config groups
NON_GROUP_FOLDERS = ("hydra", "table", "metafile", "__pycache__")
# the parameters the builder passes when it calls an option (derived from the backbone and the dataset, or
# the model itself): no config field (lgm_gcp/options/derive.py)
CALL_SITE = {"dataset": ("ten_crop", "mirror", "num_workers", "prefetch_factor"), "backbone": ("in_channels",),
             "head": ("in_channels",), "loss": ("in_features", "num_classes"), "optimizer": ("model", "lr")}
# groups whose option is instantiated as a partial and called with the call-site arguments later
PARTIAL = ("optimizer",)
