"""Audio decoding: formats, integer scaling, downmix, resampling, and one clear error per bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio.audio.io import decode_bytes, load_audio, load_audio_info, resample
from ast_audio.errors import AudioInputError
from conftest import write_tone


def _peak_hz(x: torch.Tensor, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.numpy() * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * sample_rate / len(x)


@pytest.mark.parametrize("name, fmt, subtype", [
    ("a.wav", "WAV", "PCM_16"), ("b.wav", "WAV", "PCM_24"), ("c.wav", "WAV", "FLOAT"),
    ("d.flac", "FLAC", "PCM_16"), ("e.ogg", "OGG", "VORBIS"),
])
def test_formats_decode_to_mono_float32_16k(tmp_path, name, fmt, subtype):
    rng = np.random.default_rng(1)
    data = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) + 0.01 * rng.standard_normal(16000))
    sf.write(str(tmp_path / name), data.astype(np.float32), 16000, format=fmt, subtype=subtype)
    x = load_audio(tmp_path / name)
    assert x.dtype == torch.float32 and x.shape == (16000,)
    assert float(x.abs().max()) <= 1.0
    if fmt != "OGG":  # lossless: equal to the written samples within the format's quantisation step
        step = {"PCM_16": 2.0 ** -15, "PCM_24": 2.0 ** -23, "FLOAT": 1e-7}[subtype]
        np.testing.assert_allclose(x.numpy(), data, atol=step)
    else:  # lossy: the tone survives
        assert abs(_peak_hz(x, 16000) - 440) < 2


def test_mp3_decodes(tmp_path):
    data = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(32000) / 16000)
    sf.write(str(tmp_path / "a.mp3"), data.astype(np.float32), 16000, format="MP3")
    x = load_audio(tmp_path / "a.mp3")
    assert x.dtype == torch.float32 and abs(x.shape[0] - 32000) < 1200  # mp3 framing may add/trim a little
    assert abs(_peak_hz(x, 16000) - 1000) < 2


def test_int_samples_are_scaled_by_full_scale(tmp_path):
    ints = np.array([0, 16384, -32768, 32767] * 200, dtype=np.int16)
    sf.write(str(tmp_path / "i.wav"), ints, 16000, subtype="PCM_16")
    x = load_audio(tmp_path / "i.wav")
    np.testing.assert_array_equal(x[:4].numpy(), np.array([0.0, 0.5, -1.0, 32767 / 32768], dtype=np.float32))


def test_resample_44k1_keeps_tone_frequency_and_duration(tmp_path):
    write_tone(tmp_path / "t.wav", seconds=2.0, freq=1000.0, sample_rate=44100)
    x = load_audio(tmp_path / "t.wav", sample_rate=16000)
    assert x.shape == (32000,)  # 2 s at 16 kHz
    assert abs(_peak_hz(x, 16000) - 1000.0) < 1.0  # FFT bin width is 0.5 Hz
    assert load_audio_info(tmp_path / "t.wav").sample_rate == 44100


def test_resample_identity_and_length():
    x = torch.randn(4410)
    assert resample(x, 16000, 16000) is x
    assert resample(x, 44100, 16000).shape == (1600,)


def test_stereo_is_downmixed_by_mean(tmp_path):
    rng = np.random.default_rng(2)
    stereo = rng.uniform(-0.5, 0.5, size=(8000, 2)).astype(np.float32)
    sf.write(str(tmp_path / "s.wav"), stereo, 16000, subtype="FLOAT")
    x = load_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(x.numpy(), stereo.mean(axis=1), atol=1e-7)


def test_silence_is_valid(tmp_path):
    sf.write(str(tmp_path / "z.wav"), np.zeros(8000, dtype=np.float32), 16000)
    x = load_audio(tmp_path / "z.wav")
    assert x.shape == (8000,) and float(x.abs().max()) == 0.0


def test_decode_bytes_matches_file(tmp_path):
    path = write_tone(tmp_path / "t.flac", seconds=1.0)
    torch.testing.assert_close(decode_bytes(path.read_bytes()), load_audio(path), rtol=0, atol=0)


def _write(path, samples, rate=16000, subtype="FLOAT"):
    sf.write(str(path), np.asarray(samples, dtype=np.float32), rate, subtype=subtype)
    return path


def _raw(path, data: bytes):
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing": (lambda d: d / "missing.wav", "no such file"),
    "directory": (lambda d: d, "is a directory"),
    "empty": (lambda d: _raw(d / "empty.wav", b""), "file is empty"),
    "text": (lambda d: _raw(d / "text.wav", b"not audio at all"), "cannot decode audio"),
    "corrupt_wav": (lambda d: _raw(d / "bad.wav", b"RIFF\x00\x00\x00\x00WAVEjunk" * 8), "cannot decode audio"),
    "zero_samples": (lambda d: _write(d / "zero.wav", []), "0 samples"),
    "nan": (lambda d: _write(d / "nan.wav", [0.1, np.nan] * 400), "NaN or infinite"),
    "inf": (lambda d: _write(d / "inf.wav", [0.1, np.inf] * 400), "NaN or infinite"),
    "short": (lambda d: _write(d / "short.wav", np.zeros(399)), "shorter than one 25 ms"),
    "int_scaled_float": (lambda d: _write(d / "intscaled.wav", np.full(800, 1000.0)), "int-scaled"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_raise_one_line_audio_input_error(tmp_path, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(AudioInputError) as info:
        load_audio(path)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert text.startswith(f"{path}: ")  # names the file


def test_too_long_is_rejected_from_the_header(tmp_path, monkeypatch):
    path = _write(tmp_path / "long.wav", np.zeros(16000 * 3))
    # The header check must fire before any samples are decoded.
    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("decoded a file that is too long"))
    with pytest.raises(AudioInputError, match=r"3.00 s long, longer than the 2 s allowed"):
        load_audio(path, max_duration_s=2.0)


def test_short_after_resampling_is_rejected(tmp_path):
    # 1000 samples at 44.1 kHz = 22.7 ms -> 363 samples at 16 kHz, under one 400-sample window.
    path = _write(tmp_path / "r.wav", np.zeros(1000), rate=44100)
    with pytest.raises(AudioInputError, match="shorter than one 25 ms"):
        load_audio(path)


def test_bad_bytes_raise():
    with pytest.raises(AudioInputError, match="<bytes>: no data"):
        decode_bytes(b"")
    with pytest.raises(AudioInputError, match="upload.bin: cannot decode audio"):
        decode_bytes(b"\x00\x01garbage", name="upload.bin")


# ---------------------------------------------------------------------------------------------------------------------
# Each kind of bad file says what it is (issue 10, item 11)


def _mp3(path, seconds: float = 3.0):
    """A real MP3 written by libsndfile (>= 1.1 encodes MP3 with LAME, with a Xing/Info length tag)."""
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="MP3")
    return path


def _cut(path, out, fraction: float = 0.5, size: int | None = None):
    data = path.read_bytes()
    out.write_bytes(data[:size if size is not None else int(len(data) * fraction)])
    return out


def test_truncated_mp3_says_so_without_libmpg123_noise(tmp_path, capfd):
    """An MP3 cut in the middle decodes (libmpg123 stops at the cut and prints its own warnings on fd 2), and one cut
    after 300 bytes fails with libsndfile's "File does not exist or is not a regular file": both are named truncated
    or corrupt MP3 files, through load_audio, the streamed decoder and decode_bytes, and nothing reaches stderr."""
    from ast_audio.audio.io import stream_audio

    whole = _mp3(tmp_path / "whole.mp3")
    assert load_audio(whole).shape == (48000,)
    decoders = (load_audio, lambda p: list(stream_audio(p)), lambda p: decode_bytes(p.read_bytes(), name=str(p)))
    for cut in (_cut(whole, tmp_path / "half.mp3"), _cut(whole, tmp_path / "head.mp3", size=300)):
        for decode in decoders:
            with pytest.raises(AudioInputError) as info:
                decode(cut)
            text = str(info.value)
            assert text.startswith(f"{cut}: ") and "truncated or corrupt MP3 file" in text and "\n" not in text
            assert "does not exist" not in text and "regular file" not in text
    captured = capfd.readouterr()
    assert captured.err == "", captured.err  # libmpg123's "Warning: Xing stream size off ..." lines are silenced


@pytest.mark.parametrize("fmt, subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_truncated_flac_and_ogg_say_so(tmp_path, fmt, subtype):
    whole = tmp_path / f"whole.{fmt.lower()}"
    sf.write(str(whole), np.zeros(48000, dtype=np.float32), 16000, format=fmt, subtype=subtype)
    cut = _cut(whole, tmp_path / f"cut.{fmt.lower()}")
    with pytest.raises(AudioInputError, match=rf"^{cut}: cannot decode audio: truncated or corrupt {fmt} file"):
        load_audio(cut)


def test_stderr_of_other_writers_is_kept_while_decoders_are_silenced(capfd):
    """fd 2 is process-wide: while libmpg123's lines are dropped, another writer's line still reaches stderr."""
    from ast_audio.audio.probe import native_stderr_silenced as _native_stderr_silenced

    with _native_stderr_silenced():
        os.write(2, b"Warning: Xing stream size off by more than 1%\n")  # the form libmpg123 prints
        os.write(2, b"[src/libmpg123/parse.c:do_readahead():1083] warning: Cannot read next header\n")
        os.write(2, b"another thread's log line\n")
    assert capfd.readouterr().err == "another thread's log line\n"


def test_symlinks_fifos_and_non_folders_say_what_they_are(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere.wav")
    os.mkfifo(tmp_path / "fifo")
    plain = write_tone(tmp_path / "plain.wav", seconds=0.5)
    cases = {tmp_path / "a": "symlink loop", tmp_path / "dangling": "broken symlink (it points to",
             tmp_path / "fifo": "not a regular file (a pipe)", plain / "x.wav": "is a file, not a folder",
             tmp_path / "text.mp3": "the name says MP3 but its first bytes are no MP3 header",
             tmp_path / "noise.bin": "not an audio format libsndfile reads"}
    (tmp_path / "text.mp3").write_bytes(b"hello, this is text" * 20)
    (tmp_path / "noise.bin").write_bytes(bytes(range(256)) * 4)
    for path, message in cases.items():
        with pytest.raises(AudioInputError) as info:
            load_audio(path)
        text = str(info.value)
        assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text
        assert "no such file" not in text or path == plain / "x.wav"


def test_permission_denied_says_so_simulated(tmp_path, monkeypatch):
    """Simulated: opening the file raises PermissionError, as the kernel does for a user without read permission
    (root, which runs this suite here, is never refused; the next test checks the real thing as another user)."""
    import builtins

    path = write_tone(tmp_path / "locked.wav", seconds=0.5)
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(AudioInputError, match=rf"^{path}: permission denied \(mode "):
        load_audio(path)


AS_ANOTHER_USER = """
import os, sys
from ast_audio.audio.io import load_audio
from ast_audio.errors import AudioInputError
if os.geteuid() == 0:  # root reads everything: become `nobody`, for whom the kernel enforces the file modes
    os.setgid(65534)
    os.setuid(65534)
