"""The request and response shapes of the HTTP API (pydantic: validated in, documented in
/openapi.json)."""

import secrets
from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel

STOP_CHARS = 64  # longest stop string: transformers' matcher builds a vocabulary x length table per string
StopString = Annotated[str, Field(min_length=1, max_length=STOP_CHARS)]


class PredictParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: Optional[int] = Field(None, ge=1, description="Return only the k most likely labels in `scores`.")
    # Generating runs (causal-lm, preference, summarization, translation) only:
    max_new_tokens: Optional[int] = Field(None, ge=1, description="Longest answer in tokens (default: the "
                                          "run's, 128 unless set; at most the server's --max-new-tokens).")
    temperature: Optional[float] = Field(None, ge=0, le=5, description="0: greedy (default); > 0: sampling.")
    top_p: Optional[float] = Field(None, gt=0, le=1, description="Nucleus sampling mass, with temperature > 0.")
    stop: Optional[list[StopString]] = Field(
        None, max_length=8, description=f"Stop at the first of these strings (not included; 8 at most, each at most "
                                        f"{STOP_CHARS} characters).")
    seed: Optional[int] = Field(None, ge=0, lt=2**31, description="Sampling seed: the same seed and settings give "
                                "the same answer (default: a fresh one per request).")
    stream: bool = Field(False, description="Send the answer as server-sent events while it is generated (one input).")

    def generation(self, run_settings=None):
        """The request's settings over the run's (its beams and n-gram rule, which
        encoder-decoder runs decode with; the decoder-only engine decodes greedily or samples)."""
        from dataclasses import replace

        from tunesmith.generation import GenerationSettings

        base = run_settings or GenerationSettings()
        return replace(base, max_new_tokens=self.max_new_tokens or base.max_new_tokens,
                       temperature=self.temperature or 0.0, top_p=self.top_p or 1.0, stop=list(self.stop or []),
                       # a fixed seed would make every sampled answer repeat across requests
                       seed=self.seed if self.seed is not None else secrets.randbelow(2**31))


GENERATION_PARAMETERS = ("max_new_tokens", "temperature", "top_p", "stop", "stream", "seed")


class TextPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    text_pair: str


class EntitySpan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: int = Field(ge=0, description="First character of the entity in `text`.")
    end: int = Field(gt=0, description="One past its last character.")
    type: Optional[str] = Field(None, max_length=64, description="Its type (person, book, ...), as in training.")


class RelationInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    head: Union[str, EntitySpan] = Field(description="The head entity: its text (first occurrence) or its span.")
    tail: Union[str, EntitySpan] = Field(description="The tail entity: its text (first occurrence) or its span.")


class QuestionInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: Union[str, list[str]] = Field(description="A question, or a list of questions about the same context "
                                                        "(answered in order).")
    context: str = Field(description="The passage the answers are taken from.")


Input = Union[str, TextPair, RelationInput, QuestionInput]


class RerankRequest(BaseModel):
    """The rerank request of Cohere's and Jina's APIs (what their clients and RAG frameworks send)."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, max_length=256, description="Ignored: the server serves one run.")
    query: str
    documents: list[str] = Field(min_length=1, description="The passages to order by how well they answer the query.")
    top_n: Optional[int] = Field(None, ge=1, description="Return only the best n (default: all).")
    return_documents: bool = Field(False, description="Put each document's text in its result.")


class RerankResult(BaseModel):
    index: int = Field(description="The document's position in the request.")
    relevance_score: float = Field(description="The reranker's score (higher: more relevant).")
    document: Optional[dict] = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult] = Field(description="Best first.")


class ScoreRequest(BaseModel):
    """Answers to one prompt, each scored by a reward model."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    answers: list[str] = Field(min_length=1, description="The answers to score, in any order.")


class ScoreResponse(BaseModel):
    model: str
    scores: list[float] = Field(description="Each answer's reward, in the order of the request (higher: better).")
    best: int = Field(description="The position of the highest-scored answer.")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Union[Input, list[Input]] = Field(
        description="One input or a list: texts, {text, text_pair} objects for pair runs, {text, head, tail} for "
                    "relation-extraction runs, {question, context} for question-answering runs (see GET /v1/model "
                    "'input').")
    parameters: PredictParameters = Field(default_factory=PredictParameters)


class ClassificationOutput(BaseModel):
    label: str
    score: float
    scores: dict[str, float]


class RegressionOutput(BaseModel):
    score: float


class MultiLabelOutput(BaseModel):
    labels: list[str]
    scores: dict[str, float]


class Entity(BaseModel):
    type: str
    text: str
    start: int
    end: int
    score: float


class EntitiesOutput(BaseModel):
    entities: list[Entity]


class GenerationOutput(BaseModel):
    generated: str


class EmbeddingOutput(BaseModel):
    embedding: list[float]


class Answer(BaseModel):
    answer: str = Field(description="The span of the context that answers; empty when the model finds no answer.")
    start: Optional[int] = Field(description="Its first character in the context (None: no answer).")
    end: Optional[int] = Field(description="One past its last character (None: no answer).")
    score: float = Field(description="Probability of the best span (its start times its end, in its window).")


class Answers(BaseModel):
    answers: list[Answer] = Field(description="One answer per question asked, in order.")


class QuestionAnswerOutput(RootModel[Union[Answer, Answers]]):
    """One answer for one question; `answers` for a list of questions about one context."""


# One answer of each kind a task declares (`Task.answer`): the shape /openapi.json documents
# and the tests hold every served answer to. A task with a new kind of answer adds it here.
ANSWERS: dict[str, type[BaseModel]] = {
    "classification": ClassificationOutput, "regression": RegressionOutput, "multi-label": MultiLabelOutput,
    "entities": EntitiesOutput, "generation": GenerationOutput, "embedding": EmbeddingOutput,
    "answer": QuestionAnswerOutput,
}


def response_schema(task) -> type[BaseModel]:
    """The pydantic shape of one answer of a servable `task`."""
    return ANSWERS[task.answer]
