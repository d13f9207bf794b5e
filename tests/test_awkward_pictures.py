"""/predict/image with the pictures people really send: phone photos, specks, blank paper, tight crops, strips."""

import io
import random

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from conftest import drawn, encode, uvicorn_server
from d4.preprocess import MAX_ASPECT

# How a camera stores an upright picture for each EXIF orientation: the inverse of the turn
# (or mirror) that the viewer applies to show it upright.
STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
ORIENTATION_TAG = 0x0112


@pytest.fixture(scope="module")
def server_url():
    with uvicorn_server() as url:
        yield url


def post(url: str, data: bytes, name: str = "digit.jpg") -> requests.Response:
    return requests.post(f"{url}/predict/image", files={"file": (name, data)}, timeout=30)


def as_a_phone_stores_it(
    upright: Image.Image, orientation: int, image_format: str = "JPEG"
) -> bytes:
    """The picture turned the way the sensor saw it, tagged with the EXIF orientation that turns it back."""
    turn = STORED_AS[orientation]
    stored = upright.transpose(turn) if turn is not None else upright
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return encode(stored.convert("RGB"), image_format, exif=exif, quality=92)


def photographed(
    digit_image, side: int = 300, margin: tuple[int, int, int, int] = (150, 100, 150, 100)
) -> Image.Image:
    """An MNIST digit as a person shows it: enlarged, black on white, with paper around it."""
    picture = Image.frombytes("L", (28, 28), bytes(digit_image.flatten().tolist())).resize(
        (side, side), Image.BICUBIC
    )
    left, top, right, bottom = margin
    page = Image.new("L", (side + left + right, side + top + bottom), 255)
    page.paste(ImageOps.invert(picture), (left, top))
    return page


def cropped_to_ink(picture: Image.Image) -> Image.Image:
    return picture.crop(ImageOps.invert(picture).getbbox())


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_phone_photo_is_read_the_way_the_phone_shows_it(server_url, orientation):
    answer = post(server_url, as_a_phone_stores_it(drawn(7), orientation))
    assert answer.status_code == 200, answer.text
    assert answer.json()["predicted_digit"] == 7 and answer.json()["confidence"] > 0.9


def test_an_mpo_photo_is_read_as_the_jpeg_it_is(server_url):
    primary, second_view = drawn(3).convert("RGB"), drawn(8).convert("RGB")
    data = encode(primary, "MPO", save_all=True, append_images=[second_view])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    answer = post(server_url, data)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predicted_digit"] == 3


@pytest.mark.parametrize("speck", [0, 128], ids=["dust pixel", "grey speck"])
def test_a_speck_on_a_white_page_is_blank_not_a_digit(server_url, speck):
    page = Image.new("L", (280, 280), 255)
    page.putpixel((97, 151), speck)
    answer = post(server_url, encode(page, "PNG"), "speck.png")
    assert answer.status_code == 422
    assert answer.json()["message"].startswith("the image is blank: its only marks are specks")


def test_a_photo_of_empty_paper_is_blank(server_url):
    rng = random.Random(1)
    paper = Image.new("L", (640, 480))
    paper.putdata([max(0, min(255, round(rng.gauss(200, 12)))) for _ in range(640 * 480)])
    answer = post(server_url, encode(paper.convert("RGB"), "JPEG", quality=80))
    assert answer.status_code == 422
    assert answer.json()["message"].startswith("the image is blank")


def test_ones_cropped_tightly_to_their_ink_are_recognised(server_url, fixture_test_digits):
    images, labels = fixture_test_digits
    ones = [image for image, label in zip(images, labels, strict=True) if label == 1]
    answers = [
        post(server_url, encode(cropped_to_ink(photographed(image)), "PNG"), "one.png")
        for image in ones
    ]
    assert all(answer.status_code == 200 for answer in answers), [
        a.text for a in answers if a.status_code != 200
    ]
    correct = sum(answer.json()["predicted_digit"] == 1 for answer in answers)
    assert correct >= len(ones) - 1, (correct, len(ones))


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_a_pen_stroke_1_cropped_to_pure_ink_is_a_1(server_url, image_format):
    bar = cropped_to_ink(drawn(1))  # the stroke fills the whole picture: no paper left to see
    answer = post(
        server_url, encode(bar.convert("RGB"), image_format), f"bar.{image_format.lower()}"
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predicted_digit"] == 1


def test_a_tall_blank_page_is_blank_not_a_1(server_url):
    answer = post(server_url, encode(Image.new("L", (100, 400), 250), "PNG"), "page.png")
    assert answer.status_code == 422 and answer.json()["message"].startswith("the image is blank")


def test_a_very_long_thin_strip_gets_a_422_saying_why(server_url):
    strip = Image.new("L", (4000, 3), 255)
    strip.paste(0, (0, 1, 4000, 2))
    answer = post(server_url, encode(strip, "PNG"), "line.png")
    assert answer.status_code == 422
    assert answer.json()["message"] == (
        f"the image is 4000x3 pixels, a strip too thin to hold a digit (at most {MAX_ASPECT} times longer than wide); "
        "crop it around the digit"
    )
    assert requests.get(f"{server_url}/healthz", timeout=5).status_code == 200


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_honest_picture_of_a_digit_gets_the_clean_pictures_answer(
    client, confident_digits, data
):
    image, clean_answer = data.draw(st.sampled_from(confident_digits))
    picture = photographed(
        image, margin=tuple(data.draw(st.lists(st.integers(0, 200), min_size=4, max_size=4)))
    )
    if data.draw(st.booleans()):
        picture = cropped_to_ink(picture)
    if data.draw(st.booleans()):
        rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
        for _ in range(picture.width * picture.height // 2000):  # a thin speckle: 1 pixel in 2,000
            picture.putpixel(
                (rng.randrange(picture.width), rng.randrange(picture.height)), rng.randrange(256)
            )
    orientation = data.draw(st.sampled_from(sorted(STORED_AS)))
    answer = client.post(
        "/predict/image", files={"file": ("p.jpg", as_a_phone_stores_it(picture, orientation))}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predicted_digit"] == clean_answer


@pytest.fixture(scope="module")
def confident_digits(client, fixture_test_digits) -> list:
    """Fixture digits whose clean photo the model reads right and surely (> 0.95): (image, digit)."""
    images, labels = fixture_test_digits
    chosen = []
    for image, label in zip(images[:60], labels[:60].tolist(), strict=True):
        answer = client.post(
            "/predict/image", files={"file": ("c.png", encode(photographed(image), "PNG"))}
        ).json()
        if answer["predicted_digit"] == label and answer["confidence"] > 0.95:
            chosen.append((image, label))
    assert len(chosen) >= 40
    return chosen
