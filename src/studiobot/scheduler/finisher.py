"""Turning a provider's result into stored, validated assets, then succeeding or failing the job.

DESIGN.md section 3, step 6: download with size and time limits, validate with Pillow (format, pixel
count, decompression bombs), strip metadata, store content-addressed, make thumbnails and a grid for
multi-image jobs, then capture; or fail with a refund and a reason the user can act on.
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import timedelta

import httpx
from PIL import Image

from studiobot.db.assets import release_files
from studiobot.db.engine import Database
from studiobot.db.models import utcnow
from studiobot.media.download import DownloadError, fetch_bytes
from studiobot.media.images import CleanImage, InvalidImage, clean_image, grid, thumbnail
from studiobot.media.store import LocalStore
from studiobot.providers.base import Finished, GeneratedImage
from studiobot.providers.errors import ProviderError
from studiobot.scheduler import lifecycle
from studiobot.scheduler.lifecycle import JobRow, NewAsset
from studiobot.scheduler.notify import Notifier

log = logging.getLogger(__name__)


class Finisher:
    """Ends jobs: :meth:`succeed_with` for results, :meth:`fail` for errors.

    Args:
        db: Database.
        store: Where images and thumbnails are written.
        http: Client for downloading result URLs (no auth headers: result URLs are pre-signed).
        notifier: Told once the job is terminal.
        max_bytes: Largest accepted download, in bytes.
        download_timeout_s: Whole-download time limit, in seconds.
        max_pixels: Largest accepted image (width x height), against decompression bombs.
        retry_delay_s: How long to wait before re-polling after a retryable download failure.
    """

    def __init__(
        self,
        db: Database,
        store: LocalStore,
        http: httpx.AsyncClient,
        notifier: Notifier,
        *,
        max_bytes: int,
        download_timeout_s: float,
        max_pixels: int,
        retry_delay_s: float = 5.0,
    ) -> None:
        self._db = db
        self._store = store
        self._http = http
        self._notifier = notifier
        self._max_bytes = max_bytes
        self._timeout = download_timeout_s
        self._max_pixels = max_pixels
        self._retry_delay = retry_delay_s

    async def succeed_with(self, job: JobRow, result: Finished, worker_id: str) -> None:
        """Store ``result``'s images and mark ``job`` succeeded, or fail it with a refund.

        A retryable download failure of an asynchronous job leaves it running and due for another
        poll (result URLs stay valid for a while); anything else unusable fails the job.
        """
        try:
            cleaned = list(await asyncio.gather(*(self._clean(image) for image in result.images)))
            assets, blobs = await asyncio.to_thread(self._store_all, cleaned, result.images)
        except DownloadError as exc:
            if exc.retryable and job.provider_task_id:
                due = utcnow() + timedelta(seconds=self._retry_delay)
                await lifecycle.record_poll(self._db, job.id, worker_id, due, note=str(exc))
                return
            await self.fail(job, "download", f"The finished image could not be fetched: {exc}")
            return
        except InvalidImage as exc:
            await self.fail(job, "invalid_image", f"The provider sent an unusable image: {exc}")
            return
        if not cleaned:
            await self.fail(job, "empty_result", "The provider finished but sent no image.")
            return
        if await lifecycle.succeed(self._db, job.id, assets):
            # Files are shared by content: a deletion of the same bytes elsewhere may have removed
            # one between our put and our commit. Our rows are committed now, so writing again
            # cannot be undone by a later deletion (see db.assets.release_files).
            await asyncio.to_thread(self._put_all, blobs)
            await self._notifier.finished(job.id, job.origin_platform, job.user_id)
        else:
            log.info("job %s left running before its result arrived; result dropped", job.id)
            keys = [k for a in assets for k in (a.storage_key, a.thumbnail_key) if k]
            await self._db.run(release_files, keys, self._store.delete)

    async def fail(self, job: JobRow, code: str, message: str) -> None:
        """Fail an active job with a refund and tell its user (no-op if it is already terminal)."""
        if await lifecycle.fail(self._db, job.id, code, message):
            await self._notifier.finished(job.id, job.origin_platform, job.user_id)

    async def fail_with(self, job: JobRow, error: ProviderError) -> None:
        """Fail a job for a provider error, keeping only the error's user-safe parts."""
        code = _snake(type(error).__name__)
        log.info("job %s failed: %s %s", job.id, code, error.detail)
        await self.fail(job, code, error.user_message)

    async def _clean(self, image: GeneratedImage) -> CleanImage:
        data = image.data
        if data is None:
            assert image.url is not None
            data = await fetch_bytes(
                self._http, image.url, max_bytes=self._max_bytes, timeout=self._timeout
            )
        return await asyncio.to_thread(clean_image, data, max_pixels=self._max_pixels)

    def _store_all(
        self, cleaned: list[CleanImage], generated: tuple[GeneratedImage, ...]
    ) -> tuple[list[NewAsset], list[tuple[bytes, str]]]:
        """Write every file; return the assets and each file's bytes and extension."""
        assets = []
        blobs: list[tuple[bytes, str]] = []
        for position, (image, source) in enumerate(zip(cleaned, generated, strict=True), start=1):
            small = thumbnail(image)
            blobs += [(image.data, image.ext), (small, "webp")]
            stored = self._store.put(image.data, image.ext)
            thumb = self._store.put(small, "webp")
            assets.append(
                NewAsset(
                    kind="image", position=position, sha256=image.sha256, storage_key=stored.key,
                    thumbnail_key=thumb.key, mime=image.mime, width=image.width, height=image.height,
                    size=len(image.data), seed=source.seed, nsfw=source.nsfw,
                )
            )
        if len(cleaned) > 1:
            sheet = grid(cleaned)
            blobs.append((sheet, "jpg"))
            stored = self._store.put(sheet, "jpg")
            with Image.open(io.BytesIO(sheet)) as opened:  # reads the header only
                width, height = opened.size
            assets.append(
                NewAsset(
                    kind="grid", position=0, sha256=stored.sha256, storage_key=stored.key,
                    thumbnail_key=None, mime="image/jpeg", width=width, height=height, size=len(sheet),
                    seed=None, nsfw=None,
                )
            )
        return assets, blobs

    def _put_all(self, blobs: list[tuple[bytes, str]]) -> None:
        for data, ext in blobs:
            self._store.put(data, ext)  # only a stat when the file is there


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
