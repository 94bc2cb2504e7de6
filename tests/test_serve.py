"""HTTP service: the real `ast-audio serve` process on 127.0.0.1, called with httpx (and raw sockets where httpx
cannot send what is tested). Results are checked against the library run in this process on the same file."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf

import ast_audio
from ast_audio import Tagger, load_audio, load_model
from conftest import run_cli
from serve_helpers import LABELS, raw_http, run_server, save_tiny_checkpoint, write_pattern

MAX_UPLOAD_MB = 1  # small limits so the tests can cross them with small files
MAX_DURATION_S = 20
UPLOAD_TIMEOUT_S = 3
MIN_HOP_FRACTION = 0.02  # below the default 0.1: the event-loop test needs 451 windows of a 10 s clip
THRESHOLDS = {"Siren": 0.99}  # served with --thresholds: Siren (peak 0.95 on the clip) must never fire
TOL = 1e-5  # scores travel as JSON floats (repr of float32 widened to float64): equal up to rounding


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    from ast_audio.infer.calibrate import write_thresholds

    thresholds = tmp_path_factory.mktemp("thresholds") / "thresholds.csv"
    write_thresholds(THRESHOLDS, thresholds)
    with run_server(checkpoint, "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-duration-s", str(MAX_DURATION_S),
                    "--workers-threads", "2", "--thresholds", str(thresholds),
                    "--upload-timeout-s", str(UPLOAD_TIMEOUT_S),
                    "--min-hop-fraction", str(MIN_HOP_FRACTION)) as running:
        yield running
    assert "Traceback" not in running.output(), running.output()  # no request ended in a server error (500)


@pytest.fixture(scope="module")
def tagger(checkpoint) -> Tagger:
    return Tagger(load_model(checkpoint))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_pattern(tmp_path_factory.mktemp("audio") / "pattern.wav", seconds=6.0)


def post(server, path: str, file: tuple | None = None, data: dict | None = None, **kwargs) -> httpx.Response:
    files = {"file": file} if file is not None else None
    return httpx.post(server.url + path, files=files, data=data, timeout=120, **kwargs)


def wav_part(path: Path, content_type: str = "audio/wav") -> tuple:
    return (path.name, path.read_bytes(), content_type)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_startup_line_and_healthz(server):
    startup = [line for line in server.lines if "listening on" in line]
    assert len(startup) == 1 and startup[0].startswith("ast-audio serve: listening on http://127.0.0.1:")
    response = httpx.get(server.url + "/healthz", timeout=30)
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert health["labels"] == len(LABELS)
    assert health["precision"] == "fp32"
    assert health["version"] == ast_audio.__version__
    assert health["limits"] == {"max_upload_mb": MAX_UPLOAD_MB, "max_duration_s": MAX_DURATION_S,
                                "upload_timeout_s": UPLOAD_TIMEOUT_S, "min_hop_fraction": MIN_HOP_FRACTION,
                                "header_timeout_s": 10.0, "max_windows": 600, "max_active_requests": 16,
                                "stream_max_sessions": 4, "stream_max_message_kb": 256.0,
                                "stream_max_messages_per_s": 50, "stream_max_speed": 4.0, "stream_burst_s": 30.0,
                                "stream_max_session_s": 3600.0, "stream_idle_timeout_s": 30.0,
                                "stream_max_sessions_per_client": 2, "stream_max_text_kb": 64.0,
                                "max_connections": 512}
    assert health["load"] == {"active_requests": 0, "queued_requests": 0, "computing_batches": 0,
                              "waiting_batches": 0, "batches_done": 0, "abandoned_requests": 0}


def _check_tag(got: dict, expected: dict) -> None:
    assert got["file"] == expected["file"]
    assert got["duration_s"] == pytest.approx(expected["duration_s"], abs=1e-9)
    assert [x["label"] for x in got["labels"]] == [x["label"] for x in expected["labels"]]
    np.testing.assert_allclose([x["score"] for x in got["labels"]], [x["score"] for x in expected["labels"]],
                               atol=TOL, rtol=0)
    assert len(got["windows"]) == len(expected["windows"])
    for g, e in zip(got["windows"], expected["windows"], strict=True):
        assert (g["start_s"], g["end_s"]) == pytest.approx((e["start_s"], e["end_s"]), abs=1e-9)
        assert [x["label"] for x in g["labels"]] == [x["label"] for x in e["labels"]]
        np.testing.assert_allclose([x["score"] for x in g["labels"]], [x["score"] for x in e["labels"]],
                                   atol=TOL, rtol=0)


def test_tag_equals_library(server, tagger, clip):
    response = post(server, "/v1/tag", wav_part(clip), data={"top_k": "3", "window_s": "1.0", "hop_s": "0.5"})
    assert response.status_code == 200, response.text
    got = response.json()
    expected = tagger.tag(str(clip), top_k=3, window_s=1.0, hop_s=0.5)[0].to_dict()
    expected["file"] = clip.name  # the server echoes the upload's base name, never a server path
    _check_tag(got, expected)
    assert len(got["labels"]) == 3 and len(got["windows"]) == 11  # 6 s, 1 s windows every 0.5 s


def test_tag_defaults_and_octet_stream(server, tagger, clip):
    """No form fields: the model's window, half-window hop, top 10 capped at the 5 classes; curl's default type."""
    response = post(server, "/v1/tag", wav_part(clip, "application/octet-stream"))
    assert response.status_code == 200, response.text
    expected = tagger.tag(str(clip), top_k=10)[0].to_dict()
    expected["file"] = clip.name
    _check_tag(response.json(), expected)
    assert len(response.json()["labels"]) == len(LABELS)


def test_filename_is_only_a_display_name(server, clip):
    """A client-named path is not opened; only its base name is echoed."""
    response = post(server, "/v1/tag", ("../../etc/passwd", clip.read_bytes(), "audio/wav"))
    assert response.status_code == 200, response.text
    assert response.json()["file"] == "passwd"
    response = post(server, "/v1/tag", ("/etc/hostname", b"", "audio/wav"))
    assert_error(response, 422, "hostname", "empty")


def test_events_equal_library(server, tagger, clip):
    from ast_audio.infer.events import Energy, EventConfig, detect_events
    from ast_audio.infer.tagger import score_stream

    fields = {"window_s": "1.0", "hop_s": "0.25", "threshold": "0.5", "median": "3", "min_duration": "0.5",
              "merge_gap": "0.3", "top_k": "2"}
    response = post(server, "/v1/events", wav_part(clip), data=fields)
    assert response.status_code == 200, response.text
    got = response.json()

    waveform = load_audio(clip)
    timeline = score_stream(tagger, waveform, window_s=1.0, hop_s=0.25, sample_rate=16000)
    # The rule of `ast-audio events` (overlap-add grid, interpolated, energy-refined boundaries).
    events = detect_events(timeline, EventConfig(threshold=0.5, median_windows=3, min_duration_s=0.5,
                                                 merge_gap_s=0.3, thresholds=THRESHOLDS, grid="mean",
                                                 interpolate=True, refine="energy"),
                           Energy.from_chunks([waveform.numpy()], tagger.sample_rate))
    assert events, "the fixture should produce events at threshold 0.5"
    siren = timeline.labels.index("Siren")
    assert timeline.scores[:, siren].max() > 0.5 and "Siren" not in [e["label"] for e in got["events"]]
    assert [e["label"] for e in got["events"]] == [e.label for e in events]
    np.testing.assert_allclose([[e["onset_s"], e["offset_s"], e["score"]] for e in got["events"]],
                               [[e.onset_s, e.offset_s, e.score] for e in events], atol=TOL, rtol=0)
    assert got["duration_s"] == pytest.approx(6.0)

    # Timeline: every window, the 2 classes with the highest peak plus every class with an event (numpy order).
    line = got["timeline"]
    np.testing.assert_allclose(line["starts_s"], timeline.starts_s.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(line["ends_s"], timeline.ends_s.numpy(), atol=1e-6, rtol=0)
    scores = timeline.scores.numpy()  # (N windows, C)
    peaks = scores.max(axis=0)
    order = list(np.argsort(-peaks, kind="stable"))
    wanted = set(order[:2]) | {timeline.labels.index(e.label) for e in events}
    assert [c["label"] for c in line["classes"]] == [timeline.labels[i] for i in order if i in wanted]
    for c in line["classes"]:
        i = timeline.labels.index(c["label"])
        np.testing.assert_allclose(c["scores"], scores[:, i], atol=TOL, rtol=0)
        assert c["peak"] == pytest.approx(float(peaks[i]), abs=TOL)
        assert c["threshold"] == THRESHOLDS.get(c["label"], 0.5)
    assert line["threshold"] == 0.5


def test_events_json_equals_the_command_line(server, checkpoint, clip, tmp_path):
    """The server and `ast-audio events --format json` render one input's events through the same function, so for
    the same file and settings the documents are equal (the server adds its timeline view)."""
    from ast_audio.infer.calibrate import write_thresholds

    thresholds = tmp_path / "thresholds.csv"
    write_thresholds(THRESHOLDS, thresholds)  # as served; the other classes use 0.5 on both sides
    fields = {"window_s": "1.0", "hop_s": "0.25", "threshold": "0.5", "median": "3", "min_duration": "0.5",
              "merge_gap": "0.3"}
    response = post(server, "/v1/events", wav_part(clip), data=fields)
    assert response.status_code == 200, response.text
    served = {k: v for k, v in response.json().items() if k != "timeline"}
    out = tmp_path / "events.json"
    proc = run_cli("events", clip, "--checkpoint", checkpoint, "--window", "1.0", "--hop", "0.25", "--median", "3",
                   "--min-duration", "0.5", "--merge-gap", "0.3", "--thresholds", thresholds, "--format", "json",
                   "--no-progress", "-o", out)
    assert proc.returncode == 0, proc.stderr
    (listed,) = json.loads(out.read_text())
    assert served["events"], "the clip should have events at threshold 0.5"
    assert {**listed, "file": clip.name} == served


def test_events_only_and_exclude(server, clip):
    fields = {"window_s": "1.0", "hop_s": "0.5", "threshold": "0.4"}
    response = httpx.post(server.url + "/v1/events", files={"file": wav_part(clip)},
                          data={**fields, "only": "Tone"}, timeout=120)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["events"] and {e["label"] for e in got["events"]} == {"Tone"}
    assert [c["label"] for c in got["timeline"]["classes"]] == ["Tone"]

    everything = post(server, "/v1/events", wav_part(clip), data={**fields, "top_n": "5"}).json()
    assert {"Speech", "Tone"} <= {e["label"] for e in everything["events"]}
    response = httpx.post(server.url + "/v1/events", files={"file": wav_part(clip)},  # a repeated field
                          data={**fields, "top_n": "5", "exclude": ["Speech", "Tone"]}, timeout=120)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["events"] == [e for e in everything["events"] if e["label"] not in ("Speech", "Tone")]
    assert {c["label"] for c in got["timeline"]["classes"]} == set(LABELS) - {"Speech", "Tone"}
    assert_error(post(server, "/v1/events", wav_part(clip), data={"only": "Trombone"}), 422, "Trombone")


def test_events_top_k_and_its_old_name_top_n(server, clip):
    """/v1/events takes `top_k` (classes in the timeline), as /v1/tag and the CLI call a count of reported classes;
    the old field name `top_n` still works, and both at once are refused."""
    fields = {"window_s": "1.0", "hop_s": "0.5", "threshold": "0.99"}  # no events: exactly top_k classes drawn
    new = post(server, "/v1/events", wav_part(clip), data={**fields, "top_k": "1"}).json()
    old = post(server, "/v1/events", wav_part(clip), data={**fields, "top_n": "1"}).json()
    wide = post(server, "/v1/events", wav_part(clip), data={**fields, "top_k": "3"}).json()
    assert len(new["timeline"]["classes"]) == 1 and len(wide["timeline"]["classes"]) == 3
    assert old["timeline"] == new["timeline"]
    assert_error(post(server, "/v1/events", wav_part(clip), data={**fields, "top_k": "1", "top_n": "2"}), 422,
                 "top_k", "top_n")


def test_events_only_takes_ontology_names_and_ids(server, clip):
    """Most of this model's names are AudioSet's, so the form fields also take ontology names in any case, ids, and
    whole branches (the CLI's `selected_classes`); "Dog bark" and "Tone" are not ontology names and stay plain."""
    fields = {"window_s": "1.0", "hop_s": "0.5", "threshold": "0"}  # threshold 0: every kept class is an event
    got = post(server, "/v1/events", wav_part(clip), data={**fields, "only": "music,/m/09x0r"}).json()
    assert {e["label"] for e in got["events"]} == {"Music", "Speech"}
    assert {c["label"] for c in got["timeline"]["classes"]} == {"Music", "Speech"}
    got = post(server, "/v1/events", wav_part(clip), data={**fields, "only": "Sounds of things"}).json()
    # Sounds of things > Alarm > Siren (no event: the served thresholds hold Siren at 0.99)
    assert [c["label"] for c in got["timeline"]["classes"]] == ["Siren"] and got["events"] == []
    assert_error(post(server, "/v1/events", wav_part(clip), data={"only": "Domestic animals, pets"}), 422,
                 "no output")


def test_explain_png(server, clip):
    import matplotlib.image

    response = post(server, "/v1/explain", wav_part(clip))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    png = response.content
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert (width, height) == (1200, 600)
    pixels = matplotlib.image.imread(io.BytesIO(png))  # an independent decoder reads the whole picture
    assert pixels.shape[:2] == (600, 1200) and pixels.std() > 0

    response = post(server, "/v1/explain", wav_part(clip), data={"class": "Siren"})
    assert response.status_code == 200 and response.content[:4] == b"\x89PNG"
    assert_error(post(server, "/v1/explain", wav_part(clip), data={"class": "Trombone"}), 422, "Trombone")
    response = post(server, "/v1/explain", wav_part(clip), data={"start_s": "4.5"})  # a later window
    assert response.status_code == 200 and response.content != png
    assert_error(post(server, "/v1/explain", wav_part(clip), data={"start_s": "60"}), 422, "start_s")
    response = post(server, "/v1/explain", wav_part(clip), data={"method": "rollout"})  # class-agnostic
    assert response.status_code == 200 and response.content != png  # the default is gradient rollout
    assert_error(post(server, "/v1/explain", wav_part(clip), data={"method": "rollout", "class": "Siren"}), 422,
                 "class-agnostic")
    assert_error(post(server, "/v1/explain", wav_part(clip), data={"method": "lrp"}), 422, "gradient-rollout")


# ---- limits and bad input --------------------------------------------------------------------------------------


def test_413_from_content_length_before_reading(server):
    """A 10 GiB Content-Length with no body sent: answered at once, so the body was never waited for."""
    host = urlsplit(server.url).netloc
    request = (f"POST /v1/tag HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
               f"Content-Length: {10 * 2**30}\r\n\r\n").encode()
    status, headers, body = raw_http(server.url, request)
    assert status == 413
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert "max_upload_mb" in json.loads(body)["error"]


def test_413_real_upload_over_limit(server, tmp_path):
    big = write_pattern(tmp_path / "big.wav", seconds=40.0)  # 1.28 MB: the size limit answers before any decoding
    assert big.stat().st_size > MAX_UPLOAD_MB * 2**20
    assert_error(post(server, "/v1/tag", wav_part(big)), 413, "max_upload_mb")


def test_413_chunked_body_stops_reading_at_limit(server):
    """No Content-Length (chunked): the server cuts the upload off once it passes the limit.

    The body generator counts what httpx managed to send: far less than the 200 MiB offered, so the server
    stopped reading (and closed the connection) instead of draining or buffering the whole body.
    """
    offered = 200 * 2**20
    sent = 0

    def body():
        nonlocal sent
        yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
               b"Content-Type: audio/wav\r\n\r\n")
        while sent < offered:
            sent += 65536
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    response = httpx.post(server.url + "/v1/tag", content=body(), timeout=60,
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert "content-length" not in response.request.headers  # it really was chunked
    assert_error(response, 413, "max_upload_mb")
    assert sent < offered / 4


def test_408_body_that_never_arrives(server):
    """A client that declares 10000 bytes and sends the start of a file part is answered 408 after the upload
    timeout, not held for ever."""
    host = urlsplit(server.url).netloc
    start_of_part = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.wav"\r\n'
                     b"Content-Type: audio/wav\r\n\r\n" + b"\0" * 100)
    request = (f"POST /v1/tag HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
               f"Content-Length: 10000\r\n\r\n").encode() + start_of_part
    start = time.monotonic()
    status, headers, body = raw_http(server.url, request, timeout=UPLOAD_TIMEOUT_S + 60)
    assert status == 408 and headers["connection"] == "close"
    assert "upload_timeout_s" in json.loads(body)["error"]
    assert time.monotonic() - start >= UPLOAD_TIMEOUT_S - 0.1  # it waited for the body first (no early answer)
    assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200


