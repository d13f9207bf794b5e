"""The course notes' API, kept as the baseline that bench_api.py measures against.

Faithful to the notes: weights loaded at import from d4_cnn.pt in the working directory,
`pixels: list` with no declared shape, torch.tensor(list) per request, default threads,
and a 200 with an "error" field for a wrong shape.
"""

import torch
from fastapi import FastAPI
from notes_model import TinyCNN
from pydantic import BaseModel

model = TinyCNN()
model.load_state_dict(torch.load("d4_cnn.pt", map_location="cpu"))
model.eval()

app = FastAPI()


class DigitInput(BaseModel):
    pixels: list


@app.get("/")
def root():
    return {"ok": True, "demo": "d4 tiny cnn mnist", "endpoint": "/predict"}


@app.post("/predict")
def predict(data: DigitInput):
    x = torch.tensor(data.pixels, dtype=torch.float32)
    if x.shape != (28, 28):
        return {"error": "pixels must be 28x28"}
    x = x.view(1, 1, 28, 28)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0]
    digit = int(torch.argmax(probs))
    return {"predicted_digit": digit, "confidence": float(probs[digit]), "probabilities": probs.tolist()}
