"""Galleries and moderation on Telegram: real python-telegram-bot, our bot and core, a loopback
Bot API (numbered menu buttons, spoilers, forum topics, the gallery channel, bans, privacy).

Like ``test_telegram_bot.py``, each test runs ``run_platforms`` against the double and reads what
the bot sent; a few render tests drive :class:`Sender` directly.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from telegram import Bot, Message, ReplyParameters
from telegram.error import BadRequest

from studiobot.bot.telegram.render import Sender, keyboard
from studiobot.commands.contract import Button, ImageRef, Menu, Reply
from studiobot.config import Settings
from studiobot.db.engine import Database
from studiobot.db.models import Asset, CreditAccount, Identity
from tests.adapters.test_telegram_bot import ADA, BOB, GROUP_ID, Harness, buttons, sent_message
from tests.doubles.telegram import TelegramCall, TelegramState, running_telegram

FORUM_ID = -1005555555555
NOT_YOURS = "Job #1 is not one you can see here."
BOT_NAME = "@studiobot_test_bot"


@pytest.fixture
async def bot(make_settings: Callable[..., Settings], database_url: str) -> AsyncIterator[Harness]:
    async with running_telegram() as tg:
        # Two images a page, so three images make an Older button.
        settings = make_settings(database_url=database_url, telegram_token=tg.token,
                                 telegram_api_base=tg.base_url, gallery_page_size=2)
        async with Harness(tg, settings).running() as harness:
            yield harness


@pytest.fixture
async def database(bot: Harness) -> AsyncIterator[Database]:
    """The bot's database, for what a test sets or reads behind the bot's back."""
    db = Database(bot.settings.database_url)
    try:
        yield db
    finally:
        await db.dispose()


def say(bot: Harness, chat: dict[str, Any], user: dict[str, Any], text: str,
        thread_id: int | None = None) -> dict[str, Any]:
    """Push a user's message (in a forum topic when ``thread_id``); returns the message."""
    update = bot.tg.message_update(chat, user, text, thread_id=thread_id)
    bot.tg.push_update(update)
    return update["message"]


async def answer_to(bot: Harness, query_id: str) -> dict[str, Any]:
    """The answerCallbackQuery parameters of a button press, once answered."""
    await bot.tg.wait_until(lambda: query_id in bot.tg.callback_answers, 5, "the button answered")
    return bot.tg.callback_answers[query_id]


async def text_in(bot: Harness, chat_id: int, words: str, after: int = 0) -> TelegramCall:
    """The first message sent to ``chat_id`` after call ``after`` whose text holds ``words``."""
    return await bot.call(lambda c: c in bot.tg.calls[after:] and c.ok and c.method == "sendMessage"
                          and c.params["chat_id"] == chat_id and words in c.params["text"])


async def made(bot: Harness, chat: dict[str, Any], user: dict[str, Any], prompt: str,
               thread_id: int | None = None) -> TelegramCall:
    """Run ``/imagine prompt`` and wait for its result (the message carrying U1...)."""
    mark = len(bot.tg.calls)
    mention = "" if chat["type"] == "private" else BOT_NAME
    say(bot, chat, user, f"/imagine{mention} {prompt}", thread_id)
    return await bot.result(chat["id"], after=mark)


def photos_to(tg: TelegramState, chat_id: int) -> list[TelegramCall]:
    return [c for c in tg.sends_in(chat_id) if c.method in ("sendPhoto", "sendMediaGroup", "sendDocument",
                                                               "editMessageMedia")]


async def balance(db: Database, user_id: int) -> int:
    async with db.read() as conn:
        return (await conn.execute(
            select(CreditAccount.balance).join(Identity, Identity.user_id == CreditAccount.user_id)
            .where(Identity.platform == "telegram", Identity.platform_user_id == str(user_id))
        )).scalar_one()