def test_415_non_audio(server, clip):
    assert_error(post(server, "/v1/tag", ("notes.txt", b"hello", "text/plain")), 415, "text/plain")
    assert_error(post(server, "/v1/tag", (clip.name, clip.read_bytes(), "image/png")), 415, "image/png")
    response = httpx.post(server.url + "/v1/tag", json={"file": "/etc/passwd"}, timeout=30)
    assert_error(response, 415, "multipart/form-data")


def test_422_corrupt_and_empty(server, clip):
    rng = np.random.default_rng(1)
    assert_error(post(server, "/v1/tag", ("noise.wav", rng.bytes(5000), "audio/wav")), 422, "noise.wav",
                 "cannot decode")
    truncated = clip.read_bytes()[:30]  # a RIFF header cut short
    assert_error(post(server, "/v1/events", ("cut.wav", truncated, "audio/wav")), 422, "cut.wav")
    assert_error(post(server, "/v1/explain", ("empty.wav", b"", "audio/wav")), 422, "empty")


def test_422_missing_or_text_file_field(server, clip):
    assert_error(post(server, "/v1/tag", data={"top_k": "3"}), 422, "missing", "file")
    response = httpx.post(server.url + "/v1/tag", files={"other": wav_part(clip)}, timeout=30)
    assert_error(response, 422, "missing")
    response = httpx.post(server.url + "/v1/tag", files={"file": (None, "just text")}, timeout=30)
    assert_error(response, 422, "text")


