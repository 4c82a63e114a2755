"""A child for the SIGKILL test: 2,000 requests through dataformer_nb into a cache, until killed."""

import sys

from dataformer_nb import AsyncLLM

url, cache_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
llm = AsyncLLM(api_provider="openai", url=f"{url}/v1", api_key="sk-kill-test", model="m", cache_dir=cache_dir,
               max_concurrent_requests=32, progress=False, verbose=False)
llm.generate([{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(n)])