async def test_a_gallery_page_is_a_sheet_with_numbered_buttons_that_pages_in_place_and_opens_images(
    bot: Harness,
) -> None:
    tg = bot.tg
    for prompt in ("a fox", "a heron", "a mole"):
        await made(bot, bot.ada_chat, bot.ada, prompt)
    mark = len(tg.calls)
    say(bot, bot.ada_chat, bot.ada, "/gallery")
    page = await bot.call(lambda c: c in tg.calls[mark:] and c.ok and c.method == "sendPhoto")
    assert page.files  # the contact sheet, uploaded
    caption = page.params["caption"]
    assert caption.splitlines()[0] == "Your images, page 1:"
    assert "1. job #3 image 1" in caption and "2. job #2 image 1" in caption and "job #1" not in caption
    labels = [label for label, _ in buttons(page)]
    assert labels == ["Older ▶", "1", "2"]
    actions = dict(buttons(page))
    assert actions["1"] == "show 3 1" and actions["2"] == "show 2 1"
    rows = page.params["reply_markup"]["inline_keyboard"]
    assert [len(row) for row in rows] == [1, 2]  # the numbers after the regular buttons
    sheet = sent_message(page)

    # Older: the same message now shows page 2 (a new sheet, caption and keyboard).
    query = bot.tap(bot.ada, sheet, actions["Older ▶"])
    edit = await bot.call(lambda c: c.method == "editMessageMedia" and c.ok)
    assert (await answer_to(bot, query)).get("text") is None  # answered without an alert
    assert edit.params["message_id"] == sheet["message_id"] and edit.files
    shown = tg.messages[(ADA, sheet["message_id"])]
    assert shown["caption"].startswith("Your images, page 2:") and "1. job #1 image 1" in shown["caption"]
    page_two = [(b["text"], b["callback_data"]) for row in shown["reply_markup"]["inline_keyboard"] for b in row]
    assert [label for label, _ in page_two] == ["◀ Newer", "1"] and page_two[1][1] == "show 1 1"
    assert page_two[0][1].startswith("gallery mine --a ") and page_two[0][1].endswith(" --p 1")
    assert len([c for c in tg.calls_to("sendPhoto") if c.params["chat_id"] == ADA]) == 4  # nothing new posted

    # "1" opens that image with its own buttons, answering the page.
    mark = len(tg.calls)
    query = bot.tap(bot.ada, shown, "show 1 1")
    opened = await bot.call(lambda c: c in tg.calls[mark:] and c.ok and c.method == "sendPhoto")
    await answer_to(bot, query)
    assert "Job #1" in opened.params["caption"] and "a fox" in opened.params["caption"]
    assert opened.params["reply_parameters"]["message_id"] == sheet["message_id"]
    assert [label for label, _ in buttons(opened)][:2] == ["U1", "V1"]

    # A page that turned out empty cannot be a photo: the sheet gives way to a text.
    say(bot, bot.ada_chat, bot.ada, "/delete 1")
    await text_in(bot, ADA, "Deleted the images of job #1", after=mark)
    query = bot.tap(bot.ada, tg.messages[(ADA, sheet["message_id"])], actions["Older ▶"])
    await text_in(bot, ADA, "No more images here.", after=mark)
    assert (ADA, sheet["message_id"]) in tg.deleted_messages


async def test_mod_is_refused_to_members_and_gives_admins_stats_with_a_chart(bot: Harness) -> None:
    tg = bot.tg
    tg.set_admins(GROUP_ID, [BOB])  # Telegram says Bob owns the group; Ada is a member
    for line in ("stats", "ban 2222222 spam"):
        mark = len(tg.calls)
        say(bot, bot.group, bot.ada, f"/mod{BOT_NAME} {line}")
        await text_in(bot, GROUP_ID, "/mod is for this community's admins.", after=mark)
    assert not tg.calls_to("sendPhoto")
    mark = len(tg.calls)
    say(bot, bot.group, bot.bob, f"/mod{BOT_NAME} stats")
    chart = await bot.call(lambda c: c in tg.calls[mark:] and c.ok and c.method == "sendPhoto")
    assert chart.params["chat_id"] == GROUP_ID
    assert chart.params["caption"].startswith("This community, last 30 days")
    assert Image.open(io.BytesIO(chart.files["photo"])).format == "PNG"
    # Ada's /mod ban did nothing: she is still welcome.
    mark = len(tg.calls)
    say(bot, bot.group, bot.bob, f"/mod{BOT_NAME} bans")
    await text_in(bot, GROUP_ID, "Nobody is banned here.", after=mark)


