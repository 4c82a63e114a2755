"""Local fakes of the services dataformer_nb talks to, for tests and offline notebooks.

Real HTTP servers on 127.0.0.1, in a thread of the calling process: ``FakeLLMServer``
speaks the online APIs (OpenAI's, Anthropic's and Ollama's chat, completions and embeddings,
with scripted faults), ``FakeBatchServer`` the batch APIs (OpenAI's files and batches in
OpenAI's and Together's dialects, Anthropic's message batches). Nothing here is used by the
library itself.
"""

from .batch_server import FakeBatchServer
from .llm_server import FakeLLMServer

__all__ = ["FakeBatchServer", "FakeLLMServer"]
