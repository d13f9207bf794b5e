"""Shared pieces of D4 Tiny CNN, imported by the three scripts.

model.py (TinyCNN, its input format and labels), data.py (MNIST as tensors), augment.py
(training distortions), report.py (the training record and report), preprocess.py (a picture
-> MNIST-style input), batching.py (the API's inference thread), body_route.py and limits.py
(how the API reads and limits bodies).
"""

import warnings

# The API's deploy installs no NumPy, and nothing here needs it, but `import torch` warns when it
# is missing; that line would be the first thing in every Render log. Other warnings still show.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
