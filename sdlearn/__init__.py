"""sdlearn: Stable Diffusion, taken apart — the reusable code of the notebook course."""
__version__ = "0.1.0"
