"""Property test: mangled media files make the readers raise DataFileError naming the file, nothing else."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modbalance.data import media
from modbalance.data.errors import DataFileError


def _valid_files(folder) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    media.write_wav(folder / "a.wav", rng.uniform(-0.5, 0.5, 4000).astype(np.float32), 16000)
    frames = rng.integers(0, 255, (6, 48, 64, 3), dtype=np.uint8)
    media.write_video(folder / "v.mp4", frames, fps=10, audio=rng.uniform(-0.5, 0.5, 9600).astype(np.float32))
    media.write_video(folder / "v.flv", frames, fps=10)
    media.save_jpeg(folder / "f.jpg", frames[0])
    media.save_array(folder / "s.npy", rng.normal(size=(16, 12)).astype(np.float32))
    return {p.suffix: p.read_bytes() for p in folder.iterdir()}


_READERS = {
    ".wav": lambda p: media.read_wav(p, 8000),
    ".mp4": lambda p: (media.sample_video_frames(p, fps=2), media.read_video_audio(p, 8000)),
    ".flv": lambda p: media.sample_video_frames(p, fps=2),
    ".jpg": media.read_image,
    ".npy": media.read_array,
}

_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("garbage"), st.binary(min_size=0, max_size=256)),
    st.tuples(st.just("splice"), st.tuples(st.floats(0.0, 1.0), st.binary(min_size=1, max_size=64))),
)


def _mangle(data: bytes, mutation) -> bytes:
    kind, arg = mutation
    if kind == "truncate":
        return data[: int(arg * len(data))]
    if kind == "flip":
        out = bytearray(data)
        for where, xor in arg:
            out[min(int(where * len(out)), len(out) - 1)] ^= xor
        return bytes(out)
    if kind == "garbage":
        return arg
    where, blob = arg
    cut = int(where * len(data))
    return data[:cut] + blob + data[cut:]


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    return _valid_files(tmp_path_factory.mktemp("valid"))


@pytest.mark.parametrize("suffix", sorted(_READERS))
def test_mangled_files_raise_data_file_error_naming_the_file(suffix, valid_files, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp(f"mangled{suffix}")
    reader = _READERS[suffix]

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(mutation=_mutation)
    def check(mutation) -> None:
        path = folder / f"clip{suffix}"
        path.write_bytes(_mangle(valid_files[suffix], mutation))
        try:
            reader(path)  # a mangled file may still decode; then it must return normally
        except DataFileError as error:
            assert str(path) in str(error)
            assert error.reason in ("corrupt", "empty", "bad_shape")

    check()
