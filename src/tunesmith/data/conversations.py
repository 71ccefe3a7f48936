"""Generative data: table rows -> conversations -> token ids with a loss mask, and packing.

A row is read in one of three layouts, detected from its columns:

- chat: a `messages` (or `conversations`) cell holding a list of `{"role", "content"}`
  messages; ShareGPT's `{"from": "human"|"gpt", "value"}` is read too.
- instruction (Alpaca): `instruction`, an optional `input`, and `output` (also
  `prompt` + `response`/`completion`). It becomes a user turn and an assistant turn.
- plain text (continued pre-training): a `text` column; every token is trained.

A conversation is rendered with the tokenizer's chat template when it has one (a fallback
`### User:` / `### Assistant:` layout otherwise). Only the assistant turns are trained
(labels elsewhere are IGNORE), unless `train_on_prompt`. The spans are found on the rendered
text and mapped to tokens by their character offsets, so no assumption is made about how
a template tokenises at turn boundaries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from tunesmith.data.batching import IGNORE
from tunesmith.errors import UserError

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "function": "tool",
                  "observation": "tool", **{r: r for r in ROLES}}
CHAT_COLUMNS = ("messages", "conversations", "conversation", "chat")
INSTRUCTION_COLUMNS = ("instruction", "prompt", "question", "query")
RESPONSE_COLUMNS = ("output", "response", "completion", "answer")
TEXT_COLUMNS = ("text", "content", "document")

FALLBACK_TURN = {"system": "{content}\n\n", "user": "### User:\n{content}\n\n### Assistant:\n",
                 "assistant": "{content}{eos}\n\n", "tool": "### Tool:\n{content}\n\n"}


def detect_layout(columns: list[str], source: str) -> str:
    """'chat', 'instruction' or 'text' from a table's columns, or one error saying what to give."""
    lower = {c.lower() for c in columns}
    if lower & set(CHAT_COLUMNS):
        return "chat"
    if lower & set(INSTRUCTION_COLUMNS) and lower & set(RESPONSE_COLUMNS):
        return "instruction"
    if lower & set(TEXT_COLUMNS):
        return "text"
    raise UserError(f"{source}: no generative columns found (columns: {', '.join(columns)}); give a 'messages' "
                    "column (chat), 'instruction' + 'output' columns (Alpaca), or a 'text' column (plain text)")


def _column(row: dict, names: tuple[str, ...]) -> str | None:
    for key in row:
        if key.lower() in names:
            return key
    return None


def row_to_conversation(row: dict, layout: str, where: str):
    """A list of {role, content} messages (chat, instruction) or a string (plain text).

    Roles outside ROLES are an error naming the row; empty texts are left for `problems`."""
    if layout == "text":
        return str(row[_column(row, TEXT_COLUMNS)])
    if layout == "instruction":
        instruction = str(row[_column(row, INSTRUCTION_COLUMNS)]).strip()
        extra_key = _column(row, ("input", "context"))
        extra = str(row[extra_key]).strip() if extra_key else ""
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        messages = [{"role": "user", "content": prompt},
                    {"role": "assistant", "content": str(row[_column(row, RESPONSE_COLUMNS)])}]
        system_key = _column(row, ("system",))
        if system_key and str(row[system_key]).strip():
            messages.insert(0, {"role": "system", "content": str(row[system_key])})
        return messages
    cell = row[_column(row, CHAT_COLUMNS)]
    try:
        value = json.loads(cell) if isinstance(cell, str) else cell
    except json.JSONDecodeError:
        raise UserError(f"{where}: the messages cell is not JSON; give a list like "
                        '[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]') from None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise UserError(f"{where}: messages must be a list of objects with 'role' and 'content'")
    messages = []
    for m in value:
        role = str(m.get("role", m.get("from", ""))).lower()
        content = m.get("content", m.get("value"))
        if role not in SHAREGPT_ROLES:
            raise UserError(f"{where}: unknown role {role!r}; use one of: {', '.join(ROLES)} "
                            "(ShareGPT's human/gpt are read too)")
        messages.append({"role": SHAREGPT_ROLES[role], "content": "" if content is None else str(content)})
    return messages


def problem(conversation) -> str | None:
    """Why a conversation cannot be trained on, or None."""
    if isinstance(conversation, str):
        return "empty text" if not conversation.strip() else None
    if not conversation:
        return "no messages"
    if conversation[-1]["role"] != "assistant":
        return "does not end with an assistant message"
    if not conversation[-1]["content"].strip():
        return "empty response"
    return None


