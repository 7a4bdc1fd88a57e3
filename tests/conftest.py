"""Test setup shared by every test module."""

import os

# The same Keras as the pipeline (tf-keras), and fewer TensorFlow notices,
# before any test module imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
