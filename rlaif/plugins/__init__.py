"""Built-in components. Each subpackage is one plugin (one entry point) whose
``__init__`` only registers targets; the component modules import torch themselves."""
