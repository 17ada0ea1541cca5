"""The stages of `groundgen run`, in order (kept free of imports so the CLI can validate names fast)."""

STAGE_ORDER = ("topics", "prompts", "trajectories", "images", "judgements", "samples", "export")