async def test_a_shared_result_is_posted_in_the_gallery_topic_crediting_its_author(bot: Harness) -> None:
    tg = bot.tg
    forum = tg.group_chat(FORUM_ID, "Studio", is_forum=True)
    gallery_topic = tg.forum_topic(forum, "Gallery", bot.bob)
    requests_topic = tg.forum_topic(forum, "Requests", bot.bob)
    tg.set_admins(FORUM_ID, [BOB])
    mark = len(tg.calls)
    say(bot, forum, bot.bob, f"/mod{BOT_NAME} channel set", gallery_topic)
    done = await text_in(bot, FORUM_ID, "Shared images are posted to", after=mark)
    assert done.params["message_thread_id"] == gallery_topic
    assert f"topic {gallery_topic}" in done.params["text"]

    # A result comes back in the topic it was asked in...
    result = await made(bot, forum, bot.ada, "a heron at dawn", requests_topic)
    assert result.params["message_thread_id"] == requests_topic
    status = next(c for c in tg.calls_to("sendMessage") if "is queued" in c.params["text"])
    assert status.params["message_thread_id"] == requests_topic
    # ...and Share posts it afresh in the gallery topic, naming Ada.
    mark = len(tg.calls)
    query = bot.tap(bot.ada, sent_message(result), "share 1")
    post = await bot.call(lambda c: c in tg.calls[mark:] and c.ok and c.method == "sendPhoto")
    assert "posted it to the gallery channel" in (await answer_to(bot, query))["text"]
    assert post.params["chat_id"] == FORUM_ID and post.params["message_thread_id"] == gallery_topic
    assert "reply_parameters" not in post.params
    assert post.params["caption"] == "Ada shared job #1: “a heron at dawn”"
    assert [label for label, _ in buttons(post)] == ["▲ Vote", "★ Favorite"]
    posted = sent_message(post)
    assert posted["is_topic_message"] is True and posted["message_thread_id"] == gallery_topic
    # The post is the community's, not the job's: deleting the job tidies only its result.
    say(bot, forum, bot.ada, f"/delete{BOT_NAME} 1", requests_topic)
    await text_in(bot, FORUM_ID, "Deleted the images of job #1", after=mark)
    assert (FORUM_ID, sent_message(result)["message_id"]) in tg.deleted_messages
    assert (FORUM_ID, posted["message_id"]) not in tg.deleted_messages


async def test_an_image_made_in_private_is_unreachable_by_anyone_else(bot: Harness) -> None:
    tg = bot.tg
    bob_chat = tg.private_chat(bot.bob)
    await made(bot, bot.ada_chat, bot.ada, "a secret garden")
    refusal = None
    for chat in (bob_chat, bot.group):
        mark = len(tg.calls)
        say(bot, chat, bot.bob, f"/show{BOT_NAME if chat is bot.group else ''} 1")
        refusal = await text_in(bot, chat["id"], NOT_YOURS, after=mark)
    assert refusal is not None
    # Buttons Bob forges (callback_data he makes up) get the same answer, and nothing else.
    for data in ("show 1 1", "show 1", "favorite 1", "vote 1", "vote 1 1"):
        query = bot.tap(bot.bob, sent_message(refusal), data)
        answer = await answer_to(bot, query)
        assert answer["text"] == NOT_YOURS and answer["show_alert"] is True
    # Inline mode finds the image for Ada (so the search works) and never for Bob.
    for user, expected in ((bot.bob, 0), (bot.ada, 1), (bot.bob, 0)):
        update = tg.inline_query_update(user, "secret")
        tg.push_update(update)
        query_id = update["inline_query"]["id"]
        await tg.wait_until(lambda: query_id in tg.inline_answers, 5, "the inline answer")
        assert len(tg.inline_answers[query_id]["results"]) == expected
    assert not photos_to(tg, BOB) and not photos_to(tg, GROUP_ID)
    assert not [c for c in tg.sends_in(BOB) + tg.sends_in(GROUP_ID) if "secret" in str(c.params.get("text"))]


