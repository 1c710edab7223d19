"""`s2t-hf serve`: the API contract, bad input, the bounded queue, batching and the page in a browser."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient  # the serve extra, which scripts/setup.sh installs

from s2t_hf.inference.recognizer import S2T
from s2t_hf.serving import DynamicBatcher, QueueFull, ServeSettings, create_app


def wav_bytes(audio: np.ndarray, rate: int = 16_000, subtype: str = "PCM_16", format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, subtype=subtype, format=format)
    return buffer.getvalue()


def upload(client, data: bytes, name: str = "clip.wav", **params):
    return client.post("/v1/recognize", files={"audio": (name, data, "application/octet-stream")}, params=params)


@pytest.fixture(scope="module")
def recogniser(untrained_model):
    return S2T.from_pretrained(untrained_model)


@pytest.fixture(scope="module")
def clips(corpus):
    corpus_dir, _ = corpus
    return sorted((corpus_dir / "clips" / "flite_slt").glob("*.wav"))[:4]


@pytest.fixture(scope="module")
def client(recogniser):
    with TestClient(create_app(recogniser, ServeSettings(max_seconds=5.0, max_upload_mb=1.0))) as client:
        yield client


def test_recognize_answers_what_the_cli_prints(client, clips, untrained_model):
    response = upload(client, clips[0].read_bytes(), name=clips[0].name, top_k=3, allow_out_of_lexicon="true")
    assert response.status_code == 200, response.text
    printed = subprocess.run(
        [sys.executable, "-m", "s2t_hf.cli", "recognize", str(untrained_model), str(clips[0]), "--json", "--top-k", "3", "--allow-out-of-lexicon"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    expected = json.loads(printed)
    answer = response.json()
    assert answer.pop("path") == clips[0].name and expected.pop("path") == str(clips[0])
    assert answer == expected
    assert len(answer["candidates"]) == 3 and response.headers["x-request-id"]


def test_health_lexicon_page_and_openapi(client, recogniser):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["names"] == len(recogniser.lexicon) and health["api_key_required"] is False
    assert health["quantization"] is None
    assert client.get("/v1/lexicon").json() == {"count": len(recogniser.lexicon), "names": [entry.name for entry in recogniser.lexicon]}
    page = client.get("/")
    assert page.status_code == 200 and 'id="top-name"' in page.text and "://" not in page.text  # nothing from a CDN
    assert "/v1/recognize" in client.get("/openapi.json").json()["paths"]
    assert client.get("/x", headers={"x-request-id": "abc123"}).headers["x-request-id"] == "abc123"


def noisy(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(16_000 * seconds))).astype(np.float32)


def nan_clip() -> np.ndarray:
    clip = noisy(1.0)
    clip[100] = np.nan
    return clip


@pytest.mark.parametrize("data, status, reason", [
    (b"", 422, "empty"),
    (b"this is a text file, not a recording\n" * 20, 422, "unreadable"),
    (wav_bytes(noisy(1.0))[:30], 422, "unreadable"),  # a WAV cut inside its header
    (wav_bytes(np.zeros(0, np.float32)), 422, "empty"),
    (wav_bytes(np.zeros(16_000, np.float32)), 422, "silent"),
    (wav_bytes(noisy(0.05)), 422, "too-short"),
    (wav_bytes(noisy(6.0)), 422, "too-long"),  # the client fixture allows 5 s
    (wav_bytes(nan_clip(), subtype="FLOAT"), 422, "non-finite"),
    (wav_bytes(noisy(33.0, 1), rate=16_000, subtype="FLOAT"), 413, "too-large"),  # over the 1 MB limit
])
def test_each_bad_upload_is_a_named_4xx(client, data, status, reason):
    response = upload(client, data, name="bad.wav")
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason


def test_bad_requests_are_4xx_with_a_reason(client, clips):
    assert client.post("/v1/recognize").status_code == 422
    missing_field = client.post("/v1/recognize", files={"recording": ("x.wav", clips[0].read_bytes())})
    assert missing_field.status_code == 422 and "audio" in missing_field.json()["error"]
    assert upload(client, clips[0].read_bytes(), top_k=0).status_code == 422
    assert upload(client, clips[0].read_bytes(), top_k="many").json()["reason"] == "bad-request"


def test_any_rate_stereo_and_formats(client, clips):
    audio, rate = soundfile.read(clips[1], dtype="float32")
    mono = upload(client, clips[1].read_bytes()).json()
    stereo_flac = wav_bytes(np.stack([audio, audio], axis=1), rate=rate, format="FLAC")
    assert upload(client, stereo_flac, name="x.flac").json()["candidates"][0]["name"] == mono["candidates"][0]["name"]
    import soxr

    upsampled = soxr.resample(audio, rate, 44_100).astype(np.float32)
    for data, name in [(wav_bytes(upsampled, 44_100), "x44k.wav"), (wav_bytes(upsampled, 44_100, subtype=None, format="OGG"), "x.ogg")]:
        response = upload(client, data, name=name)
        assert response.status_code == 200, response.text


def test_api_key(recogniser, clips):
    with TestClient(create_app(recogniser, ServeSettings(api_key="s3cret"), warm_up=False)) as client:
        assert client.get("/healthz").json()["api_key_required"] is True
        assert upload(client, clips[0].read_bytes()).status_code == 401
        assert client.post("/v1/recognize", files={"audio": ("x.wav", clips[0].read_bytes())}, headers={"x-api-key": "wrong"}).status_code == 401
        assert client.post("/v1/recognize", files={"audio": ("x.wav", clips[0].read_bytes())}, headers={"x-api-key": "s3cret"}).status_code == 200
        assert client.get("/v1/lexicon", headers={"authorization": "Bearer s3cret"}).status_code == 200


class Gate:
    """Holds the batcher's worker inside its first batch until released, so clips pile up."""

    def __init__(self, recogniser: S2T):
        self.recogniser, self.entered, self.release = recogniser, threading.Event(), threading.Event()
        self.original = recogniser.score_batch

    def __enter__(self):
        def held(clips, top_k=5):
            self.entered.set()
            self.release.wait(60)
            return self.original(clips, top_k)

        self.recogniser.score_batch = held
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.recogniser.score_batch = self.original


