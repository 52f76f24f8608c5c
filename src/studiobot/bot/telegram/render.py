"""Rendering a core Reply as Telegram messages, and sending them.

Limits (Bot API; PTB ``MessageLimit``/``FileSizeLimit``; reference-platform-rules.md section 4):
text at most 4,096 characters, captions 1,024; photos at most 10 MB with width + height at most
10,000 and a side ratio of at most 20 (anything else goes as a document, up to 50 MB); 2-10
items per media group, which cannot carry a keyboard; callback_data 1-64 bytes.

Buttons carry the core's action (``upscale 12 3``) as callback_data, so they hold no state and
work after a restart. Telegram has no select menu, so a Reply's menu becomes numbered buttons
under the others. Images marked ``spoiler`` go out with ``has_spoiler`` (Bot API 6.4), which only
photos, videos and animations take: such an image always travels as a photo. Replies for a forum
topic name it (``message_thread_id``) on every send.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageOps
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    InputMediaPhoto,
    Message,
    ReplyParameters,
)

from studiobot.bot.telegram.translate import PLATFORM
from studiobot.commands.contract import Button, ImageRef, Menu, Reply
from studiobot.db import platform_files
from studiobot.db.engine import Database
from studiobot.media.images import preview_within

log = logging.getLogger(__name__)

TEXT_MAX = 4096
CAPTION_MAX = 1024
PHOTO_MAX_BYTES = 10 * 1000 * 1000
DOCUMENT_MAX_BYTES = 50 * 1000 * 1000
CALLBACK_DATA_MAX_BYTES = 64
MEDIA_GROUP_MAX = 10
MENU_ROW = 5
_PHOTO_SIDES_MAX = 10_000
_PHOTO_RATIO_MAX = 20
#: Telegram keeps at most this many pixels a side of any photo, so a reshaped one need not be larger.
_PHOTO_KEPT_SIDE = 2560


def cut(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters with an ellipsis when it is longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def keyboard(buttons: Sequence[Button], menu: Menu | None = None) -> InlineKeyboardMarkup | None:
    """An inline keyboard: U1-U4 on one row, V1-V4 on the next, other actions two per row, then
    the menu's options as buttons numbered from 1, five per row (the text lists what each number
    is, as a gallery page does).

    A button whose action would not fit in callback_data is left out (and logged): a broken
    button is worse than none.
    """
    rows: list[list[InlineKeyboardButton]] = []
    family = ""
    for button in buttons:
        if not _fits(button):
            continue
        this = button.label[0] if re.fullmatch(r"[UV]\d", button.label) else "action"
        width = 5 if this != "action" else 2
        if not rows or this != family or len(rows[-1]) >= width:
            rows.append([])
        family = this
        rows[-1].append(InlineKeyboardButton(button.label, callback_data=button.action))
    options = [InlineKeyboardButton(str(n), callback_data=option.action)
               for n, option in enumerate(menu.options if menu else (), 1) if _fits(option)]
    rows += [options[i:i + MENU_ROW] for i in range(0, len(options), MENU_ROW)]
    return InlineKeyboardMarkup(rows) if rows else None


def _fits(button: Button) -> bool:
    if len(button.action.encode()) <= CALLBACK_DATA_MAX_BYTES:
        return True
    log.warning("button %r left out: its action is over 64 bytes", button.label)
    return False


def picture_above(source: Message, bot_id: int) -> Message | None:
    """The picture a keyboard message belongs to, when the reply it shows was too long for a
    caption: the bot's own single photo or document that ``source`` (a text message) answers."""
    above = source.reply_to_message
    if (source.text is None or above is None or above.from_user is None or above.from_user.id != bot_id
            or above.media_group_id is not None or not (above.photo or above.document)):
        return None
    return above


@dataclass
class Sent:
    """What sending a Reply produced: every message id, and the one carrying the keyboard."""

    message_ids: list[int] = field(default_factory=list)
    keyboard_message_id: int | None = None


@dataclass(frozen=True, slots=True)
class _Picture:
    ref: ImageRef
    as_photo: bool
    payload: bytes | str  # bytes to upload, or a file id Telegram already holds
    filename: str


