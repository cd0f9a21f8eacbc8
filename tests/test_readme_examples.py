"""The examples of the README and of the serve guide, run against tiny runs made here: the README tour's calculator
commands, the API's requests (the serve guide's curl bodies and the OpenAI client's code, sent to `tinygpt serve`'s
app in-process), and the chat example's questions, which must be ones the chat demo teaches. What is asserted is what the code guarantees (the shape of
an answer, a reference path, what the recipe teaches), never what one trained checkpoint happens to answer."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest
from conftest import DIALOGUE

import tinygpt
import tinygpt.recipes.assistant as chat_demo
from tinygpt.recipes.demo import CALCULATOR_DEFAULTS, train_calculator
from tinygpt.tasks.calculator import OPS, words_to_number
from tinygpt.tokenizers import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SERVE = ROOT / "docs/guides/serve.md"  # the serve guide: the API's examples
INSPECT = ROOT / "docs/guides/inspect.md"  # the inspect guide: the checkpoint the README's tour pictures
CODE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)


def _section(title: str) -> str:
    return README.read_text(encoding="utf-8").split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _blocks_in(text: str, lang: str) -> list[str]:
    return [code for kind, code in CODE.findall(text) if kind == lang]


def _blocks(title: str, lang: str) -> list[str]:
    return _blocks_in(_section(title), lang)


def _serve(lang: str) -> list[str]:
    return _blocks_in(SERVE.read_text(encoding="utf-8"), lang)


def _tour_commands() -> list[tuple[str, str]]:
    """(command, its comment) for every tour command on the demo's run, as written."""
    out = []
    for block in _blocks("A five-minute tour", "bash"):
        for line in block.splitlines():
            command, _, comment = line.strip().partition("  #")
            if command.startswith("tinygpt ") and "runs/calculator" in command:
                out.append((command.strip(), comment.strip()))
    return out


# --- tiny runs of the demos, named as the README and the serve guide name them ---------------------------------

