"""Prompt expansion: rewrite a short user prompt into the long caption style the model was trained on.

Sora's report: the model trains on long, detailed (re-captioned) descriptions, and short user
prompts are expanded into that style before generation (GPT there). Three expanders share one
interface, ``expander.expand(prompt, seed=None) -> Expansion``; :func:`get_expander` builds them:

* ``"world"`` (default): parse the prompt with the SoraWorld grammar, fill what it leaves unstated
  with plausible choices from the training distribution (``spec.complete(..., closed_world=False)``)
  and write the long caption. Reproducible by seed. A prompt outside the grammar (no known object,
  too many objects) passes through unchanged with a :class:`ExpansionWarning`, so a model trained on
  real footage still gets its prompt.
* ``"openai"``: any OpenAI-compatible chat endpoint (a local llama.cpp, vLLM or Ollama server):
  ``POST {base_url}/chat/completions`` with a system prompt describing the caption style and
  few-shot examples drawn from SoraWorld. Standard library only (urllib).
* ``"none"``: the prompt as written (``--no-expand``).
"""

from __future__ import annotations

import json
import os
import random
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Protocol

from .errors import InputError, SoraflowError


class ExpansionWarning(UserWarning):
    """The expander could not expand a prompt and passed it through as written."""


@dataclass
class Expansion:
    prompt: str  # as the user wrote it
    caption: str  # what the text encoder sees
    spec: object = None  # the completed SoraWorld SceneSpec (world expander), else None
    seed: int | None = None  # the seed the expansion used (None: not seeded)
    expander: str = "none"  # which expander wrote the caption ("world", "none", "openai:<model>")
    expanded: bool = False  # False when the prompt passed through unchanged


class Expander(Protocol):
    name: str

    def expand(self, prompt: str, seed: int | None = None) -> Expansion: ...


