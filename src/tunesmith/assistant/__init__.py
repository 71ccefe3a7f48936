"""`tunesmith assistant`: a customer-service assistant built on trained runs.

An answer comes from the first route that is sure enough (router.py):

1. template: the intent classifier (a text-classification run) is confident, and the knowledge
   base has an answer written for that intent;
2. retrieval: the knowledge base's answer nearest to the question, by a sentence-embedding run
   (the retriever: given, or fine-tuned on the knowledge base's own question/answer pairs) and
   a vector index (index.py, FAISS), when its similarity clears the calibrated threshold;
3. generation: with a generative run, an answer written from the nearest passages, citing them;
4. hand-off: "I don't know", flagged for a person.

The thresholds are calibrated on held-out data (calibration.py): the intent threshold on the
intent run's validation split, the retrieval threshold on the knowledge-base questions the retriever never
trained on, each
as a curve that trades coverage for accuracy. kb.py reads the knowledge base; build.py makes
the assistant folder that `ask` and `serve` load (safetensors, JSON and a FAISS index: no pickle).
"""
