"""The API's pages for people: a home page for browsers, GET /draw, and /docs and /redoc that work offline.

/draw is three files, d4/draw.html, d4/draw.css and d4/draw.js, served from here (no CDN: the page works
offline), with the site's icon at /favicon.ico.

`GET /` answers JSON to programs, as in the notes; a browser (which asks for text/html) gets
`HOME_PAGE` instead, with links on. FastAPI's /docs and /redoc load Swagger UI's and ReDoc's
JavaScript and CSS from a CDN, so offline (a laptop on a train, a classroom behind a firewall)
they are blank pages; `serve_docs_offline` serves the same pages with those files from the
fastapi-offline package, as FastAPI's "self-hosting JavaScript and CSS for docs" guide shows.
"""

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

router = APIRouter()
HERE = Path(__file__).parent
DRAW_PAGE = (HERE / "draw.html").read_text(encoding="utf-8")
# The page's script and style, and the icon, each read once. no-cache: a browser asks for them again with the
# page, so a new deploy's page never runs an old script (they are small: about 60 KB together).
ASSETS = {name: (HERE / name).read_bytes() for name in ("draw.js", "draw.css", "favicon.ico")}
MEDIA_TYPES = {"draw.js": "text/javascript; charset=utf-8", "draw.css": "text/css; charset=utf-8",
               "favicon.ico": "image/x-icon"}  # fmt: skip
DOCS_ASSETS = (
    Path(fastapi_offline.__file__).parent / "static"
)  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js
DOCS_ASSETS_URL = "/docs-assets"
HOME_PAGE = HTMLResponse((Path(__file__).parent / "home.html").read_text(encoding="utf-8"))


def wants_html(request: Request) -> bool:
    """A browser navigating here: it asks for text/html. The notes' client and curl ask for anything (*/*)."""
    return "text/html" in request.headers.get("accept", "")


@router.get("/draw", response_class=HTMLResponse)
async def draw_page() -> str:
    """A page to draw a digit on (mouse, pen or touch) and see what the model makes of it."""
    return DRAW_PAGE


def asset(name: str) -> Response:
    return Response(
        ASSETS[name], media_type=MEDIA_TYPES[name], headers={"Cache-Control": "no-cache"}
    )


@router.get("/draw.js", include_in_schema=False)
async def draw_script() -> Response:
    return asset("draw.js")


@router.get("/draw.css", include_in_schema=False)
async def draw_style() -> Response:
    return asset("draw.css")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    """The icon browsers ask for on every page (without it, each visit logs a 404)."""
    return asset("favicon.ico")


def serve_docs_offline(app: FastAPI) -> None:
    """/docs and /redoc with their JavaScript and CSS served by this API (the app is made with docs_url=None)."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
