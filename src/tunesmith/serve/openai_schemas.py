"""Request and response shapes of the OpenAI-compatible routes, as OpenAI documents them
(https://platform.openai.com/docs/api-reference/completions and /chat). Fields OpenAI has and
this server does not implement are accepted only at the value that means "off" (n=1,
penalties 0), so a client never silently gets something other than what it asked for."""

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from tunesmith.serve.schemas import StopString

Stop = Union[StopString, Annotated[list[StopString], Field(max_length=8)], None]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = Field(False, description="Send a last chunk with the token counts.")


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="The served run's name (GET /v1/models).")
    temperature: float = Field(1.0, ge=0, le=2, description="0: greedy; higher: more varied (OpenAI's default 1).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    n: int = Field(1, ge=1, le=1, description="Answers per prompt: 1 only.")
    stop: Stop = Field(None, description="Up to 8 strings; the answer ends before the first.")
    seed: Optional[int] = Field(None, ge=0, lt=2**31, description="The same seed and settings give the same answer.")
    stream: bool = Field(False, description="Send the answer as server-sent events, OpenAI's chunk format.")
    stream_options: Optional[StreamOptions] = None
    presence_penalty: float = Field(0.0, ge=0, le=0, description="Not implemented: 0 only.")
    frequency_penalty: float = Field(0.0, ge=0, le=0, description="Not implemented: 0 only.")
    user: Optional[str] = Field(None, max_length=256, description="Accepted and ignored (never logged).")

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Sampling):
    prompt: Union[str, Annotated[list[str], Field(min_length=1)]] = Field(description="A prompt or a list of them.")
    max_tokens: int = Field(16, ge=1, description="Longest answer in tokens (OpenAI's default 16).")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: Optional[str] = Field(None, max_length=64)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1, max_length=256)]
    max_tokens: Optional[int] = Field(None, ge=1, description="Longest answer in tokens (default: the server's "
                                                               "--max-new-tokens).")
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="The newer name of max_tokens.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Optional[str]


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Optional[str]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(max_length=256, description="The served run's name (GET /v1/models).")
    input: Union[str, list[str]] = Field(description="A text or a list of texts.")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32 "
                                                        "bytes, as OpenAI's client asks by default.")
    dimensions: Optional[int] = Field(None, ge=1, description="Only the model's own size is served.")
    user: Optional[str] = Field(None, max_length=256)


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: Union[list[float], str]


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
