"""/docs and /redoc in a real headless Chromium with every request off this machine blocked, as on a laptop offline."""

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route

from conftest import uvicorn_server

ENDPOINTS = ["/predict", "/predict/image", "/predict/batch", "/model", "/healthz"]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with uvicorn_server() as base_url:
        yield base_url


@pytest.fixture
def offline_page(browser: Browser, server: str) -> Iterator[tuple[Page, list[str]]]:
    """A page whose every request to another host fails, as with no network; yields it and the hosts it tried."""
    page = browser.new_page()
    elsewhere: list[str] = []
    own_host = urlsplit(server).netloc

    def only_this_server(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own_host or route.request.url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_this_server)
    yield page, elsewhere
    page.close()


def test_docs_list_every_endpoint_with_the_network_blocked(offline_page, server):
    page, elsewhere = offline_page
    page.goto(f"{server}/docs")
    page.wait_for_selector(".opblock", timeout=15_000)
    listed = page.locator(".opblock-summary-path").all_inner_texts()
    for endpoint in ENDPOINTS:
        assert endpoint in [path.replace("\u200b", "") for path in listed]
    assert elsewhere == []


def test_redoc_lists_every_endpoint_with_the_network_blocked(offline_page, server):
    page, elsewhere = offline_page
    page.goto(f"{server}/redoc")
    page.wait_for_selector("text=Classify one 28x28 image", timeout=15_000)
    text = page.inner_text("body")
    for endpoint in ENDPOINTS:
        assert endpoint in text
    # Only ReDoc's "API docs by Redocly" badge is fetched from elsewhere: offline it shows as a broken image.
    assert all(url.endswith("/logo-mini.svg") for url in elsewhere)
