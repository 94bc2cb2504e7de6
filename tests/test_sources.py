"""Live sources (ast_audio.audio.sources): blocks reach the consumer in order, merged when several wait; the
reader's error reaches the consumer; a bounded reader stops waiting once the source is closed."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf

from ast_audio.audio.sources import QUEUED_BLOCKS, LiveSource, open_source
from ast_audio.errors import AstAudioError


def test_waiting_blocks_are_merged_in_order():
    source = LiveSource(16000, 1, drop_late=False, bounded=False)
    blocks = [np.full((3, 1), i, dtype=np.float32) for i in range(4)]
    for block in blocks:
        source.put(block)
    source.put(None)
    (merged, arrived), = list(source.blocks())  # all four were waiting: one block
    assert merged[:, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3] and arrived > 0


def test_reader_error_reaches_the_consumer_after_its_blocks():
    source = LiveSource(16000, 1, drop_late=False, bounded=False)

    def produce(put) -> None:
        put(np.ones((2, 1), dtype=np.float32))
        raise AstAudioError("the pipe broke")

    source.start(produce).join()
    got = []
    with pytest.raises(AstAudioError, match="the pipe broke"):
        for block, _ in source.blocks():
            got.append(block)
    assert sum(b.shape[0] for b in got) == 2


def test_bounded_reader_stops_on_close():
    source = LiveSource(16000, 1, drop_late=False, bounded=True)
    done = threading.Event()

    def produce(put) -> None:
        for _ in range(QUEUED_BLOCKS + 10):  # more than the queue holds: put waits for room ...
            put(np.zeros((1, 1), dtype=np.float32))
        done.set()

    thread = source.start(produce)
    source.close()  # ... until the consumer closes the source
    thread.join(timeout=10)
    assert done.is_set() and not thread.is_alive()


def test_file_source_yields_the_file(tmp_path):
    data = np.arange(8000, dtype=np.float32).reshape(4000, 2) / 8000
    sf.write(str(tmp_path / "a.wav"), data, 8000, subtype="FLOAT")
    source = open_source(str(tmp_path / "a.wav"), block_s=0.1, realtime=False, microphone_rate=16000)
    assert (source.rate, source.channels, source.drop_late) == (8000, 2, False)
    got = np.concatenate([block for block, _ in source.blocks()])
    np.testing.assert_array_equal(got, data)


def test_missing_file_fails_before_starting(tmp_path):
    with pytest.raises(AstAudioError):
        open_source(str(tmp_path / "missing.wav"), block_s=0.1, realtime=False, microphone_rate=16000)
