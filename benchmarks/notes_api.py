"""The course notes' API (section 4.2), the baseline that bench_api.py and the interop tests run.

As in the notes: the TinyCNN class, weights loaded at import from d4_cnn.pt in the working
directory, `pixels: list[list[float]]` with no declared size, torch.tensor(list) per request,
default threads, and a 200 with an "error" field when the shape is not 28x28.
"""

import torch
from fastapi import FastAPI
from pydantic import BaseModel

from notes_model import TinyCNN

app = FastAPI()
device = "cpu"


class DigitPixels(BaseModel):
    pixels: list[list[float]]  # 28 rows x 28 columns


model = TinyCNN().to(device)
# weights_only=True is torch.load's default since torch 2.6; said here because the file is data, not code.
model.load_state_dict(torch.load("d4_cnn.pt", map_location=device, weights_only=True))
model.eval()


@app.get("/")
def root():
    return {"ok": True, "demo": "D4 MNIST CNN API", "endpoint": "POST /predict"}


@app.post("/predict")
def predict(data: DigitPixels):
    X = torch.tensor(data.pixels, dtype=torch.float32)
    if X.shape != (28, 28):
        return {"error": "pixels must be a 28x28 array"}
    X = X.unsqueeze(0).unsqueeze(0).to(device)  # [batch, channel, height, width]
    with torch.no_grad():
        logits = model(X)
    pred = logits.argmax(dim=1).item()
    probs = torch.softmax(logits, dim=1)[0]
    return {
        "predicted_digit": pred,
        "confidence": float(probs[pred]),
        "probabilities": [float(p) for p in probs],
    }
