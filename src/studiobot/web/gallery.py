"""The public web gallery: server-rendered pages of public images and the image files themselves.

* ``GET /gallery``: every public image, newest first; ``?before=<asset id>`` pages (keyset).
* ``GET /gallery/c/{community_id}``: one community's public images, same paging.
* ``GET /gallery/i/{asset_id}``: one image with its prompt, author, model and date.
* ``GET /media/thumb/{asset_id}``, ``GET /media/full/{asset_id}``: the WEBP thumbnail and the full
  image file.

What "public" means lives in :mod:`studiobot.db.public` alone; this module only ever asks it. A
missing id, a non-numeric id and an image that is not public all get the same 404 page, so nothing
private can be found by guessing ids. Pages need no JavaScript, and prompts (user text) are
autoescaped by Jinja2.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from studiobot.db import public
from studiobot.db.engine import Database
from studiobot.db.public import CommunityInfo, PublicItem
from studiobot.media.store import LocalStore
from studiobot.web.server import Handler, WebServer

# Pages load nothing but this site's own images and their inline <style>.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'",
    "X-Content-Type-Options": "nosniff",
}
# Five minutes: an image made private or hidden must leave browsers and proxies soon (a request
# after that revalidates, with the FileResponse's ETag, and meets the visibility check).
_MEDIA_HEADERS = {
    "Cache-Control": "public, max-age=300",
    "X-Content-Type-Options": "nosniff",
}
# Ids are positive BIGINTs: anything longer than 19 digits or above 2**63-1 would make PostgreSQL
# raise instead of finding nothing. No leading zeros or signs, so each item has one URL.
_ID = re.compile(r"[1-9][0-9]{0,18}")
_MAX_ID = 2**63 - 1
# The finisher makes thumbnails with media.images.thumbnail's default box: WEBP within 256x256.
_THUMB_BOX = 256
_THUMB_MIME = "image/webp"


def add_gallery_routes(
    server: WebServer, db: Database, store: LocalStore, *, page_size: int = 24, site_name: str = "studiobot"
) -> None:
    """Add the gallery pages and the public media routes to ``server`` (before it starts).

    Args:
        server: The web server.
        db: Where assets are read from.
        store: Where the image files are.
        page_size: Thumbnails per gallery page.
        site_name: The name in every page's header and title.

    Raises:
        ValueError: ``page_size`` is below 1.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    gallery = _Gallery(db, store, _environment(site_name), page_size)
    routes: dict[str, Handler] = {
        "/gallery": gallery.index,
        "/gallery/c/{community_id}": gallery.community,
        "/gallery/i/{asset_id}": gallery.image,
        "/media/thumb/{asset_id}": gallery.thumbnail,
        "/media/full/{asset_id}": gallery.full,
    }
    for path, handler in routes.items():
        server.add_route("GET", path, handler)
        server.add_route("HEAD", path, handler)


def thumb_size(item: PublicItem) -> tuple[int, int]:
    """The pixel size of an item's thumbnail: its image fitted in 256x256, never enlarged.

    The same arithmetic as :func:`studiobot.media.images.thumbnail`, so the ``<img>`` box the page
    reserves is the one the file fills.
    """
    scale = min(_THUMB_BOX / item.width, _THUMB_BOX / item.height, 1.0)
    return max(1, round(item.width * scale)), max(1, round(item.height * scale))


def _environment(site_name: str) -> Environment:
    env = Environment(
        loader=PackageLoader("studiobot.web", "templates"),
        autoescape=select_autoescape(),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(site_name=site_name, thumb_size=thumb_size)
    return env


def _parse_id(text: str | None) -> int | None:
    """``text`` as an id, or None when it is not one (see ``_ID``)."""
    if text is None or not _ID.fullmatch(text):
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def _community_title(community: CommunityInfo) -> str:
    return community.name or f"Community {community.community_id}"


class _Gallery:
    """The route handlers, sharing the database, store, templates and page size."""

    def __init__(self, db: Database, store: LocalStore, env: Environment, page_size: int) -> None:
        self._db = db
        self._store = store
        self._env = env
        self._page_size = page_size

    async def index(self, request: web.Request) -> web.Response:
        before, ok = self._cursor(request)
        if not ok:
            return self._not_found()
        async with self._db.read() as conn:
            items = await public.page(conn, community_id=None, before=before, limit=self._page_size + 1)
        return self._listing("index.html", request, items, before)

    async def community(self, request: web.Request) -> web.Response:
        community_id = _parse_id(request.match_info["community_id"])
        before, ok = self._cursor(request)
        if community_id is None or not ok:
            return self._not_found()
        async with self._db.read() as conn:
            community = await public.community(conn, community_id)
            if community is None:
                return self._not_found()
            items = await public.page(conn, community_id=community_id, before=before,
                                      limit=self._page_size + 1)
        return self._listing("community.html", request, items, before, community=community,
                             community_title=_community_title(community))

    async def image(self, request: web.Request) -> web.Response:
        asset_id = _parse_id(request.match_info["asset_id"])
        if asset_id is None:
            return self._not_found()
        async with self._db.read() as conn:
            item = await public.item(conn, asset_id)
            if item is None:
                return self._not_found()
            community = None if item.community_id is None else await public.community(conn, item.community_id)
        title = None if community is None else _community_title(community)
        return self._render("image.html", item=item, community_title=title)

    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        item = await self._item(request)
        if item is None:
            return self._not_found()
        if item.thumbnail_key is None:
            return self._file(item.storage_key, item.mime)
        return self._file(item.thumbnail_key, _THUMB_MIME)

    async def full(self, request: web.Request) -> web.StreamResponse:
        item = await self._item(request)
        if item is None:
            return self._not_found()
        return self._file(item.storage_key, item.mime)

    async def _item(self, request: web.Request) -> PublicItem | None:
        asset_id = _parse_id(request.match_info["asset_id"])
        if asset_id is None:
            return None
        async with self._db.read() as conn:
            return await public.item(conn, asset_id)

    def _file(self, key: str, mime: str) -> web.StreamResponse:
        try:
            path = self._store.path_for(key)
        except ValueError:  # a key that escapes the store is a bad row, never a file to serve
            return self._not_found()
        # FileResponse streams without reading the file into memory, answers Range and conditional
        # requests, and sends 404 itself if the file vanished from the store.
        return web.FileResponse(path, headers={**_MEDIA_HEADERS, "Content-Type": mime})

    def _cursor(self, request: web.Request) -> tuple[int | None, bool]:
        """The ``?before=`` cursor and whether the query was well formed (absent is fine)."""
        raw = request.query.get("before")
        if raw is None:
            return None, True
        before = _parse_id(raw)
        return before, before is not None

    def _listing(self, template: str, request: web.Request, items: list[PublicItem], before: int | None,
                 **context: Any) -> web.Response:
        # One more item than a page was asked for: its presence is what says an older page exists.
        shown = items[: self._page_size]
        older = shown[-1].asset_id if len(items) > self._page_size else None
        return self._render(template, items=shown, before=before, older=older, path=request.path, **context)

    def _render(self, template: str, *, status: int = 200, **context: Any) -> web.Response:
        html = self._env.get_template(template).render(**context)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                            headers=_PAGE_HEADERS)

    def _not_found(self) -> web.Response:
        return self._render("not_found.html", status=404)


__all__ = ["add_gallery_routes", "thumb_size"]