def test_422_bad_form_values(server, clip):
    assert_error(post(server, "/v1/tag", wav_part(clip), data={"top_k": "many"}), 422, "top_k")
    assert_error(post(server, "/v1/tag", wav_part(clip), data={"top_k": "0"}), 422, "top_k")
    assert_error(post(server, "/v1/tag", wav_part(clip), data={"window_s": "1.0", "hop_s": "2.0"}), 422, "hop_s")
    assert_error(post(server, "/v1/tag", wav_part(clip), data={"window_s": "nan"}), 422, "window_s")
    assert_error(post(server, "/v1/events", wav_part(clip), data={"median": "2"}), 422, "median")
    assert_error(post(server, "/v1/events", wav_part(clip), data={"threshold": "1.5"}), 422, "threshold")


def test_duration_limit(server, tmp_path):
    """25 s of 8 kHz audio (400 kB, under the size limit) is over the 20 s limit: refused from its header."""
    path = tmp_path / "long.wav"
    sf.write(str(path), np.zeros(25 * 8000, dtype=np.float32), 8000, subtype="PCM_16")
    assert path.stat().st_size < MAX_UPLOAD_MB * 2**20
    for endpoint in ("/v1/tag", "/v1/events", "/v1/explain"):
        assert_error(post(server, endpoint, wav_part(path)), 422, "25.00 s", "max_duration_s")


