"""GET /draw in a real headless Chromium, against a real uvicorn: draw, predict, read the page.

Needs a Chromium: Playwright's own (`python -m playwright install chromium`) or the system's
(Debian package `chromium`, which README's set-up and .ci/run install); Playwright drives it.
Set D4_SCREENSHOT=docs/draw-page.png to save the screenshot README shows.

The tests of what the page teaches run on a desktop and on a phone viewport, with the page's
clock under the test's control: the model runs once the pen pauses, and the test says when.
"""

import itertools
import math
import os
import time
from collections.abc import Iterator

import pytest
import requests
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, Route

from conftest import DIGIT_STROKES, drawn, encode, uvicorn_server

PAD_SIZE = 280  # the canvas's own pixels; DIGIT_STROKES are in these
PAUSE_MS = 300  # the page asks the model this long after the pen's last move
DEVICES = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
ANSWER_SHOWN = (
    "document.querySelector('#digit').textContent !== ''"
    " && document.querySelector('#result').getAttribute('aria-busy') === 'false'"
)


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


def draw_with_finger(page: Page, digit: int) -> None:
    """Touch strokes through Chromium's own touch pipeline, one event per frame, as a finger makes them."""
    finger = page.context.new_cdp_session(page)
    clock = time.time()
    for stroke in DIGIT_STROKES[digit]:
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
    finger.detach()


def is_phone(page: Page) -> bool:
    return page.evaluate("navigator.maxTouchPoints > 0")


def draw(page: Page, digit: int) -> None:
    """With a finger on a phone, with the mouse on a desktop."""
    (draw_with_finger if is_phone(page) else draw_with_mouse)(page, digit)


def press(page: Page, selector: str, **position) -> None:
    """A tap on a phone, a click on a desktop; `position` is relative to the element's top left corner."""
    (page.tap if is_phone(page) else page.click)(selector, **position)


def answer_after_pause(page: Page) -> dict:
    """Let the pen's pause run out on the page's clock; return the API's answer, once the page shows it."""
    with page.expect_response(lambda response: "/predict/image" in response.url) as response:
        page.clock.run_for(PAUSE_MS + 1)
    page.wait_for_function(ANSWER_SHOWN)
    return response.value.json()


def predict_and_read(page: Page) -> tuple[int, dict[int, float]]:
    """Click Predict; return the big digit shown and each bar's width in % of its track."""
    page.click("#predict")  # an answer still on its way (the pen's pause) is superseded: wait for this one
    page.wait_for_function(ANSWER_SHOWN)
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
    # The heat map's colours get brighter with the saliency; it is brightest where the model saw ink.
    heat, seen = (
        page.evaluate(f"Array.from(document.querySelector('#{name}').getContext('2d').getImageData(0, 0, 28, 28).data)")
        for name in ("saliency", "seen")
    )
    saliency = [heat[i] + heat[i + 1] + heat[i + 2] for i in range(0, len(heat), 4)]
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
    draw_with_finger(page, 4)
    page.tap("#predict")
    page.wait_for_function(ANSWER_SHOWN)
    assert page.text_content("#digit") == "4"
    phone.close()


@pytest.fixture(params=sorted(DEVICES))
def device(request: pytest.FixtureRequest, browser: Browser, server: str) -> Iterator[Page]:
    """/draw on a desktop or a phone, its timers stopped until the test runs them (page.clock)."""
    context = browser.new_context(**DEVICES[request.param])
    page = context.new_page()
    page.clock.install()
    page.goto(f"{server}/draw")
    yield page
    context.close()


def test_a_live_prediction_appears_without_pressing_a_button_once_per_pause(device: Page):
    asked = []
    device.on("request", lambda request: asked.append(request.url) if "/predict" in request.url else None)
    draw(device, 7)
    device.clock.run_for(PAUSE_MS - 50)  # the pen has not paused long enough yet
    assert asked == [] and device.text_content("#digit") == ""
    answer = answer_after_pause(device)
    assert device.text_content("#digit") == str(answer["predicted_digit"]) == "7"
    assert len(asked) == 1  # one pause, one request: however many pointer moves the strokes made
    device.clock.run_for(10 * PAUSE_MS)
    assert len(asked) == 1  # nothing more until the drawing changes


def tap_cell(page: Page, row: int, col: int, side: int) -> float:
    """Tap one value of the large map; return what the page's own arithmetic made of it."""
    box = page.locator("#big").bounding_box()
    position = {"x": (col + 0.5) * box["width"] / side, "y": (row + 0.5) * box["height"] / side}
    press(page, "#big", position=position)
    page.wait_for_function(
        f"document.querySelector('#cell h3')?.textContent.includes('row {row + 1}, column {col + 1}')"
    )
    return float(page.get_attribute("#cell", "data-value"))


def cells_to_check(feature_map: list[list[float]]) -> list[tuple[int, int]]:
    """The strongest value, a corner (its patches reach into the zero padding) and the weakest value above zero."""
    values = {(row, col): value for row, line in enumerate(feature_map) for col, value in enumerate(line)}
    lit = [cell for cell, value in values.items() if value > 0]
    return [max(values, key=values.get), (0, 0), min(lit, key=values.get, default=(1, 1))]


