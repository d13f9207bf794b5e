"""What D4 Tiny CNN does beyond the course notes, one import away from the three scripts.

Shared: model.py (TinyCNN, the notes' class, with its input format and labels), weights.py
(loading a weights file, errors in one sentence), explain.py (each layer's values for one image).
The trainer's: data.py (MNIST as tensors and its batch order), training.py (device, schedule,
progress, saving, the run's record, showing the example), augment.py (training distortions),
report.py (the record and report).
The API's: serving.py (start-up and the server's state), batching.py (the inference thread),
api_models.py and api_errors.py (its JSON shapes and errors), body_route.py and limits.py (how it
reads and limits bodies), image_endpoint.py with preprocess.py (a picture -> MNIST-style input),
batch_endpoint.py, model_card.py (GET /model, /model/weights and the layer table), health.py,
pages.py (with home.html, draw.html, draw.js, draw.css and favicon.ico).
The client's: client.py. The handwriting proxy's and the tests': drawn_digits.py.
"""
