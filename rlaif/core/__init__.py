"""The small core of rlaif: records, protocols, hook specifications, the plugin registry,
configuration and the LMDB store. Nothing here imports torch at module import time."""
