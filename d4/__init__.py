"""What D4 Tiny CNN does beyond the course notes, one import away from the three scripts.

Shared: model.py (TinyCNN, its input format, labels, weight loading, what it computes inside).
The trainer's: data.py (MNIST as tensors and its DataLoader), training.py (device, schedule,
saving, the run's record), augment.py (training distortions), report.py (the record and report).
The API's: serving.py (start-up and the server's state), batching.py (the inference thread),
api_models.py and api_errors.py (its JSON shapes and errors), body_route.py and limits.py (how it
reads and limits bodies), image_endpoint.py with preprocess.py (a picture -> MNIST-style input),
batch_endpoint.py, model_card.py, health.py, pages.py (with home.html and draw.html).
The client's: client.py. The handwriting proxy's and the tests': drawn_digits.py.
"""

import warnings

# The API's deploy installs no NumPy, and nothing here needs it, but `import torch` warns when it
# is missing; that line would be the first thing in every Render log. Other warnings still show.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
