"""GET /draw in a real headless Chromium, against a real uvicorn: draw, predict, read the page.

Needs a Chromium: Playwright's own (`python -m playwright install chromium`) or the system's
(Debian package `chromium`, which README's set-up and .ci/run install); Playwright drives it.
Set D4_SCREENSHOT=docs/draw-page.png to save the screenshot README shows.
"""

import itertools
import os
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from conftest import DIGIT_STROKES, uvicorn_server

PAD_SIZE = 280  # the canvas's own pixels; DIGIT_STROKES are in these


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with uvicorn_server() as base_url:
        yield base_url


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 900, "height": 500})
    page.goto(f"{server}/draw")
    yield page
    page.close()


def pad_point(page: Page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#pad").bounding_box()
    return box["x"] + x * box["width"] / PAD_SIZE, box["y"] + y * box["height"] / PAD_SIZE


def draw_with_mouse(page: Page, digit: int) -> None:
    for stroke in DIGIT_STROKES[digit]:
        page.mouse.move(*pad_point(page, *stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*pad_point(page, *point), steps=4)
        page.mouse.up()


def predict_and_read(page: Page) -> tuple[int, dict[int, float]]:
    """Click Predict; return the big digit shown and each bar's width in % of its track."""
    page.click("#predict")
    page.wait_for_function("document.querySelector('#digit').textContent !== ''")
    widths = page.eval_on_selector_all(
        "#bars li",
        "rows => rows.map(row => [Number(row.dataset.digit),"
        " 100 * row.querySelector('.fill').getBoundingClientRect().width"
        " / row.querySelector('.track').getBoundingClientRect().width])",
    )
    return int(page.text_content("#digit")), dict(widths)


def test_a_drawn_seven_is_predicted_with_its_bars(page: Page, server: str):
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    draw_with_mouse(page, 7)
    digit, bars = predict_and_read(page)
    assert digit == 7
    assert sorted(bars) == list(range(10))
    assert bars[7] > 90 and sum(bars.values()) == pytest.approx(100, abs=2)
    assert page.get_attribute("#bars li.best", "data-digit") == "7"  # the predicted row stands out
    assert page.text_content("#confidence").endswith("% sure")
    # The small picture shows the 28x28 input the model saw: some white ink on black.
    ink = page.evaluate(
        "Array.from(document.querySelector('#seen').getContext('2d').getImageData(0, 0, 28, 28).data)"
        ".reduce((sum, value, i) => i % 4 === 0 ? sum + value : sum, 0)"
    )
    assert ink > 0
    assert requested and all(url.startswith(server) for url in requested)  # nothing from elsewhere
    if path := os.environ.get("D4_SCREENSHOT"):
        page.screenshot(path=path, full_page=True)


def test_after_predict_the_page_shows_the_saliency_and_every_feature_map(page: Page):
    assert page.is_hidden("#inside")  # nothing to show before a prediction
    draw_with_mouse(page, 3)
    predict_and_read(page)
    assert page.is_visible("#inside")
    assert page.locator("#conv1 canvas").count() == 8 and page.locator("#conv2 canvas").count() == 16
    assert page.get_attribute("#conv1 canvas", "width") == "14" and page.get_attribute("#conv2 canvas", "width") == "7"
    assert "[8, 14, 14]" in page.text_content("#inside") and "[16, 7, 7]" in page.text_content("#inside")
    lit = page.evaluate("Array.from(document.querySelector('#conv2 canvas').getContext('2d')"
                        ".getImageData(0, 0, 7, 7).data).some(value => value > 0)")  # fmt: skip
    assert lit
    # The heat map's red over blue is the saliency alone; it is brightest where the model saw ink.
    heat, seen = (
        page.evaluate(f"Array.from(document.querySelector('#{name}').getContext('2d').getImageData(0, 0, 28, 28).data)")
        for name in ("saliency", "seen")
    )
    saliency = [heat[i] - heat[i + 2] for i in range(0, len(heat), 4)]
    strokes = [seen[i] > 100 for i in range(0, len(seen), 4)]
    on = [value for value, stroke in zip(saliency, strokes, strict=True) if stroke]
    off = [value for value, stroke in zip(saliency, strokes, strict=True) if not stroke]
    assert sum(on) / len(on) > 5 * (sum(off) / len(off) + 0.1)
    page.click("#clear")
    assert page.is_hidden("#inside")


def test_every_digit_drawn_on_the_page_is_recognised(page: Page):
    for digit in sorted(DIGIT_STROKES):
        page.click("#clear")
        draw_with_mouse(page, digit)
        assert predict_and_read(page)[0] == digit


def test_clear_empties_the_pad_and_the_answer(page: Page):
    draw_with_mouse(page, 1)
    predict_and_read(page)
    page.click("#clear")
    assert page.text_content("#digit") == ""
    assert page.eval_on_selector_all("#bars .value", "values => values.map(v => v.textContent).join('')") == ""
    page.click("#predict")
    assert page.text_content("#status") == "Draw a digit first."


def test_the_page_fits_a_phone_and_takes_touch_strokes(browser: Browser, server: str):
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = phone.new_page()
    page.goto(f"{server}/draw")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    box = page.locator("#pad").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] >= 300
    finger = phone.new_cdp_session(page)  # touch input through Chromium's own touch pipeline
    clock = time.time()
    for stroke in DIGIT_STROKES[4]:
        points = [pad_point(page, *point) for point in stroke]
        moves = [
            {"x": x0 + (x1 - x0) * step / 8, "y": y0 + (y1 - y0) * step / 8}
            for (x0, y0), (x1, y1) in itertools.pairwise(points)
            for step in range(1, 9)
        ]
        start = {"x": points[0][0], "y": points[0][1]}
        events = [("touchStart", [start])] + [("touchMove", [move]) for move in moves]
        events += [("touchMove", [moves[-1]]), ("touchEnd", [])]  # the finger rests, then lifts: no fling
        for kind, touch_points in events:
            clock += 0.2 if kind == "touchEnd" else 0.016  # one event per frame, then a pause before lifting
            finger.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touch_points, "timestamp": clock})
    page.tap("#predict")
    page.wait_for_function("document.querySelector('#digit').textContent !== ''")
    assert page.text_content("#digit") == "4"
    phone.close()
