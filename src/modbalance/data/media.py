"""Reading and writing media files: WAV audio, video frames and audio (PyAV), JPEG, arrays.

Every reader checks that the file exists (:class:`~modbalance.data.errors.MissingFileError`) and turns
any decoder failure into a :class:`~modbalance.data.errors.DataFileError` that names the file, so callers
see one documented error type whatever library failed underneath. Writers are atomic: they write a
temporary file next to the target and rename it, so an interrupted run never leaves a half-written
output that a resumed run would take for finished.

The optional packages (numpy, soundfile, av, pillow, h5py, scipy) are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modbalance.data._deps import require
from modbalance.data.errors import DataFileError, MissingFileError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

PathLike = str | os.PathLike[str]

#: File suffixes treated as images when listing a frame folder.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")


def _existing(path: PathLike, context: str = "") -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, context)
    return path


# ----------------------------------------------------------------------------------------------------------------
# audio
# ----------------------------------------------------------------------------------------------------------------


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D signal with a polyphase filter (``scipy.signal.resample_poly``).

    Args:
        wave: (N,) float samples.
        orig_rate: its sample rate in Hz.
        target_rate: the wanted rate in Hz.

    Returns:
        (round(N * target_rate / orig_rate),) float32 samples.

    Example:
        >>> import numpy as np
        >>> resample(np.zeros(16000, dtype=np.float32), 16000, 22050).shape
        (22050,)
    """
    np = require("numpy")
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return np.asarray(wave, dtype=np.float32)
    signal = require("scipy.signal", "resampling audio")
    from math import gcd

    g = gcd(int(orig_rate), int(target_rate))
    out = signal.resample_poly(np.asarray(wave, dtype=np.float64), target_rate // g, orig_rate // g)
    return out.astype(np.float32)


#: Bounds on what a media header may declare, checked before anything is allocated: a sample rate in
#: [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] Hz, at most MAX_CHANNELS channels and MAX_AUDIO_SECONDS of audio,
#: images and video frames of at most MAX_IMAGE_PIXELS pixels (8192 x 8192).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000
MAX_CHANNELS = 64
MAX_AUDIO_SECONDS = 3600
MAX_IMAGE_PIXELS = 8192 * 8192


def _check_audio_header(path: Path, rate: int, frames: int, channels: int) -> None:
    """Refuse declared audio sizes outside the documented bounds (the message names the file and the value)."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise DataFileError(
            path,
            f"declared sample rate {rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz",
            reason="bad_shape",
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise DataFileError(path, f"declares {channels} channels, expected 1 to {MAX_CHANNELS}", reason="bad_shape")
    if frames > MAX_AUDIO_SECONDS * rate:
        raise DataFileError(
            path,
            f"declares {frames} frames ({frames / rate:.0f} s at {rate} Hz), over the {MAX_AUDIO_SECONDS}-s bound",
            reason="bad_shape",
        )


def read_wav(path: PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file with soundfile, mixed down to mono by the channel mean.

    Args:
        path: a WAV (or FLAC/OGG) file.
        sample_rate: resample to this rate; ``None`` keeps the file's rate.

    Returns:
        ``(wave, rate)``: (N,) float32 samples in [-1, 1] and their sample rate.

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: it cannot be decoded, holds no samples or non-finite values, or its header
            declares a sample rate, channel count or length outside the bounds above (checked
            before reading, so a forged header cannot make it allocate gigabytes).

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
        >>> write_wav(path, np.zeros(1600, dtype=np.float32), 16000)
        >>> wave, rate = read_wav(path, sample_rate=8000)
        >>> wave.shape, rate
        ((800,), 8000)
    """
    path = _existing(path)
    np = require("numpy")
    sf = require("soundfile", "reading WAV files")
    try:
        info = sf.info(str(path))
        _check_audio_header(path, int(info.samplerate), int(info.frames), int(info.channels))
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except DataFileError:
        raise
    except Exception as error:  # libsndfile raises its own types (LibsndfileError, RuntimeError, ...)
        raise DataFileError(path, f"cannot decode audio ({type(error).__name__}: {error})") from error
    if data.size == 0:
        raise DataFileError(path, "no audio samples", reason="empty")
    wave = data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(wave).all():
        raise DataFileError(path, "audio holds NaN or infinite samples")
    if sample_rate is not None and sample_rate != rate:
        wave, rate = resample(wave, int(rate), int(sample_rate)), int(sample_rate)
    return wave, int(rate)


def declared_seconds(path: PathLike, kind: str = "audio") -> float | None:
    """The duration a media file's header declares, or ``None`` when it declares none.

    For WAV files the RIFF ``data`` chunk's size (what was written, even if the file was cut short
    later); for other containers PyAV's stream duration of ``kind`` (``"audio"`` or ``"video"``),
    else the container's. Used to tell a truncated file from a short one.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
        >>> write_wav(path, np.zeros(32000, dtype=np.float32), 16000)
        >>> _ = open(path, "r+b").truncate(44 + 1000)  # cut after 500 of the 32000 samples
        >>> declared_seconds(path)
        2.0
    """
    path = _existing(path)
    if path.suffix.lower() == ".wav":
        return _wav_declared_seconds(path)
    av = require("av", "decoding video")
    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio if kind == "audio" else container.streams.video
            if streams and streams[0].duration and streams[0].time_base:
                return float(streams[0].duration * streams[0].time_base)
            if kind == "video" and container.duration:
                return float(container.duration) / 1_000_000
    except _av_errors():
        return None
    return None


def _wav_declared_seconds(path: Path) -> float | None:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    rate = align = 0
    offset = 12
    while offset + 8 <= len(head):
        chunk, size = head[offset : offset + 4], int.from_bytes(head[offset + 4 : offset + 8], "little")
        if chunk == b"fmt " and offset + 20 <= len(head):
            rate = int.from_bytes(head[offset + 12 : offset + 16], "little")
            align = int.from_bytes(head[offset + 20 : offset + 22], "little")
        elif chunk == b"data":
            if not rate or not align or size in (0, 0xFFFFFFFF):  # unknown length (a streamed WAV)
                return None
            return size / align / rate
        offset += 8 + size + (size & 1)
    return None


def write_wav(path: PathLike, wave: np.ndarray, sample_rate: int) -> None:
    """Write (N,) or (N, C) float samples as 16-bit PCM WAV, atomically.

    Example:
        >>> import numpy as np, tempfile, os
        >>> write_wav(os.path.join(tempfile.mkdtemp(), "a.wav"), np.zeros(10, dtype=np.float32), 16000)
    """
    sf = require("soundfile", "writing WAV files")
    with _atomic_path(path) as tmp:
        sf.write(str(tmp), wave, sample_rate, subtype="PCM_16", format="WAV")


def _av_errors() -> tuple[type[BaseException], ...]:
    av = require("av", "decoding video")
    return (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError, IndexError, KeyError)


def read_video_audio(path: PathLike, sample_rate: int) -> np.ndarray:
    """Decode the first audio stream of a video (or audio) file with PyAV, as mono at ``sample_rate``.

    Channels are mixed down by their mean (as librosa does), after FFmpeg's resampler.

    Returns:
        (N,) float32 samples.

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: the file cannot be decoded or has no audio stream.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "clip.mp4")
        >>> frames = np.zeros((10, 48, 64, 3), dtype=np.uint8)
        >>> write_video(path, frames, fps=10, audio=np.zeros(16000, dtype=np.float32), sample_rate=16000)
        >>> abs(read_video_audio(path, 8000).shape[0] - 8000) < 1100
        True
    """
    path = _existing(path)
    np = require("numpy")
    av = require("av", "decoding video")
    chunks: list[Any] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataFileError(path, "no audio stream", reason="empty")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            for frame in container.decode(stream):
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    except DataFileError:
        raise
    except _av_errors() as error:
        raise DataFileError(path, f"cannot decode audio ({type(error).__name__}: {error})") from error
    if not chunks:
        raise DataFileError(path, "audio stream holds no samples", reason="empty")
    wave = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)
    if wave.size == 0 or not np.isfinite(wave).all():
        raise DataFileError(path, "decoded audio is empty or not finite", reason="empty")
    return wave


