"""The Gradio app end to end over HTTP with gradio_client, on tiny random models: every endpoint, streaming,
bad inputs (each answered by a clear error, the next request still served), 16 clients at once, the
startup error for a missing model, and the built Space starting from its own folder."""

import gc
import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import gradio
import gradio as gr
import pytest
from gradio_client import Client

from llm_memory.demo import app as demo_app
from llm_memory.demo.handlers import user_errors
from llm_memory.hub import space
from llm_memory.serving.decoder_process import DecoderProcess
from llm_memory.serving.models import load_models
from llm_memory.serving.settings import ServeSettings
from llm_memory.tasks.checks import InputError

# Every test serves the app, or starts it in another process: slow.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

ROOT = Path(__file__).resolve().parent.parent


def load_app_module():
    """The repository's app.py as a module, wherever pytest was started from."""
    spec = importlib.util.spec_from_file_location("llm_memory_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Gradio looks up where each component class is defined
    spec.loader.exec_module(module)
    return module


def wait_for_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> float:
    """Seconds until ``url`` answers 200; fails if ``process`` exits first or time runs out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"The app exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoints):
    return tiny_checkpoints


@pytest.fixture(scope="module")
def server(checkpoints, free_port):
    models = load_models(checkpoints["model"], checkpoints["classifier"])
    demo = demo_app.build_demo(models, ROOT / "checkpoints" / "memory")
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield f"http://127.0.0.1:{port}/", models
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def test_the_page_and_its_config_name_the_models_without_server_paths(server, checkpoints):
    url, _ = server
    for path in ("", "config"):
        with urllib.request.urlopen(url + path, timeout=10) as response:
            page = response.read().decode()
        assert "model: `model`" in page or path == ""  # the folder's own name, in the header's markdown
        for folder in checkpoints.values():
            assert str(Path(folder).parent) not in page, path


def test_any_failure_reaches_the_user_as_a_message():
    with pytest.raises(gr.Error) as error, user_errors():
        raise RuntimeError("The decoding process stopped (exit code -9); the next request starts a new one.")
    assert "The decoding process stopped (exit code -9)" in error.value.message
    assert error.value.title == "The request failed"
    with pytest.raises(gr.Error) as error, user_errors():
        raise InputError("top_k must be an integer from 0 to 200, got -5.")
    assert error.value.title == "Invalid input"


def test_the_app_bounds_its_queue_and_uploads_and_shows_errors(server, monkeypatch):
    app = load_app_module()
    _, models = server
    launched = {}
    monkeypatch.setattr(demo_app, "load_models", lambda *args, **kwargs: models)
    monkeypatch.setattr(gr.Blocks, "launch", lambda demo, **kwargs: launched.update(demo=demo, **kwargs))
    app.main(["--port", "7999"])
    assert launched["demo"]._queue.max_size == ServeSettings().queue_size == 64
    assert launched["max_file_size"] == "1mb" and launched["show_error"] is True
    assert launched["state_session_capacity"] == demo_app.SESSION_CAPACITY == 500


def test_each_endpoint_takes_text_first_and_defaults_for_the_rest(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/generate", "/classify", "/summarize", "/attention"} <= set(endpoints)
    for name in ("/generate", "/classify", "/summarize", "/attention"):
        parameters = endpoints[name]["parameters"]
        assert parameters[0]["parameter_name"] in {"prompt", "text"}
        assert all(parameter["parameter_has_default"] for parameter in parameters), name


def test_generate_streams_tokens_and_reports_speed(client):
    job = client.submit("The movie was", max_new_tokens=20, strategy="greedy", api_name="/generate")
    outputs = list(job)
    assert len(outputs) >= 2  # streamed, not one final answer
    text, speed = outputs[-1]
    assert outputs[0][0] != text and text.startswith(outputs[0][0])
    assert re.search(r"\d+ tokens in [\d.]+ s · \*\*[\d.]+ tokens/s\*\* · done", speed)


def test_each_sampled_request_shows_its_fresh_seed_which_makes_the_text_again(client):
    seeds, texts = [], []
    for _ in range(2):
        text, speed = client.predict(
            "The movie was", max_new_tokens=12, temperature=2.0, api_name="/generate"
        )
        seeds.append(int(re.search(r"seed (\d+)", speed).group(1)))
        texts.append(text)
    assert seeds[0] != seeds[1]
    again, speed = client.predict(
        "The movie was", max_new_tokens=12, temperature=2.0, seed=seeds[0], api_name="/generate"
    )
    assert again == texts[0] and f"seed {seeds[0]}" in speed


def test_beam_search_answers_once(client):
    text, speed = client.predict("The movie was", strategy="beam", max_new_tokens=8, api_name="/generate")
    assert isinstance(text, str) and "done" in speed


def test_cancelled_generation_leaves_the_app_serving(client):
    job = client.submit("The movie was", max_new_tokens=60, strategy="greedy", api_name="/generate")
    deadline = time.time() + 30
    while not job.outputs() and not job.done() and time.time() < deadline:
        time.sleep(0.01)
    job.cancel()
    text, speed = client.predict("The movie was", max_new_tokens=3, api_name="/generate")
    assert "done" in speed


def test_classify(client):
    label, pieces = client.predict("A wonderful film 😀", api_name="/classify")
    assert {item["label"] for item in label["confidences"]} == {"neg", "pos"}
    assert label["label"] in {"neg", "pos"}
    assert "".join(item["token"] for item in pieces) == "A wonderful film 😀"
    assert all(-1.0 <= item["class_or_confidence"] <= 1.0 for item in pieces)


def test_summarize_marks_the_picked_sentences(client):
    document = "The first point. The second point. 第三点。The fourth point."
    summary, marked = client.predict(document, num_sentences=2, api_name="/summarize")
    picked = [item["token"] for item in marked if item["class_or_confidence"] == "summary"]
    assert len(picked) == 2
    assert "".join(item["token"] for item in marked) == document
    assert all(sentence in summary for sentence in picked)


def test_attention_on_chinese_shows_whole_characters(client):
    highlights, heatmap, grid, info = client.predict("我喜欢编程", layer=1, head=3, api_name="/attention")
    assert "".join(item["token"] for item in highlights) == "我喜欢编程"
    assert all("\ufffd" not in item["token"] for item in highlights)
    assert heatmap["type"] == "plotly" and grid["type"] == "plotly"
    assert "layer 1, head 3" in info


def test_control_characters_are_stripped(client):
    label, pieces = client.predict("\x00\x07great\x1b film", api_name="/classify")
    assert "".join(item["token"] for item in pieces) == "great film"


@pytest.mark.parametrize("text", ["👩\u200d💻 🇫🇷 🎉", "我喜欢编程。编程让我快乐。"])
def test_emoji_and_chinese_in_every_endpoint(client, text):
    assert "done" in client.predict(text, max_new_tokens=4, api_name="/generate")[1]
    assert "".join(item["token"] for item in client.predict(text, api_name="/classify")[1]) == text
    assert client.predict(text, num_sentences=1, api_name="/summarize")[0]
    assert "".join(item["token"] for item in client.predict(text, api_name="/attention")[0]) == text


BAD_REQUESTS = [
    ("/generate", dict(prompt=""), "The prompt is empty"),
    ("/generate", dict(prompt="x" * 1_000_000), "1,000,000 characters long; the limit is 20,000"),
    ("/generate", dict(prompt="\x00\x01\x02"), "The prompt is empty"),
    ("/generate", dict(max_new_tokens=0), "max_new_tokens must be an integer from 1 to 63"),
    ("/generate", dict(max_new_tokens=10_000), "max_new_tokens must be an integer from 1 to 63"),
    ("/generate", dict(temperature=0), "temperature must be a number from 0.1 to 2.0"),
    ("/generate", dict(temperature=9), "temperature must be a number from 0.1 to 2.0"),
    ("/generate", dict(top_k=-5), "top_k must be an integer from 0 to 200"),
    ("/generate", dict(top_p=0), "top_p must be a number from 0.05 to 1.0"),
    ("/generate", dict(repetition_penalty=5), "repetition_penalty must be a number from 1.0 to 2.0"),
    ("/generate", dict(num_beams=99), "num_beams must be an integer from 2 to 8"),
    ("/generate", dict(no_repeat_ngram_size=20), "no_repeat_ngram_size must be an integer from 0 to 8"),
    ("/generate", dict(seed=-7), "seed must be an integer from -1 to"),
    ("/generate", dict(strategy="nucleus"), "strategy must be one of greedy, sample, beam; got 'nucleus'"),
    ("/generate", dict(seed=1.5), "seed must be an integer from -1 to"),
    ("/generate", dict(prompt=123), "The prompt must be a string, got int"),
    ("/classify", dict(text=""), "The text is empty"),
    ("/classify", dict(text="y" * 1_000_000), "the limit is 20,000"),
    ("/summarize", dict(text=" \n "), "The text is empty"),
    ("/summarize", dict(num_sentences=0), "num_sentences must be an integer from 1 to 10"),
    ("/summarize", dict(num_sentences=11), "num_sentences must be an integer from 1 to 10"),
    ("/summarize", dict(method="summarizer"), "not in the list of choices"),  # none is loaded
    ("/attention", dict(text=""), "The text is empty"),
    ("/attention", dict(layer=2), "layer must be an integer from 0 to 1"),
    ("/attention", dict(head=-1), "head must be an integer from 0 to 3"),
    ("/attention", dict(token_index=50), "token_index must be an integer from -"),
]
GOOD_REQUESTS = {
    "/generate": dict(prompt="Hello", max_new_tokens=3),
    "/classify": dict(text="Hello"),
    "/summarize": dict(text="One. Two.", num_sentences=1),
    "/attention": dict(text="Hello"),
}


@pytest.mark.parametrize(("endpoint", "bad", "message"), BAD_REQUESTS)
def test_bad_input_is_a_clear_error_and_the_next_request_succeeds(client, endpoint, bad, message):
    text_name = "prompt" if endpoint == "/generate" else "text"
    request = {text_name: "我喜欢编程", **bad}
    with pytest.raises(Exception, match=re.escape(message)):
        client.predict(**request, api_name=endpoint)
    assert client.predict(**GOOD_REQUESTS[endpoint], api_name=endpoint)


def test_sixteen_clients_at_once_are_all_answered(server):
    url, models = server
    answers, errors = {}, []
    barrier = threading.Barrier(16)

    def one_user(index: int):
        try:
            client = Client(url, verbose=False)
            barrier.wait(timeout=60)
            answers[index] = client.predict(
                f"User {index} says", max_new_tokens=8, seed=index, api_name="/generate"
            )
        except Exception as err:  # noqa: BLE001  (reported below with the user's index)
            errors.append((index, err))

    threads = [threading.Thread(target=one_user, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors
    assert len(answers) == 16 and all("done" in speed for _, speed in answers.values())
    # The queue let them run together, so the batcher saw more than one at a time.
    assert max(models.batcher.batch_sizes) > 1


def test_missing_model_folder_stops_the_app_with_a_clear_error(checkpoints, tmp_path):
    missing = tmp_path / "memory-lm"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "app.py"),
            "--model",
            str(missing),
            "--classifier",
            checkpoints["classifier"],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"The model folder {str(missing)!r} does not exist" in result.stderr
    assert (
        "Pass --model with a local model folder or a Hub model id, or set LLM_MEMORY_MODEL" in result.stderr
    )


def test_main_decodes_in_a_child_and_freezes_what_it_loaded_before_serving(checkpoints, monkeypatch):
    # A full garbage collection walks every object tracked, and serves no request meanwhile: with
    # torch, transformers and Gradio loaded, ~0.5 M of them. What main() loaded must be out of its reach.
    app = load_app_module()
    launched, loaded = {}, []

    def recording_load_models(*args, **kwargs):
        loaded.append(load_models(*args, **kwargs))
        return loaded[-1]

    def launch(demo, **kwargs):
        launched["frozen"] = gc.get_freeze_count()
        launched["collectable"] = len(gc.get_objects())  # what a collection still walks

    monkeypatch.setattr(demo_app, "load_models", recording_load_models)
    monkeypatch.setattr(gradio.Blocks, "launch", launch)
    gc.unfreeze()
    try:
        app.main(["--model", checkpoints["model"], "--classifier", checkpoints["classifier"]])
        assert launched["frozen"] > 100_000
        assert launched["collectable"] < 1_000
        assert isinstance(loaded[0].batcher, DecoderProcess)
    finally:
        gc.unfreeze()
        for models in loaded:
            models.batcher.close()


def test_space_folder_matches_the_installed_gradio_and_the_pins():
    readme = (ROOT / "spaces" / "README.md").read_text(encoding="utf-8")
    front_matter = readme.split("---")[1]
    assert f"sdk_version: {gradio.__version__}" in front_matter
    for field in ("sdk: gradio", "app_file: app.py", "python_version:", "models:"):
        assert field in front_matter
    # Every tab and endpoint of the app is listed, and the local start names the pinned Gradio.
    app_source = "".join(
        path.read_text(encoding="utf-8") for path in sorted((ROOT / "llm_memory" / "demo").glob("*.py"))
    )
    for tab in re.findall(r'gr\.Tab\("([^"]+)"', app_source):
        assert f"**{tab}**" in readme, tab
    for endpoint in re.findall(r'api_name="([a-z]+)"', app_source):
        assert f"`/{endpoint}`" in readme, endpoint
    assert f"pip install -r requirements.txt gradio=={gradio.__version__}" in readme
    pins = dict(
        line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line
    )
    for line in (ROOT / "spaces" / "requirements.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            assert pins[name] == version, f"{name} is pinned differently in spaces/requirements.txt"


def test_built_space_starts_from_its_own_folder(checkpoints, tmp_path, free_port):
    out = tmp_path / "space"
    template = ["--template", str(ROOT / "spaces")]
    space.main(
        [
            "--repo_id",
            "someone/llm-memory",
            "--dry-run",
            "--out",
            str(out),
            "--model",
            checkpoints["model"],
            "--classifier",
            checkpoints["classifier"],
            *template,
        ]
    )
    for name in ("README.md", "requirements.txt", "app.py", "llm_memory/demo/app.py"):
        assert (out / name).is_file(), name
    assert (out / "llm_memory" / "training" / "presets" / "tiny.json").is_file()
    for folder in ("checkpoints/memory-lm", "checkpoints/sentiment"):
        assert (out / folder / "config.json").is_file() and (out / folder / "tokenizer.json").is_file()
    with pytest.raises(SystemExit):  # a second build must not silently replace the first
        space.main(["--repo_id", "someone/llm-memory", "--dry-run", "--out", str(out), *template])

    # Decoded by the Space's child process, which runs the package copied into the folder.
    check_space_serves(sys.executable, out, free_port(), timeout=120)


def check_space_serves(python: str, folder: Path, port: int, timeout: float) -> None:
    """Starts the Space folder's app.py with ``python`` and asks it to classify and generate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_MEMORY_") and k != "PYTHONPATH"}
    env.update(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    process = subprocess.Popen(
        [python, "app.py"], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=timeout, process=process)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        label, _ = client.predict("Hello", api_name="/classify")
        assert label["label"] in {"neg", "pos"}
        text, speed = client.predict("The movie was", api_name="/generate")
        assert isinstance(text, str) and speed.endswith("done")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_built_space_starts_with_only_its_own_requirements(checkpoints, tmp_path, free_port):
    """The Space as its builder runs it: a fresh virtualenv with nothing but the folder's
    requirements.txt and the Gradio that the README's sdk_version names, then the folder's app.py.
    The PyTorch CPU index line is left out here (this machine reaches the package registry only; the
    same pinned CPU torch comes from there)."""
    out = tmp_path / "space"
    space.main(
        [
            *("--repo_id", "someone/llm-memory", "--dry-run", "--out", str(out)),
            *("--model", checkpoints["model"], "--classifier", checkpoints["classifier"]),
            *("--template", str(ROOT / "spaces")),
        ]
    )
    (sdk_version,) = re.findall(r"^sdk_version: *(\S+)$", (out / "README.md").read_text(), re.MULTILINE)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "".join(
            line + "\n"
            for line in (out / "requirements.txt").read_text().splitlines()
            if not line.startswith("--extra-index-url")
        )
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "-r", str(requirements), f"gradio=={sdk_version}"],
        check=True,
        timeout=600,
    )
    check_space_serves(python, out, free_port(), timeout=180)


