"""Prompt expansion: the SoraWorld expander, the no-op one and an OpenAI-compatible endpoint (a
loopback stub server in the test)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from soraflow.errors import InputError, SoraflowError
from soraflow.prompts import (
    Expansion,
    ExpansionWarning,
    NoExpander,
    OpenAIExpander,
    WorldExpander,
    expand,
    few_shot_examples,
    get_expander,
)
from soraflow.world.parser import parse
from soraflow.world.spec import complete

# ---------------------------------------------------------------- world expander


def test_world_expansion_is_reproducible_by_seed():
    a = expand("a red ball bouncing on grass", seed=5)
    b = expand("a red ball bouncing on grass", seed=5)
    assert a.caption == b.caption and a.spec == b.spec and a.seed == 5
    captions = {expand("a red ball bouncing on grass", seed=s).caption for s in range(12)}
    assert len(captions) >= 10


def test_world_expansion_keeps_what_the_prompt_states_and_fills_the_rest():
    prompt = "two small blue cubes sliding left and a red ball bouncing in place on snow, camera pans right"
    for seed in range(25):
        e = expand(prompt, seed=seed)
        assert isinstance(e, Expansion) and e.expanded and e.expander == "world"
        assert e.spec.is_complete
        boxes, ball = e.spec.objects[:2], e.spec.objects[2]
        assert len(e.spec.objects) == 3
        for box in boxes:
            assert (box.shape, box.size, box.color, box.motion, box.direction) == ("box", "small", "blue", "move", "left")
        assert (ball.shape, ball.color, ball.motion, ball.direction) == ("ball", "red", "bounce", "none")
        assert e.spec.background.name == "snow" and e.spec.camera == "pan-right"
        # the caption is the training style: it parses back to exactly the completed spec
        assert complete(parse(e.caption), 0, closed_world=True) == e.spec
        assert len(e.caption) > 2 * len(prompt) or len(e.caption.split(".")) > 3


def test_world_expansion_fills_unstated_attributes_with_varied_choices():
    specs = [expand("a star", seed=s).spec for s in range(40)]
    assert len({s.objects[0].color for s in specs}) >= 5
    assert len({s.background.kind for s in specs}) == 3
    assert {s.objects[0].motion for s in specs} == {"still", "move", "bounce"}


def test_prompt_outside_the_grammar_passes_through_with_a_warning():
    with pytest.warns(ExpansionWarning, match="no object understood.*passing it to the model as written"):
        e = expand("a cat sleeping on a sofa", seed=1)
    assert e.caption == "a cat sleeping on a sofa" and not e.expanded and e.spec is None
    with pytest.warns(ExpansionWarning, match="at most 4"):
        assert expand("seven balls", seed=1).caption == "seven balls"


def test_unknown_words_in_an_expanded_prompt_warn():
    from soraflow.world.parser import VocabularyWarning

    with pytest.warns(VocabularyWarning, match="shiny"):
        e = expand("a shiny red ball", seed=0)
    assert e.spec.objects[0].color == "red"


@pytest.mark.parametrize("kind", ["world", "none"])
@pytest.mark.parametrize("prompt", ["", "  "])
def test_empty_prompt_is_an_input_error(kind, prompt):
    with pytest.raises(InputError, match="empty prompt"):
        get_expander(kind).expand(prompt, seed=0)


def test_no_expander_passes_the_prompt_as_written():
    e = get_expander("none").expand("  a photo of a cat  ", seed=3)
    assert e.caption == "a photo of a cat" and not e.expanded and e.seed == 3


def test_get_expander_kinds_and_bad_arguments():
    assert isinstance(get_expander("world"), WorldExpander)
    assert isinstance(get_expander("none"), NoExpander)
    assert isinstance(get_expander("off"), NoExpander)
    assert isinstance(get_expander("openai", base_url="http://127.0.0.1:1/v1", model="m"), OpenAIExpander)
    with pytest.raises(InputError, match="unknown prompt expander 'gpt'.*world, none, openai"):
        get_expander("gpt")
    with pytest.raises(InputError, match="takes no options"):
        get_expander("world", model="x")
    with pytest.raises(InputError, match="must start with http"):
        get_expander("openai", base_url="localhost:8080")


def test_few_shot_examples_are_short_prompts_and_long_captions():
    examples = few_shot_examples(3)
    assert len(examples) == 3
    for short, long in examples:
        assert len(long) > len(short)
        assert parse(short).objects and parse(long).objects
    assert few_shot_examples(3) == examples


# ---------------------------------------------------------------- OpenAI-compatible endpoint


class _Stub(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions like an OpenAI-compatible server; records the request."""

    requests: list = []
    mode = "ok"

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, dict(self.headers), body))
        if self.mode == "slow":
            time.sleep(1.0)
        if self.mode == "error":
            self._send(500, b'{"error": "model not loaded"}')
        elif self.mode == "garbage":
            self._send(200, b"<html>not json</html>")
        elif self.mode == "empty":
            self._send(200, json.dumps({"choices": []}).encode())
        else:
            user = body["messages"][-1]["content"]
            answer = {"choices": [{"message": {"role": "assistant",
                                               "content": f"  A detailed caption of {user}.\n"}}]}
            self._send(200, json.dumps(answer).encode())

    def _send(self, code, data):
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def stub():
    _Stub.requests, _Stub.mode = [], "ok"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Stub
    server.shutdown()
    server.server_close()


