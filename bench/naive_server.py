"""The naive baseline for bench/serve_load.py: FastAPI calling a `transformers` pipeline once
per request, as a plain tutorial would write it. Run as: python naive_server.py RUN PORT"""

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

classifier = pipeline("text-classification", model=f"{sys.argv[1]}/model", top_k=None, device="cpu")
app = FastAPI()


class Request(BaseModel):
    inputs: str | list[str]


@app.post("/v1/predict")
def predict(body: Request):
    return classifier(body.inputs)


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