QUICK = {"max_iters": 5, "eval_interval": 5, "eval_iters": 1, "device": "cpu", "dtype": "float32"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """ROOT/runs/calculator: the calculator demo's recipe cut to 5 steps."""
    root = tmp_path_factory.mktemp("readme") / "runs"
    train_calculator(root / "calculator", {**QUICK, "batch_size": 16}, finish_early=False)
    return root


@pytest.fixture(scope="module")
def served_runs(runs) -> Path:
    """Beside the calculator, runs/baby (a character model of a short dialogue) and runs/chat/assistant (the chat
    demo's recipe with a tiny model and a few steps), as the serve guide's API examples name them."""
    tok = CharTokenizer.train(DIALOGUE)
    model_cfg, train_cfg = tinygpt.build_configs({"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
                                                  "learning_rate": 3e-3, **QUICK, "max_iters": 20},
                                                 vocab_size=tok.vocab_size)
    tinygpt.train(model_cfg, train_cfg, tinygpt.TextData.from_text(DIALOGUE, tok, model_cfg.block_size), tok,
                  runs / "baby")
    tiny = {"n_layer": 1, "n_head": 2, "n_embd": 16, "max_iters": 3, "eval_interval": 3, "eval_iters": 1,
            "batch_size": 4, "device": "cpu"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chat_demo, "N_TRAIN", 300)
        mp.setattr(chat_demo, "N_HELDOUT", 4)
        chat_demo.train_demo(runs / "chat", base_overrides=tiny,
                             sft_overrides={k: v for k, v in tiny.items() if not k.startswith("n_")})
    return runs


@pytest.fixture
def in_runs(runs, tmp_path, monkeypatch):
    """A fresh working directory whose runs/ is the tiny runs, as after `tinygpt demo`."""
    (tmp_path / "runs").symlink_to(runs, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the tour ---------------------------------------------------------------------------------------------------

def test_the_tour_describes_the_demos_recipe():
    """Step 1 and step 6 describe the demo's model: 4 layers (so the logit lens has three blocks before the last),
    64 wide, at most 3000 steps; operands 0-99 for plus and minus, 0-12 for times."""
    tour = _section("A five-minute tour")
    assert "4-layer, 64-dimension GPT" in tour and "at most 3000 steps" in tour and "three blocks" in tour
    assert (CALCULATOR_DEFAULTS["n_layer"], CALCULATOR_DEFAULTS["n_embd"], CALCULATOR_DEFAULTS["max_iters"]) == \
        (4, 64, 3000)
    from tinygpt.tasks.calculator import CalculatorConfig
    assert CalculatorConfig().ranges == {"plus": (0, 99), "minus": (0, 99), "times": (0, 12)}


def test_the_tours_arithmetic_is_right():
    """Every `# -> answer` the tour shows is the sum it asks for (what a trained demo should answer)."""
    shown = [(c, comment[3:]) for c, comment in _tour_commands() if comment.startswith("-> ")]
    assert shown
    for command, answer in shown:
        a, op, b = re.fullmatch(r"(.+) (plus|minus|times) (.+)", shlex.split(command)[-1]).groups()
        assert OPS[op](words_to_number(a), words_to_number(b)) == words_to_number(answer), command


def test_the_tours_checkpoint_claims_name_a_checkpoint_that_can_be_made():
    """The numbers of the inspect guide's checkpoint come with the command that trains it: the same command there
    and in the README's tour, and one today's `tinygpt demo` accepts."""
    from tinygpt.cli.args import config_overrides
    from tinygpt.cli.main import build_parser
    from tinygpt.recipes.demo import calculator_configs
    from tinygpt.tasks.calculator import CalculatorTask

    tour = " ".join(_section("A five-minute tour").split())
    assert "What these show depends on the checkpoint" in tour, "the tour's inspect numbers name no checkpoint"
    claim = tour[tour.index("What these show depends on the checkpoint"):tour.index("![attention of the calculator")]
    assert "0.8–0.9" in claim and "`three` and `seven`" in claim  # the earlier checkpoint's numbers ...
    (command,) = re.findall(r"`(tinygpt demo [^`]*)`", claim)  # ... and how to make it
    inspect_md = " ".join(INSPECT.read_text(encoding="utf-8").split())
    assert f"`{command}`" in inspect_md
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.no_early_stop
    model_cfg, train_cfg = calculator_configs(CalculatorTask(), config_overrides(args))
    assert (model_cfg.init_std, train_cfg.max_iters, train_cfg.eval_interval) == (0.02, 4000, 500)


@pytest.mark.slow
def test_the_tours_commands_on_a_demo_run(cli, in_runs):
    """Each tour command on the demo's run does what the tour says: sample answers the question (as the slow
    reference path does), and the inspect views show every layer over the prompt's tokens, or write the file
    named. (`eval` scores all 15,219 problems: too slow to run here, tests/test_cli.py has it.)"""
    commands = _tour_commands()
    assert {shlex.split(c)[1] for c, _ in commands} == {"sample", "eval", "inspect"}
    commands = [(c, comment) for c, comment in commands if shlex.split(c)[1] != "eval"]
    run = tinygpt.Run("runs/calculator")
    task, (model, _, _) = run.task(), run.load("best")
    n_layer = model.config.n_layer
    for command, _ in commands:
        args = shlex.split(command)[1:]
        if "--out" in args and args[args.index("--out") + 1].endswith(".png"):
            pytest.importorskip("matplotlib")
        code, out, err = cli(*args)
        assert code == 0, (command, err)
        question = args[args.index("--prompt") + 1] if "--prompt" in args else None
        tokens = [*question.split(), "="] if question else []
        if args[0] == "sample":
            expected = task.answer_text(task.complete_slow(model, [task.prompt_ids(question)])[0])
            assert out.strip() == expected.strip()
        elif args[1] == "logit-lens":
            rows = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
            assert rows == ["embed", *(f"resid.{i}" for i in range(n_layer))]  # n_layer - 1 blocks, then the last
            assert out.splitlines()[0].split()[2:] == tokens
        elif args[1] == "saliency":
            assert re.findall(r"\[(\S+) [+-][0-9.]+\]", out) == tokens and "most influential:" in out
        if "--out" in args:
            path = Path(args[args.index("--out") + 1])
            head = path.read_bytes()[:200]
            assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<html" in head.lower()


# --- the API ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(served_runs):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from tinygpt.serve.app import create_app

    runs = served_runs
    with TestClient(create_app([runs / "calculator", runs / "baby", runs / "chat/assistant"]),
                    base_url="http://localhost") as c:  # a name the server answers to (testserver is not one)
        yield c


def _curls() -> list[tuple[str, dict, set[str]]]:
    """(path, body, the keys the sample response shows) for each curl of the serve guide."""
    out = []
    for block in _serve("bash"):
        for m in re.finditer(r"curl -sN? http://127\.0\.0\.1:8000(\S+) .*?-d '(\{.*?\})'\n((?:#[^\n]*\n)*)", block,
                             re.DOTALL):
            out.append((m.group(1), json.loads(m.group(2)), set(re.findall(r'"(\w+)":', m.group(3)))))
    return out


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value))
    return set()


