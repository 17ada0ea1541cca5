"""The offline corpus as a real website on 127.0.0.1: article pages and catalog images over HTTP.

`browse` and image download then run the same code path offline as online (safe fetcher, HTML
extraction, image validation). Public URLs use the host `corpus.groundgen.invalid` (port 80); the
fetcher maps that host to this server with `connect_to` (see `extractors.offline`).

Routes: `/wiki/<Title>` (an HTML page with a site header, navigation, sidebar, the article, a "See
also" list, a figure when a catalog image illustrates the article, and a footer), `/images/<name>`
(the image bytes), `/` (a short index), anything else 404.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from extractors.image_catalog import CatalogImage
from extractors.local_search import split_sentences
from extractors.wiki_offline import title_path
from schemas.rows import Topic

if TYPE_CHECKING:
    from extractors.offline import OfflineCorpus

SITE_NAME = "Groundgen Offline Encyclopedia"


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _paragraphs(text: str, per_paragraph: int = 3) -> list[str]:
    sentences = split_sentences(text)
    return [" ".join(sentences[i : i + per_paragraph]) for i in range(0, len(sentences), per_paragraph)]


def render_article(topic: Topic, linked: Iterable[str], image: CatalogImage | None) -> str:
    """The HTML page of one article. Links and image sources are root-relative, so they resolve
    against whichever host the page was fetched as."""
    title = _escape(topic.title)
    see_also = "\n".join(
        f'        <li><a href="/wiki/{_escape(title_path(other))}">{_escape(other)}</a></li>'
        for other in linked
    )
    paragraphs = "\n".join(f"      <p>{_escape(p)}</p>" for p in _paragraphs(topic.text))
    figure = ""
    if image is not None:
        figure = (
            '      <figure class="thumb">\n'
            f'        <img src="/images/{_escape(image.name)}" alt="{_escape(image.caption)}"'
            f' width="{image.width}" height="{image.height}">\n'
            f"        <figcaption>{_escape(image.caption)}</figcaption>\n"
            "      </figure>\n"
        )
    description = (
        f'      <p class="shortdescription">{_escape(topic.description)}</p>\n' if topic.description else ""
    )
    see_also_section = (
        f'      <section class="see-also">\n      <h2>See also</h2>\n      <ul>\n{see_also}\n      </ul>\n      </section>\n'
        if see_also
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - {SITE_NAME}</title>
  <link rel="stylesheet" href="/static/site.css">
  <script>window.analytics = window.analytics || [];</script>
</head>
<body>
  <a class="skip-link" href="#content">Skip to content</a>
  <header class="site-header">
    <a class="logo" href="/">{SITE_NAME}</a>
    <form class="search" action="/search"><input name="q" placeholder="Search"><button>Go</button></form>
  </header>
  <nav class="main-menu" aria-label="Main">
    <ul><li><a href="/">Main page</a></li><li><a href="/random">Random article</a></li>
    <li><a href="/about">About</a></li><li><a href="/contact">Contact us</a></li></ul>
  </nav>
  <div class="cookie-banner" role="dialog">We use cookies to improve your experience. <button>Accept</button></div>
  <div class="layout">
    <aside class="sidebar">
      <h3>Tools</h3>
      <ul><li><a href="/special/whatlinkshere">What links here</a></li><li><a href="/special/print">Printable version</a></li></ul>
    </aside>
    <main id="content">
      <article>
      <h1>{title}</h1>
{description}      <p class="source-note"><small>From the {_escape(topic.source_category or "encyclopedia")} collection</small></p>
{figure}{paragraphs}
{see_also_section}      </article>
    </main>
  </div>
  <footer class="site-footer">
    <p>Text from Wikipedia, available under the <a href="https://creativecommons.org/licenses/by-sa/4.0/">Creative
    Commons Attribution-ShareAlike 4.0 License</a>. Original article: <a href="{_escape(topic.url)}">{_escape(topic.url)}</a>.</p>
    <p><a href="/privacy">Privacy policy</a> · <a href="/terms">Terms of use</a></p>
  </footer>
</body>
</html>
"""


def render_index(corpus: OfflineCorpus) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{SITE_NAME}</title></head><body>"
        f"<h1>{SITE_NAME}</h1><p>{len(corpus.topics)} articles, {len(corpus.images)} images.</p></body></html>"
    )


class _Handler(BaseHTTPRequestHandler):
    corpus: OfflineCorpus
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: tests and flows do not want a line per request

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=3600")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self) -> None:
        self._send(
            404, b"<!DOCTYPE html><html><body><h1>Not found</h1></body></html>", "text/html; charset=utf-8"
        )

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        corpus = self.corpus
        if path == "/":
            self._send(200, render_index(corpus).encode("utf-8"), "text/html; charset=utf-8")
        elif path.startswith("/wiki/"):
            topic = corpus.topic(unquote(path[len("/wiki/") :]).replace("_", " "))
            if topic is None:
                return self._not_found()
            page = render_article(topic, corpus.linked_in_corpus(topic), corpus.image_for(topic.title))
            self._send(200, page.encode("utf-8"), "text/html; charset=utf-8")
        elif path.startswith("/images/"):
            image = corpus.image(unquote(path[len("/images/") :]))
            if image is None:
                return self._not_found()
            self._send(200, image.path.read_bytes(), image.content_type)
        else:
            self._not_found()


class CorpusServer:
    """`with CorpusServer(corpus) as server: ... server.port ...`: a ThreadingHTTPServer on an
    ephemeral 127.0.0.1 port, in a daemon thread."""

    def __init__(self, corpus: OfflineCorpus, host: str = "127.0.0.1", port: int = 0):
        handler = type("CorpusHandler", (_Handler,), {"corpus": corpus})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="corpus-server", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> CorpusServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