def _check(prompt: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("empty prompt: describe the video, e.g. 'a red ball bouncing on grass'")
    return prompt.strip()


def _seed(seed: int | None) -> int:
    return random.SystemRandom().randrange(2**31) if seed is None else int(seed)


class NoExpander:
    """The prompt as written (``--no-expand``)."""

    name = "none"

    def expand(self, prompt: str, seed: int | None = None) -> Expansion:
        prompt = _check(prompt)
        return Expansion(prompt, prompt, None, seed, self.name, False)


class WorldExpander:
    """Parse with the SoraWorld grammar, complete the spec at random, write the long caption."""

    name = "world"

    def expand(self, prompt: str, seed: int | None = None) -> Expansion:
        from .world.captions import long_caption
        from .world.parser import OutOfGrammarError, VocabularyWarning, parse_prompt
        from .world.spec import complete

        prompt = _check(prompt)
        seed = _seed(seed)
        try:
            parsed = parse_prompt(prompt)
        except OutOfGrammarError as err:
            warnings.warn(f"prompt not expanded ({err}); passing it to the model as written",
                          ExpansionWarning, stacklevel=2)
            return Expansion(prompt, prompt, None, seed, self.name, False)
        if parsed.message:
            warnings.warn(parsed.message, VocabularyWarning, stacklevel=2)
        # one rng for completion and wording: the same seed gives the same scene and the same words
        rng = random.Random(seed)
        spec = complete(parsed.spec, rng, closed_world=False)
        return Expansion(prompt, long_caption(spec, rng), spec, seed, self.name, True)


SYSTEM_PROMPT = """You rewrite short video prompts into the detailed captions a text-to-video model was \
trained on. Write one paragraph of plain sentences, no lists, no quotes, no preamble. Describe every \
object (how many, size, colour, shape), what each one does (its motion, direction and speed, spinning, \
growing or shrinking, trails it leaves, colour changes on impact), the background, the camera (static, \
pans, zooms), anything in the foreground, and the shots if the video cuts. Keep everything the user \
asked for exactly; add plausible details for what the user left open, and never contradict the prompt. \
Answer with the caption only."""


def few_shot_examples(n: int = 3, seed: int = 0) -> list[tuple[str, str]]:
    """(short prompt, long caption) pairs in the training caption style, drawn from SoraWorld."""
    from .world.captions import long_caption, short_prompt
    from .world.spec import random_spec

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        spec = random_spec(rng)
        out.append((short_prompt(spec, rng), long_caption(spec, rng)))
    return out


def chat_completion(url: str, body: dict, *, api_key: str | None, timeout: float, what: str, hint: str) -> str:
    """POST ``body`` to an OpenAI-compatible ``/chat/completions`` URL; the first choice's text.

    Every failure is a one-line :class:`SoraflowError` naming ``what`` and the URL (``hint`` says
    what to try when the server cannot be reached). Shared by the prompt expander and the captioner.
    """
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:200].replace("\n", " ")
        raise SoraflowError(f"{what} {url} answered HTTP {err.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise SoraflowError(f"cannot reach the {what} at {url}: {reason} ({hint})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SoraflowError(f"{what} {url} did not answer with JSON") from None
    try:
        return reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise SoraflowError(f"{what} {url} answered without choices[0].message.content: "
                            f"{json.dumps(reply)[:200]}") from None


class OpenAIExpander:
    """An OpenAI-compatible chat endpoint: ``POST {base_url}/chat/completions``.

    Works with OpenAI itself and with local servers that speak the same API (llama.cpp's
    ``llama-server``, vLLM, Ollama at ``http://localhost:11434/v1``). ``api_key`` defaults to the
    ``OPENAI_API_KEY`` environment variable; local servers usually need none. ``base_url`` and
    ``model`` default to ``SORAFLOW_EXPANDER_URL`` / ``SORAFLOW_EXPANDER_MODEL`` (else
    ``http://localhost:8080/v1``, llama-server's default, and ``"default"``), so
    ``get_expander("openai")`` can be configured from the environment.
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, *,
                 api_key: str | None = None, timeout: float = 60.0, temperature: float = 0.7,
                 max_tokens: int = 400, system_prompt: str = SYSTEM_PROMPT,
                 examples: list[tuple[str, str]] | None = None):
        base_url = base_url or os.environ.get("SORAFLOW_EXPANDER_URL", "http://localhost:8080/v1")
        model = model or os.environ.get("SORAFLOW_EXPANDER_MODEL", "default")
        if not base_url.startswith(("http://", "https://")):
            raise InputError(f"expander base URL {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.examples = few_shot_examples() if examples is None else examples
        self.name = f"openai:{model}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def messages(self, prompt: str) -> list[dict]:
        out = [{"role": "system", "content": self.system_prompt}]
        for short, long in self.examples:
            out += [{"role": "user", "content": short}, {"role": "assistant", "content": long}]
        return out + [{"role": "user", "content": prompt}]

    def expand(self, prompt: str, seed: int | None = None) -> Expansion:
        prompt = _check(prompt)
        body = {"model": self.model, "messages": self.messages(prompt), "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        if seed is not None:
            body["seed"] = int(seed)  # honoured by llama.cpp, vLLM and OpenAI; ignored by others
        caption = chat_completion(self.url, body, api_key=self.api_key, timeout=self.timeout, what="prompt expander",
                                  hint="is the server running? or use --no-expand")
        caption = " ".join(str(caption).split())
        if not caption:
            raise SoraflowError(f"prompt expander {self.url} returned an empty caption")
        return Expansion(prompt, caption, None, seed, self.name, True)


EXPANDERS = ("world", "none", "openai")
LOCAL_EXPANDERS = ("world", "none", "no", "off")  # the ones a model folder's config may name: no network


def get_expander(kind: str = "world", **kwargs) -> Expander:
    """Build an expander: ``"world"``, ``"none"`` or ``"openai"`` (kwargs: base_url, model, api_key,
    timeout, temperature, max_tokens, system_prompt, examples)."""
    kind = (kind or "none").lower()
    if kind in ("none", "no", "off", "world") and kwargs:
        raise InputError(f"the {kind!r} prompt expander takes no options, got: {', '.join(kwargs)}")
    if kind in ("none", "no", "off"):
        return NoExpander()
    if kind == "world":
        return WorldExpander()
    if kind == "openai":
        return OpenAIExpander(**kwargs)
    raise InputError(f"unknown prompt expander {kind!r}; choose one of: {', '.join(EXPANDERS)}")


def expand(prompt: str, seed: int | None = None, *, kind: str = "world", **kwargs) -> Expansion:
    """Expand one prompt: ``get_expander(kind, **kwargs).expand(prompt, seed)``."""
    return get_expander(kind, **kwargs).expand(prompt, seed)