@pytest.mark.slow
def test_the_curl_requests_get_what_the_guide_shows(client, runs):
    curls = _curls()
    assert [(path, body["model"]) for path, body, _ in curls] == [
        ("/v1/completions", "calculator"), ("/v1/completions", "baby"), ("/v1/chat/completions", "assistant")]
    for path, body, shown in curls:
        r = client.post(path, json=body)
        assert r.status_code == 200, r.text
        if body.get("stream"):
            events = [e[len("data: "):] for e in r.text.strip().split("\n\n")]
            assert events[-1] == "[DONE]"
            whole = client.post(path, json={**body, "stream": False}).json()  # seeded: the same text, whole
            assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == \
                whole["choices"][0]["text"]
            assert shown <= _keys(json.loads(events[0]))
            continue
        reply = r.json()
        assert shown <= _keys(reply), shown - _keys(reply)  # every field the guide shows is there
        assert reply["model"] == body["model"]
        if body["model"] == "calculator":
            run = tinygpt.Run(runs / "calculator")
            task, (model, _, _) = run.task(), run.load("best")
            expected = task.answer_text(task.complete_slow(model, [task.prompt_ids(body["prompt"])])[0])
            assert reply["choices"][0]["text"] == expected
        else:
            assert reply["tinygpt"]["dropped_messages"] == 0 and reply["tinygpt"]["prompt_ids"]


def _python_examples() -> list[str]:
    return _serve("python")


@pytest.fixture
def openai_here(client, monkeypatch):
    """The guide's `OpenAI(base_url=...)` sends its requests to the app in-process."""
    openai = pytest.importorskip("openai")

    class Here(openai.OpenAI):
        def __init__(self, **kw):
            super().__init__(**kw, http_client=client)

    monkeypatch.setattr(openai, "OpenAI", Here)


@pytest.mark.slow
def test_the_openai_examples_run_against_serve(client, openai_here, runs):
    """The completions example streams max_tokens characters of the character model; the chat example prints the
    first reply and then the second, each what the API answers to the conversation so far."""
    completions, chat = _python_examples()
    scope: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(completions, "serve.md", "exec"), scope)  # noqa: S102 (the guide's own example)
    chars = set(tinygpt.Run(runs / "baby").tokenizer().decode(list(range(tinygpt.Run(runs / "baby").tokenizer()
                                                                         .vocab_size))))
    assert len(out.getvalue()) == 200 and set(out.getvalue()) <= chars  # 200 tokens of one character each
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(chat, "serve.md", "exec"), scope)  # noqa: S102
    first, second = _conversation(chat)

    def reply(messages):
        return client.post("/v1/chat/completions", json={"model": "assistant", "messages": messages}) \
            .json()["choices"][0]["message"]["content"]

    r1 = reply([{"role": "user", "content": first}])
    r2 = reply([{"role": "user", "content": first}, {"role": "assistant", "content": r1},
                {"role": "user", "content": second}])
    assert out.getvalue() == f"{r1}\n{r2}"


# --- the chat example asks what the chat demo learned -------------------------------------------------------------

def _form(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(r"\{op\}", "(?P<op>plus|minus|times)")
    for name in "abc":
        pattern = pattern.replace(rf"\{{{name}\}}", f"(?P<{name}>[a-z ]+?)")
    return re.compile(pattern)


def _conversation(code: str) -> list[str]:
    return re.findall(r'"role": "user", "content": "([^"]*)"', code)


def _demo_replies(turns: list[str]) -> list[str]:
    """What the chat demo's conversations teach in reply to these turns (its trained phrasings, numbers in range);
    an AssertionError names a turn the demo never learned to read."""
    replies, value = [], None
    for i, turn in enumerate(turns):
        forms = chat_demo.FIRST_FORMS if i == 0 else chat_demo.FOLLOW_FORMS
        m = next((m for t in forms.values() if (m := _form(t).fullmatch(turn))), None)
        assert m, f"{turn!r} is not one of the demo's phrasings: {list(forms.values())}"
        op = m["op"]
        if i == 0:
            a, b = words_to_number(m["a"]), words_to_number(m["b"])
            lo, hi = chat_demo.RANGES[op]
            assert lo <= a <= hi and lo <= b <= hi and OPS[op](a, b) >= 0, turn
        else:
            a, b = value, words_to_number(m["c"])
            assert b <= (12 if op == "times" else chat_demo.FOLLOW_MAX) and (op != "times" or a <= 12), turn
        replies.append(chat_demo.fact(op, a, b))
        value = OPS[op](a, b)
    return replies


def test_the_chat_examples_ask_in_the_demos_phrasings():
    """Every conversation of the chat examples (curl and Python) is put as the demo's conversations put theirs,
    and the answers the serve guide expects are the ones those conversations teach."""
    conversations = [c for block in _serve("bash") + _serve("python") if (c := _conversation(block))]
    assert len(conversations) == 2
    section = SERVE.read_text(encoding="utf-8")
    for turns in conversations:
        replies = _demo_replies(turns)
        if len(turns) > 1:  # the guide says what the assistant should answer
            assert all(f'"{r}"' in section for r in replies), replies
