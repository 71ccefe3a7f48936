"""MkDocs hook: the configuration reference, generated from the typed settings at build time.

The same fields `tunesmith train --help` reads (config.py and the plug-ins' sections), so a
key, its type, default and description are written once, in the code.
"""

from __future__ import annotations

from mkdocs.structure.files import File


def on_files(files, config):
    files.append(File.generated(config, "reference/configuration.md", content=_page()))
    return files


def _page() -> str:
    from tunesmith.commands.flags import FLAG_ALIASES
    from tunesmith.config import TrainConfig

    lines = ["# Configuration reference", "",
             "Every key a config file (`tunesmith train config.yaml`) takes; each is also a flag "
             "(`lr` is `--lr`, `max_length` is `--max-length`). Generated from the settings' own "
             "definitions, the source `--help` reads.", ""]
    for section in reversed(TrainConfig.__mro__[1:]):
        own = section.__dict__.get("__annotations__", {})
        if not own or section.__module__.startswith("pydantic") or section is TrainConfig:
            continue
        lines += [f"## {section.__name__.removesuffix('Settings') or section.__name__}", "",
                  (section.__doc__ or "").strip().splitlines()[0], "", "| key | flag | type | default | description |",
                  "|---|---|---|---|---|"]
        for name in own:
            field = TrainConfig.model_fields.get(name)
            if field is None or name == "config_version":
                continue
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            spelled = extra.get("flags") or FLAG_ALIASES.get(name) or ["--" + name.replace("_", "-")]
            flags = ", ".join(f"`{f}`" for f in spelled)
            kind = str(field.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
            default = "" if field.default is None else f"`{field.default}`"
            text = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}` | {flags} | `{kind}` | {default} | {text} |")
        lines.append("")
    return "\n".join(lines)