def test_a_conv1_tile_opens_with_its_kernel_and_each_tapped_cells_arithmetic_equals_the_apis(device: Page, server: str):
    draw(device, 3)
    answer = answer_after_pause(device)
    filters = requests.get(f"{server}/model", timeout=10).json()["filters"]
    assert device.locator("#conv1 .tile").all_inner_texts() == [f"conv1 · {n}/8" for n in range(1, 9)]
    for layer, index, side in (("conv1", 2, 14), ("conv2", 0, 7)):
        press(device, f"#{layer} .tile >> nth={index}")
        assert device.is_visible("#detail")
        count = len(filters[layer]["biases"])
        assert device.text_content("#detail-title") == f"{layer}, filter {index + 1} of {count} · [{side}, {side}]"
        kernel = device.eval_on_selector_all("#kernel .grid3 span", "cells => cells.map(c => Number(c.dataset.value))")
        shown = device.eval_on_selector_all("#kernel .grid3 span", "cells => cells.map(c => c.textContent)")
        served = [weight for channel in filters[layer]["weights"][index] for row in channel for weight in row]
        assert kernel == served and len(kernel) == 9 * (1 if layer == "conv1" else 8)
        assert shown == [f"{weight:.2f}".replace("-", "−").replace("−0.00", "0.00") for weight in served]
        assert f"{filters[layer]['biases'][index]:.3f}".replace("-", "−") in device.text_content("#bias")
        feature_map = answer["explanation"]["feature_maps"][layer][index]
        for row, col in cells_to_check(feature_map):
            assert tap_cell(device, row, col, side) == pytest.approx(feature_map[row][col], abs=1e-4)
            assert "the same, to 0.0001" in device.text_content("#cell")
    width = device.viewport_size["width"]  # conv2's tables and 8 kernels open: still no sideways scrolling
    assert device.evaluate("document.documentElement.scrollWidth") <= width
    if (path := os.environ.get("D4_SCREENSHOT")) and not is_phone(device):
        press(device, "#conv1 .tile >> nth=1")  # opened on its strongest value, with that value's arithmetic
        device.screenshot(path=path, full_page=True)


def test_the_fc1_logits_softmax_strip_matches_the_probabilities(device: Page, server: str):
    draw(device, 2)
    answer = answer_after_pause(device)
    rows = device.eval_on_selector_all(
        "#logits tbody tr", "rows => rows.map(r => [Number(r.dataset.logit), Number(r.dataset.probability)])"
    )
    logits, softmax = zip(*rows, strict=True)
    assert list(logits) == answer["explanation"]["logits"]
    # The API's own probabilities for the picture the page explained: the strip's softmax, to 1e-4.
    plain = requests.post(f"{server}/predict", json={"pixels": answer["input"]}, timeout=10).json()
    assert list(softmax) == pytest.approx(plain["probabilities"], abs=1e-4)
    assert list(softmax) == pytest.approx([math.exp(x) / sum(map(math.exp, logits)) for x in logits], abs=1e-9)
    shown = device.eval_on_selector_all("#logits tbody tr td:last-child", "cells => cells.map(c => c.textContent)")
    assert shown == [f"{100 * probability:.1f}%" for probability in plain["probabilities"]]
    assert device.get_attribute("#logits tr.best", "data-digit") == str(answer["predicted_digit"]) == "2"
    sizes = device.eval_on_selector_all("#flat, #hidden-units", "canvases => canvases.map(c => [c.width, c.height])")
    assert sizes == [[49, 16], [64, 1]]  # 784 = 16 maps x 49 values; fc1's 64
    assert "[16, 7, 7] → [784]" in device.text_content("#rest") and "784 → 64" in device.text_content("#rest")


