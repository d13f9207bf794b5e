"""POST /predict/image and /predict/batch: pictures as people send them, and many images at once."""

import random

import pytest
import requests
import torch
from PIL import Image, ImageOps

from conftest import DIGIT_STROKES, drawn, encode
from d4.limits import MAX_BATCH_IMAGES, MAX_UPLOAD_BYTES
from d4.model import to_model_input
from d4.preprocess import (
    ACCEPTED_FORMATS,
    MAX_IMAGE_PIXELS,
    ImageRejected,
    ImageTooLarge,
    image_to_pixels,
)


def as_a_user_sends_it(digit: torch.Tensor, rng: random.Random) -> Image.Image:
    """An MNIST digit as it arrives from a person: 200-400 px, black on white, off-centre on a page."""
    side = rng.randint(200, 400)
    picture = Image.frombytes("L", (28, 28), bytes(digit.flatten().tolist())).resize(
        (side, side), Image.BICUBIC
    )
    page = Image.new("L", (side + 300, side + 200), 255)
    page.paste(ImageOps.invert(picture), (rng.randint(0, 300), rng.randint(0, 200)))
    return page


def upload(client, data: bytes, name: str = "digit.png", **params):
    return client.post("/predict/image", files={"file": (name, data)}, params=params)


def test_photographed_mnist_digits_score_as_well_as_the_raw_pixels(client, fixture_test_digits):
    images, labels = fixture_test_digits
    rng = random.Random(0)
    raw = [
        client.post("/predict", json={"pixels": pixels[0].tolist()})
        for pixels in to_model_input(images)
    ]
    raw_correct = sum(answer.json()["predicted_digit"] == labels[i] for i, answer in enumerate(raw))
    for image_format in ("PNG", "JPEG"):
        answers = [
            upload(client, encode(as_a_user_sends_it(image, rng), image_format)) for image in images
        ]
        assert all(answer.status_code == 200 for answer in answers)
        correct = sum(
            answer.json()["predicted_digit"] == labels[i] for i, answer in enumerate(answers)
        )
        assert correct >= raw_correct - 0.01 * len(labels), (image_format, correct, raw_correct)


@pytest.mark.parametrize("digit", sorted(DIGIT_STROKES))
def test_digits_drawn_as_thick_strokes_are_recognised(client, digit):
    answer = upload(client, encode(drawn(digit), "PNG")).json()
    assert answer["predicted_digit"] == digit and answer["confidence"] > 0.9


@pytest.mark.parametrize(
    ("mode", "paper", "pen"),
    [
        ("L", 255, 0),  # dark ink on white paper
        ("L", 0, 255),  # light on dark, as MNIST stores it
        ("RGB", (250, 240, 200), (20, 30, 140)),  # blue pen on yellowish paper
        ("RGBA", (0, 0, 0, 0), (0, 0, 0, 255)),  # black strokes on a transparent canvas
        ("RGBA", (0, 0, 0, 0), (255, 255, 255, 255)),  # white strokes on a transparent canvas
        ("LA", (255, 0), (0, 255)),
        ("I;16", 60000, 5000),  # 16-bit grey: its levels are 256 times an 8-bit picture's
    ],
)
def test_polarity_colour_and_transparency_give_the_same_input(mode, paper, pen):
    reference = image_to_pixels(encode(drawn(4), "PNG"))
    pixels = image_to_pixels(encode(drawn(4, mode, paper, pen), "PNG"))
    assert max(abs(a - b) for a, b in zip(pixels, reference, strict=True)) < 0.1


@pytest.mark.parametrize(
    ("image_format", "mode"), [("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB")]
)
def test_every_documented_format_is_read(client, image_format, mode):
    answer = upload(
        client, encode(drawn(7).convert(mode), image_format), name=f"seven.{image_format.lower()}"
    )
    assert answer.status_code == 200 and answer.json()["predicted_digit"] == 7


def test_the_input_the_model_saw_is_mnist_shaped_on_request(client):
    plain = upload(client, encode(drawn(3), "PNG")).json()
    assert "input" not in plain
    answer = upload(client, encode(drawn(3), "PNG"), return_input="true").json()
    seen = torch.tensor(answer["input"])
    assert seen.shape == (28, 28) and seen.min() == 0 and seen.max() <= 1
    assert answer["probabilities"] == plain["probabilities"]
    rows, cols = seen.nonzero(as_tuple=True)
    assert (
        max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20
    )  # fitted into 20x20, as MNIST
    index = torch.arange(28.0)
    centre = ((seen.sum(1) * index).sum() / seen.sum(), (seen.sum(0) * index).sum() / seen.sum())
    assert all(abs(c - 14) <= 0.5 for c in centre)  # centre of mass on pixel (14, 14)
    assert seen[:2].sum() == seen[-2:].sum() == 0  # a black margin all round


def test_a_large_photo_is_accepted(client):
    photo = drawn(2, "RGB", (235, 235, 230), (40, 40, 40)).resize((4000, 3000))
    answer = upload(client, encode(photo, "JPEG", quality=90))
    assert answer.status_code == 200 and answer.json()["predicted_digit"] == 2


