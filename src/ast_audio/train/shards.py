"""WebDataset-style tar shards: pack a manifest's clips once, stream them on every node.

Two million AudioSet clips as two million files are slow to list, copy and open on every node. `prepare_shards`
decodes each clip once (mono, resampled to `sample_rate` with soxr, so ESC-50's 44.1 kHz is resampled once here),
re-encodes it losslessly, and writes `shard-000000.tar`, ... with members `{n:09d}.flac` (or `.wav`) and
`{n:09d}.json` ({"key", "targets", "index", "source"}), plus `index.json` (labels, mids, multi_label, shard list
and counts, skipped clips). Plain `tarfile`, no webdataset dependency; any WebDataset reader can read the shards.

`ShardDataset` streams them: shards are split over DDP ranks (torch.distributed if initialised, or explicit
rank/world) and then over DataLoader workers; with fewer shards than ranks or workers the split falls back to
every n-th clip, so each clip is read once per epoch by exactly one (rank, worker). A seeded shuffle buffer
mixes clips across shards; mixup partners are drawn from the buffer (the reference draws them from the whole
set, which a stream cannot do). Features and per-item randomness are those of `ClipDataset`, seeded by
(seed, epoch, clip index).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio.io import decode_bytes, load_audio
from ..config import SAMPLE_RATE, FrontendConfig
from ..errors import AstAudioError, ConfigError
from ..utils import atomic_path, atomic_write_text, one_line
from .augment import remove_dc
from .data import BadClip, ClipDataset, Item
from .layouts import Example, Manifest
from .recipes import AugmentConfig

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
CLIPS_NAME = "clips.npz"  # the clip table (offsets for random access), see `_write_clip_table`
FORMAT_NAME = "ast-audio-shards"
FORMAT_VERSION = 1
# Lossless storage: FLAC at 24 bits keeps 16-bit sources bit-exact and resampled audio to ~1e-7; WAV stores float32.
_SUBTYPES = {"flac": "PCM_24", "wav": "FLOAT"}


def _encode(example: Example, sample_rate: int, audio_format: str) -> tuple[bytes | None, str]:
    """Decode one clip and re-encode it; (None, error) for a clip that cannot be read."""
    try:
        waveform = load_audio(example.source, sample_rate=sample_rate)
    except (AstAudioError, OSError) as exc:
        return None, one_line(exc)
    buffer = io.BytesIO()
    sf.write(buffer, waveform.numpy(), sample_rate, format=audio_format.upper(), subtype=_SUBTYPES[audio_format])
    return buffer.getvalue(), ""


def _encode_star(args: tuple[Example, int, str]) -> tuple[bytes | None, str]:
    return _encode(*args)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append a member; returns the byte offset of its data in the tar (for reading it back by seeking)."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    tar.addfile(info, io.BytesIO(data))
    blocks = -(-len(data) // tarfile.BLOCKSIZE)
    return tar.offset - blocks * tarfile.BLOCKSIZE  # addfile leaves tar.offset after the data's padded blocks


def prepare_shards(manifest: Manifest, out_dir: str | os.PathLike, *, shard_size: int = 1000,
                   sample_rate: int = SAMPLE_RATE, audio_format: str = "flac", num_workers: int = 0,
                   force: bool = False) -> Path:
    """Pack `manifest` into tar shards under `out_dir` (written atomically: a failed run leaves nothing).

    Clips that cannot be decoded are skipped, logged, and listed in index.json's "skipped" with their error.

    Args:
        shard_size: clips per shard (1000 clips of 10 s FLAC is ~200-300 MB).
        sample_rate: stored rate in Hz (the front end's; ESC-50's 44.1 kHz is resampled once here).
        audio_format: "flac" (lossless, 24-bit) or "wav" (float32).
        num_workers: processes decoding and encoding in parallel (0 = in this process).
        force: replace an existing `out_dir`.

    Returns:
        `out_dir`.
    """
    out = Path(out_dir)
    if audio_format not in _SUBTYPES:
        raise ConfigError(f"audio_format must be one of {', '.join(_SUBTYPES)}, got {audio_format!r}")
    if shard_size < 1:
        raise ConfigError(f"shard_size must be a positive number of clips, got {shard_size}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ConfigError(f"{out}: already exists; choose a new output folder or pass --force to replace it")
    if len(manifest) == 0:
        raise ConfigError("the manifest has no clips to pack")
    jobs = [(example, sample_rate, audio_format) for example in manifest.examples]
    shards: list[dict] = []
    skipped: list[dict] = []
    table: dict[str, list] = {"shard": [], "offset": [], "size": [], "index": [], "key": [], "targets": []}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        tar: tarfile.TarFile | None = None
        count = 0
        pool = ProcessPoolExecutor(num_workers) if num_workers > 0 else None
        try:
            encoded = pool.map(_encode_star, jobs, chunksize=16) if pool else map(_encode_star, jobs)
            for index, (example, (data, error)) in enumerate(zip(manifest.examples, encoded, strict=True)):
                if data is None:
                    logger.info("skipped %s: %s", example.key, error)  # listed in index.json; the CLI prints it
                    skipped.append({"key": example.key, "error": error})
                    continue
                if tar is None or count == shard_size:
                    if tar is not None:
                        tar.close()
                    name = f"shard-{len(shards):06d}.tar"
                    tar = tarfile.open(tmp / name, "w")
                    shards.append({"name": name, "count": 0})
                    count = 0
                stem = f"{index:09d}"
                meta = {"key": example.key, "targets": list(example.targets), "index": index,
                        "source": example.source}
                offset = _add(tar, f"{stem}.{audio_format}", data)
                _add(tar, f"{stem}.json", json.dumps(meta).encode())
                for name, value in (("shard", len(shards) - 1), ("offset", offset), ("size", len(data)),
                                    ("index", index), ("key", example.key), ("targets", example.targets)):
                    table[name].append(value)
                count += 1
                shards[-1]["count"] = count
        finally:
            if tar is not None:
                tar.close()
            if pool is not None:
                pool.shutdown()
        if not shards:
            raise ConfigError(f"none of the {len(manifest)} clips could be decoded, e.g. {skipped[0]['error']}")
        index_doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "labels": list(manifest.labels),
                     "mids": list(manifest.mids), "multi_label": manifest.multi_label, "sample_rate": sample_rate,
                     "audio_format": audio_format, "clips": sum(s["count"] for s in shards),
                     "source_clips": len(manifest), "shards": shards, "skipped": skipped}
        _write_clip_table(tmp / CLIPS_NAME, table)
        atomic_write_text(tmp / INDEX_NAME, json.dumps(index_doc, indent=1) + "\n")
    return out


def _write_clip_table(path: Path, table: dict[str, list]) -> None:
    """clips.npz: per clip its shard, audio byte offset and size, manifest index, key and targets (CSR), so that
    `ShardClips` reads any clip with one seek and the balanced sampler's weights need no pass over the tars."""
    lengths = [len(t) for t in table["targets"]]
    np.savez(path, shard=np.asarray(table["shard"], dtype=np.int32), offset=np.asarray(table["offset"], np.int64),
             size=np.asarray(table["size"], np.int64), index=np.asarray(table["index"], np.int64),
             key=np.asarray([k.encode("utf-8") for k in table["key"]], dtype=np.bytes_),  # 1 byte a character
             target_ptr=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
             targets=np.asarray([t for ts in table["targets"] for t in ts], dtype=np.int32))