def test_a_photo_uploaded_through_the_page_gives_the_digit(device: Page):
    photo = encode(
        drawn(5, "RGB", paper=(214, 208, 196), pen=(40, 42, 60)).rotate(4, fillcolor=(214, 208, 196)), "JPEG"
    )
    with device.expect_response(lambda response: "/predict/image" in response.url) as response:
        device.set_input_files("#file", files=[{"name": "five.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    assert "explain=true" in response.value.url and "return_input=true" in response.value.url
    device.wait_for_function(ANSWER_SHOWN)
    assert device.text_content("#digit") == "5" == str(response.value.json()["predicted_digit"])
    assert device.text_content("#seen-caption") == "what the model saw, from five.jpg"
    assert device.is_visible("#inside") and device.locator("#conv2 .tile").count() == 16


SERIOUS = ("critical", "serious", "moderate")


def accessibility_problems(page: Page) -> list[tuple[str, str, list]]:
    """axe-core's critical, serious and moderate violations on the page as it is now."""
    results = Axe().run(page)
    return [
        (violation["id"], violation["impact"], [node["target"] for node in violation["nodes"]])
        for violation in results.response["violations"]
        if violation["impact"] in SERIOUS
    ]


def test_axe_finds_no_violation_before_and_after_a_prediction(device: Page):
    device.clock.resume()  # axe-core runs on timers of its own
    assert accessibility_problems(device) == []
    draw(device, 8)
    press(device, "#predict")
    device.wait_for_function(ANSWER_SHOWN)
    assert accessibility_problems(device) == []
    press(device, "#conv2 .tile >> nth=3")  # the large map, the kernels, the arithmetic's tables
    press(device, "#cell summary")
    assert accessibility_problems(device) == []
    # The live region says the digit and how sure, nothing else.
    live = device.eval_on_selector_all(
        "[aria-live], [role=status], [role=alert], [role=log]", "regions => regions.map(r => r.textContent)"
    )
    assert "".join(live) == f"{device.text_content('#digit')}, {device.text_content('#confidence')}"


def test_the_page_is_usable_from_the_keyboard(device: Page):
    device.clock.resume()
    focused = []
    for _ in range(5):
        device.keyboard.press("Tab")
        focused.append(device.evaluate("document.activeElement.id || document.activeElement.textContent"))
    # The links, the buttons, and the file input: the keyboard's way to give the model a digit.
    assert focused == ["The model and its weights (/model)", "The API (/docs)", "predict", "clear", "file"]
    with device.expect_response(lambda response: "/predict/image" in response.url):
        device.set_input_files(
            "#file", files=[{"name": "one.png", "mimeType": "image/png", "buffer": encode(drawn(1), "PNG")}]
        )
    device.wait_for_function(ANSWER_SHOWN)
    device.focus("#conv1 .tile >> nth=0")
    device.keyboard.press("Enter")
    assert device.evaluate("document.activeElement.id") == "big" and device.is_visible("#detail")
    heading = device.text_content("#cell h3")
    device.keyboard.press("ArrowRight")
    assert device.text_content("#cell h3") != heading  # the arrow keys move from value to value
    device.focus("#close-detail")
    device.keyboard.press("Enter")
    assert device.is_hidden("#detail")
    assert device.evaluate("document.activeElement.dataset.layer + document.activeElement.dataset.index") == "conv10"


# A training record's filter counts (d4.report.filters_firing), given to the page in place of the served
# record's: in it conv2's filters 15 and 16 never fire.
FILTERS_FIRING = {"conv1": [300] * 8, "conv2": [300] * 14 + [0, 0], "of": 300}


def model_card_with(filters_firing: dict | None):
    """Answer the page's GET /model with the served card, its training record's filter counts replaced."""

    def answer(route: Route) -> None:
        card = route.fetch().json()
        card["training"]["filters_firing"] = filters_firing
        route.fulfill(json=card)

    return answer


@pytest.mark.parametrize("filters_firing", [FILTERS_FIRING, None], ids=["counted", "not counted"])
def test_dead_filters_are_marked_from_the_record_and_dark_maps_for_this_drawing(
    browser: Browser, server: str, filters_firing: dict | None
):
    page = browser.new_page(viewport=DEVICES["desktop"]["viewport"])
    page.route("**/model", model_card_with(filters_firing))
    page.clock.install()
    page.goto(f"{server}/draw")
    draw_with_mouse(page, 3)
    maps = answer_after_pause(page)["explanation"]["feature_maps"]
    for layer, layer_maps in maps.items():
        labels = page.locator(f"#{layer} .tile").all_inner_texts()
        for index, (label, feature_map) in enumerate(zip(labels, layer_maps, strict=True)):
            dead = filters_firing is not None and filters_firing[layer][index] == 0
            zero = max(max(row) for row in feature_map) == 0
            assert label == f"{layer} · {index + 1}/{len(layer_maps)}" + (" dead" if dead else " zero" if zero else "")
    notes = page.text_content("#conv2-dark")
    assert ("Dead: conv2 15, 16." in notes and "dead ReLU" in notes) == (filters_firing is not None)
    assert "dead" not in page.text_content("#conv1-dark").lower()
    press(page, "#conv2 .tile >> nth=15")
    note = page.text_content("#filter-note")
    assert note.startswith("Dead.") if filters_firing else note.startswith("Zero for this drawing.")
    page.close()


@pytest.mark.parametrize(
    ("server_trouble", "message"),
    [
        ({"abort": True}, "Cannot reach the server. If it was asleep, it is starting; on a free instance"),
        (
            {"status": 502, "body": "<html>Bad gateway</html>"},
            "The server is starting; on a free instance this can take",
        ),
    ],
    ids=["unreachable", "waking up"],
)
def test_a_server_that_is_down_or_waking_gets_a_plain_sentence(page: Page, server_trouble: dict, message: str):
    def trouble(route: Route) -> None:
        if server_trouble.get("abort"):
            route.abort()
        else:
            route.fulfill(**server_trouble)

    page.route("**/predict/image*", trouble)
    draw_with_mouse(page, 1)
    page.click("#predict")
    page.wait_for_function("document.querySelector('#status').textContent !== ''")
    assert page.text_content("#status").startswith(message) and "Failed to fetch" not in page.text_content("#status")
    assert page.text_content("#digit") == "" and page.is_hidden("#inside")