def test_unknown_paths_and_methods_are_json(server):
    assert_error(httpx.get(server.url + "/nope", timeout=30), 404)
    assert_error(httpx.get(server.url + "/v1/tag", timeout=30), 405)
    assert_error(httpx.get(server.url + "/static/../../etc/passwd", timeout=30), 404)


def test_page_and_assets_are_local(server):
    page = httpx.get(server.url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    for needed in ('id="file"', 'id="analyse"', 'id="record"', 'id="timeline"', 'id="explain-img"',
                   'src="app.js"', 'href="style.css"'):
        assert needed in html
    script = httpx.get(server.url + "/app.js", timeout=30)
    style = httpx.get(server.url + "/style.css", timeout=30)
    assert script.status_code == style.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    for text in (html, script.text, style.text):  # nothing is fetched from another host
        assert not re.search(r"(src|href)\s*=\s*[\"'](https?:)?//", text)
        assert not re.search(r"url\(\s*[\"']?(https?:)?//", text)
        assert not re.search(r"(fetch|import)\(\s*[\"'`](https?:)?//", text)


def test_inference_does_not_block_the_event_loop(server, tagger, tmp_path):
    """Two slow /v1/tag requests (451 windows each) in flight; /healthz keeps answering meanwhile.

    If inference ran on the event loop, no /healthz would be answered between the moment the model starts and the
    first slow response; here answers keep coming through the second half of that span. The concurrent results
    also equal the library's (the model is shared by the worker threads).
    """
    path = write_pattern(tmp_path / "slow.wav", seconds=10.0)
    fields = {"window_s": "1.0", "hop_s": "0.02", "top_k": "3"}
    done: dict[int, tuple[httpx.Response, float]] = {}

    def slow(i: int) -> None:
        response = httpx.post(server.url + "/v1/tag", files={"file": wav_part(path)}, data=fields, timeout=300)
        done[i] = (response, time.monotonic())

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(2)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    answered = []
    with httpx.Client(timeout=60) as client:
        while any(thread.is_alive() for thread in threads):
            response = client.get(server.url + "/healthz")
            assert response.status_code == 200 and response.json()["status"] == "ok"
            answered.append(time.monotonic())
            time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=300)
    assert len(done) == 2
    first_done = min(t for _, t in done.values())
    during = [t for t in answered if t < first_done]
    assert len(during) >= 5, f"/healthz answered {len(during)} times while inference ran"
    assert any(t > start + (first_done - start) / 2 for t in during), "/healthz stalled during inference"

    expected = tagger.tag(str(path), top_k=3, window_s=1.0, hop_s=0.02)[0].to_dict()
    expected["file"] = path.name
    for response, _ in done.values():
        assert response.status_code == 200, response.text
        assert len(response.json()["windows"]) == 451
        _check_tag(response.json(), expected)