# ----------------------------------------------------------------------------------------------------------------
# video
# ----------------------------------------------------------------------------------------------------------------


def sample_video_frames(
    path: PathLike,
    fps: float = 1.0,
    position: str = "first",
    *,
    with_next: bool = False,
    max_frames: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Decode a video with PyAV and keep ``fps`` frames per second.

    Frame ``i`` is the first decoded frame whose time (from the first frame) is at least ``i / fps``
    (``position="first"``, the OGM-GE extractor's "first frame of every second") or ``(i + 1/2) / fps``
    (``position="middle"``, the HDF5 tool's choice). Frames continue while the video lasts.

    Args:
        path: any container PyAV can open (mp4, flv, avi, mkv, webm, ...).
        fps: frames kept per second.
        position: ``"first"`` or ``"middle"`` of each 1/fps interval.
        with_next: also return the frame decoded right after each kept one (for optical flow).
        max_frames: stop after this many kept frames.

    Returns:
        ``(frames, next_frames)``: lists of (H, W, 3) uint8 RGB arrays; ``next_frames`` is empty unless
        ``with_next`` (for the last kept frame with no successor, the frame itself is repeated).

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: the file cannot be decoded or has no video frames.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "clip.avi")
        >>> write_video(path, np.zeros((25, 48, 64, 3), dtype=np.uint8), fps=10)   # 2.5 s
        >>> frames, _ = sample_video_frames(path, fps=1)
        >>> len(frames), frames[0].shape
        (3, (48, 64, 3))
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if position not in ("first", "middle"):
        raise ValueError(f"position must be 'first' or 'middle', got {position!r}")
    path = _existing(path)
    av = require("av", "decoding video")
    offset = 0.0 if position == "first" else 0.5
    kept: list[Any] = []
    following: list[Any] = []
    want_next = False
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataFileError(path, "no video stream", reason="empty")
            stream = container.streams.video[0]
            width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
            if width * height > MAX_IMAGE_PIXELS:
                raise DataFileError(
                    path, f"declares {width} x {height} frames, over {MAX_IMAGE_PIXELS} pixels", reason="bad_shape"
                )
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            start: float | None = None
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time if frame.time is not None else index / rate
                start = time if start is None else start
                if want_next:
                    following.append(frame.to_ndarray(format="rgb24"))
                    want_next = False
                if max_frames is not None and len(kept) >= max_frames:
                    if not with_next or len(following) == len(kept):
                        break
                    continue
                if time - start >= (len(kept) + offset) / fps - 1e-3:
                    kept.append(frame.to_ndarray(format="rgb24"))
                    want_next = with_next
    except DataFileError:
        raise
    except _av_errors() as error:
        raise DataFileError(path, f"cannot decode video ({type(error).__name__}: {error})") from error
    if not kept:
        raise DataFileError(path, "no video frames decoded", reason="empty")
    if with_next and len(following) < len(kept):
        following.append(kept[-1])
    return kept, following


def write_video(
    path: PathLike,
    frames: np.ndarray,
    fps: int = 10,
    *,
    codec: str | None = None,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames (and optional mono audio) into a video file with PyAV.

    The codec defaults from the suffix: ``.flv`` -> ``flv``, anything else -> ``mpeg4``; audio is AAC.
    Used to build fixtures and the toy release; H and W must be even.

    Example:
        >>> import numpy as np, tempfile, os
        >>> write_video(os.path.join(tempfile.mkdtemp(), "a.flv"), np.zeros((5, 48, 64, 3), dtype=np.uint8))
    """
    np = require("numpy")
    av = require("av", "encoding video")
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got shape {frames.shape}")
    suffix = Path(path).suffix.lower()
    codec = codec or ("flv" if suffix == ".flv" else "mpeg4")
    with _atomic_path(path) as tmp, av.open(str(tmp), "w", format=suffix.lstrip(".") or None) as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height = int(frames.shape[2]), int(frames.shape[1])
        video.pix_fmt = "yuv420p"
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        for image in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None and audio is not None:
            samples = np.asarray(audio, dtype=np.float32).reshape(-1)
            step = sound.codec_context.frame_size or 1024
            for begin in range(0, samples.size, step):
                chunk = av.AudioFrame.from_ndarray(samples[None, begin : begin + step], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = sample_rate, begin
                for packet in sound.encode(chunk):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)


# ----------------------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------------------


def read_image(path: PathLike, mode: str = "RGB") -> Image.Image:
    """Open and fully decode an image with Pillow, converted to ``mode`` (``"RGB"`` or ``"L"``).

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: it is not a decodable image (truncated JPEGs included).

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "f.jpg")
        >>> save_jpeg(path, np.zeros((48, 64, 3), dtype=np.uint8))
        >>> read_image(path).size
        (64, 48)
    """
    path = _existing(path)
    with open(path, "rb") as handle:
        return decode_image(handle.read(), path, mode)


def decode_image(data: bytes, name: PathLike, mode: str = "RGB") -> Image.Image:
    """Decode image bytes (a JPEG from an HDF5 clip, say); ``name`` is used in error messages.

    Example:
        >>> decode_image(b"not an image", "clip.hdf5[0]")
        Traceback (most recent call last):
        ...
        modbalance.data.errors.DataFileError: clip.hdf5[0]: cannot decode image (UnidentifiedImageError...
    """
    pil = require("PIL.Image", "reading images")
    if not data:
        raise DataFileError(name, "image file is empty", reason="empty")
    try:
        with pil.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataFileError(
                    name, f"declares {width} x {height} pixels, over {MAX_IMAGE_PIXELS}", reason="bad_shape"
                )
            image.load()
            return image.convert(mode)
    except DataFileError:
        raise
    except (OSError, ValueError, SyntaxError, pil.DecompressionBombError, EOFError) as error:
        message = str(error).split("\n")[0][:120]
        raise DataFileError(name, f"cannot decode image ({type(error).__name__}: {message})") from error


def save_jpeg(path: PathLike, image: np.ndarray, quality: int = 95) -> None:
    """Write an (H, W, 3) or (H, W) uint8 array as a JPEG, atomically.

    Example:
        >>> import numpy as np, tempfile, os
        >>> save_jpeg(os.path.join(tempfile.mkdtemp(), "g.jpg"), np.zeros((8, 8), dtype=np.uint8))
    """
    pil = require("PIL.Image", "writing images")
    with _atomic_path(path) as tmp:
        pil.fromarray(image).save(tmp, format="JPEG", quality=quality)


def list_images(folder: PathLike) -> list[Path]:
    """The image files of a frame folder, **sorted by name** (never the filesystem's listing order).

    Raises:
        MissingFileError: the folder does not exist.
        DataFileError: it holds no images (reason ``"empty"``).

    Example:
        >>> import numpy as np, tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> for name in ("frame_00002.jpg", "frame_00001.jpg"):
        ...     save_jpeg(os.path.join(folder, name), np.zeros((8, 8), dtype=np.uint8))
        >>> [p.name for p in list_images(folder)]
        ['frame_00001.jpg', 'frame_00002.jpg']
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(folder, "frame folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataFileError(folder, "frame folder holds no images", reason="empty")
    return files


def read_hdf5_frames(path: PathLike, key: str = "video") -> list[bytes]:
    """The JPEG byte strings of an HDF5 clip (layout F3: one vlen-uint8 dataset, one element per frame).

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: it is not HDF5, lacks ``key``, or holds no frames.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "clip.hdf5")
        >>> write_hdf5_frames(path, [b"abc", b"de"])
        >>> [len(b) for b in read_hdf5_frames(path)]
        [3, 2]
    """
    path = _existing(path)
    h5py = require("h5py", "reading HDF5 frames")
    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                raise DataFileError(path, f"no dataset {key!r} (found {sorted(handle.keys())})")
            frames = [bytes(item) for item in handle[key][()]]
    except DataFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataFileError(path, f"cannot read HDF5 ({type(error).__name__}: {error})") from error
    if not frames:
        raise DataFileError(path, "HDF5 clip holds no frames", reason="empty")
    return frames


def write_hdf5_frames(path: PathLike, frames: Sequence[bytes], key: str = "video") -> None:
    """Write JPEG byte strings as an HDF5 clip in layout F3, atomically (fixtures and conversions).

    Example:
        >>> import tempfile, os
        >>> write_hdf5_frames(os.path.join(tempfile.mkdtemp(), "c.hdf5"), [b"x"])
    """
    np = require("numpy")
    h5py = require("h5py", "writing HDF5 frames")
    with _atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        data = handle.create_dataset(key, (len(frames),), dtype=h5py.vlen_dtype(np.dtype("uint8")))
        for index, blob in enumerate(frames):
            data[index] = np.frombuffer(blob, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# arrays
# ----------------------------------------------------------------------------------------------------------------


def read_array(path: PathLike) -> np.ndarray:
    """Load a 2-D or 3-D feature array from ``.npy``, ``.pt`` (a plain tensor) or ``.pkl`` (a pickled array).

    ``.pkl`` files are unpickled (the community caches use pickle): only read files you trust.
    ``.pt`` files are loaded with ``weights_only=True``.

    Returns:
        A float32 numpy array with a leading singleton channel axis removed.

    Raises:
        MissingFileError: the file does not exist.
        DataFileError: it cannot be loaded, is not a numeric array, or holds NaN/inf.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "spec.npy")
        >>> save_array(path, np.ones((1, 257, 188), dtype=np.float32))
        >>> read_array(path).shape
        (257, 188)
    """
    path = _existing(path)
    np = require("numpy")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            value: Any = np.load(path, allow_pickle=False)
        elif suffix == ".pt":
            import torch

            value = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix in (".pkl", ".pickle"):
            with open(path, "rb") as handle:
                value = pickle.load(handle)
        else:
            raise DataFileError(path, f"unsupported array suffix {suffix!r} (expected .npy, .pt or .pkl)")
    except DataFileError:
        raise
    except Exception as error:  # numpy/torch/pickle raise many types on mangled files
        raise DataFileError(path, f"cannot load array ({type(error).__name__}: {error})") from error
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise DataFileError(path, f"expected a numeric array, got {type(value).__name__}", reason="bad_shape")
    value = value.astype(np.float32, copy=False)
    if value.ndim == 3 and value.shape[0] == 1:
        value = value[0]
    if value.ndim != 2:
        raise DataFileError(path, f"expected a 2-D spectrogram, got shape {tuple(value.shape)}", reason="bad_shape")
    if not np.isfinite(value).all():
        raise DataFileError(path, "array holds NaN or infinite values")
    return value


def save_array(path: PathLike, array: np.ndarray) -> None:
    """Save an array as ``.npy``, atomically.

    Example:
        >>> import numpy as np, tempfile, os
        >>> save_array(os.path.join(tempfile.mkdtemp(), "x.npy"), np.zeros(3))
    """
    np = require("numpy")
    with _atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


# ----------------------------------------------------------------------------------------------------------------
# atomic outputs
# ----------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; it replaces ``path`` only if the block succeeds.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "clip")
        >>> with atomic_directory(target) as tmp:
        ...     _ = (tmp / "frame_00001.jpg").write_bytes(b"")
        >>> sorted(os.listdir(target))
        ['frame_00001.jpg']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