def split_reference(conversation) -> tuple[list[dict], str] | None:
    """(prompt messages, reference answer) of a conversation ending with the assistant."""
    if isinstance(conversation, str) or not conversation or conversation[-1]["role"] != "assistant":
        return None
    return list(conversation[:-1]), conversation[-1]["content"]


# ---- rendering ------------------------------------------------------------------------------

def render_text(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as the model sees it, and the character spans of the assistant turns
    (each from the first character of the answer to the end of its end-of-turn marker)."""
    if not getattr(tokenizer, "chat_template", None):
        return _render_fallback(tokenizer, messages, add_generation_prompt=False)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans, cursor = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if full.startswith(upto) and upto.startswith(before) and len(before) >= cursor:
            spans.append((len(before), len(upto)))
        else:  # a template that rewrites earlier turns: find the answer text itself
            start = full.find(message["content"], cursor)
            if start < 0:
                raise UserError(f"the chat template drops assistant message {i + 1}; use --train-on-prompt")
            spans.append((start, start + len(message["content"])))
        cursor = spans[-1][1]
    return full, spans


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt text up to where the model starts its answer."""
    if not getattr(tokenizer, "chat_template", None):
        return _render_fallback(tokenizer, messages, add_generation_prompt=True)[0]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _render_fallback(tokenizer, messages, add_generation_prompt: bool) -> tuple[str, list[tuple[int, int]]]:
    eos = tokenizer.eos_token or ""
    text, spans = "", []
    for m in messages:
        piece = FALLBACK_TURN[m["role"]].format(content=m["content"], eos=eos)
        if m["role"] == "assistant":
            spans.append((len(text), len(text) + len(piece)))
        text += piece
    if not add_generation_prompt and text.endswith("\n\n"):
        text = text[:-2]
        if spans and spans[-1][1] > len(text):
            spans[-1] = (spans[-1][0], len(text))
    return text, spans


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    cut: int  # tokens lost to truncation


def encode_conversation(tokenizer, conversation, max_length: int, train_on_prompt: bool = False) -> list[Encoded]:
    """Token ids and labels (IGNORE outside the trained spans), truncated to max_length.
    Plain text longer than max_length is cut into several pieces instead: nothing is lost."""
    if isinstance(conversation, str):
        ids = tokenizer(conversation, add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        return [Encoded(ids[i : i + max_length], ids[i : i + max_length], 0) for i in range(0, len(ids), max_length)]
    text, spans = render_text(tokenizer, conversation)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoding["input_ids"]
    if train_on_prompt:
        labels = list(ids)
    else:
        labels = [token if any(s <= start < e for s, e in spans) else IGNORE
                  for token, (start, _end) in zip(ids, encoding["offset_mapping"])]
    return [Encoded(ids[:max_length], labels[:max_length], max(0, len(ids) - max_length))]


# ---- packing ---------------------------------------------------------------------------------

def pack(rows: list[dict], max_length: int) -> list[dict]:
    """Short examples concatenated into rows of up to max_length tokens, in their order.

    Each packed row carries `position_ids` that restart at 0 for every example. With no
    attention mask, transformers reads the restarts as boundaries and lets a token attend
    only within its own example (a block-diagonal causal mask). The first label of every
    example is IGNORE: it would otherwise be predicted from the previous example."""
    packed, current = [], {"input_ids": [], "labels": [], "position_ids": []}
    for row in rows:
        n = len(row["input_ids"])
        if current["input_ids"] and len(current["input_ids"]) + n > max_length:
            packed.append(current)
            current = {"input_ids": [], "labels": [], "position_ids": []}
        current["input_ids"] += row["input_ids"]
        current["labels"] += [IGNORE] + list(row["labels"][1:])
        current["position_ids"] += list(range(n))
    if current["input_ids"]:
        packed.append(current)
    return packed


def collate_packed(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """A batch of packed rows: no attention mask (it would hide the boundaries); padding is
    one more 'example' at the end of a row, which no real token can attend to (causal)."""
    width = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.arange(width).repeat(len(rows), 1)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        input_ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        positions[i, :n] = torch.tensor(r["position_ids"])
        positions[i, n:] = torch.arange(width - n)
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions}
