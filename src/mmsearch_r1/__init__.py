"""mmsearch-r1: train multimodal models to search only when they need to.

Importing the package is cheap: it loads no torch and no model code. The parts live in
subpackages (``protocol``, ``reward``, ``tools``, ``engines``, ``rollout``, ``train``, ``eval``,
``data``, ``world``) and are imported where they are used.
"""

__version__ = "0.1.0"