for path in sys.argv[1:]:
    try:
        print("decoded", load_audio(path).shape[0])
    except AudioInputError as exc:
        print(exc)
"""


def test_permission_denied_says_so_for_a_real_user():
    """Real permissions: a process that is not root (root drops to uid 65534 first) reads a 0644 file, and gets
    one-line "permission denied" errors for a 0000 file and for a file in a 0700 folder it does not own."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # under /tmp: every user can reach it (pytest's tmp_path is 0700)
        root = Path(tmp)
        root.chmod(0o755)
        readable = write_tone(root / "readable.wav", seconds=0.5)
        readable.chmod(0o644)
        locked = write_tone(root / "locked.wav", seconds=0.5)
        locked.chmod(0o000)
        (root / "private").mkdir(mode=0o700)
        hidden = write_tone(root / "private" / "hidden.wav", seconds=0.5)
        if os.geteuid() != 0:  # the folder must be another user's to be refused; as a normal user, lock it instead
            (root / "private").chmod(0o000)
        try:
            run = subprocess.run([sys.executable, "-c", AS_ANOTHER_USER, str(readable), str(locked), str(hidden)],
                                 capture_output=True, text=True, timeout=120)
        finally:
            (root / "private").chmod(0o700)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "decoded 8000"
    assert lines[1].startswith(f"{locked}: permission denied (mode ----------"), lines[1]
    assert lines[2].startswith(f"{hidden}: permission denied on a folder above it"), lines[2]
    assert len(lines) == 3 and run.stderr == ""
