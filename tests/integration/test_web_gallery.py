"""The public web gallery over real HTTP, on SQLite and PostgreSQL.

The database is seeded with images of every visibility (public, community-only, private), hidden
and NSFW-flagged ones, a grid, and public images in two communities and in a private chat, with
real files in a LocalStore. A WebServer on loopback serves the gallery routes and httpx reads them.
Only public, unhidden, unflagged images may appear anywhere, and every other id answers exactly
like an id that does not exist.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from studiobot.db import users
from studiobot.db.communities import ensure_community
from studiobot.db.engine import Database
from studiobot.db.models import Asset, Job
from studiobot.media.images import clean_image, thumbnail
from studiobot.media.store import LocalStore
from studiobot.web.gallery import add_gallery_routes
from studiobot.web.server import WebServer

PAGE_SIZE = 3
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'"
XSS_PROMPT = '<script>alert("owned")</script> a fox & a "hen"'


@dataclass(frozen=True)
class Spec:
    """One seeded asset. ``label`` also goes into the prompt so leaks can be searched for."""

    label: str
    owner: str = "ada"
    community: str | None = "guild"
    visibility: str = "public"
    hidden: bool = False
    nsfw: bool | None = False
    kind: str = "image"
    size: tuple[int, int] = (640, 480)
    fmt: str = "PNG"
    prompt: str | None = None

    @property
    def text(self) -> str:
        return self.prompt if self.prompt is not None else f"marker-{self.label} a painted landscape"


# Insertion order is id order; non-public rows sit between public ones so keyset paging must skip
# them without losing or repeating a public one.
SPECS = (
    Spec("pub1", size=(512, 768)),
    Spec("priv1", visibility="private", community=None),
    Spec("pub2", owner="bob", fmt="JPEG"),
    Spec("comm1", visibility="community"),
    Spec("hidden1", hidden=True),
    Spec("pub3", nsfw=None),  # the provider gave no flag: still public
    Spec("nsfw1", nsfw=True),
    Spec("grid1", kind="grid"),
    Spec("pubdm", community=None, owner="bob"),
    Spec("pubgroup", community="group"),
    Spec("xss", owner="mallory", prompt=XSS_PROMPT),
    Spec("comm2", visibility="community", community="group"),
    Spec("pub4", size=(300, 200)),
    Spec("hidden2", hidden=True, nsfw=None, community=None),
    Spec("priv2", visibility="private"),
)
PUBLIC_LABELS = {"pub1", "pub2", "pub3", "pubdm", "pubgroup", "xss", "pub4"}
AUTHORS = {"ada": "Ada Lovelace", "bob": "Bob", "mallory": "<b>Mallory</b>"}


@dataclass
class Seeded:
    """What :func:`seed` made: asset ids by label, community ids by name, the store."""

    store: LocalStore
    ids: dict[str, int] = field(default_factory=dict)
    communities: dict[str, int] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)

    def public_ids(self, community: str | None = None) -> list[int]:
        """Public asset ids, newest first; only those of ``community`` when given."""
        return sorted(
            (self.ids[s.label] for s in SPECS if s.label in PUBLIC_LABELS
             and (community is None or s.community == community)),
            reverse=True,
        )


def picture(index: int, size: tuple[int, int], fmt: str) -> bytes:
    """A distinct, far from uniform picture: a gradient with a coloured disc and bars."""
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for x in range(width):
        draw.line([(x, 0), (x, height)], fill=(x * 255 // width, (index * 53) % 256, 255 - x * 255 // width))
    draw.ellipse([width // 4, height // 4, width * 3 // 4, height * 3 // 4], fill=((index * 97) % 256, 200, 40))
    for y in range(0, height, 40):
        draw.rectangle([0, y, width, y + 8], fill=(250, 250, 250))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


async def seed(db: Database, store: LocalStore) -> Seeded:
    """Users, two communities, and one job with one asset per :data:`SPECS` entry."""
    seeded = Seeded(store)
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    files = []
    for index, spec in enumerate(SPECS):
        clean = clean_image(picture(index, spec.size, spec.fmt))
        full = store.put(clean.data, clean.ext)
        thumb = store.put(thumbnail(clean), "webp")
        seeded.images[spec.label] = clean.data
        files.append((clean, full.key, thumb.key))

    def tx(conn: Connection) -> None:
        owners = {name: users.create_user(conn, "discord", name, display) for name, display in AUTHORS.items()}
        seeded.communities["guild"] = ensure_community(conn, "discord", "777")
        seeded.communities["group"] = ensure_community(conn, "telegram", "-100123")
        for index, (spec, (clean, full_key, thumb_key)) in enumerate(zip(SPECS, files, strict=True)):
            when = start + timedelta(minutes=index)
            community_id = None if spec.community is None else seeded.communities[spec.community]
            job_id = conn.execute(
                insert(Job).values(
                    user_id=owners[spec.owner], prompt=spec.text, params={}, provider="offline",
                    model="offline-sketch", status="succeeded", due_at=when, deadline_at=when,
                    origin_platform="discord", origin_chat={"platform": "discord", "chat_id": "1"},
                    community_id=community_id, idempotency_key=f"seed:{spec.label}", created_at=when,
                ).returning(Job.id)
            ).scalar_one()
            seeded.ids[spec.label] = conn.execute(
                insert(Asset).values(
                    job_id=job_id, owner_id=owners[spec.owner], kind=spec.kind,
                    position=0 if spec.kind == "grid" else 1, sha256=clean.sha256, storage_key=full_key,
                    thumbnail_key=thumb_key, mime=clean.mime, width=clean.width, height=clean.height,
                    bytes=len(clean.data), visibility=spec.visibility, community_id=community_id,
                    nsfw=spec.nsfw, hidden=spec.hidden, created_at=when,
                ).returning(Asset.id)
            ).scalar_one()

    await db.run(tx)
    return seeded


async def serve_gallery(db: Database, store: LocalStore, *, page_size: int) -> WebServer:
    """A started WebServer on 127.0.0.1 with the gallery routes."""
    server = WebServer("127.0.0.1", 0)
    add_gallery_routes(server, db, store, page_size=page_size, site_name="Test Studio")
    await server.start()
    return server


class Links(HTMLParser):
    """The ``<img>`` and ``<a>`` tags of a page, with their attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.anchors: list[dict[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "a":
            self.anchors.append(dict(attrs))

    def thumb_ids(self) -> list[int]:
        return [int(str(img["src"]).rsplit("/", 1)[1]) for img in self.images
                if str(img["src"]).startswith("/media/thumb/")]

    def href(self, rel: str) -> str | None:
        found = [a["href"] for a in self.anchors if a.get("rel") == rel]
        return found[0] if found else None


@dataclass
class Site:
    seeded: Seeded
    client: httpx.AsyncClient


@pytest.fixture
async def site(db: Database, tmp_path: Path) -> AsyncIterator[Site]:
    seeded = await seed(db, LocalStore(tmp_path / "store"))
    server = await serve_gallery(db, seeded.store, page_size=PAGE_SIZE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as client:
            yield Site(seeded, client)
    finally:
        await server.stop()


async def walk(client: httpx.AsyncClient, path: str) -> tuple[list[list[int]], list[str]]:
    """Follow "Older" links from ``path``: the thumbnail ids of each page and each page's HTML."""
    pages: list[list[int]] = []
    htmls: list[str] = []
    url: str | None = path
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200
        links = Links(response.text)
        pages.append(links.thumb_ids())
        htmls.append(response.text)
        if len(pages) > 1:
            assert links.href("first") == path  # "Newer" goes back to the first page
        else:
            assert links.href("first") is None
        url = links.href("next")
        assert len(pages) <= len(SPECS), "paging does not end"
    return pages, htmls


async def test_public_images_are_listed_newest_first_in_keyset_pages(site: Site) -> None:
    pages, _ = await walk(site.client, "/gallery")
    expected = site.seeded.public_ids()
    assert [i for page in pages for i in page] == expected
    assert [len(p) for p in pages] == [3, 3, 1]
    pages, _ = await walk(site.client, f"/gallery/c/{site.seeded.communities['guild']}")
    assert [i for page in pages for i in page] == site.seeded.public_ids("guild")
    pages, _ = await walk(site.client, f"/gallery/c/{site.seeded.communities['group']}")
    assert pages == [site.seeded.public_ids("group")]


async def test_a_cursor_past_the_end_shows_an_empty_page_that_links_back(site: Site) -> None:
    response = await site.client.get("/gallery", params={"before": min(site.seeded.public_ids())})
    links = Links(response.text)
    assert response.status_code == 200
    assert links.thumb_ids() == [] and "No more images." in response.text
    assert links.href("first") == "/gallery" and links.href("next") is None


async def test_thumbnails_are_lazy_sized_and_described_by_their_prompt(site: Site) -> None:
    response = await site.client.get("/gallery")
    prompts = {site.seeded.ids[s.label]: s.text for s in SPECS}
    images = Links(response.text).images
    assert images
    for img in images:
        asset_id = int(str(img["src"]).rsplit("/", 1)[1])
        assert img["loading"] == "lazy"
        assert img["alt"] == prompts[asset_id]
        thumb = await site.client.get(str(img["src"]))
        with Image.open(io.BytesIO(thumb.content)) as decoded:
            assert decoded.format == "WEBP"
            assert decoded.size == (int(str(img["width"])), int(str(img["height"])))


async def test_nothing_but_public_images_is_reachable_by_any_id(site: Site) -> None:
    seeded = site.seeded
    public = {seeded.ids[label] for label in PUBLIC_LABELS}
    client = site.client
    top = max(seeded.ids.values())
    candidates = [*seeded.ids.values(), top + 1, top + 2, top + 1000, 2**63 - 1]
    prefixes = ("/gallery/i/", "/media/thumb/", "/media/full/")
    missing = {prefix: await client.get(f"{prefix}{top + 1}") for prefix in prefixes}
    for asset_id in candidates:
        for prefix in prefixes:
            response = await client.get(f"{prefix}{asset_id}")
            if asset_id in public:
                assert response.status_code == 200, (prefix, asset_id)
            else:
                # Not public looks exactly like absent: same status, same body, no caching.
                assert response.status_code == 404, (prefix, asset_id)
                assert response.content == missing[prefix].content
                assert "Cache-Control" not in response.headers

    listings = []
    for path in ("/gallery", *(f"/gallery/c/{c}" for c in seeded.communities.values())):
        listings += (await walk(client, path))[1]
    listings += [(await client.get(f"/gallery/i/{i}")).text for i in public]
    hidden_labels = [s.label for s in SPECS if s.label not in PUBLIC_LABELS]
    shown_ids = {int(m) for html in listings for m in re.findall(r'/(?:media/\w+|gallery/i)/(\d+)"', html)}
    assert shown_ids == public
    for html in listings:
        for label in hidden_labels:
            assert f"marker-{label} " not in html


async def test_the_image_page_shows_the_picture_prompt_author_model_date_and_community(site: Site) -> None:
    seeded = site.seeded
    asset_id = seeded.ids["pub2"]
    response = await site.client.get(f"/gallery/i/{asset_id}")
    assert response.status_code == 200
    text = response.text
    assert "marker-pub2 a painted landscape" in text
    assert "Bob" in text and "offline-sketch" in text and "2026-11-01" in text
    links = Links(text)
    assert links.href("up") == f"/gallery/c/{seeded.communities['guild']}"
    full = [img for img in links.images if img["src"] == f"/media/full/{asset_id}"]
    assert len(full) == 1 and "loading" not in full[0]  # the one picture of the page: not lazy
    dm = Links((await site.client.get(f"/gallery/i/{seeded.ids['pubdm']}")).text)
    assert dm.href("up") == "/gallery"


async def test_media_are_the_stored_files_with_their_type_and_cache_headers(site: Site) -> None:
    seeded = site.seeded
    for label, mime in (("pub1", "image/png"), ("pub2", "image/jpeg")):
        full = await site.client.get(f"/media/full/{seeded.ids[label]}")
        assert full.status_code == 200
        assert full.content == seeded.images[label]
        assert full.headers["Content-Type"] == mime
        thumb = await site.client.get(f"/media/thumb/{seeded.ids[label]}")
        assert thumb.headers["Content-Type"] == "image/webp"
        for answer in (full, thumb):
            assert answer.headers["Cache-Control"] == "public, max-age=300"  # a private image leaves caches soon
            assert answer.headers["ETag"]  # so a revalidation after that costs no body
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
    head = await site.client.head(f"/media/full/{seeded.ids['pub1']}")
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(seeded.images["pub1"])


async def test_a_cached_image_made_private_is_refused_when_the_browser_revalidates(site: Site, db: Database) -> None:
    asset_id = site.seeded.ids["pub2"]
    url = f"/media/full/{asset_id}"
    etag = (await site.client.get(url)).headers["ETag"]
    assert (await site.client.get(url, headers={"If-None-Match": etag})).status_code == 304
    await db.run(lambda conn: conn.execute(update(Asset).where(Asset.id == asset_id).values(visibility="private")))
    assert (await site.client.get(url, headers={"If-None-Match": etag})).status_code == 404


async def test_pages_carry_the_content_security_policy(site: Site) -> None:
    seeded = site.seeded
    for path in ("/gallery", f"/gallery/c/{seeded.communities['guild']}", f"/gallery/i/{seeded.ids['pub1']}",
                 "/gallery/i/abc"):
        response = await site.client.get(path)
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "<script" not in response.text.lower()  # no JavaScript needed anywhere


async def test_prompts_and_names_are_escaped(site: Site) -> None:
    asset_id = site.seeded.ids["xss"]
    for path in ("/gallery", f"/gallery/i/{asset_id}"):
        text = (await site.client.get(path)).text
        assert "<script" not in text and "<b>Mallory" not in text
        assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt; a fox &amp; a &#34;hen&#34;" in text
        assert "&lt;b&gt;Mallory&lt;/b&gt;" in text
    alts = [img["alt"] for img in Links((await site.client.get("/gallery")).text).images]
    assert XSS_PROMPT in alts  # escaped in the markup, the original text once parsed


BAD_PATHS = (
    "/gallery/i/abc", "/gallery/i/-1", "/gallery/i/0", "/gallery/i/1.5", "/gallery/i/1e3", "/gallery/i/%201",
    "/gallery/i/+1", "/gallery/i/01", "/gallery/i/99999999999999999999999", "/gallery/i/9223372036854775808",
    "/media/thumb/x", "/media/full/1%00", "/media/full/\u0661", "/gallery/c/abc", "/gallery/c/99999",
    "/gallery?before=abc", "/gallery?before=", "/gallery?before=-5",
)


async def test_bad_or_unknown_ids_are_404_pages(site: Site) -> None:
    for path in BAD_PATHS:
        response = await site.client.get(path)
        assert response.status_code == 404, path
        assert "Not found" in response.text


async def test_a_community_without_public_images_is_an_empty_page(db: Database, tmp_path: Path) -> None:
    community_id = await db.run(ensure_community, "discord", "42")
    server = await serve_gallery(db, LocalStore(tmp_path), page_size=PAGE_SIZE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False) as client:
            response = await client.get(f"/gallery/c/{community_id}")
    finally:
        await server.stop()
    assert response.status_code == 200
    assert "No public images yet." in response.text
    async with db.read() as conn:
        assert (await conn.execute(select(Asset.id))).first() is None
