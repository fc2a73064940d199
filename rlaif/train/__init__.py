"""Training recipes, each written top to bottom: supervised fine-tuning (:mod:`.sft`),
evaluation (:mod:`.evaluate`) and the RL loop (:mod:`.rl`). Importing this package is
cheap; each module imports torch itself."""