def test_a_full_queue_is_503_with_retry_after(recogniser, clips):
    app = create_app(recogniser, ServeSettings(max_batch=1, max_queue=2, retry_after_s=3), warm_up=False)
    with TestClient(app) as client, Gate(recogniser) as gate:
        batcher: DynamicBatcher = app.state.batcher
        clip = soundfile.read(clips[0], dtype="float32")[0]
        held = batcher.submit(clip)  # the worker takes it and blocks
        assert gate.entered.wait(30)
        waiting = [batcher.submit(clip), batcher.submit(clip)]  # the queue is now full
        with pytest.raises(QueueFull):
            batcher.submit(clip)
        response = upload(client, clips[0].read_bytes())
        assert response.status_code == 503 and response.headers["retry-after"] == "3" and response.json()["reason"] == "busy"
        gate.release.set()
        assert all(future.result(60).candidates for future in [held, *waiting])
        assert upload(client, clips[0].read_bytes()).status_code == 200  # and it recovers


def test_one_batch_answers_each_caller_with_its_own_result(recogniser, clips):
    """Clips of different lengths gathered into one batch get what each gets alone."""
    audio = [soundfile.read(path, dtype="float32")[0] for path in clips]
    audio.append(np.concatenate([audio[0], np.zeros(8_000, np.float32), audio[1]]))  # a longer clip in the same batch
    alone = [recogniser.recognize((clip, 16_000), top_k=3) for clip in audio]
    batcher = DynamicBatcher(recogniser, max_batch=16, max_wait_ms=0)
    batcher.start()
    try:
        with Gate(recogniser) as gate:
            first = batcher.submit(noisy(1.0))
            assert gate.entered.wait(30)
            futures = [batcher.submit(clip, top_k=3) for clip in audio]  # all queued while the worker is held
        answers = [future.result(60) for future in futures]
        first.result(60)
    finally:
        batcher.stop()
    assert batcher.stats.largest_batch == len(audio)
    for mine, reference in zip(answers, alone, strict=True):
        assert mine.transcript == reference.transcript
        assert [c.name for c in mine.candidates] == [c.name for c in reference.candidates]
        np.testing.assert_allclose([c.score for c in mine.candidates], [c.score for c in reference.candidates], atol=1e-3)


def test_two_workers_score_two_batches_at_once_and_each_caller_gets_its_own_answer(recogniser, clips):
    """`workers=2`: two batches are in `score_batch` at the same moment (the first two wait at a
    barrier that only a second, concurrent batch can open; one worker would time out there), and
    every caller still gets the answer its clip gets alone."""
    import itertools
    import threading

    audio = [soundfile.read(path, dtype="float32")[0] for path in clips]
    alone = [recogniser.recognize((clip, 16_000), top_k=3) for clip in audio]
    barrier, calls = threading.Barrier(2, timeout=30), itertools.count()
    original = recogniser.score_batch

    def meeting(batch, top_k=5):
        if next(calls) < 2:
            barrier.wait()  # BrokenBarrierError unless another batch is being scored too
        return original(batch, top_k)

    batcher = DynamicBatcher(recogniser, max_batch=len(audio), max_wait_ms=0, workers=2)
    recogniser.score_batch = meeting
    try:
        futures = [batcher.submit(clip, top_k=3) for clip in audio + audio]  # queued first: the workers share them out
        batcher.start()
        workers = list(batcher._threads)
        answers = [future.result(60) for future in futures]
    finally:
        recogniser.score_batch = original
        batcher.stop()
    assert batcher.stats.batches >= 2 and batcher.stats.clips == 2 * len(audio)
    assert len(workers) == 2 and not any(thread.is_alive() for thread in workers)  # stop() ended both
    for mine, reference in zip(answers, alone + alone, strict=True):
        assert [c.name for c in mine.candidates] == [c.name for c in reference.candidates]
        np.testing.assert_allclose([c.score for c in mine.candidates], [c.score for c in reference.candidates], atol=1e-3)
    with pytest.raises(ValueError, match=r"workers \(0\)"):
        DynamicBatcher(recogniser, workers=0)


