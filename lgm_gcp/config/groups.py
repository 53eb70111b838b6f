"""The config groups, written once: read by the schemas, the metafiles, the composer's one-line errors,
``--help``, the launcher's import check and the tests (``conf/`` holds a folder for each)."""

# one option each, a class named by its _target_
TARGET_GROUPS = ("dataset", "backbone", "head", "loss", "lr_policy", "optimizer", "trainer")
# every group a user picks options of: logger takes several at once, experiment is a preset of the others
GROUPS = TARGET_GROUPS + ("logger", "experiment")
# folders of conf/ that are not config groups
NON_GROUP_FOLDERS = ("hydra", "table", "metafile", "__pycache__")
