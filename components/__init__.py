"""Custom TFX components and the Transform and Trainer module files."""

import os

# See pipeline/__init__.py: every process must use tf-keras, and Beam
# workers may import this package before anything else.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
