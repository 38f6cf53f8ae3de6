"""sdlearn: Stable Diffusion, taken apart — the reusable code of the notebook course."""
import logging as _logging

# transformers warns, when diffusers' pipelines import its image processors, that they would
# prefer torchvision. sdlearn deliberately never installs torchvision (with this torch it breaks
# `import diffusers`), so that advice is only noise in every notebook: silence just that logger.
_logging.getLogger("transformers.utils.import_utils").setLevel(_logging.ERROR)

__version__ = "0.1.0"