# ---- the command ------------------------------------------------------------------------------------------------


def test_cli_unloadable_checkpoint_is_one_line(tmp_path):
    result = run_cli("serve", "--checkpoint", str(tmp_path / "missing"), "--port", "0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ast-audio: error: ") and "missing" in lines[0]
    assert "Traceback" not in result.stderr
    debug = run_cli("--debug", "serve", "--checkpoint", str(tmp_path / "missing"), "--port", "0")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_cli_port_taken(checkpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("serve", "--checkpoint", str(checkpoint), "--port", str(port))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ast-audio: error: cannot listen on 127.0.0.1:")
    assert str(port) in lines[0] and "--port" in lines[0]


@pytest.mark.parametrize(("option", "value"), [("--port", "70000"), ("--max-upload-mb", "0"),
                                               ("--workers-threads", "-1")])
def test_cli_rejects_bad_options(option, value, capsys):
    from ast_audio.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", option, value])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


@pytest.mark.slow
def test_int8_server_equals_library_int8(checkpoint, clip):
    """--precision reaches load_model: /healthz says int8 and the tags equal an int8 model loaded here."""
    with run_server(checkpoint, "--precision", "int8") as int8_server:
        health = httpx.get(int8_server.url + "/healthz", timeout=30).json()
        assert health["precision"] == "int8"
        response = post(int8_server, "/v1/tag", wav_part(clip), data={"top_k": "5"})
    assert response.status_code == 200, response.text
    expected = Tagger(load_model(checkpoint, precision="int8")).tag(str(clip), top_k=5)[0].to_dict()
    expected["file"] = clip.name
    _check_tag(response.json(), expected)
    fp32 = dict(Tagger(load_model(checkpoint)).tag(str(clip), top_k=5)[0].top)
    int8 = {x["label"]: x["score"] for x in response.json()["labels"]}
    assert max(abs(int8[label] - fp32[label]) for label in LABELS) > 1e-5  # it really ran the quantised model


def test_cli_thresholds_with_unknown_class(checkpoint, tmp_path):
    from ast_audio.infer.calibrate import write_thresholds

    path = tmp_path / "thresholds.csv"
    write_thresholds({"Trombone": 0.5}, path)
    result = run_cli("serve", "--checkpoint", str(checkpoint), "--port", "0", "--thresholds", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ast-audio: error: ") and "Trombone" in lines[0]