def test_openai_expander_posts_chat_completions(stub):
    base, handler = stub
    e = get_expander("openai", base_url=base + "/", model="qwen-7b", api_key="k123", temperature=0.2).expand(
        "a red ball", seed=9)
    assert e.caption == "A detailed caption of a red ball."
    assert e.expanded and e.expander == "openai:qwen-7b" and e.seed == 9
    path, headers, body = handler.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer k123"
    assert body["model"] == "qwen-7b" and body["seed"] == 9 and body["temperature"] == 0.2
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "system" and roles[-1] == "user" and roles.count("assistant") == 3
    assert "caption" in body["messages"][0]["content"]
    assert body["messages"][-1]["content"] == "a red ball"


def test_openai_expander_reads_its_settings_from_the_environment(stub, monkeypatch):
    base, handler = stub
    monkeypatch.setenv("SORAFLOW_EXPANDER_URL", base)
    monkeypatch.setenv("SORAFLOW_EXPANDER_MODEL", "llama")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert get_expander("openai").expand("a box").caption == "A detailed caption of a box."
    path, headers, body = handler.requests[0]
    assert body["model"] == "llama" and "seed" not in body and "Authorization" not in headers


@pytest.mark.parametrize("mode,match", [("error", "HTTP 500.*model not loaded"), ("garbage", "did not answer with JSON"),
                                        ("empty", "without choices")])
def test_openai_expander_bad_answers_are_clear_errors(stub, mode, match):
    base, handler = stub
    handler.mode = mode
    with pytest.raises(SoraflowError, match=match) as info:
        OpenAIExpander(base, "m").expand("a ball")
    assert base in str(info.value)


def test_openai_expander_timeout_names_the_url(stub):
    base, handler = stub
    handler.mode = "slow"
    with pytest.raises(SoraflowError, match="cannot reach the prompt expander at " + base):
        OpenAIExpander(base, "m", timeout=0.2).expand("a ball")


def test_openai_expander_connection_refused_names_the_url():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(SoraflowError, match=f"cannot reach the prompt expander at {url}/chat/completions"):
        OpenAIExpander(url, "m", timeout=2).expand("a ball")


def test_docs_examples_run():
    """Every ```python block of docs/prompts.md runs as written (its asserts included)."""
    import re
    import warnings
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "prompts.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) >= 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, str(doc), "exec"), {})