async def test_a_banned_user_and_a_blocked_prompt_are_refused_before_any_charge(
    bot: Harness, database: Database
) -> None:
    tg = bot.tg
    tg.set_admins(GROUP_ID, [ADA])
    for user in (bot.ada, bot.bob):  # both have used the bot (so Bob can be named in a ban)
        mark = len(tg.calls)
        say(bot, tg.private_chat(user), user, "/credits")
        await text_in(bot, user["id"], "Balance", after=mark)
    bob_before, ada_before = await balance(database, BOB), await balance(database, ADA)
    mark = len(tg.calls)
    say(bot, bot.group, bot.ada, f"/mod{BOT_NAME} ban {BOB} spamming")
    await text_in(bot, GROUP_ID, f"Banned telegram:{BOB} here until unbanned.", after=mark)
    mark = len(tg.calls)
    say(bot, bot.group, bot.bob, f"/imagine{BOT_NAME} a rowing boat")
    banned = await text_in(bot, GROUP_ID, "You are banned here", after=mark)
    assert "spamming" in banned.params["text"]

    say(bot, bot.group, bot.ada, f"/mod{BOT_NAME} blocklist add dragon")
    await text_in(bot, GROUP_ID, "Blocked “dragon”", after=mark)
    say(bot, bot.group, bot.ada, f"/imagine{BOT_NAME} a red DRAGON over hills")
    blocked = await text_in(bot, GROUP_ID, "Your prompt contains “dragon”", after=mark)
    assert "blocked by this community" in blocked.params["text"]

    assert not [c for c in tg.calls[mark:] if "is queued" in str(c.params.get("text"))]
    assert (await balance(database, BOB), await balance(database, ADA)) == (bob_before, ada_before)


async def test_flagged_images_follow_the_groups_nsfw_policy(bot: Harness, database: Database) -> None:
    tg = bot.tg
    tg.set_admins(GROUP_ID, [ADA])
    await made(bot, bot.group, bot.ada, "a beach at noon")

    def flag(conn: Connection) -> None:
        # Stands for the provider's own safety flag (GeneratedImage.nsfw), which the offline
        # provider never raises.
        conn.execute(update(Asset).where(Asset.job_id == 1).values(nsfw=True))

    await database.run(flag)
    mark = len(tg.calls)
    say(bot, bot.group, bot.ada, f"/mod{BOT_NAME} nsfw spoiler")
    await text_in(bot, GROUP_ID, "NSFW policy here: spoiler", after=mark)
    say(bot, bot.group, bot.ada, f"/show{BOT_NAME} 1 1")
    photo = await bot.call(lambda c: c in tg.calls[mark:] and c.ok and c.method == "sendPhoto")
    assert photo.params["has_spoiler"] is True and sent_message(photo)["has_media_spoiler"] is True

    mark = len(tg.calls)
    say(bot, bot.group, bot.ada, f"/mod{BOT_NAME} nsfw block")
    await text_in(bot, GROUP_ID, "NSFW policy here: block", after=mark)
    say(bot, bot.group, bot.ada, f"/show{BOT_NAME} 1")
    withheld = await text_in(bot, GROUP_ID, "flagged as NSFW", after=mark)
    assert "not shown here: this community withholds them" in withheld.params["text"]
    assert not [c for c in photos_to(tg, GROUP_ID) if c in tg.calls[mark:]]

    # Originals are documents, which Telegram cannot hide: a flagged one still comes as a photo.
    say(bot, bot.ada_chat, bot.ada, "/settings on")
    await text_in(bot, ADA, "Saved", after=mark)
    say(bot, bot.ada_chat, bot.ada, "/show 1 1")
    private = await bot.call(lambda c: c in tg.calls[mark:] and c.ok and c.params.get("chat_id") == ADA
                             and c.method in ("sendPhoto", "sendDocument"))
    assert private.method == "sendPhoto" and private.params["has_spoiler"] is True and private.files


# -- rendering, through the double with a plain PTB bot ----------------------------------------


@pytest.fixture
async def sender(db: Database) -> AsyncIterator[tuple[Sender, TelegramState]]:
    async with running_telegram() as tg:
        telegram_bot = Bot(tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url)
        await telegram_bot.initialize()
        try:
            yield Sender(telegram_bot, db), tg
        finally:
            await telegram_bot.shutdown()


def image(folder: Path, name: str, size: tuple[int, int], *, spoiler: bool = False) -> ImageRef:
    path = folder / name
    Image.new("RGB", size, (30, 120, 200)).save(path, "PNG")
    return ImageRef(path, "image", name, key=f"cd/{name}", spoiler=spoiler)


def test_menu_options_become_numbered_buttons_in_rows_of_five_after_the_others() -> None:
    options = [Button(f"{n}. a long description", f"show {n} 1") for n in range(1, 13)]
    options[3] = Button("4. too long", "show " + "9" * 64)
    markup = keyboard([Button("Older ▶", "gallery mine --b 3 --p 2")], Menu("Open an image", options))
    assert markup is not None
    rows = [[(b.text, b.callback_data) for b in row] for row in markup.inline_keyboard]
    assert rows[0] == [("Older ▶", "gallery mine --b 3 --p 2")]
    assert [[text for text, _ in row] for row in rows[1:]] == [["1", "2", "3", "5", "6"],
                                                             ["7", "8", "9", "10", "11"], ["12"]]
    assert dict(rows[1])["5"] == "show 5 1"  # numbers name the options, even after one was left out


