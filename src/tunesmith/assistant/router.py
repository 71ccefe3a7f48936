"""Answering one question: template, retrieval, generation or hand-off (see __init__)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.assistant.index import VectorIndex
from tunesmith.assistant.kb import from_rows, templates
from tunesmith.assistant.scope import Scope

HANDOFF = "I don't know the answer to that; I am passing your question to a person."
PASSAGES = 3  # nearest knowledge-base entries a generated answer may draw on


@dataclass
class Answer:
    route: str  # template | retrieval | generation | handoff
    answer: str
    confidence: float  # the intent probability, or the retrieval similarity, the route was taken on
    sources: list[str]  # knowledge-base ids the answer comes from
    intent: str | None = None
    handoff: bool = False
    in_scope: bool | None = None  # the intent run's scope check (scope.py); None without an intent run


class Assistant:
    def __init__(self, folder: str | Path):
        from tunesmith.inference import Predictor
        from tunesmith.assistant.build import RETRIEVER, embed_with
        from tunesmith.runs import Run, open_finished

        self.folder = Path(folder)
        self.config = json.loads((self.folder / "assistant.json").read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (self.folder / "kb.jsonl").read_text(encoding="utf-8").splitlines()]
        self.kb = from_rows(rows)
        self.templates = templates(self.kb)
        retriever = self.config["retriever_run"]
        self.embed = embed_with(Predictor.from_run(open_finished(retriever) if retriever else Run(self.folder / RETRIEVER)))
        self.index = VectorIndex.load(self.folder)
        self.scope = Scope.load(self.folder)
        self.intents = Predictor.from_run(open_finished(self.config["intents_run"])) if self.config["intents_run"] else None
        self.generator = Predictor.from_run(open_finished(self.config["generator_run"])) \
            if self.config["generator_run"] else None

    def answer(self, question: str) -> Answer:
        intent, confidence, in_scope = None, 0.0, None
        vector = self.embed([question])  # one embedding serves the scope check and retrieval
        if self.intents is not None:
            probs = self.intents.predict([question])[0]
            intent, confidence = self.intents.labels[int(probs.argmax())], float(probs.max())
            in_scope = self.scope is None or bool(self.scope.score([confidence], vector)[0] >= self.scope.threshold)
            if in_scope and confidence >= self.config["intent_threshold"] and intent in self.templates:
                entry = self.templates[intent]
                return Answer("template", entry.answer, confidence, [entry.id], intent, in_scope=True)
        sims, rows = self.index.search(vector, k=PASSAGES)
        nearest = [self.kb[int(r)] for r in rows[0]]
        if float(sims[0][0]) >= self.config["retrieval_threshold"]:
            return Answer("retrieval", nearest[0].answer, float(sims[0][0]), [nearest[0].id], intent, in_scope=in_scope)
        if self.generator is not None:
            return Answer("generation", self._generate(question, nearest), float(sims[0][0]), [e.id for e in nearest],
                          intent, in_scope=in_scope)
        return Answer("handoff", HANDOFF, max(confidence, float(sims[0][0])), [], intent, handoff=True,
                      in_scope=in_scope)

    def _generate(self, question: str, passages) -> str:
        from tunesmith.data.conversations import render_prompt
        from tunesmith.generation import GenerationSettings, generate

        numbered = "\n".join(f"[{k}] {e.answer}" for k, e in enumerate(passages, start=1))
        content = ("Answer the question using only the passages below, and cite the passages you use as [1], [2] "
                   f"or [3]. If they do not answer it, say you do not know.\n\n{numbered}\n\nQuestion: {question}")
        tokenizer = self.generator.tokenizer.tokenizer
        prompt = render_prompt(tokenizer, [{"role": "user", "content": content}])
        return generate(self.generator.model, tokenizer, [prompt],
                        GenerationSettings(max_new_tokens=self.config["max_new_tokens"]))[0].strip()