def animated_gif() -> bytes:
    return encode(drawn(1), "GIF", save_all=True, append_images=[drawn(7)])


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (encode(Image.new("L", (280, 280), 255), "PNG"), 422, "blank"),
        (encode(Image.new("RGBA", (280, 280), (0, 0, 0, 0)), "PNG"), 422, "blank"),
        (b"%PDF-1.7 not a picture", 422, "not an image"),
        (b"", 422, "not an image"),
        (encode(drawn(5), "PNG")[:300], 422, "truncated or corrupt"),
        (encode(drawn(5), "JPEG")[:600], 422, "truncated or corrupt"),
        (
            encode(Image.new("1", (8000, 8000)), "PNG"),
            413,
            "limit",
        ),  # a 4 KB file of 64 million pixels
        (animated_gif(), 422, "animated"),
        (encode(drawn(5), "TIFF"), 422, "send one of PNG, JPEG, GIF, BMP, WEBP"),
    ],
    ids=[
        "white",
        "transparent",
        "pdf",
        "empty",
        "truncated-png",
        "truncated-jpeg",
        "bomb",
        "animated",
        "tiff",
    ],
)
def test_pictures_that_cannot_be_read_get_a_4xx_that_says_why(client, data, status, words):
    answer = upload(client, data)
    assert answer.status_code == status
    assert words in answer.json()["message"]
    assert upload(client, encode(drawn(1), "PNG")).json()["predicted_digit"] == 1  # still serving


@pytest.mark.parametrize("image_format", ["TIFF", "ICO"])
def test_only_the_accepted_formats_parsers_read_an_upload(monkeypatch, image_format):
    Image.init()  # every format Pillow knows, registered
    parsed_by = []

    def parser(name, factory):
        return lambda *args: parsed_by.append(name) or factory(*args)

    for name, (factory, accept) in list(Image.OPEN.items()):
        if name not in ACCEPTED_FORMATS:
            monkeypatch.setitem(Image.OPEN, name, (parser(name, factory), accept))
    with pytest.raises(ImageRejected, match="send one of PNG, JPEG, GIF, BMP, WEBP"):
        image_to_pixels(encode(drawn(5), image_format))
    assert parsed_by == []


def test_the_pixel_limit_is_checked_before_decoding():
    assert 8000 * 8000 > MAX_IMAGE_PIXELS >= 4032 * 3024  # a 12 MP phone photo fits
    header_only = encode(Image.new("1", (8000, 8000)), "PNG")[:100]  # no pixel data to decode
    with pytest.raises(ImageTooLarge, match="8000x8000"):
        image_to_pixels(header_only)


def test_uploads_over_the_size_limit_get_413_in_json(client):
    noise = random.Random(1).randbytes(MAX_UPLOAD_BYTES + 1)
    answer = upload(client, noise, name="huge.png")
    assert answer.status_code == 413 and "5 MiB" in answer.json()["message"]


def test_a_request_without_a_file_says_how_to_send_one(client):
    answer = client.post("/predict/image", json={"pixels": []})
    assert answer.status_code == 422 and "multipart/form-data" in answer.json()["message"]


def test_batch_answers_each_image_in_order_like_predict(client, fixture_test_digits):
    images, labels = fixture_test_digits
    pixels = to_model_input(images[:40])[:, 0].tolist()
    answer = client.post("/predict/batch", json={"images": pixels})
    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    assert [p["predicted_digit"] for p in predictions] == [
        client.post("/predict", json={"pixels": image}).json()["predicted_digit"]
        for image in pixels
    ]
    one = client.post("/predict", json={"pixels": pixels[5]}).json()
    assert predictions[5]["probabilities"] == pytest.approx(one["probabilities"], abs=1e-6)


@pytest.mark.parametrize(
    ("count", "words"), [(0, "at least 1"), (MAX_BATCH_IMAGES + 1, "at most 256")]
)
def test_batch_size_outside_the_limit_gets_422(client, count, words):
    blank = [[0.0] * 28 for _ in range(28)]
    answer = client.post("/predict/batch", json={"images": [blank] * count})
    assert answer.status_code == 422 and words in answer.json()["message"]


def test_batch_of_the_largest_size_is_answered(client):
    blank = [[0.0] * 28 for _ in range(28)]
    answer = client.post("/predict/batch", json={"images": [blank] * MAX_BATCH_IMAGES})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == MAX_BATCH_IMAGES


@pytest.mark.parametrize("cut", [3, 40, 1000], ids=["closing-boundary", "end-of-file", "mid-file"])
def test_an_upload_cut_short_gets_400_saying_so(client, cut):
    complete = requests.Request(
        "POST", "http://x/predict/image", files={"file": ("d.png", encode(drawn(3), "PNG"))}
    )
    prepared = complete.prepare()
    content_type = prepared.headers["Content-Type"]
    answer = client.post(
        "/predict/image", content=prepared.body[:-cut], headers={"content-type": content_type}
    )
    assert answer.status_code == 400
    assert (
        answer.json()["message"]
        == "the multipart upload is incomplete: it ends before its closing boundary"
    )
    whole = client.post(
        "/predict/image", content=prepared.body, headers={"content-type": content_type}
    )
    assert whole.status_code == 200 and whole.json()["predicted_digit"] == 3


def test_a_multipart_body_that_cannot_be_parsed_gets_400(client):
    answer = client.post(
        "/predict/image", content=b"no parts", headers={"content-type": "multipart/form-data"}
    )
    assert answer.status_code == 400 and "boundary" in answer.json()["message"]