async def test_spoilers_ride_on_photos_even_for_originals_odd_shapes_and_albums(
    sender: tuple[Sender, TelegramState], tmp_path: Path
) -> None:
    send, tg = sender
    chat = 1111111
    await send.send(chat, Reply("One flagged original.", images=[image(tmp_path, "a.png", (64, 64), spoiler=True)],
                                originals=True))
    narrow = image(tmp_path, "narrow.png", (2100, 100), spoiler=True)  # wider than 20:1
    await send.send(chat, Reply("A flagged banner.", images=[narrow]))
    album = [narrow, image(tmp_path, "plain-narrow.png", (3000, 100)), image(tmp_path, "b.png", (64, 64))]
    await send.send(chat, Reply("A mixed album.", images=album))
    first, banner = tg.calls_to("sendPhoto")
    assert first.params["has_spoiler"] is True and banner.params["has_spoiler"] is True
    with Image.open(io.BytesIO(banner.files["photo"])) as shaped:
        assert max(shaped.size) <= 20 * min(shaped.size)
    (group,) = tg.calls_to("sendMediaGroup")
    assert [item["type"] for item in group.params["media"]] == ["photo"] * 3
    assert [item.get("has_spoiler", False) for item in group.params["media"]] == [True, False, False]
    assert not tg.calls_to("sendDocument")


async def test_a_page_too_long_for_a_caption_pages_by_editing_the_picture_and_the_text(
    sender: tuple[Sender, TelegramState], tmp_path: Path
) -> None:
    send, tg = sender
    chat = 1111111
    long_text = "Your images, page 1:\n" + "x" * 1100
    sent = await send.send(chat, Reply(long_text, images=[image(tmp_path, "p1.png", (64, 64))],
                                       buttons=[Button("Older ▶", "gallery mine --b 5 --p 2")]))
    picture_id, text_id = sent.message_ids
    source = Message.de_json(tg.messages[(chat, text_id)], send.bot)
    assert source is not None
    page_two = Reply("Your images, page 2:\n" + "y" * 1100, images=[image(tmp_path, "p2.png", (80, 64))],
                     menu=Menu("Open an image", [Button("1. a mole", "show 1 1")]))
    assert await send.edit_in_place(source, page_two)
    (edit,) = tg.calls_to("editMessageMedia")
    assert edit.params["message_id"] == picture_id and edit.files
    assert tg.messages[(chat, text_id)]["text"].startswith("Your images, page 2:")
    assert json.dumps(tg.messages[(chat, text_id)]["reply_markup"]).count("show 1 1") == 1
    # A message not shaped like a page (here: a text answering nobody) is left to the caller.
    plain = await send.send(chat, Reply("Just text."))
    lone = Message.de_json(tg.messages[(chat, plain.message_ids[0])], send.bot)
    assert lone is not None and not await send.edit_in_place(lone, page_two)


async def test_the_double_keeps_forum_topics_as_telegram_does(sender: tuple[Sender, TelegramState]) -> None:
    send, tg = sender
    forum = tg.group_chat(FORUM_ID, "Studio", is_forum=True)
    topic = tg.forum_topic(forum, "Gallery")
    asked = tg.user_message(forum, tg.user(ADA, "Ada"), "/gallery", thread_id=topic)
    # A reply lands in the topic of what it answers; a named topic must exist, in a forum.
    answer = await send.bot.send_message(FORUM_ID, "a page", reply_parameters=ReplyParameters(asked["message_id"]))
    assert answer.is_topic_message and answer.message_thread_id == topic
    posted = await send.bot.send_message(FORUM_ID, "a post", message_thread_id=topic)
    assert posted.message_thread_id == topic and posted.reply_to_message is None
    general = await send.bot.send_message(FORUM_ID, "for everyone")
    assert not general.is_topic_message
    for chat_id, thread in ((FORUM_ID, topic + 100), (GROUP_ID, topic)):
        with pytest.raises(BadRequest, match="(?i)message thread not found"):
            await send.bot.send_message(chat_id, "lost", message_thread_id=thread)