REPREPARE = "re-create the shards with `ast-audio prepare`"


def is_shard_folder(path: str | os.PathLike) -> bool:
    """True if `path` is a folder written by `prepare_shards`: its index.json says so, or is damaged (cut, not JSON)
    but still names the format in its first bytes, so that `read_index` says it is damaged instead of the folder
    being read as another kind of data."""
    index = Path(path) / INDEX_NAME
    if not index.is_file():
        return False
    try:
        text = index.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    try:
        doc = json.loads(text)
    except ValueError:
        return FORMAT_NAME in text[:256]
    return isinstance(doc, dict) and doc.get("format") == FORMAT_NAME


def read_index(path: str | os.PathLike) -> dict:
    """index.json of a shard folder, checked (`_check_index`) and with every shard it lists present; ConfigError
    naming the folder if it is not one, or the file and what is wrong if it is damaged."""
    folder = Path(path)
    index = folder / INDEX_NAME
    if not is_shard_folder(folder):
        raise ConfigError(f"{folder}: not a shard folder (no valid {INDEX_NAME}); create one with `ast-audio prepare`")
    try:
        doc = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{index}: damaged shard index (cut or overwritten: {one_line(exc)}); {REPREPARE}") from None
    if doc.get("version") != FORMAT_VERSION:
        raise ConfigError(f"{index}: shard format version {doc.get('version')}, expected {FORMAT_VERSION}; "
                          "re-create the shards with this version's `ast-audio prepare`")
    _check_index(doc, index)
    for shard in doc["shards"]:
        if not (folder / shard["name"]).is_file():
            raise ConfigError(f"{folder / shard['name']}: shard listed in {index} is missing; copy it or re-prepare")
    return doc


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_index(doc: dict, index: Path) -> None:
    """The fields the readers use have the types and agree: labels (names), shards (a plain file name and a clip
    count each), clips (the counts' sum)."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{index}: damaged shard index ({what}); {REPREPARE}")

    labels, shards = doc.get("labels"), doc.get("shards")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise bad("labels is not a list of class names")
    if not isinstance(doc.get("mids"), list) or len(doc["mids"]) != len(labels):
        raise bad("mids is not a list as long as labels")
    if not isinstance(shards, list) or not shards:
        raise bad("shards is not a list of shards")
    for shard in shards:
        name = shard.get("name") if isinstance(shard, dict) else None
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise bad(f"shard entry {shard!r} has no plain file name")
        if not _is_count(shard.get("count")):
            raise bad(f"shard {name} has no clip count")
    if doc.get("clips") != sum(s["count"] for s in shards):
        raise bad(f"clips {doc.get('clips')!r} is not the sum of the shards' counts")


@dataclass(frozen=True)
class _Slot:
    """What one (rank, worker) reads: shard ids, and a modulus filter on the clip's position in that stream."""

    shards: tuple[int, ...]
    modulus: int  # keep the clips whose running position p (over `shards`, in order) has p % modulus == remainder
    remainder: int
    # Nested filter for the clip-level rank split (applied first): global clip ordinal % rank_mod == rank_rem.
    rank_mod: int
    rank_rem: int


