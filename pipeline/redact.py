"""Secrets in what `push` publishes: find them in any file, redact them from the cards and manifests we write.

A secret is a value shaped like an access token (`hf_...` Hub tokens, `sk-...` API keys), the user's current Hub
token wherever it appears, or the value of a key named like one (`hub_token`, `api_key`, `*_secret`,
`password`) in a config, a manifest or a command line (`trainer.hub_token=...`). Manifests carry the resolved
config and the command; model cards print the `trainer:` block: both pass through `redact` when staged, and
every staged file, of any size and type, is scanned before the upload (`find_secret`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"
TOKEN_SHAPES = re.compile(rb"hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_\-]{20,}")
# tokenizer settings named *_token hold special-token text, not credentials
NOT_SECRET = {"eos_token", "bos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"}
SECRET_KEY = re.compile(
    r"(?i)(^|[._-])(token|api_key|access_key|secret_key|secret|password|passwd|[a-z]+_key)$"
)
# `key=value` / `key: value` / `"key": "value"` in text, for keys named like secrets
KEY_VALUE = re.compile(
    rb"""(?i)["']?([\w.\-]*(?:token|key|secret|password|passwd))["']?\s*[=:]\s*["']?([^\s"',}]+)"""
)
CHUNK = 8 << 20
VOCABULARIES = {
    "tokenizer.json",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
}


def is_secret_key(key: str) -> bool:
    last = re.split(r"[.]", str(key))[-1].lower()
    return last not in NOT_SECRET and not last.endswith("_id") and bool(SECRET_KEY.search(last))


def redact(value: Any, token: str | None = None) -> Any:
    """A copy of `value` (dicts, lists, strings) with secrets replaced by `<redacted>`."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_key(k) and isinstance(v, str) and v else redact(v, token))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, token) for v in value]
    if isinstance(value, str):
        return redact_text(value, token)
    return value


def redact_text(text: str, token: str | None = None) -> str:
    if token:
        text = text.replace(token, REDACTED)
    text = TOKEN_SHAPES.sub(REDACTED.encode(), text.encode()).decode()

    def key_value(m: re.Match) -> bytes:
        key, value = m.group(1).decode(), m.group(2)
        if not is_secret_key(key) or value == REDACTED.encode() or value.lower() in (b"null", b"none"):
            return m.group(0)
        return m.group(0)[: m.start(2) - m.start(0)] + REDACTED.encode() + m.group(0)[m.end(2) - m.start(0) :]

    return KEY_VALUE.sub(key_value, text.encode()).decode()


def redact_json_file(path: Path, token: str | None = None) -> None:
    """Replace `path` (a staged link to the user's file) with a redacted copy; the original is untouched."""
    data = redact(json.loads(path.read_text(encoding="utf-8")), token)
    path.unlink()
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def holds_settings(path: Path) -> bool:
    """Files of settings (configs, manifests, cards), where a `*_token: value` pair is a setting; not data,
    weights or vocabularies, where words like "token" or "password" are ordinary content."""
    return path.suffix in (".json", ".yaml", ".yml", ".md", ".cfg", ".toml") and path.name not in VOCABULARIES


def credential_like(value: bytes) -> bool:
    """A value that could be a credential: 8+ characters, not a number, not a placeholder."""
    return (
        len(value) >= 8
        and not value.replace(b".", b"").replace(b"-", b"").isdigit()
        and value.lower() not in (REDACTED.encode(), b"null", b"none", b"true", b"false")
        and not value.startswith((b"<", b"$"))
    )


def find_secret(path: Path, token: str | None = None) -> str | None:
    """What kind of secret `path` holds and where (never the value), or None; reads any file in chunks."""
    settings = holds_settings(path)
    needles = [(token.encode(), "your Hub token")] if token else []
    tail = b""
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            window = tail + chunk
            for needle, what in needles:
                if needle in window:
                    return f"holds {what}"
            if m := TOKEN_SHAPES.search(window):
                return f"holds a token-shaped value ({m.group(0)[:3].decode()}...) at byte {offset - len(tail) + m.start()}"
            for m in KEY_VALUE.finditer(window) if settings else ():
                key, value = m.group(1).decode(errors="replace"), m.group(2)
                if is_secret_key(key) and credential_like(value):
                    return f"holds a value for '{key}'"
            tail = window[-256:]
            offset += len(chunk)
    return None
