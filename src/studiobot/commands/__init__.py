"""The platform-free core: the one command table every platform's commands are generated from."""

from __future__ import annotations

from studiobot.commands import (
    admin,
    buy,
    collections,
    gallery,
    help,
    imagine,
    jobs,
    keys,
    mod,
    preferences,
    results,
)
from studiobot.commands.contract import CommandSpec
from studiobot.commands.credits import show_credits

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("imagine", "Make images from a text prompt.", imagine.imagine, imagine.PARAMS),
    CommandSpec("credits", "Your balance and latest credit movements.", show_credits, ephemeral=True),
    CommandSpec("buy", "Buy credits or a pass (the payment link comes privately).", buy.buy, buy.PARAMS,
                ephemeral=True),
    CommandSpec("job", "A job's status and result.", jobs.show_job, (jobs.JOB_ID,), ephemeral=True),
    CommandSpec("cancel", "Cancel a job that has not finished (refunded).", jobs.cancel_job,
                (jobs.JOB_ID,), ephemeral=True),
    CommandSpec("reroll", "Make a job's prompt again with a new seed.", results.reroll, (jobs.JOB_ID,)),
    CommandSpec("upscale", "A larger version of one image of a job.", results.upscale,
                (jobs.JOB_ID, results.INDEX)),
    CommandSpec("vary", "Variations of one image of a job.", results.vary, (jobs.JOB_ID, results.INDEX)),
    CommandSpec("favorite", "Add a job's images to your favourites (again to remove).", results.favorite,
                (jobs.JOB_ID, results.OPTIONAL_INDEX), ephemeral=True),
    CommandSpec("share", "Show a job's images in this community's gallery.", results.share,
                (jobs.JOB_ID,), where="group", ephemeral=True),
    CommandSpec("delete", "Delete a job's images (yours, or any here if you are an admin).",
                results.delete, (jobs.JOB_ID,)),
    CommandSpec("gallery", "Your images, favourites, or this community's gallery (newest or top).",
                gallery.gallery, gallery.PARAMS, ephemeral=True),
    CommandSpec("show", "Show a job's images with their buttons (yours, or shared ones you can see).",
                gallery.show, gallery.SHOW_PARAMS),
    CommandSpec("visibility", "Who sees your images: private, community or public.", gallery.visibility,
                gallery.VISIBILITY_PARAMS, ephemeral=True),
    CommandSpec("vote", "Vote for a shared image (again to take it back).", gallery.vote,
                gallery.SHOW_PARAMS, ephemeral=True),
    CommandSpec("collection", "Your collections: create, add, remove, show, list, delete.",
                collections.collection, collections.PARAMS, ephemeral=True),
    CommandSpec("keys", "Your own provider API keys: add (privately), list, remove, test.", keys.keys,
                keys.PARAMS, ephemeral=True),
    CommandSpec("settings", "Your preferences (results as original files).", preferences.settings,
                preferences.PARAMS, ephemeral=True),
    CommandSpec("mod", "Admins: bans, blocklist, limits, NSFW policy, gallery channel, hide, audit, stats.",
                mod.mod, mod.PARAMS, who="admin", ephemeral=True),
    CommandSpec("admin", "Operators: grant credits with a reason, or read a user's ledger.", admin.admin,
                admin.PARAMS, who="operator", ephemeral=True),
    CommandSpec("help", "What studiobot can do.", help.show_help, help.PARAMS, ephemeral=True),
)
