"""The API's pages for people: GET /draw, a page to draw a digit on and see what the model makes of it."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()
DRAW_PAGE = (Path(__file__).parent / "draw.html").read_text(encoding="utf-8")


@router.get("/draw", response_class=HTMLResponse)
async def draw_page() -> str:
    """A page to draw a digit on (mouse, pen or touch) and see what the model makes of it."""
    return DRAW_PAGE