def test_space_upload_creates_a_gradio_space_and_links_hub_models(checkpoints, tmp_path, monkeypatch):
    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/spaces/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

        def add_space_variable(self, repo_id, key, value):
            calls.append(("variable", repo_id, key, value))

    monkeypatch.setattr("huggingface_hub.HfApi", RecordingApi)
    build = space.build_space(
        tmp_path / "space", "someone/memory-lm", checkpoints["classifier"], template_dir=ROOT / "spaces"
    )
    assert not (tmp_path / "space" / "checkpoints" / "memory-lm").exists()
    assert (tmp_path / "space" / "checkpoints" / "sentiment" / "config.json").is_file()
    assert "models:\n  - someone/memory-lm\n" in (tmp_path / "space" / "README.md").read_text()

    url = space.upload_space(build, "someone/llm-memory", token="secret")
    assert url == "https://huggingface.co/spaces/someone/llm-memory"
    create = next(call for call in calls if call[0] == "create_repo")
    assert create[2]["repo_type"] == "space" and create[2]["space_sdk"] == "gradio"
    upload = next(call for call in calls if call[0] == "upload_folder")
    assert upload[1]["repo_type"] == "space" and upload[1]["folder_path"] == tmp_path / "space"
    assert ("variable", "someone/llm-memory", "LLM_MEMORY_MODEL", "someone/memory-lm") in calls
