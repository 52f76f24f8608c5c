"""Write .env.example from the Settings class, so the documented defaults are always the real ones.

Run: python scripts/env_example.py > .env.example (tests/unit/test_config.py checks it is current).
"""

from __future__ import annotations

import json

from pydantic import TypeAdapter

from studiobot.config import Settings


def render() -> str:
    """The text of .env.example."""
    lines = [
        "# studiobot settings. Every variable is optional; the value shown is the default.",
        "# Copy to .env (read from the working folder) or set them in the environment.",
        "# Names are STUDIOBOT_<SETTING>; a few also accept their conventional names.",
        "",
    ]
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = [str(n) for n in alias.choices] if alias is not None else [f"STUDIOBOT_{name.upper()}"]
        default = field.get_default(call_default_factory=True)
        if default is None:
            value = ""
        elif isinstance(default, (dict, tuple, list)):
            value = json.dumps(TypeAdapter(field.annotation).dump_python(default, mode="json"))
        else:
            value = str(default)
        lines.append(f"# {field.description}")
        if len(names) > 1:
            lines.append(f"# Also accepted as {', '.join(names[1:])}.")
        lines += [f"{names[0]}={value}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