def _rank_part(num_shards: int, rank: int, world: int) -> tuple[tuple[int, ...], int, int]:
    if num_shards >= world:
        return tuple(range(rank, num_shards, world)), 1, 0
    return tuple(range(num_shards)), world, rank  # fewer shards than ranks: every world-th clip


def _slot(num_shards: int, rank: int, world: int, worker: int, workers: int) -> _Slot:
    shards, rank_mod, rank_rem = _rank_part(num_shards, rank, world)
    if rank_mod == 1 and len(shards) >= workers:
        return _Slot(shards[worker::workers], 1, 0, 1, 0)
    return _Slot(shards, workers, worker, rank_mod, rank_rem)


def _slot_count(counts: list[int], slot: _Slot) -> int:
    """Clips a slot yields, from the shard counts alone (no I/O)."""
    n = sum(counts[s] for s in slot.shards)
    if slot.rank_mod > 1:  # over all shards in order: ordinals congruent to rank_rem
        n = len(range(slot.rank_rem, n, slot.rank_mod))
    return len(range(slot.remainder, n, slot.modulus))


class ShardDataset(torch.utils.data.IterableDataset):
    """Stream a shard folder: the same items as `ClipDataset` ((T, F), (C,), key) or `BadClip`.

    Args:
        folder: written by `prepare_shards`.
        frontend, augment, seed, normalize: as `ClipDataset`.
        shuffle: shuffle shard order and clips (buffer of `buffer_size` encoded clips) per epoch; False for eval.
        rank, world_size: DDP position; default: torch.distributed's if it is initialised when the dataset is built
            (so build it after init_process_group), else 0 of 1.
        equalize: every rank yields the same number of clips (the smallest rank's count), so DDP ranks run the
            same number of steps; the few clips dropped change with the epoch. Default True.
    """

    def __init__(self, folder: str | os.PathLike, frontend: FrontendConfig, augment: AugmentConfig | None = None,
                 *, seed: int = 0, normalize: bool = True, shuffle: bool = True, buffer_size: int = 500,
                 rank: int | None = None, world_size: int | None = None, equalize: bool = True) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self.labels = tuple(self.index["labels"])
        self.mids = tuple(self.index["mids"])
        self.multi_label = bool(self.index["multi_label"])
        self.counts = [int(s["count"]) for s in self.index["shards"]]
        self.shuffle = shuffle
        self.buffer_size = max(1, int(buffer_size))
        self.seed = seed
        self.epoch = 0
        self.equalize = equalize
        if (rank is None) != (world_size is None):
            raise ConfigError("give both rank and world_size, or neither (to use torch.distributed's)")
        if world_size is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Read here, in the main process: DataLoader worker processes do not see the process group.
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self._rank, self._world = (rank, world_size) if world_size is not None else (0, 1)
        if world_size is not None and not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        # The per-clip pipeline (fbank, masks, normalisation, noise) is ClipDataset's, over an empty manifest.
        empty = Manifest((), self.labels, self.mids, self.multi_label)
        self.pipeline = ClipDataset(empty, frontend, augment, seed=seed, normalize=normalize)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def num_clips(self) -> int:
        return sum(self.counts)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.pipeline.set_epoch(epoch)  # the items' randomness is seeded by (seed, epoch, clip index)

    def world(self) -> tuple[int, int]:
        """(rank, world_size): explicit, else torch.distributed's when this dataset was built, else (0, 1)."""
        return int(self._rank), int(self._world)

    def _rank_count(self, rank: int, world: int) -> int:
        return _slot_count(self.counts, _slot(len(self.counts), rank, world, 0, 1))

    def __len__(self) -> int:
        """Clips this rank yields per epoch."""
        rank, world = self.world()
        if self.equalize:
            return min(self._rank_count(r, world) for r in range(world))
        return self._rank_count(rank, world)

    def _quota(self, rank: int, world: int, worker: int, workers: int) -> int:
        """Clips this worker yields per epoch.

        equalize: the smallest rank's count Q, split evenly over the workers (Q // workers, the first Q % workers
        get one more). Every rank then has the same number of clips *and* of DataLoader batches, since a worker's
        last batch may be partial. A worker with more clips than its share stops early (the dropped tail changes
        with the epoch's shard order); one with fewer repeats its first clips (at most about one shard).
        """
        if not self.equalize:
            return _slot_count(self.counts, _slot(len(self.counts), rank, world, worker, workers))
        total = min(self._rank_count(r, world) for r in range(world))
        return total // workers + (1 if worker < total % workers else 0)

    def batches_per_epoch(self, batch_size: int, num_workers: int = 0) -> int:
        """DataLoader batches this rank gets per epoch (each worker's last batch may be partial)."""
        rank, world = self.world()
        workers = max(1, num_workers)
        return sum(-(-self._quota(rank, world, w, workers) // batch_size) for w in range(workers))

    def _passes(self, slot: _Slot, generator: torch.Generator) -> Iterator[tuple[dict, bytes | None, str]]:
        """The slot's records, pass after pass (a worker short of its equalised share repeats its first clips).

        A pass shorter than the index promises (a damaged shard) ends the stream instead: the missing clips are then
        reported as bad ones rather than hidden by repeats.
        """
        expected = _slot_count(self.counts, slot)
        while True:
            seen = 0
            for record in self._records(slot, generator):
                seen += 1
                yield record
            if seen < expected or seen == 0:
                return

    def _records(self, slot: _Slot, generator: torch.Generator) -> Iterator[tuple[dict, bytes | None, str]]:
        """(meta, audio bytes or None, error) of the slot's clips, in (shuffled) shard order."""
        order = list(slot.shards)
        if self.shuffle and slot.rank_mod == 1 and slot.modulus == 1:
            # Shard order may only be shuffled when no ordinal filter depends on it.
            order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
        rank_ordinal = position = 0
        for shard_id in order:
            path = self.folder / self.index["shards"][shard_id]["name"]
            for meta, data, error in _read_shard(path):
                keep_rank = rank_ordinal % slot.rank_mod == slot.rank_rem
                rank_ordinal += 1
                if not keep_rank:
                    continue
                keep = position % slot.modulus == slot.remainder
                position += 1
                if keep:
                    yield meta, data, error

    def __iter__(self) -> Iterator[Item | BadClip]:
        rank, world = self.world()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot = _slot(len(self.counts), rank, world, worker, workers)
        quota = self._quota(rank, world, worker, workers)
        stream_seed = int(np.random.SeedSequence([self.seed, self.epoch, rank, worker, 7]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(stream_seed)
        buffer: list[tuple[dict, bytes | None, str]] = []
        produced = 0
        for record in itertools.islice(self._passes(slot, generator), quota):
            if not self.shuffle:
                produced += 1
                yield self._item(record, buffer)
                continue
            if len(buffer) < self.buffer_size:
                buffer.append(record)
                continue
            j = int(torch.randint(0, len(buffer), (1,), generator=generator))
            record, buffer[j] = buffer[j], record
            produced += 1
            yield self._item(record, buffer)
        while buffer and produced < quota:
            j = int(torch.randint(0, len(buffer), (1,), generator=generator))
            record = buffer.pop(j)
            produced += 1
            yield self._item(record, buffer + [record])
        # A damaged shard ended early: report the missing clips as bad ones, so that every rank still yields its
        # quota (DDP ranks must run the same number of steps).
        for k in range(quota - produced):
            yield BadClip(f"{self.folder}#missing-{rank}-{worker}-{k}",
                          f"{self.folder}: a shard ended before its listed clip count (see the error logged above); "
                          "re-create the shards with `ast-audio prepare`")

    def _decode(self, meta: dict, data: bytes | None, error: str) -> torch.Tensor:
        if data is None:
            raise AstAudioError(error)
        name = f"{self.folder}:{meta['key']}"
        return remove_dc(decode_bytes(data, sample_rate=self.pipeline.frontend.sample_rate, name=name))

    def _item(self, record: tuple[dict, bytes | None, str],
              buffer: list[tuple[dict, bytes | None, str]]) -> Item | BadClip:
        """The record's item, built by `ClipDataset.item` with its mixup partner drawn from the shuffle `buffer` (the
        reference draws partners from the whole set, which a stream cannot do)."""
        meta, data, error = record
        try:
            waveform = self._decode(meta, data, error)
        except AstAudioError as exc:
            return BadClip(meta["key"], one_line(exc))

        def partner(i: int) -> tuple[torch.Tensor, list[int]]:
            other, other_data, other_error = buffer[i]
            return self._decode(other, other_data, other_error), other["targets"]

        return self.pipeline.item(waveform, meta["targets"], meta["key"], int(meta["index"]), len(buffer), partner)

    @property
    def mixup_fallbacks(self) -> int:
        """Items left unmixed because their mixup partner could not be decoded (in this process)."""
        return self.pipeline.mixup_fallbacks


def _read_shard(path: Path) -> Iterator[tuple[dict, bytes | None, str]]:
    """Stream one tar: (meta, audio bytes, "") per clip, or (meta, None, error) if the shard is damaged there."""
    pending: dict[str, dict] = {}
    try:
        with tarfile.open(path, "r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, _, ext = member.name.rpartition(".")
                handle = tar.extractfile(member)
                content = handle.read() if handle is not None else b""
                entry = pending.setdefault(stem, {})
                entry[ext] = content
                if "json" in entry and len(entry) == 2:
                    del pending[stem]
                    meta = json.loads(entry.pop("json"))
                    (audio,) = entry.values()
                    yield meta, audio, ""
    except (tarfile.TarError, OSError, ValueError) as exc:
        message = f"{path}: damaged shard ({one_line(exc)}); re-create it with `ast-audio prepare`"
        for entry in pending.values():
            if "json" in entry:
                yield json.loads(entry["json"]), None, message
        logger.error(message)
        return


class ShardClips(torch.utils.data.Dataset):
    """Random access to a shard folder's clips by index (one seek and read per clip, through clips.npz): the balanced
    sampler (`EpochSampler` with `balanced_weights_from_targets`) then draws from shards exactly as from files.

    Items are those of `ClipDataset` ((T, F), (C,), key) or a `BadClip`; mixup partners come from the whole set, as
    in the reference. Costs: the table (~40 bytes plus the longest key's UTF-8 length per clip: ~120 MB for 2 M
    clips with 20-byte keys) in every process (shared copy-on-write by forked DataLoader workers), and
    one random read of a clip (~300 KB of FLAC) per item instead of a sequential stream: fine on local disks and
    page-cached or parallel file systems, slower on spinning disks or object stores mounted as files.
    """

    def __init__(self, folder: str | os.PathLike, frontend: FrontendConfig, augment: AugmentConfig | None = None,
                 *, seed: int = 0, normalize: bool = True) -> None:
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        table_path = self.folder / CLIPS_NAME
        if not table_path.is_file():
            raise ConfigError(f"{self.folder}: no {CLIPS_NAME} (shards prepared by an older version); balanced "
                              "sampling reads clips by offset: re-create the shards with `ast-audio prepare`")
        self.table = _read_clip_table(table_path)
        self.labels = tuple(self.index["labels"])
        self.mids = tuple(self.index["mids"])
        self.multi_label = bool(self.index["multi_label"])
        self.shard_paths = [self.folder / s["name"] for s in self.index["shards"]]
        _check_clip_table(self.table, table_path, self.index, self.shard_paths)
        empty = Manifest((), self.labels, self.mids, self.multi_label)
        self.pipeline = ClipDataset(empty, frontend, augment, seed=seed, normalize=normalize)

    def __len__(self) -> int:
        return int(self.table["offset"].shape[0])

    @property
    def num_clips(self) -> int:
        return len(self)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def targets(self, i: int) -> list[int]:
        ptr = self.table["target_ptr"]
        return self.table["targets"][ptr[i]:ptr[i + 1]].tolist()

    def all_targets(self) -> list[list[int]]:
        """Every clip's class indices, in table order (for the balanced sampler's weights)."""
        return [self.targets(i) for i in range(len(self))]

    def key(self, i: int) -> str:
        return bytes(self.table["key"][i]).decode("utf-8")

    def set_epoch(self, epoch: int) -> None:
        self.pipeline.set_epoch(epoch)

    @property
    def mixup_fallbacks(self) -> int:
        return self.pipeline.mixup_fallbacks

    def waveform(self, i: int) -> torch.Tensor:
        """(N,) DC-removed waveform of clip i at the front end's rate (AstAudioError if it cannot be read)."""
        return self._load(i)

    def _load(self, i: int) -> torch.Tensor:
        path = self.shard_paths[int(self.table["shard"][i])]
        try:
            with open(path, "rb") as f:
                f.seek(int(self.table["offset"][i]))
                data = f.read(int(self.table["size"][i]))
        except OSError as exc:
            raise AstAudioError(f"{path}: cannot read clip {self.key(i)} ({one_line(exc)})") from None
        rate = self.pipeline.frontend.sample_rate
        return remove_dc(decode_bytes(data, sample_rate=rate, name=f"{path}:{self.key(i)}"))

    def __getitem__(self, i: int) -> Item | BadClip:
        try:
            waveform = self._load(i)
        except AstAudioError as exc:
            return BadClip(self.key(i), one_line(exc))
        return self.pipeline.item(waveform, self.targets(i), self.key(i), int(self.table["index"][i]), len(self),
                                  lambda j: (self._load(j), self.targets(j)))


_TABLE_ARRAYS = ("shard", "offset", "size", "index", "key", "target_ptr", "targets")


def _read_clip_table(path: Path) -> dict[str, np.ndarray]:
    """clips.npz's arrays; ConfigError if the file is cut or is not an .npz of them (never numpy's advice to allow
    pickles: the table holds plain arrays, and a file that needs unpickling is not one)."""
    try:
        with np.load(path, allow_pickle=False) as table:
            if not hasattr(table, "files"):
                raise ValueError("a single array, not an .npz archive")
            arrays = {name: table[name] for name in table.files}
    except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, zlib.error, ValueError (pickle): all mean damaged
        raise ConfigError(f"{path}: damaged clip table (not a readable .npz archive: {type(exc).__name__}); "
                          f"{REPREPARE}") from None
    missing = [name for name in _TABLE_ARRAYS if name not in arrays]
    if missing:
        raise ConfigError(f"{path}: damaged clip table (no {missing[0]} array); {REPREPARE}")
    return arrays


def _check_clip_table(table: dict[str, np.ndarray], path: Path, index: dict, shard_paths: list[Path]) -> None:
    """The table against the index and the shards, before any clip is read: one row per clip the index counts,
    each in a listed shard (as many per shard as the index says), its bytes inside that shard's file, its targets
    valid class indices. A damaged or hand-edited table is refused here instead of failing mid-training (an
    IndexError, or a MemoryError reading a 1e12-byte 'clip')."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{path}: {what}: the clip table does not match the shards (damaged or edited); "
                           f"{REPREPARE}")

    integer = ("shard", "offset", "size", "index", "target_ptr", "targets")
    if any(table[name].ndim != 1 or not np.issubdtype(table[name].dtype, np.integer) for name in integer):
        raise bad("an array is not a list of integers")
    clips = int(index["clips"])
    if any(table[name].shape[0] != clips for name in ("shard", "offset", "size", "index", "key")):
        raise bad(f"not one row per clip (the index counts {clips})")
    shard, offset, size = table["shard"].astype(np.int64), table["offset"], table["size"]
    outside = shard[(shard < 0) | (shard >= len(shard_paths))]
    if outside.size:
        raise bad(f"a clip in shard {int(outside[0])}, but there are {len(shard_paths)} shards")
    counts = [int(s["count"]) for s in index["shards"]]
    if np.bincount(shard, minlength=len(counts)).tolist() != counts:
        raise bad("clips per shard differ from the index's counts")
    file_sizes = np.array([p.stat().st_size for p in shard_paths], dtype=np.int64)
    ends = offset.astype(np.int64) + size.astype(np.int64)  # int64: sizes up to 2**62 cannot overflow a shard's size
    if clips and (offset.min() < 0 or size.min() <= 0 or (ends > file_sizes[shard]).any() or (ends < offset).any()):
        row = int(np.argmax((offset < 0) | (size <= 0) | (ends > file_sizes[shard]) | (ends < offset)))
        raise bad(f"clip {row} ({int(size[row])} bytes at offset {int(offset[row])}) is not inside its shard")
    ptr, targets = table["target_ptr"], table["targets"]
    if ptr.shape[0] != clips + 1 or ptr[0] != 0 or ptr[-1] != targets.shape[0] or (np.diff(ptr) < 0).any():
        raise bad("target_ptr does not index the targets")
    if targets.size and (targets.min() < 0 or targets.max() >= len(index["labels"])):
        raise bad(f"a target outside the {len(index['labels'])} classes")