class Sender:
    """Sends Replies to Telegram chats, reusing the file ids of images Telegram already holds.

    Args:
        bot: A PTB bot (its rate limiter paces every request).
        db: Database (file ids of images sent before).
        photo_max_bytes: Largest photo upload; a larger image is sent as a smaller JPEG preview
            (Telegram: 10 MB).
    """

    def __init__(self, bot: Bot, db: Database, *, photo_max_bytes: int = PHOTO_MAX_BYTES) -> None:
        self.bot = bot
        self._db = db
        self._photo_max = photo_max_bytes

    async def send(
        self, chat_id: int, reply: Reply, *, reply_to: int | None = None, thread_id: int | None = None
    ) -> Sent:
        """Post ``reply`` in ``chat_id`` as new messages.

        Text alone is one message with the keyboard. One image is a photo (or a document, when
        the reply asks for originals or the image cannot be a photo) captioned with the text and
        carrying the keyboard. Several images are a media group followed by the text and keyboard
        in a message replying to it.

        Args:
            chat_id: The chat.
            reply: What to show.
            reply_to: The message it answers, if any.
            thread_id: The forum topic to post in (``message_thread_id``), if any.

        Raises:
            telegram.error.TelegramError: Telegram refused (e.g. Forbidden: blocked or removed).
        """
        markup = keyboard(reply.buttons, reply.menu)
        replying = _replying(reply_to)
        pictures = await self._pictures(reply)
        sent = Sent()
        if not pictures:
            message = await self.bot.send_message(
                chat_id, cut(reply.text, TEXT_MAX), reply_markup=markup, reply_parameters=replying,
                message_thread_id=thread_id,
            )
            sent.message_ids.append(message.message_id)
            sent.keyboard_message_id = message.message_id
            return sent
        if len(pictures) == 1 and len(reply.text) <= CAPTION_MAX:
            message = await self._send_one(chat_id, pictures[0], reply.text, markup, replying, thread_id)
            sent.message_ids.append(message.message_id)
            sent.keyboard_message_id = message.message_id
            await self._remember(pictures, [message])
            return sent
        if len(pictures) == 1:
            messages = [await self._send_one(chat_id, pictures[0], "", None, replying, thread_id)]
        else:
            messages = list(await self.bot.send_media_group(
                chat_id, [_media(p) for p in pictures], reply_parameters=replying, message_thread_id=thread_id,
            ))
        await self._remember(pictures, messages)
        sent.message_ids.extend(m.message_id for m in messages)
        message = await self.bot.send_message(
            chat_id, cut(reply.text, TEXT_MAX), reply_markup=markup,
            reply_parameters=_replying(messages[0].message_id), message_thread_id=thread_id,
        )
        sent.message_ids.append(message.message_id)
        sent.keyboard_message_id = message.message_id
        return sent

    async def edit_text(self, chat_id: int, message_id: int, reply: Reply) -> None:
        """Replace a text message's text and keyboard with ``reply``'s (its images are not shown).

        Raises:
            telegram.error.BadRequest: Not modified, message gone, or not a text message.
        """
        await self.bot.edit_message_text(
            cut(reply.text, TEXT_MAX), chat_id=chat_id, message_id=message_id,
            reply_markup=keyboard(reply.buttons, reply.menu),
        )

    async def edit_in_place(self, source: Message, reply: Reply) -> bool:
        """Show ``reply`` (text and one image, such as the next gallery page) in place of the
        message holding the pressed button, with ``editMessageMedia``: the picture is swapped, and
        the caption and keyboard with it, or the text message below the picture when the reply
        was too long for a caption.

        Returns:
            False when it cannot be done in place (not one image, or the old message is shaped
            differently); nothing was changed then.

        Raises:
            telegram.error.BadRequest: Telegram refused the edit (message gone or too old).
        """
        pictures = await self._pictures(reply)
        if len(pictures) != 1:
            return False
        picture, chat_id = pictures[0], source.chat.id
        if (source.photo or source.document) and source.media_group_id is None and len(reply.text) <= CAPTION_MAX:
            edited = await self.bot.edit_message_media(
                _media(picture, reply.text), chat_id, source.message_id,
                reply_markup=keyboard(reply.buttons, reply.menu),
            )
            await self._remember(pictures, [edited] if isinstance(edited, Message) else [])
            return True
        above = picture_above(source, self.bot.id)
        if above is None:
            return False
        edited = await self.bot.edit_message_media(_media(picture), chat_id, above.message_id)
        await self._remember(pictures, [edited] if isinstance(edited, Message) else [])
        await self.edit_text(chat_id, source.message_id, reply)
        return True

    async def _send_one(
        self, chat_id: int, picture: _Picture, caption: str, markup: InlineKeyboardMarkup | None,
        replying: ReplyParameters | None, thread_id: int | None,
    ) -> Message:
        if picture.as_photo:
            return await self.bot.send_photo(
                chat_id, picture.payload, caption=caption or None, reply_markup=markup,
                reply_parameters=replying, filename=picture.filename, message_thread_id=thread_id,
                has_spoiler=picture.ref.spoiler or None,
            )
        return await self.bot.send_document(
            chat_id, picture.payload, caption=caption or None, reply_markup=markup,
            reply_parameters=replying, filename=picture.filename, message_thread_id=thread_id,
        )

    async def _pictures(self, reply: Reply) -> list[_Picture]:
        """The images to send: each image (the grid only when there is nothing else), at most ten."""
        refs = [r for r in reply.images if r.kind == "image"] or list(reply.images)
        refs = refs[:MEDIA_GROUP_MAX]
        if not refs:
            return []
        known: dict[str, str] = {}
        if not reply.originals:
            async with self._db.read() as conn:
                known = await platform_files.file_ids(conn, PLATFORM, [r.key for r in refs if r.key])
        pictures = []
        for ref in refs:
            if ref.key in known:
                pictures.append(_Picture(ref, True, known[ref.key], ref.path.name))
                continue
            pictures.append(await asyncio.to_thread(_prepare, ref, self._photo_max, document=reply.originals))
        if len({p.as_photo for p in pictures}) > 1:
            # A media group mixes photos and videos, never documents: all go as documents, or all
            # as photos when one must stay behind a spoiler (documents have none).
            as_photos = any(p.ref.spoiler for p in pictures)
            pictures = [
                p if p.as_photo == as_photos else await asyncio.to_thread(
                    _prepare, p.ref, self._photo_max, document=not as_photos, reshape=as_photos)
                for p in pictures
            ]
        return pictures

    async def _remember(self, pictures: Sequence[_Picture], messages: Sequence[Message]) -> None:
        """Keep the file ids of newly uploaded photos (resending and inline mode use them)."""
        files = {
            p.ref.key: m.photo[-1].file_id
            for p, m in zip(pictures, messages, strict=False)
            if p.as_photo and isinstance(p.payload, bytes) and p.ref.key and m.photo
        }
        if files:
            await self._db.run(platform_files.remember, PLATFORM, files)


