"""The platform-free core: the one command table every platform's commands are generated from."""

from __future__ import annotations

from studiobot.commands import gallery, help, imagine, jobs
from studiobot.commands.contract import CommandSpec
from studiobot.commands.credits import show_credits

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("imagine", "Make images from a text prompt.", imagine.imagine, imagine.PARAMS),
    CommandSpec("credits", "Your balance and latest credit movements.", show_credits),
    CommandSpec("job", "A job's status and result.", jobs.show_job, (jobs.JOB_ID,)),
    CommandSpec("cancel", "Cancel a job that has not finished (refunded).", jobs.cancel_job, (jobs.JOB_ID,)),
    CommandSpec("gallery", "Your images, newest first.", gallery.gallery, gallery.PARAMS),
    CommandSpec("help", "What studiobot can do.", help.show_help, help.PARAMS),
)