def test_a_failing_batch_answers_its_callers_with_the_error_and_the_server_goes_on(recogniser, clips):
    batcher = DynamicBatcher(recogniser, max_batch=4, max_wait_ms=0)
    batcher.start()
    original = recogniser.score_batch
    try:
        recogniser.score_batch = lambda clips, top_k=5: (_ for _ in ()).throw(RuntimeError("out of memory"))
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.submit(noisy(1.0)).result(30)
        recogniser.score_batch = original
        assert batcher.submit(noisy(1.0)).result(30).candidates
    finally:
        recogniser.score_batch = original
        batcher.stop()


# ---- the page, in a real browser -------------------------------------------------------------

def chromium_or_skip():
    """Headless Chromium, or a skip where it is absent (a failure in CI, whose setup installs it)."""
    from s2t_hf.serving.browser import ChromiumMissing, chromium_driver

    try:
        return chromium_driver()
    except ChromiumMissing as missing:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(str(missing), pytrace=False)
        pytest.skip(str(missing))


def test_the_page_in_chromium_shows_the_top_name(recogniser, clips, tmp_path):
    from selenium.webdriver.common.by import By

    from s2t_hf.serving.browser import recognise_in_page
    from s2t_hf.serving.server import BackgroundServer

    expected = recogniser.recognize(str(clips[2]), top_k=5, allow_out_of_lexicon=True)
    driver = chromium_or_skip()
    try:
        with BackgroundServer(create_app(recogniser)) as url:
            assert recognise_in_page(driver, url, clips[2]) == expected.candidates[0].name
            names = [item.find_element(By.CLASS_NAME, "name").text for item in driver.find_elements(By.CSS_SELECTOR, "#candidates li")]
            assert names == [candidate.name for candidate in expected.candidates]
            assert driver.find_element(By.ID, "ambiguous").is_displayed() == (expected.ambiguous or bool(expected.sound_alike_partners))
            assert driver.find_element(By.ID, "error").text == ""
            assert driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()


def test_spot_finds_names_in_a_recording_longer_than_recognize_allows_and_refuses_bad_audio(client, clips, untrained_model):
    long_recording = np.concatenate([soundfile.read(path, dtype="float32")[0] for path in clips[:3]] * 4)  # longer than recognize's 5 s
    response = client.post("/v1/spot", files={"audio": ("dictation.wav", wav_bytes(long_recording), "audio/wav")},
                           params={"threshold": -1e9, "top_k": 2})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["duration"] == pytest.approx(len(long_recording) / 16000, abs=1e-3) and answer["names"]
    assert all(len(name["candidates"]) <= 2 and 0 <= name["start"] < name["end"] for name in answer["names"])
    silent = client.post("/v1/spot", files={"audio": ("silent.wav", wav_bytes(np.zeros(16000, dtype=np.float32)), "audio/wav")})
    assert silent.status_code == 422 and silent.json()["reason"] == "silent"
    assert client.post("/v1/spot", files={"audio": ("a.wav", b"", "audio/wav")}).status_code == 422


def test_spot_with_a_model_that_cannot_spot_says_why(tmp_path, clips):
    from s2t_hf.text.lexicon import build_lexicon

    from .families import speech2text_small

    speech2text = S2T.from_pretrained(speech2text_small(tmp_path / "s2t"), lexicon=build_lexicon(["metformin", "warfarin"]))
    with TestClient(create_app(speech2text, ServeSettings(), warm_up=False)) as client:
        response = client.post("/v1/spot", files={"audio": ("a.wav", clips[0].read_bytes(), "audio/wav")})
    assert response.status_code == 501 and response.json()["reason"] == "cannot-spot"
    assert "spotting needs Whisper" in response.json()["error"]


def test_an_int8_model_serves_and_says_so(untrained_model, clips):
    """`s2t-hf serve --quantize int8`: the service answers with the int8 model and /healthz names it."""
    recogniser = S2T.from_pretrained(untrained_model, quantize="int8")
    with TestClient(create_app(recogniser, ServeSettings())) as client:
        assert client.get("/healthz").json()["quantization"] == "int8"
        response = upload(client, clips[0].read_bytes(), top_k=3)
        assert response.status_code == 200, response.text
        expected = recogniser.recognize(str(clips[0]), top_k=3)
        assert [candidate["name"] for candidate in response.json()["candidates"]] == [candidate.name for candidate in expected.candidates]
