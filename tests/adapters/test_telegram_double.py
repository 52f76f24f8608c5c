"""The Telegram double against the real python-telegram-bot (no project code): proof it is faithful.

PTB is unmodified; ``Bot(token, base_url=..., base_file_url=...)`` is all it takes to point it at
the double. ``PTB_TIMEDELTA`` is set so ``RetryAfter.retry_after`` is a timedelta (PTB 22 warns
about the int form).
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import telegram
from aiohttp import web
from telegram import (
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResultArticle,
    InputMediaPhoto,
    InputTextMessageContent,
    Update,
)
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, RetryAfter
from telegram.ext import AIORateLimiter, Application, CommandHandler, ContextTypes, ExtBot

from tests.doubles.server import png, serve
from tests.doubles.telegram import (
    DEFAULT_TOKEN,
    FloodLimits,
    TelegramState,
    running_telegram,
    too_many_requests,
)

USER_ID = 1111111
GROUP_ID = -1001234567890


@pytest.fixture(autouse=True)
def timedelta_periods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def tg() -> AsyncIterator[TelegramState]:
    async with running_telegram() as state:
        yield state


@pytest.fixture
async def bot(tg: TelegramState) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(DEFAULT_TOKEN, base_url=tg.base_url,
                            base_file_url=tg.base_file_url) as real_bot:
        yield real_bot


@pytest.fixture
def user(tg: TelegramState) -> dict[str, Any]:
    return tg.user(USER_ID, "Ada", "ada_l")


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(f"b{n}", callback_data=d)
                                  for n, d in enumerate(data)]])


async def test_get_me_describes_the_bot(tg: TelegramState, bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (123456, "studiobot_test_bot", True)
    assert me.can_read_all_group_messages is False and me.supports_inline_queries is True
    assert bot.username == "studiobot_test_bot"  # cached by initialize(), itself a getMe
    assert [c.method for c in tg.calls] == ["getMe", "getMe"]
    assert all(c.ok for c in tg.calls)


async def test_wrong_token_is_invalid_token(tg: TelegramState) -> None:
    stranger = telegram.Bot("999:WRONG", base_url=tg.base_url)
    try:
        with pytest.raises(InvalidToken):
            await stranger.initialize()
    finally:
        await stranger.shutdown()  # initialize() opened the HTTP client before failing
    assert tg.calls[0].status == 401


async def test_unknown_method_answers_404(tg: TelegramState, bot: telegram.Bot) -> None:
    with pytest.raises(telegram.error.EndPointNotFound):
        await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": USER_ID})
    assert tg.calls_to("sendTelepathy")[0].status == 404


async def test_send_message_with_inline_keyboard(tg: TelegramState, bot: telegram.Bot,
                                                 user: dict[str, Any]) -> None:
    message = await bot.send_message(USER_ID, "pick one", reply_markup=keyboard("up:1", "up:2"))
    assert message.text == "pick one" and message.chat.type == "private"
    assert message.from_user.id == bot.id
    assert [b.callback_data for b in message.reply_markup.inline_keyboard[0]] == ["up:1", "up:2"]
    call = tg.calls_to("sendMessage")[0]
    # Decoded: chat_id as int, reply_markup as a dict (PTB JSON-encodes both).
    assert call.params["chat_id"] == USER_ID
    assert call.params["reply_markup"]["inline_keyboard"][0][1]["callback_data"] == "up:2"
    stored = tg.messages[(USER_ID, message.message_id)]
    assert stored["reply_markup"] == call.params["reply_markup"]
    second = await bot.send_message(USER_ID, "again", reply_to_message_id=message.message_id)
    assert second.message_id == message.message_id + 1
    assert second.reply_to_message.message_id == message.message_id
    assert tg.sent_texts() == ["pick one", "again"]


async def test_text_limits(tg: TelegramState, bot: telegram.Bot) -> None:
    await bot.send_message(USER_ID, "x" * 4096)
    with pytest.raises(BadRequest, match="(?i)Message is too long"):
        await bot.send_message(USER_ID, "x" * 4097)
    with pytest.raises(BadRequest, match="(?i)Message text is empty"):
        await bot.send_message(USER_ID, "   ")
    with pytest.raises(BadRequest, match="(?i)Can't parse entities"):
        await bot.send_message(USER_ID, "1 <b>2", parse_mode="HTML")
    html = await bot.send_message(USER_ID, "<b>bold</b> &amp; <a href='https://x.y'>link</a>",
                                  parse_mode="HTML")
    assert html.text == "bold & link"
    assert [(e.type, e.offset, e.length) for e in html.entities] == [
        ("bold", 0, 4), ("text_link", 7, 4)]
    with pytest.raises(BadRequest, match="(?i)Character '.' is reserved"):
        await bot.send_message(USER_ID, "Done.", parse_mode="MarkdownV2")


async def test_callback_data_is_limited_to_64_bytes(tg: TelegramState, bot: telegram.Bot) -> None:
    await bot.send_message(USER_ID, "ok", reply_markup=keyboard("é" * 32))  # 64 bytes
    with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(USER_ID, "too long", reply_markup=keyboard("é" * 33))  # 66 bytes
    assert [c.status for c in tg.calls_to("sendMessage")] == [200, 400]
    assert len(tg.messages) == 1


async def test_send_photo_upload_then_resend_by_file_id(tg: TelegramState,
                                                        bot: telegram.Bot) -> None:
    data = png("1536x1024", 400)
    message = await bot.send_photo(USER_ID, data, caption="your image")
    largest = message.photo[-1]
    assert (largest.width, largest.height) == (400, 267)
    assert [p.width for p in message.photo] == [90, 320, 400]  # thumbnails first, as Telegram
    assert len({p.file_id for p in message.photo}) == 3
    assert message.caption == "your image"
    assert tg.calls_to("sendPhoto")[0].files == {"photo": data}
    again = await bot.send_photo(GROUP_ID, largest.file_id)
    assert again.photo[-1].file_unique_id == largest.file_unique_id
    assert "photo" not in tg.calls_to("sendPhoto")[1].files
    file = await bot.get_file(largest.file_id)
    assert file.file_path.startswith(tg.base_file_url)
    assert await file.download_as_bytearray() == bytearray(data)
    with pytest.raises(BadRequest, match="(?i)Message caption is too long"):
        await bot.send_photo(USER_ID, largest.file_id, caption="c" * 1025)
    with pytest.raises(BadRequest, match="(?i)IMAGE_PROCESS_FAILED"):
        await bot.send_photo(USER_ID, b"not an image")
    with pytest.raises(BadRequest, match="(?i)Wrong file identifier"):
        await bot.send_photo(USER_ID, "AgACunknown")


async def test_send_document(tg: TelegramState, bot: telegram.Bot) -> None:
    message = await bot.send_document(USER_ID, b"%PDF-1.4 fake", filename="report.pdf")
    document = message.document
    assert (document.file_name, document.mime_type, document.file_size) == (
        "report.pdf", "application/pdf", 13)
    assert tg.files[document.file_id].content == b"%PDF-1.4 fake"


async def test_send_media_group(tg: TelegramState, bot: telegram.Bot) -> None:
    images = [png("512x512", 64 + n) for n in range(3)]
    messages = await bot.send_media_group(
        USER_ID, [InputMediaPhoto(image, caption=f"#{n}") for n, image in enumerate(images)])
    assert len(messages) == 3
    assert len({m.media_group_id for m in messages}) == 1 and messages[0].media_group_id
    assert [m.caption for m in messages] == ["#0", "#1", "#2"]
    call = tg.calls_to("sendMediaGroup")[0]
    # Each item points at its multipart part with attach://<part name>.
    references = [item["media"] for item in call.params["media"]]
    assert all(ref.startswith("attach://") for ref in references)
    assert [call.files[ref.removeprefix("attach://")] for ref in references] == images
    assert [m.photo[-1].width for m in messages] == [64, 65, 66]
    with pytest.raises(BadRequest, match="(?i)2-10"):
        await bot.send_media_group(USER_ID, [InputMediaPhoto(images[0])])


async def test_edits(tg: TelegramState, bot: telegram.Bot) -> None:
    message = await bot.send_message(USER_ID, "v1", reply_markup=keyboard("a"))
    with pytest.raises(BadRequest, match="(?i)Message is not modified"):
        await bot.edit_message_text("v1", USER_ID, message.message_id,
                                    reply_markup=keyboard("a"))
    edited = await bot.edit_message_text("v1", USER_ID, message.message_id)  # drops the keyboard
    assert edited.reply_markup is None and edited.edit_date is not None
    edited = await bot.edit_message_text("v2", USER_ID, message.message_id)
    assert tg.messages[(USER_ID, message.message_id)]["text"] == "v2"
    with pytest.raises(BadRequest, match="(?i)Message to edit not found"):
        await bot.edit_message_text("v3", USER_ID, 999)
    photo = await bot.send_photo(USER_ID, png("64x64", 64))
    with pytest.raises(BadRequest, match="(?i)There is no text in the message to edit"):
        await bot.edit_message_text("text", USER_ID, photo.message_id)
    captioned = await bot.edit_message_caption(USER_ID, photo.message_id, caption="new caption")
    assert captioned.caption == "new caption"
    marked = await bot.edit_message_reply_markup(USER_ID, photo.message_id,
                                                 reply_markup=keyboard("b"))
    assert marked.reply_markup.inline_keyboard[0][0].callback_data == "b"
    assert [c.method for c in tg.sends_in(USER_ID, ok_only=True)] == [
        "sendMessage", "editMessageText", "editMessageText", "sendPhoto", "editMessageCaption",
        "editMessageReplyMarkup"]


async def test_delete_message(tg: TelegramState, bot: telegram.Bot,
                              user: dict[str, Any]) -> None:
    message = await bot.send_message(USER_ID, "bye")
    assert await bot.delete_message(USER_ID, message.message_id) is True
    assert (USER_ID, message.message_id) in tg.deleted_messages
    with pytest.raises(BadRequest, match="(?i)Message to delete not found"):
        await bot.delete_message(USER_ID, message.message_id)
    group = tg.group_chat(GROUP_ID, "Studio")
    theirs = tg.user_message(group, user, "my secret key sk-123")
    with pytest.raises(BadRequest, match="(?i)Message can't be deleted"):
        await bot.delete_message(GROUP_ID, theirs["message_id"])
    tg.set_admins(GROUP_ID, [USER_ID], bot_can_delete=True)
    assert await bot.delete_message(GROUP_ID, theirs["message_id"]) is True


async def test_get_updates_offsets(tg: TelegramState, bot: telegram.Bot,
                                   user: dict[str, Any]) -> None:
    chat = tg.private_chat(user)
    ids = [tg.push_update(tg.message_update(chat, user, f"/start {n}")) for n in range(3)]
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    updates = await bot.get_updates()
    assert [u.update_id for u in updates] == ids
    assert updates[0].message.text == "/start 0"
    assert updates[0].message.entities[0].type == "bot_command"
    assert (await bot.get_updates(limit=1))[0].update_id == ids[0]  # nothing confirmed yet
    newer = await bot.get_updates(offset=ids[1])  # confirms ids[0]
    assert [u.update_id for u in newer] == ids[1:]
    assert [u.update_id for u in await bot.get_updates()] == ids[1:]
    assert await bot.get_updates(offset=ids[2] + 1) == ()
    assert tg.updates == []


async def test_long_poll_returns_when_an_update_is_pushed(tg: TelegramState, bot: telegram.Bot,
                                                          user: dict[str, Any]) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await tg.wait_until(lambda: tg.polling)
    assert not poll.done()
    update_id = tg.push_update(tg.message_update(tg.private_chat(user), user, "hello"))
    updates = await asyncio.wait_for(poll, 2)
    assert [u.update_id for u in updates] == [update_id]
    assert time.monotonic() - started < 2
    empty_started = time.monotonic()
    assert await bot.get_updates(offset=update_id + 1, timeout=0.2) == ()
    assert 0.15 < time.monotonic() - empty_started < 1.5  # it did wait for the timeout


async def test_scripted_429_raises_retry_after(tg: TelegramState, bot: telegram.Bot) -> None:
    tg.fail_next.append(too_many_requests(7))
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER_ID, "hi")
    assert caught.value.retry_after == dtm.timedelta(seconds=7)
    assert tg.calls_to("sendMessage")[0].status == 429
    assert (await bot.send_message(USER_ID, "hi")).text == "hi"  # one-shot


async def test_flood_limits(tg: TelegramState, bot: telegram.Bot) -> None:
    tg.flood_limits = FloodLimits(group=(2, 60.0))
    await bot.send_message(USER_ID, "one")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER_ID, "two")
    assert caught.value.retry_after == dtm.timedelta(seconds=1)
    await bot.send_message(USER_ID + 1, "other chat")  # limits are per chat
    await bot.send_message(GROUP_ID, "g1")
    await bot.send_message(GROUP_ID, "g2")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(GROUP_ID, "g3")
    assert caught.value.retry_after == dtm.timedelta(seconds=60)
    sends = tg.sends_in(GROUP_ID)
    assert [c.status for c in sends] == [200, 200, 429]
    assert sends[1].at - sends[0].at < 1


async def test_rate_limiter_retries_after_429(tg: TelegramState) -> None:
    limited = ExtBot(DEFAULT_TOKEN, base_url=tg.base_url, base_file_url=tg.base_file_url,
                     rate_limiter=AIORateLimiter(max_retries=1))
    async with limited:
        tg.fail_next.append(too_many_requests(1))
        message = await limited.send_message(USER_ID, "patient")
    assert message.text == "patient"
    first, second = tg.calls_to("sendMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.0


async def test_webhook_conflicts_with_get_updates_and_posts(tg: TelegramState, bot: telegram.Bot,
                                                            user: dict[str, Any]) -> None:
    received: list[tuple[str | None, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers.get("X-Telegram-Bot-Api-Secret-Token"),
                         await request.json()))
        ok = request.headers.get("X-Telegram-Bot-Api-Secret-Token") == "s3cret_-"
        return web.Response(status=200 if ok else 403)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve(app) as root:
        with pytest.raises(BadRequest, match="(?i)Secret token contains unallowed characters"):
            await bot.set_webhook(f"{root}/hook", secret_token="bad token!")
        with pytest.raises(BadRequest, match="(?i)Bad webhook: an HTTPS URL"):
            await bot.set_webhook("http://example.com/hook")
        assert await bot.set_webhook(f"{root}/hook", secret_token="s3cret_-")
        with pytest.raises(Conflict, match="(?i)webhook is active"):
            await bot.get_updates()
        update = tg.message_update(tg.private_chat(user), user, "/start")
        assert (await tg.post_to_webhook(update))[0] == 200
        assert (await tg.post_to_webhook(update, secret_token="wrong"))[0] == 403
        assert (await tg.post_to_webhook(update, secret_token=None))[0] == 403
    assert [secret for secret, _ in received] == ["s3cret_-", "wrong", None]
    assert received[0][1]["message"]["text"] == "/start" and received[0][1]["update_id"]
    info = await bot.get_webhook_info()
    assert info.url == f"{root}/hook" and "403" in info.last_error_message
    await bot.delete_webhook()
    assert await bot.get_updates() == ()


async def test_second_poller_conflicts(tg: TelegramState, bot: telegram.Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=10))
    await tg.wait_until(lambda: tg.polling)
    # A second instance of the bot (PTB's getUpdates pool holds one connection per Bot).
    async with telegram.Bot(DEFAULT_TOKEN, base_url=tg.base_url) as other:
        assert await other.get_updates(timeout=0.1) == ()
    with pytest.raises(Conflict, match="(?i)terminated by other getUpdates"):
        await asyncio.wait_for(first, 2)


async def test_commands_per_scope(tg: TelegramState, bot: telegram.Bot) -> None:
    scope = BotCommandScopeChat(GROUP_ID)
    commands = [BotCommand("imagine", "Draw an image"), BotCommand("credits", "Your balance")]
    assert await bot.set_my_commands(commands, scope=scope, language_code="en")
    assert await bot.get_my_commands(scope=scope, language_code="en") == tuple(commands)
    assert await bot.get_my_commands() == ()
    assert tg.calls_to("setMyCommands")[0].params["scope"] == {"type": "chat",
                                                               "chat_id": GROUP_ID}
    assert tg.commands_for({"type": "chat", "chat_id": GROUP_ID}, "en")[0]["command"] == "imagine"
    with pytest.raises(BadRequest, match="(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Imagine!", "bad name")])
    with pytest.raises(BadRequest, match="(?i)BOT_COMMAND_DESCRIPTION_INVALID"):
        await bot.set_my_commands([BotCommand("ok", "d" * 257)])
    assert await bot.delete_my_commands(scope=scope, language_code="en")
    assert await bot.get_my_commands(scope=scope, language_code="en") == ()


async def test_callback_query_answered_once(tg: TelegramState, bot: telegram.Bot,
                                            user: dict[str, Any]) -> None:
    sent = await bot.send_message(USER_ID, "choose", reply_markup=keyboard("up:1"))
    update = tg.callback_query_update(user, tg.messages[(USER_ID, sent.message_id)], "up:1")
    tg.push_update(update)
    (received,) = await bot.get_updates()
    query = received.callback_query
    assert query.data == "up:1" and query.chat_instance
    assert query.message.reply_markup.inline_keyboard[0][0].callback_data == "up:1"
    assert await bot.answer_callback_query(query.id, text="Upscaling…")
    with pytest.raises(BadRequest, match="(?i)Query is too old"):
        await bot.answer_callback_query(query.id)
    assert tg.callback_answers[query.id]["text"] == "Upscaling…"
    assert "Upscaling…" in tg.sent_texts()


async def test_answer_inline_query_recorded(tg: TelegramState, bot: telegram.Bot,
                                            user: dict[str, Any]) -> None:
    update = Update.de_json(tg.inline_query_update(user, "cat") | {"update_id": 1}, bot)
    results = [InlineQueryResultArticle(str(n), f"Cat {n}", InputTextMessageContent(f"cat {n}"))
               for n in range(3)]
    assert await bot.answer_inline_query(update.inline_query.id, results, cache_time=0)
    answer = tg.inline_answers[update.inline_query.id]
    assert [r["id"] for r in answer["results"]] == ["0", "1", "2"]
    assert answer["cache_time"] == 0
    assert {"Cat 1", "cat 2"} <= set(tg.sent_texts())
    second = tg.inline_query_update(user, "dog")["inline_query"]["id"]
    with pytest.raises(BadRequest, match="(?i)RESULT_ID_DUPLICATE"):
        await bot.answer_inline_query(second, results + results[:1])


async def test_chat_administrators(tg: TelegramState, bot: telegram.Bot) -> None:
    tg.group_chat(GROUP_ID, "Studio")
    tg.set_admins(GROUP_ID, [USER_ID, 2222], bot_can_delete=True)
    admins = await bot.get_chat_administrators(GROUP_ID)
    assert [(a.user.id, a.status) for a in admins] == [
        (USER_ID, "creator"), (2222, "administrator"), (bot.id, "administrator")]
    assert isinstance(admins[0], telegram.ChatMemberOwner)
    assert admins[2].can_delete_messages is True
    await bot.get_chat_administrators(GROUP_ID)
    assert len(tg.calls_to("getChatAdministrators")) == 2
    chat = await bot.get_chat(GROUP_ID)
    assert (chat.type, chat.title) == ("supergroup", "Studio")
    with pytest.raises(BadRequest, match="(?i)There are no administrators in the private chat"):
        await bot.get_chat_administrators(USER_ID)


async def test_closed_and_blocked_dms_are_forbidden(tg: TelegramState, bot: telegram.Bot,
                                                    user: dict[str, Any]) -> None:
    tg.closed_dms.add(USER_ID)
    with pytest.raises(Forbidden, match="(?i)can't initiate conversation"):
        await bot.send_message(USER_ID, "hello?")
    with pytest.raises(Forbidden):
        await bot.send_chat_action(USER_ID, "typing")
    tg.user_message(tg.private_chat(user), user, "/start")  # the user writes first: DM opens
    assert await bot.send_chat_action(USER_ID, "upload_photo")
    tg.blocked_users.add(USER_ID)
    with pytest.raises(Forbidden, match="(?i)blocked by the user"):
        await bot.send_photo(USER_ID, png("64x64", 64))
    assert tg.messages == {(USER_ID, 1): tg.messages[(USER_ID, 1)]}  # only the user's message


async def test_update_builders_match_ptb(tg: TelegramState, bot: telegram.Bot,
                                         user: dict[str, Any]) -> None:
    group = tg.group_chat(-42, "Small group")
    first = tg.user_message(group, user, "hi")
    update = Update.de_json(tg.message_update(group, user, "🎨 /imagine@studiobot_test_bot cat",
                                              reply_to=first["message_id"]) | {"update_id": 5},
                            bot)
    message = update.message
    assert message.chat.type == "group" and message.from_user.is_bot is False
    assert message.reply_to_message.text == "hi"
    # The entity offset counts UTF-16 code units: the emoji is 2, plus a space.
    assert message.parse_entities(["bot_command"]) == {
        message.entities[0]: "/imagine@studiobot_test_bot"}
    assert message.entities[0].offset == 3
    blocked = Update.de_json(tg.my_chat_member_update(tg.private_chat(user), user) | {
        "update_id": 6}, bot)
    assert blocked.my_chat_member.new_chat_member.status == "kicked"


async def test_application_polls_the_double(tg: TelegramState, user: dict[str, Any]) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(f"welcome {update.effective_user.first_name}",
                                                  do_quote=True)

    application = (Application.builder().token(DEFAULT_TOKEN).base_url(tg.base_url)
                   .base_file_url(tg.base_file_url).build())
    application.add_handler(CommandHandler("start", start))
    async with application:
        await application.start()
        await application.updater.start_polling(poll_interval=0, timeout=1)
        tg.push_update(tg.message_update(tg.private_chat(user), user, "/start"))
        reply = await tg.wait_for("sendMessage")
        await application.updater.stop()
        await application.stop()
    assert reply.params["text"] == "welcome Ada"
    assert reply.params["reply_parameters"]["message_id"] == 1
    assert tg.updates == []  # the updater confirmed what it processed on stop
