"""recguard: a TFX pipeline for recommenders trained on dirty interaction logs."""

import os
import warnings

# One Keras for every process: TFT 1.16 builds its Transform layer with
# tf-keras (Keras 2), and TensorFlow 2.16 picks Keras 3 unless this variable
# is set before TensorFlow is first imported. Setting it here, in the package
# every entry point imports first, keeps the CLI, Beam workers and the
# Trainer on tf-keras.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# google-api-core announces on import that it stops supporting Python 3.10,
# once per Google client library. tfx 1.16 needs Python 3.10, so the notice
# is known and only hides the pipeline's own output.
warnings.filterwarnings(
    "ignore", message=".*non-supported Python version.*", category=FutureWarning
)
warnings.filterwarnings(
    "ignore", message=".*google-cloud-storage < 3.0.0.*", category=FutureWarning
)
