"""``/docs`` and ``/redoc`` work on a network without internet: every asset they load is
served by the gateway itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

BASE = "http://testserver"


class References(HTMLParser):
    """Every ``src`` and ``href`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def references(page: str) -> list[str]:
    parser = References()
    parser.feed(page)
    return parser.urls


@pytest.mark.parametrize(("path", "assets"), [("/docs", 3), ("/redoc", 2)])
def test_the_docs_pages_load_only_assets_the_gateway_serves(client, path, assets):
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = references(page.text)
    assert len(urls) == assets, urls
    for url in urls:
        absolute = urlsplit(urljoin(BASE + path, url))
        assert (absolute.scheme, absolute.netloc) == ("http", "testserver"), url
        asset = client.get(absolute.path)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    # Nor any absolute URL in inline scripts (a CDN, fonts, the online validator).
    assert not re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", page.text)


def test_the_docs_pages_point_at_the_gateways_openapi_document(client):
    assert "'/openapi.json'" in client.get("/docs").text
    assert 'spec-url="/openapi.json"' in client.get("/redoc").text
    assert client.get("/openapi.json").status_code == 200