def _prepare(ref: ImageRef, photo_max: int, *, document: bool, reshape: bool = False) -> _Picture:
    """Read an image and decide how it travels: a photo, a smaller photo, or a document.

    Args:
        ref: The image.
        photo_max: Largest photo upload.
        document: Send it as a file (the user's originals, or to match an album of files),
            unless it is behind a spoiler: documents cannot be (Bot API ``has_spoiler`` exists
            for photos, videos and animations only), so a flagged image never goes uncovered.
        reshape: A photo is needed even when the image is beyond a photo's shape limits: send
            a scaled and padded copy (the original stays in the store).
    """
    data = ref.path.read_bytes()
    if document and not ref.spoiler:
        return _Picture(ref, False, data, ref.path.name)
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    if width + height > _PHOTO_SIDES_MAX or max(width, height) > _PHOTO_RATIO_MAX * min(width, height):
        if not (ref.spoiler or reshape):
            return _Picture(ref, False, data, ref.path.name)
        return _Picture(ref, True, _photo_shaped(data, photo_max), ref.path.stem + ".jpg")
    if len(data) > photo_max:
        # The original stays in the store (and /settings on sends originals as documents).
        return _Picture(ref, True, preview_within(data, photo_max), ref.path.stem + ".jpg")
    return _Picture(ref, True, data, ref.path.name)


def _photo_shaped(data: bytes, photo_max: int) -> bytes:
    """A JPEG copy within a photo's limits: scaled to Telegram's largest kept size, then padded
    (black) to a side ratio of at most 20."""
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    image.thumbnail((_PHOTO_KEPT_SIDE, _PHOTO_KEPT_SIDE))
    width, height = image.size
    size = (max(width, math.ceil(height / _PHOTO_RATIO_MAX)), max(height, math.ceil(width / _PHOTO_RATIO_MAX)))
    if size != image.size:
        image = ImageOps.pad(image, size)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return preview_within(out.getvalue(), photo_max)


def _media(picture: _Picture, caption: str = "") -> InputMediaPhoto | InputMediaDocument:
    if picture.as_photo:
        return InputMediaPhoto(picture.payload, caption=caption or None, filename=picture.filename,
                               has_spoiler=picture.ref.spoiler or None)
    return InputMediaDocument(picture.payload, caption=caption or None, filename=picture.filename)


def _replying(message_id: int | None) -> ReplyParameters | None:
    """Reply to ``message_id`` if it still exists; send anyway if it was deleted meanwhile."""
    if message_id is None:
        return None
    return ReplyParameters(message_id, allow_sending_without_reply=True)
